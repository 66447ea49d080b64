"""Host -> browser frames written straight onto the browser's socket, and spliced when they can be.

Why this bypasses aiohttp (speed, measured on this project's 2-core machines): the proxy's one
core is the bottleneck of every downstream console, 85-90 % of it in the kernel copying bytes.
``WebSocketResponse.send_bytes`` costs a coroutine and two ``send`` calls per frame (aiohttp
writes the header and a large payload separately, and uvloop sends each at once, the header as
its own TCP segment); :meth:`BrowserWire.send` writes header and payload with one ``writev``.
Further, while a host streams (a burst: a chunk of :data:`SPLICE_FROM` bytes or more), its bytes
need not enter Python at all: ``splice(2)`` moves them from the host's socket into a pipe and from
the pipe into the browser's socket behind a frame header, two copies per byte fewer.

Why it stays correct while aiohttp owns the browser socket (it reads it, and writes pongs, pings
and close frames through its transport):

- A frame is written without yielding to the event loop: whatever aiohttp writes comes before or
  after it, never inside. Direct writes happen only while the transport has nothing queued
  (``get_write_buffer_size() == 0``), so they never overtake bytes aiohttp already wrote.
- When the browser's socket is full mid-frame, the rest of the frame goes into the transport
  (read out of the pipe), so anything aiohttp writes later queues behind it; then we wait for the
  transport's flow control like ``send_bytes`` does, and use plain writes until its queue is empty.
- Nothing is written once aiohttp started closing (our close frame must be the last frame):
  :meth:`BrowserWire.ready` is false and the caller falls back to ``send_bytes``, which raises
  as before.
- The host side is spliced only with its transport paused and nothing left in the host link's
  queue; the pipe is shared per thread and always empty whenever we yield. TLS on either side,
  or a recorded console (whose recorder must see every chunk), keeps the copying path.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import os
import socket
import struct
import threading
from typing import TYPE_CHECKING, Any

from proxy.relay.hostlink import HostLink

if TYPE_CHECKING:
    from proxy.relay.bridge import BridgeStats

# A host chunk at least this large means the host is streaming: splice what follows it.
SPLICE_FROM = 64 * 1024
# The largest frame spliced at once (the pipe is made this large). Browsers take any frame size.
FRAME_MAX = 1024 * 1024
# Bytes spliced between two yields to the event loop, so other consoles get their turn.
YIELD_EVERY = 1024 * 1024

_SPLICE_IN = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
_SPLICE_OUT = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
_LEN2 = struct.Struct("!BBH").pack
_LEN8 = struct.Struct("!BBQ").pack
BINARY_FIN = 0x82


def frame_header(size: int) -> bytes:
    """The header of an unmasked, final binary frame of ``size`` bytes (RFC 6455, 5.2)."""
    if size < 126:
        return bytes((BINARY_FIN, size))
    if size < 65536:
        return _LEN2(BINARY_FIN, 126, size)
    return _LEN8(BINARY_FIN, 127, size)


class _Pipe(threading.local):
    """One pipe per thread, empty whenever the event loop runs something else."""

    fds: tuple[int, int] | None = None

    def get(self) -> tuple[int, int] | None:
        if self.fds is None:
            try:
                r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                return None  # out of descriptors: copy this time
            with contextlib.suppress(OSError):  # pipe-max-size may be lower: a smaller pipe
                fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, FRAME_MAX)
            self.fds = (r, w)
        return self.fds

    def take(self, size: int) -> bytes:
        """Read ``size`` bytes back out of the pipe (the browser's socket is full)."""
        assert self.fds is not None
        parts = []
        while size > 0:
            try:
                part = os.read(self.fds[0], size)
            except BlockingIOError:
                part = b""
            if not part:  # cannot happen; never leave a pipe that might hold stale bytes
                self.discard()
                raise ConnectionAbortedError("spliced bytes went missing")
            parts.append(part)
            size -= len(part)
        return b"".join(parts)

    def discard(self) -> None:
        if self.fds is not None:
            for fd in self.fds:
                os.close(fd)
        self.fds = None


PIPE = _Pipe()

# send(2) with MSG_MORE, which Python offers only on socket objects, and a socket object made
# for a descriptor aiohttp's transport owns would close it when collected. MSG_MORE keeps the
# header in the kernel until the spliced payload joins it, one TCP segment stream, not two.
_libc_send = ctypes.CDLL(None, use_errno=True).send
_libc_send.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int)
_libc_send.restype = ctypes.c_ssize_t
_HEADER_FLAGS = socket.MSG_MORE | socket.MSG_DONTWAIT


