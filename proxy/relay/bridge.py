"""The WebSocket <-> TCP pump between a browser and a VM's console port.

Bytes pass unchanged both ways, except what a ``transform`` (the RFB client-stream filter: the
shared flag, view-only consoles) takes out of the browser's stream. Each direction holds a
bounded amount of data: the host link pauses reading at a fixed limit (proxy.relay.hostlink),
and ``WebSocketResponse.send_bytes`` waits for the browser's socket to drain, so a browser that
stops reading makes the proxy stop reading the host. The other way, aiohttp pauses reading the
browser when its message queue is full, and we wait for the host socket to drain before taking
the next message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import WSCloseCode, WSMsgType
from aiohttp.http_websocket import WebSocketError

from proxy.closecodes import Close
from proxy.relay.browser import BrowserSocket
from proxy.relay.direct import BrowserWire
from proxy.relay.hostlink import HostLink

log = logging.getLogger(__name__)

# Browser bytes -> (the bytes to send the host, whether they held user input).
Transform = Callable[[bytes], tuple[bytes, bool]]
# Sees every chunk the host sends the browser, before it is sent (a recording).
Observer = Callable[[bytes], None]
# Sees every chunk sent to the host; answers bytes to send the host right after it, at a message
# boundary (a recording's keyframe request), almost always b"".
HostTap = Callable[[bytes], bytes]


@dataclass(frozen=True, slots=True)
class BridgeLimits:
    # None: this socket carries no user input (a SPICE display channel), so it never idles.
    idle_timeout: float | None
    max_session: float


@dataclass(slots=True)
class BridgeStats:
    """Live counters of one console, read by the registry's listing while it runs."""

    bytes_to_host: int = 0
    bytes_to_browser: int = 0
    # The event loop's time of the last user input (None: this socket carries no input).
    last_input: float | None = None


