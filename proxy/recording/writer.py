"""The one thread that writes recordings, fed by the event loop through a bounded queue.

The event loop never touches a recording's file: it hands (file, header, bytes) to this thread
and goes on. The queue is bounded in bytes (``QUEUE_BYTES``, all recordings together): when the
disk falls that far behind, :meth:`RecordingWriter.put` says no and the caller gives up on that
recording instead of waiting. Each record goes out with one ``os.writev`` and no user-space
buffer, so what was written survives the process being killed (it is in the page cache).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proxy.recording.format import MAGIC

log = logging.getLogger(__name__)

QUEUE_BYTES = 32 * 1024 * 1024


class RecordingFile:
    """One recording's file, as the writer thread sees it (the loop reads ``sha256`` at close)."""

    __slots__ = ("failed", "fd", "meta_path", "on_failure", "path", "sha", "written")

    def __init__(self, path: Path, on_failure: Callable[[str], None]) -> None:
        self.path = path
        self.meta_path = path.with_suffix(".json")
        self.fd: int | None = None
        self.sha = hashlib.sha256()
        self.written = 0
        self.failed = ""
        # Called on the event loop when a write fails.
        self.on_failure = on_failure


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` atomically: readers on other instances never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, path)


class RecordingWriter:
    """Started with the application, stopped at its cleanup; one per process."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = QUEUE_BYTES) -> None:
        self._loop = loop
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._queued = 0
        self._limit = limit
        self._thread = threading.Thread(target=self._run, name="recording-writer", daemon=True)
        self._thread.start()

    @property
    def queued_bytes(self) -> int:
        return self._queued

    def open(
        self, file: RecordingFile, meta: dict[str, Any], done: asyncio.Future[str] | None = None
    ) -> None:
        """Create the file and its first metadata; ``done`` gets "" or the failure."""
        self._queue.put(("open", file, meta, done))

    def put(self, file: RecordingFile, parts: tuple[bytes, bytes]) -> bool:
        """Queue one record (header, data); False when the queue is full (nothing queued)."""
        size = len(parts[0]) + len(parts[1])
        with self._lock:
            if self._queued + size > self._limit:
                return False
            self._queued += size
        self._queue.put(("data", file, parts, size))
        return True

    def close(
        self,
        file: RecordingFile,
        finish: Callable[[RecordingFile], dict[str, Any]],
        done: asyncio.Future[dict[str, Any]],
    ) -> None:
        """Close the file, then write ``finish(file)`` as its metadata and hand it to ``done``."""
        self._queue.put(("close", file, finish, done))

    def stop(self) -> None:
        """Write what is queued, then end the thread (waits for it)."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            op, file = item[0], item[1]
            try:
                if op == "data":
                    with self._lock:
                        self._queued -= item[3]
                    if file.fd is not None:
                        self._write(file, item[2])
                elif op == "open":
                    self._open(file, item[2], item[3])
                else:
                    self._close(file, item[2], item[3])
            except Exception:  # noqa: BLE001 - the thread must outlive any one recording
                log.exception("recording writer failed on %s", file.path.name)

    def _open(
        self, file: RecordingFile, meta: dict[str, Any], done: asyncio.Future[str] | None
    ) -> None:
        try:
            file.path.parent.mkdir(parents=True, exist_ok=True)
            file.fd = os.open(file.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o640)
            self._write(file, (MAGIC, b""))
            write_json(file.meta_path, meta)
        except OSError as exc:
            self._fail(file, f"cannot create the recording: {exc.strerror or exc}")
        if done is not None:
            self._call(_settle, done, file.failed)

    def _write(self, file: RecordingFile, parts: tuple[bytes, bytes]) -> None:
        assert file.fd is not None
        try:
            written = os.writev(file.fd, parts) if parts[1] else os.write(file.fd, parts[0])
            expected = len(parts[0]) + len(parts[1])
            if written != expected:
                raise OSError(28, f"short write ({written} of {expected} bytes)")
        except OSError as exc:
            self._fail(file, f"write failed: {exc.strerror or exc}")
            return
        file.sha.update(parts[0])
        file.sha.update(parts[1])
        file.written += written

    def _close(
        self,
        file: RecordingFile,
        finish: Callable[[RecordingFile], dict[str, Any]],
        done: asyncio.Future[dict[str, Any]],
    ) -> None:
        if file.fd is not None:
            try:
                os.close(file.fd)
            except OSError as exc:
                self._fail(file, f"close failed: {exc.strerror or exc}")
            file.fd = None
        meta = finish(file)
        if file.path.exists():
            try:
                write_json(file.meta_path, meta)
            except OSError as exc:
                log.error("cannot write the metadata of %s: %s", file.path.name, exc.strerror)
        self._call(_settle, done, meta)

    def _fail(self, file: RecordingFile, reason: str) -> None:
        first = not file.failed
        file.failed = file.failed or reason
        if file.fd is not None:
            try:
                os.close(file.fd)
            except OSError:
                pass
            file.fd = None
        if first:
            self._call(file.on_failure, reason)

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)