def _send_header(fd: int, header: bytes) -> int:
    """How much of ``header`` went out (0 when none could, or the socket is broken)."""
    return max(int(_libc_send(fd, header, len(header), _HEADER_FLAGS)), 0)


class BrowserWire:
    """Writes binary frames onto the browser's plain TCP socket, beside aiohttp's writer."""

    __slots__ = ("_fd", "_protocol", "_transport", "_writer", "_ws")

    def __init__(self, ws: Any, writer: Any, transport: asyncio.Transport, fd: int) -> None:
        self._ws = ws
        self._writer = writer
        self._protocol = writer.protocol
        self._transport = transport
        self._fd = fd

    @classmethod
    def of(cls, ws: object) -> BrowserWire | None:
        """The wire under an aiohttp ``WebSocketResponse``; None for TLS or anything else."""
        writer = getattr(ws, "_writer", None)
        transport = getattr(writer, "transport", None)
        if transport is None or getattr(writer, "use_mask", True):
            return None
        if getattr(writer, "compress", 0):  # per-message deflate: aiohttp's writer must compress
            return None
        if transport.get_extra_info("sslcontext") or transport.get_extra_info("ssl_object"):
            return None
        sock = transport.get_extra_info("socket")
        if sock is None or transport.is_closing():
            return None
        return cls(ws, writer, transport, sock.fileno())

    def ready(self) -> bool:
        """Whether a frame may go straight onto the socket now."""
        transport = self._transport
        return (
            not self._ws.closed
            and not self._writer._closing
            and not transport.is_closing()
            and not transport.get_write_buffer_size()
        )

    @property
    def paused(self) -> bool:
        return bool(self._protocol.writing_paused)

    async def drain(self) -> None:
        """Wait, as ``send_bytes`` would, while the transport holds more than its high mark."""
        if self._protocol.writing_paused:
            await self._protocol._drain_helper()

    def send(self, data: bytes) -> None:
        """One frame holding ``data``; only when :meth:`ready`."""
        header = frame_header(len(data))
        try:
            sent = os.writev(self._fd, (header, data))
        except OSError:  # full (EAGAIN), or broken: the transport finds out and reports it
            sent = 0
        if sent < len(header):
            self._transport.writelines((header[sent:], data))
        elif sent < len(header) + len(data):
            self._transport.write(data[sent - len(header) :])

    def send_spliced(self, size: int) -> None:
        """One frame of the ``size`` bytes waiting in the pipe; only when :meth:`ready`."""
        header = frame_header(size)
        sent = _send_header(self._fd, header)
        if sent < len(header):
            self._transport.writelines((header[sent:], PIPE.take(size)))
            return
        assert PIPE.fds is not None
        source = PIPE.fds[0]
        while size:
            try:
                moved = os.splice(source, self._fd, size, flags=_SPLICE_OUT)
            except OSError:
                break
            if not moved:
                break
            size -= moved
        if size:
            self._transport.write(PIPE.take(size))


async def splice_burst(host: HostLink, wire: BrowserWire, stats: BridgeStats) -> bool:
    """Splice the host's bytes to the browser until the host has none waiting; False at EOF.

    Raises ConnectionResetError when the host reset the connection, as ``host.read`` would.
    """
    source = host.splice_source()
    if source is None:
        return True
    pipe = PIPE.get()
    eof = False
    try:
        if pipe is None:
            return True
        moved_since_yield = 0
        while wire.ready() and not host.closing:
            try:
                size = os.splice(source, pipe[1], FRAME_MAX, flags=_SPLICE_IN)
            except BlockingIOError:
                return True  # nothing waiting: the transport reads (and wakes us) again
            except ConnectionResetError:
                raise
            except OSError:
                size = 0  # what the transport would have seen as a lost connection
            if not size:
                eof = True
                return False
            stats.bytes_to_browser += size
            wire.send_spliced(size)
            moved_since_yield += size
            if wire.paused:
                await wire.drain()
                moved_since_yield = 0
            elif moved_since_yield >= YIELD_EVERY:
                await asyncio.sleep(0)
                moved_since_yield = 0
        return True
    finally:
        host.splice_done(eof)
