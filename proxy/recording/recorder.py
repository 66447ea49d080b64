"""Recording consoles: :class:`Recordings` (one per application) starts a :class:`Recorder` per
console, whose observers take the bytes the bridge moves and hand them to the writer thread.

A recorder never makes a console wait. When the disk cannot keep up (the writer's queue is
full), fails, or the recording reaches ``max_bytes_per_console``, the recording stops and is
marked incomplete; ``on_failure`` lets the caller close the console (``mode = "required"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.config.recording import RecordingConfig
from proxy.observe.audit import ConsoleFacts, iso_time
from proxy.observe.metrics import Metrics
from proxy.recording.format import HEADER, MAGIC, VERSION, Kind, encode_header
from proxy.recording.writer import RecordingFile, RecordingWriter

log = logging.getLogger(__name__)

OPEN_TIMEOUT = 5.0
CLOSE_TIMEOUT = 10.0
# How long a "the directory is (not) writable" answer holds before it is checked again.
PROBE_EVERY = 2.0
PLAYABLE = frozenset({"vnc"})


def recording_id(started: float, console_id: str) -> str:
    """Sorts by start time; the console id makes it unique (files are created exclusively)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started)) + f"-{console_id}"


@dataclass(frozen=True, slots=True)
class RecordingOutcome:
    id: str
    sha256: str | None
    bytes: int
    complete: bool

    def audit(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "complete": self.complete,
        }


