"""The hypervisor side of a console after its handshake: a lean protocol with flow control.

asyncio's StreamReader copies every chunk into its buffer and out again; for a console that
moves screen updates that is two extra copies per byte. Once the handshake (which uses streams)
is done, the transport is handed to :class:`HostLink`, which keeps the chunks the kernel gave
it, as they are, in a bounded queue: reading pauses above ``limit`` bytes and resumes below half.
Writing honours the transport's own flow control (``pause_writing``/``resume_writing``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import cast

LIMIT = 512 * 1024


class HostLink(asyncio.Protocol):
    __slots__ = (
        "_chunks",
        "_drained",
        "_eof",
        "_limit",
        "_reading_paused",
        "_size",
        "_waiter",
        "_writing_paused",
        "reset",
        "sink",
        "transport",
        "wake",
    )

    def __init__(self, limit: int = LIMIT) -> None:
        # Only while chunks wait: an idle console holds none (an empty deque is ~600 bytes).
        self._chunks: deque[bytes] | None = None
        self._size = 0
        self._limit = limit
        self._eof = False
        self._reading_paused = False
        self._writing_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None
        # The host reset the connection (rather than closing it in order).
        self.reset = False
        # Takes a chunk as it arrives, if it can (True); else the chunk is queued for read().
        self.sink: Callable[[bytes], bool] | None = None
        # Told when something waits for read(): a chunk was queued, or the host has closed.
        self.wake: Callable[[], None] | None = None

    @classmethod
    def adopt(cls, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> HostLink:
        """Take over the connection behind a handshake's streams, with anything still unread."""
        link = cls()
        # A read-write transport (uvloop's does not subclass asyncio.Transport).
        transport = cast(asyncio.Transport, writer.transport)
        # Bytes that reached the StreamReader after the handshake's last read belong to us;
        # StreamReader has no public way to hand them over.
        buffer: bytearray = reader._buffer  # type: ignore[attr-defined]
        leftover = bytes(buffer)
        buffer.clear()
        if leftover:
            link.data_received(leftover)
        if reader.at_eof() or transport.is_closing():
            link._eof = True
        transport.set_protocol(link)
        link.transport = transport
        if not transport.is_closing() and not transport.is_reading():
            transport.resume_reading()  # the StreamReader may have paused it
        return link

    # ----- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._chunks is None and self.sink is not None and self.sink(data):
            return
        if self._chunks is None:
            self._chunks = deque()
        self._chunks.append(data)
        self._size += len(data)
        if self._size > self._limit and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.reset = isinstance(exc, ConnectionResetError)
        self._eof = True
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    # ----- what the bridge uses ----------------------------------------------------------

    async def read(self) -> bytes:
        """The next chunk from the host, as received; b"" once the host has closed."""
        while not self._chunks:
            if self._eof:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        assert self._chunks is not None
        data = self._chunks.popleft()
        if not self._chunks:
            self._chunks = None
        self._size -= len(data)
        if self._reading_paused and self._size <= self._limit // 2 and self.transport:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the console host connection is closed")
        self.transport.write(data)

    async def drain(self) -> None:
        if self.transport is not None and self.transport.is_closing():
            raise ConnectionResetError("the console host connection is closed")
        if self._writing_paused:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection now, unsent bytes included: close() would wait for a host that
        stopped reading to take them, and a writer waiting on drain() would wait with it."""
        if self.transport is not None:
            self.transport.abort()

    @property
    def waiting(self) -> bool:
        """Whether read() would return at once: chunks are queued, or the host has closed."""
        return bool(self._chunks) or self._eof

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        if self.wake is not None:
            self.wake()
