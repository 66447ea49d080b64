"""Consoles recorded through the proxy: what the file holds, its digest on the audit line,
keyframes that never corrupt the stream, input only when asked, and the two modes when the
recording cannot be written."""

from __future__ import annotations

import asyncio
import struct
import time
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType

from proxy.closecodes import Close
from proxy.recording.format import Kind
from tests.recording.support import (
    FULL_REQUEST,
    FULL_UPDATE,
    SERVER_INIT,
    StartProxy,
    audit_lines,
    metadata,
    recordings_in,
    records,
    sha256,
    to_browser,
)
from tests.support.recording_vnc import RecordingVncServer


async def wait_for(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def closed_recordings(directory: Path, count: int = 1) -> list[Path]:
    def done() -> bool:
        paths = recordings_in(directory)
        try:  # a .rec gets its .json a moment after it is created
            return len(paths) == count and all(metadata(p).get("closed") for p in paths)
        except FileNotFoundError:
            return False

    await wait_for(done)
    return recordings_in(directory)


async def test_a_vnc_console_is_recorded_from_server_init(
    recording_proxy: StartProxy, tmp_path: Path
) -> None:
    proxy = await recording_proxy(keyframe_interval=0)
    ws, stream, server_init = await proxy.open()
    await stream.write(FULL_REQUEST)
    update = await stream.read_exactly(FULL_UPDATE, 5)
    await ws.close()
    [path] = await closed_recordings(proxy.dir)
    assert to_browser(path) == server_init + update
    assert all(r.kind is Kind.TO_BROWSER for r in records(path))
    meta = metadata(path)
    assert meta["complete"] is True and meta["playable"] is True
    assert meta["vmUuid"] and meta["protocol"] == "vnc" and meta["account"] == "admin"
    assert meta["sha256"] == sha256(path) and meta["bytes"] == path.stat().st_size
    assert meta["version"] == 1 and meta["includesInput"] is False
    ms = [r.ms for r in records(path)]
    assert ms == sorted(ms)
    await wait_for(lambda: any(e["event"] == "console.close" for e in audit_lines(tmp_path)))
    [close] = [e for e in audit_lines(tmp_path) if e["event"] == "console.close"]
    assert close["recording"] == {
        "id": path.stem,
        "sha256": meta["sha256"],
        "bytes": meta["bytes"],
        "complete": True,
    }


async def test_input_is_recorded_only_when_asked(recording_proxy: StartProxy) -> None:
    proxy = await recording_proxy(include_input=True, keyframe_interval=0)
    ws, stream, _ = await proxy.open()
    key = struct.pack(">BBxxI", 4, 1, 0x61)
    await stream.write(key)
    await stream.write(FULL_REQUEST)
    await stream.read_exactly(FULL_UPDATE, 5)
    await ws.close()
    [path] = await closed_recordings(proxy.dir)
    sent = b"".join(r.data for r in records(path) if r.kind is Kind.TO_HOST)
    assert sent == b"\x01" + key + FULL_REQUEST  # ClientInit first
    assert metadata(path)["includesInput"] is True


async def test_keyframes_go_between_messages_and_never_corrupt_the_stream(
    recording_proxy: StartProxy, vnc_server: RecordingVncServer
) -> None:
    proxy = await recording_proxy(keyframe_interval=0.2)
    ws, stream, _ = await proxy.open()
    # Half a message sits at the server while a keyframe falls due: it must wait for the rest.
    await stream.write(FULL_REQUEST[:4])
    await asyncio.sleep(0.5)
    await stream.write(FULL_REQUEST[4:])
    for _ in range(3):
        await stream.read_exactly(FULL_UPDATE, 5)  # ours, then the keyframes' (harmless)
    await ws.close()
    [path] = await closed_recordings(proxy.dir)
    keyframes = [r for r in records(path) if r.kind is Kind.KEYFRAME]
    assert len(keyframes) >= 2
    # The server parsed every message: nothing was cut in two.
    assert set(vnc_server.types()) == {3}


async def test_best_effort_marks_a_recording_that_hit_its_limit_incomplete(
    recording_proxy: StartProxy,
) -> None:
    proxy = await recording_proxy(max_bytes_per_console=4096, keyframe_interval=0)
    ws, stream, _ = await proxy.open()
    for _ in range(3):
        await stream.write(FULL_REQUEST)
        await stream.read_exactly(FULL_UPDATE, 5)  # the console goes on
    await ws.close()
    [path] = await closed_recordings(proxy.dir)
    meta = metadata(path)
    assert meta["complete"] is False and "max_bytes_per_console" in meta["problem"]
    assert path.stat().st_size <= 4096
    assert meta["sha256"] == sha256(path)
    _, text = await proxy.get("/metrics")
    assert b'console_proxy_recording_failures_total{reason="size_limit"} 1.0' in text


async def test_required_closes_a_console_whose_recording_stops(
    recording_proxy: StartProxy,
) -> None:
    proxy = await recording_proxy(max_bytes_per_console=4096, keyframe_interval=0, mode="required")
    ws, stream, _ = await proxy.open()
    await stream.write(FULL_REQUEST)
    msg = await ws.receive(timeout=5)
    while msg.type is WSMsgType.BINARY:
        msg = await ws.receive(timeout=5)
    assert ws.close_code == Close.RECORDING_UNAVAILABLE.code


async def test_an_unwritable_directory_in_both_modes(
    recording_proxy: StartProxy, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the directory should be")
    directory = str(blocker / "recordings")
    lenient = await recording_proxy(dir=directory, keyframe_interval=0)
    status, body = await lenient.ready()
    assert (status, body["recording"]) == (200, "unwritable")
    ws, stream, _ = await lenient.open()  # the console works, unrecorded
    await stream.write(FULL_REQUEST)
    await stream.read_exactly(FULL_UPDATE, 5)
    await ws.close()

    strict = await recording_proxy(dir=directory, mode="required")
    status, body = await strict.ready()
    assert (status, body["status"], body["recording"]) == (503, "unavailable", "unwritable")
    ws = await strict.http.ws_connect(strict.url(f"/websockify?token={await strict.token()}"))
    msg = await ws.receive(timeout=10)
    assert msg.type is WSMsgType.CLOSE
    assert ws.close_code == Close.RECORDING_UNAVAILABLE.code
    _, text = await strict.get("/metrics")
    assert b'console_proxy_recording_failures_total{reason="unwritable"}' in text


async def test_a_failed_handshake_leaves_no_recording(recording_proxy: StartProxy) -> None:
    proxy = await recording_proxy()
    ws = await proxy.http.ws_connect(proxy.url(f"/websockify?token={await proxy.token()}"))
    await ws.close()  # before the browser's handshake
    await asyncio.sleep(0.5)
    assert recordings_in(proxy.dir) == []


async def test_server_init_size_is_learnt(recording_proxy: StartProxy) -> None:
    proxy = await recording_proxy(keyframe_interval=0)
    ws, _, server_init = await proxy.open()
    assert len(server_init) == SERVER_INIT
    await ws.close()