class Recordings:
    """Where recordings go and the thread that writes them; off when ``dir`` is empty."""

    def __init__(self, config: RecordingConfig, metrics: Metrics, instance: str = "") -> None:
        self.config = config
        self.dir = Path(config.dir) if config.dir else None
        self.required = config.mode == "required"
        self.metrics = metrics
        self.instance = instance
        self.writer: RecordingWriter | None = None
        self.writable = True
        self._probed = -PROBE_EVERY

    @property
    def enabled(self) -> bool:
        return self.dir is not None

    def start(self) -> None:
        if self.enabled and self.writer is None:
            self.writer = RecordingWriter(asyncio.get_running_loop())

    async def stop(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            await asyncio.to_thread(writer.stop)

    async def check_writable(self) -> bool:
        """Whether a file can be created in ``dir`` (checked in a thread, at most every 2 s)."""
        if self.dir is None:
            return True
        now = time.monotonic()
        if now - self._probed >= PROBE_EVERY:
            self._probed = now
            self.writable = await asyncio.to_thread(_probe, self.dir)
        return self.writable

    async def begin(self, facts: ConsoleFacts, started: float) -> Recorder | None:
        """A recorder for this console; None when recording is off, or (``required``) when
        the directory cannot take it, so the console must not open."""
        if self.dir is None or self.writer is None:
            return None
        if self.required and not await self.check_writable():
            self.metrics.recording_failures.labels("unwritable").inc()
            return None
        ident = recording_id(started, facts.console_id)
        recorder = Recorder(self, ident, self.dir / f"{ident}.rec", facts, started)
        opened: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.writer.open(recorder.file, recorder.meta(), opened)
        if not self.required:
            return recorder
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                problem = await opened
        except TimeoutError:
            problem = "the disk did not answer in time"
        if problem:
            self.writable = False
            recorder.stop("unwritable", problem)
            await recorder.close("")
            return None
        return recorder


class Recorder:
    """One console's recording. ``to_browser`` is the bridge's observer: one length check and
    one queue put per chunk, no copy."""

    __slots__ = (
        "_t0",
        "channel",
        "complete",
        "facts",
        "file",
        "id",
        "include_input",
        "limit",
        "on_failure",
        "problem",
        "recordings",
        "size",
        "started",
        "stopped",
    )

    def __init__(
        self,
        recordings: Recordings,
        ident: str,
        path: Path,
        facts: ConsoleFacts,
        started: float,
    ) -> None:
        self.recordings = recordings
        self.id = ident
        self.facts = facts
        self.started = started
        self.file = RecordingFile(path, self._disk_failed)
        self.limit = recordings.config.max_bytes_per_console
        self.include_input = recordings.config.include_input
        self.size = len(MAGIC)
        self.stopped = False
        self.complete = True
        self.problem = ""
        # A SPICE socket's channel, known once its link is done ("main", "display", ...).
        self.channel = ""
        # Set by the console: called once if the recording stops before the console ends.
        self.on_failure: Any = None
        self._t0 = time.monotonic()

    @property
    def recorded(self) -> int:
        """Bytes of records queued so far (beyond the magic)."""
        return self.size - len(MAGIC)

    def to_browser(self, data: bytes) -> None:
        if not self.stopped:
            self._put(Kind.TO_BROWSER, data)

    def to_host(self, data: bytes) -> None:
        if not self.stopped:
            self._put(Kind.TO_HOST, data)

    def keyframe(self) -> None:
        if not self.stopped:
            self._put(Kind.KEYFRAME, b"")

    def _put(self, kind: Kind, data: bytes) -> None:
        size = HEADER.size + len(data)
        if self.size + size > self.limit:
            self.stop("size_limit", f"reached max_bytes_per_console ({self.limit} bytes)")
            return
        header = encode_header(kind, int((time.monotonic() - self._t0) * 1000), len(data))
        writer = self.recordings.writer
        if writer is None or not writer.put(self.file, (header, data)):
            self.stop("queue_full", "the disk is not keeping up (write queue full)")
            return
        self.size += size

    def _disk_failed(self, reason: str) -> None:
        self.stop("disk_error", reason)

    def stop(self, label: str, problem: str) -> None:
        """Stop recording this console, marked incomplete; tell the console once."""
        if self.stopped:
            return
        self.stopped = True
        self.complete = False
        self.problem = problem
        self.recordings.metrics.recording_failures.labels(label).inc()
        if label in ("disk_error", "unwritable"):
            self.recordings.writable = False
        log.warning("recording %s stopped: %s", self.id, problem)
        if self.on_failure is not None:
            self.on_failure()

    def meta(self, **final: Any) -> dict[str, Any]:
        facts = self.facts
        meta: dict[str, Any] = {
            "version": VERSION,
            "id": self.id,
            "console": facts.console_id,
            "vmUuid": facts.vm_uuid or None,
            "target": facts.target,
            "protocol": facts.protocol,
            "client": facts.client_ip,
            "account": facts.account_name or facts.account_uuid or None,
            "accountUuid": facts.account_uuid or None,
            "instance": self.recordings.instance,
            "started": iso_time(self.started),
            "duration": None,
            "bytes": None,
            "sha256": None,
            "complete": False,
            "closed": False,
            "playable": facts.protocol in PLAYABLE,
            "includesInput": self.include_input,
        }
        if self.channel:
            meta["channel"] = self.channel
        meta.update(final)
        return meta

    async def close(self, reason: str) -> RecordingOutcome | None:
        """Finish the file and its metadata; None when nothing was recorded (files removed)."""
        writer = self.recordings.writer
        self.stopped = True
        if writer is None:
            return None
        duration = round(time.time() - self.started, 3)
        empty = self.recorded == 0

        def finish(file: RecordingFile) -> dict[str, Any]:
            # On the writer thread, after the last record: the file's digest is final.
            if empty:
                for path in (file.path, file.meta_path):
                    with contextlib.suppress(OSError):
                        path.unlink()
            complete = self.complete and not file.failed
            return self.meta(
                duration=duration,
                bytes=file.written,
                sha256=file.sha.hexdigest(),
                complete=complete,
                closed=True,
                closeReason=reason,
                problem=self.problem or file.failed or None,
            )

        done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        writer.close(self.file, finish, done)
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                meta = await done
        except TimeoutError:
            log.error("recording %s: the writer did not finish in time", self.id)
            return RecordingOutcome(self.id, None, self.size, False)
        if empty:
            return None
        complete = bool(meta["complete"])
        self.recordings.metrics.recordings.labels("complete" if complete else "incomplete").inc()
        return RecordingOutcome(self.id, meta["sha256"], int(meta["bytes"]), complete)


def _probe(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".probe-", dir=directory)
        os.close(fd)
        os.unlink(name)
    except OSError:
        return False
    return True