class Bridge:
    """Pumps one console. The handler task reads the WebSocket; host bytes are written to it
    as they arrive (see below), or by one helper task while they must wait.

    On a plain TCP browser socket (proxy.relay.direct) a host chunk is framed and written from
    the host link's ``data_received`` itself: no task wakes per chunk (lower latency) and an idle
    console holds no helper task at all (its task, frame and future: ~0.7 KiB). The helper task
    runs only while the browser's socket is backed up and to end the console once the host has
    closed; then it hands back. On TLS it runs throughout.

    Idle and session limits are one timer, re-armed only when it fires, so a message costs no
    timer work at all.
    """

    __slots__ = (
        "_closer",
        "_ended",
        "_host_done",
        "_idle_ends",
        "_pump",
        "_session_ends",
        "_stopped",
        "_timer",
        "_wire",
        "host",
        "host_tap",
        "is_input",
        "limits",
        "observe",
        "stats",
        "transform",
        "ws",
    )

    def __init__(
        self,
        ws: BrowserSocket,
        host: HostLink,
        limits: BridgeLimits,
        is_input: Callable[[bytes], bool] | None = None,
        stats: BridgeStats | None = None,
        transform: Transform | None = None,
        observe: Observer | None = None,
        host_tap: HostTap | None = None,
    ) -> None:
        self.ws = ws
        self.host = host
        self.limits = limits
        # Says whether browser bytes held user input; None counts every byte (raw consoles).
        self.is_input = is_input
        self.stats = stats or BridgeStats()
        # Rewrites or drops browser bytes and says whether they held input (then is_input is
        # not asked).
        self.transform = transform
        # Off (None) unless the console is recorded: then one call per chunk.
        self.observe = observe
        self.host_tap = host_tap
        self._host_done: Close | None = None
        self._ended: Close | None = None
        self._closer: asyncio.Task[bool] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._idle_ends = 0.0
        self._session_ends = 0.0
        self._wire: BrowserWire | None = None
        self._pump: asyncio.Task[None] | None = None
        self._stopped = False

    async def run(self, to_host: bytes = b"", to_browser: bytes = b"") -> Close:
        """Pump until either side ends or a limit is reached; return why it ended.

        ``to_host``/``to_browser`` are bytes a handshake already read from the other side.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.limits.idle_timeout is not None:
            self.stats.last_input = now
        self._session_ends = now + self.limits.max_session
        self._idle_ends = now + (self.limits.idle_timeout or self.limits.max_session)
        self._timer = loop.call_at(min(self._idle_ends, self._session_ends), self._check)
        host = self.host
        wire = self._wire = BrowserWire.of(self.ws)
        if wire is not None:
            host.sink, host.wake = self._take, self._start_pump
        if wire is None or to_browser or host.waiting:
            self._start_pump(to_browser)
        try:
            if to_host and self.transform is not None:
                to_host, _ = self.transform(to_host)
            if to_host:
                self.host.write(to_host)
                if self.host_tap is not None and (extra := self.host_tap(to_host)):
                    self.host.write(extra)
            reason = await self._browser_to_host()
        except ConnectionError:
            reason = Close.HOST_CLOSED
        finally:
            self._stopped = True
            host.sink = host.wake = None
            self._timer.cancel()
            if (pump := self._pump) is not None:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
            if (closer := self._closer) is not None:
                # Waited for, not awaited: aiohttp cancels a close that waits for a browser
                # socket to drain when that socket goes away, and that cancellation is the
                # closer's, not this task's (the limit must still be reported and acted on).
                await asyncio.wait((closer,))
                if not closer.cancelled():
                    closer.exception()  # retrieved: a failed close is not an error here
            self.host.close()
        reason = self.outcome(reason)
        await self.ws.close(code=reason.code, message=reason.reason.encode())
        return reason

    def outcome(self, reason: Close) -> Close:
        """Why the console ended: a limit or an interruption, else the host's end, else
        ``reason`` (also when :meth:`run` was cancelled before it could say)."""
        return self._ended or self._host_done or reason

    def stop(self, reason: Close) -> None:
        """End the console from outside (revocation, drain, another channel's limit) with
        ``reason``: the host side is dropped at once (a host that stopped reading cannot hold the
        browser's close handshake up), and the browser is told ``reason``, not that the host
        closed."""
        if self._ended is None:
            self._ended = reason
        self.host.abort()

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now >= self._session_ends:
            self._end(Close.SESSION_LIMIT)
        elif self.limits.idle_timeout is not None and now >= self._idle_ends:
            self._end(Close.IDLE)
        else:
            self._timer = loop.call_at(min(self._idle_ends, self._session_ends), self._check)

    def _end(self, reason: Close) -> None:
        self._ended = reason
        # Closing wakes the handler's receive() with CLOSING.
        self._closer = asyncio.ensure_future(
            self.ws.close(code=reason.code, message=reason.reason.encode())
        )

    async def _browser_to_host(self) -> Close:
        ws, host, stats = self.ws, self.host, self.stats
        idle = self.limits.idle_timeout
        loop = asyncio.get_running_loop()
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.BINARY:
                data = msg.data
                if self.transform is not None:
                    data, saw_input = self.transform(data)
                else:
                    saw_input = self.is_input is None or self.is_input(data)
                if idle is not None and saw_input:
                    stats.last_input = now = loop.time()
                    self._idle_ends = now + idle
                if data:
                    stats.bytes_to_host += len(data)
                    host.write(data)
                    if self.host_tap is not None and (extra := self.host_tap(data)):
                        host.write(extra)
                    await host.drain()
            elif msg.type is WSMsgType.TEXT:
                return Close.TEXT_FRAME
            elif msg.type is WSMsgType.ERROR:
                return _error_close(msg.data)
            else:  # CLOSE, CLOSING, CLOSED: the browser left, or a close from our side
                return Close.BROWSER_CLOSED

    def _take(self, data: bytes) -> bool:
        """The host link's sink: write ``data`` now if the browser's socket can take it."""
        wire = self._wire
        if self._pump is not None or wire is None or not wire.ready():
            return False  # the host link queues it and wakes the helper task
        self.stats.bytes_to_browser += len(data)
        if self.observe is not None:
            self.observe(data)
        wire.send(data)
        if wire.paused:  # backed up: read no more from the host until the browser drains
            self._start_pump()
        return True

    def _start_pump(self, first: bytes = b"") -> None:
        if self._pump is None and not self._stopped:
            self._pump = asyncio.ensure_future(self._host_to_browser(first))

    async def _host_to_browser(self, first: bytes) -> None:
        try:
            if await self._pump_host(first):
                return  # back to writing from the host link's data_received
        except ConnectionResetError:
            self.host.reset = True
        except ConnectionError:
            pass
        done = self._host_done = Close.HOST_RESET if self.host.reset else Close.HOST_CLOSED
        # Wakes the handler's receive() with CLOSING; close() itself sends our close frame.
        await self.ws.close(code=done.code, message=done.reason.encode())

    async def _pump_host(self, data: bytes) -> bool:
        """Move host bytes until the direct path can take over (True) or the host ended."""
        ws, host, stats, observe, wire = self.ws, self.host, self.stats, self.observe, self._wire
        while True:
            if not data:
                if wire is not None:
                    await wire.drain()
                    if not host.waiting and wire.ready():
                        self._pump = None
                        return True
                data = await host.read()
                if not data:
                    return False
            stats.bytes_to_browser += len(data)
            if observe is not None:
                observe(data)
            if wire is not None and wire.ready():
                wire.send(data)
            else:
                await ws.send_bytes(data)
            data = b""


def _error_close(exc: object) -> Close:
    too_big = isinstance(exc, WebSocketError) and exc.code == WSCloseCode.MESSAGE_TOO_BIG
    return Close.FRAME_TOO_BIG if too_big else Close.PROTOCOL_ERROR
