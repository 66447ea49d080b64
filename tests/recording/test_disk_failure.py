"""A write that fails mid-recording (the disk, not the queue): the recording stops, marked
incomplete, counted, and the console is told once; the event loop never waits for it."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from proxy.config.recording import RecordingConfig
from proxy.observe.audit import ConsoleFacts
from proxy.observe.metrics import Metrics
from proxy.recording.recorder import Recordings

FACTS = ConsoleFacts("abcdefabcdef", "vm-1", "127.0.0.1:5900", "127.0.0.1", "vnc")


async def test_a_failing_disk_stops_the_recording_not_the_console(tmp_path: Path) -> None:
    metrics = Metrics()
    recordings = Recordings(RecordingConfig(dir=str(tmp_path), mode="required"), metrics)
    recordings.start()
    recorder = await recordings.begin(FACTS, time.time())
    assert recorder is not None
    told: list[str] = []
    recorder.on_failure = lambda: told.append(recorder.problem)
    recorder.to_browser(b"\x00" * 100)
    assert recorder.file.fd is not None
    # The disk fills up under the writer: /dev/full answers every write with ENOSPC.
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, recorder.file.fd)
    os.close(full)
    for _ in range(3):
        started = time.monotonic()
        recorder.to_browser(b"\x01" * 100)
        assert time.monotonic() - started < 0.05
    for _ in range(100):
        if told:
            break
        await asyncio.sleep(0.02)
    assert len(told) == 1 and "write failed" in told[0]
    assert recordings.writable is False
    outcome = await recorder.close("host_closed")
    assert outcome is not None and outcome.complete is False
    sample = metrics.registry.get_sample_value(
        "console_proxy_recording_failures_total", {"reason": "disk_error"}
    )
    assert sample == 1.0
    await recordings.stop()
