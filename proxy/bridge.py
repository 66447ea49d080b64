"""The WebSocket <-> TCP pump between a browser and a VM's console port.

Bytes pass unchanged both ways. Each direction holds a bounded amount of data: the host
socket's reader pauses at a fixed limit, and ``WebSocketResponse.send_bytes`` waits for the
browser's socket to drain, so a browser that stops reading makes the proxy stop reading the host.
The other way, aiohttp pauses reading the browser when its message queue is full, and we wait
for the host socket to drain before taking the next message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.http_websocket import WebSocketError

from proxy.closecodes import Close

log = logging.getLogger(__name__)

# 64-256 KiB reads move the most bytes per system call (shared/reference/PERFORMANCE_NOTES.md).
READ_SIZE = 256 * 1024


@dataclass(frozen=True)
class BridgeLimits:
    # None: this socket carries no user input (a SPICE display channel), so it never idles.
    idle_timeout: float | None
    max_session: float


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass
class BridgeStats:
    bytes_to_host: int = 0
    bytes_to_browser: int = 0
    started: float = field(default_factory=time.monotonic)


async def connect_host(host: str, port: int, timeout: float) -> Streams | Close:
    """Open the TCP connection to the console, or say why it could not be opened."""
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.open_connection(host, port, limit=READ_SIZE)
    except TimeoutError:
        return Close.HOST_TIMEOUT
    except OSError as exc:
        log.info("console host %s:%s unreachable: %s", host, port, exc.strerror or exc)
        return Close.HOST_UNREACHABLE


class Bridge:
    """Pumps one console. The handler task reads the WebSocket; one helper task writes it."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        limits: BridgeLimits,
        is_input: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.ws = ws
        self.reader = reader
        self.writer = writer
        self.limits = limits
        # Says whether browser bytes held user input; None counts every byte (raw consoles).
        self.is_input = is_input
        self.stats = BridgeStats()
        self._host_done: Close | None = None

    async def run(self, to_host: bytes = b"", to_browser: bytes = b"") -> Close:
        """Pump until either side ends or a limit is reached; return why it ended.

        ``to_host``/``to_browser`` are bytes a handshake already read from the other side.
        """
        if to_host:
            self.writer.write(to_host)
        if to_browser:
            await self.ws.send_bytes(to_browser)
        downstream = asyncio.create_task(self._host_to_browser())
        try:
            reason = await self._browser_to_host()
        finally:
            downstream.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await downstream
            self.writer.close()
        reason = self._host_done or reason
        await self.ws.close(code=reason.code, message=reason.reason.encode())
        return reason

    async def _browser_to_host(self) -> Close:
        session_ends = self.stats.started + self.limits.max_session
        last_input = time.monotonic()
        idle_timeout = self.limits.idle_timeout or self.limits.max_session
        while True:
            now = time.monotonic()
            idle_ends = last_input + idle_timeout
            try:
                msg = await self.ws.receive(timeout=max(0.0, min(idle_ends, session_ends) - now))
            except TimeoutError:
                return Close.SESSION_LIMIT if time.monotonic() >= session_ends else Close.IDLE
            if msg.type is WSMsgType.BINARY:
                if self.is_input is None or self.is_input(msg.data):
                    last_input = time.monotonic()
                self.stats.bytes_to_host += len(msg.data)
                self.writer.write(msg.data)
                try:
                    await self.writer.drain()
                except ConnectionError:
                    return Close.HOST_CLOSED
            elif msg.type is WSMsgType.TEXT:
                return Close.TEXT_FRAME
            elif msg.type is WSMsgType.ERROR:
                return _error_close(msg.data)
            else:  # CLOSE, CLOSING, CLOSED: the browser left, or our helper task closed
                return Close.BROWSER_CLOSED

    async def _host_to_browser(self) -> None:
        try:
            while data := await self.reader.read(READ_SIZE):
                self.stats.bytes_to_browser += len(data)
                await self.ws.send_bytes(data)
        except ConnectionError:
            pass
        self._host_done = Close.HOST_CLOSED
        # Wakes the handler's receive() with CLOSING; close() itself sends our close frame.
        await self.ws.close(code=Close.HOST_CLOSED.code, message=Close.HOST_CLOSED.reason.encode())


def _error_close(exc: object) -> Close:
    too_big = isinstance(exc, WebSocketError) and exc.code == WSCloseCode.MESSAGE_TOO_BIG
    return Close.FRAME_TOO_BIG if too_big else Close.PROTOCOL_ERROR
