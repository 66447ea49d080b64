"""The browser's side of a console as the relay and the protocol drivers use it.

aiohttp's ``WebSocketResponse`` is one; keeping the relay on this small surface keeps it free of
aiohttp's web layer (requests, responses, the application) and lets tests pass their own.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import WSMsgType

from proxy.closecodes import Close


class BrowserMessage(Protocol):
    @property
    def type(self) -> WSMsgType: ...

    @property
    def data(self) -> Any: ...


class BrowserSocket(Protocol):
    @property
    def closed(self) -> bool: ...

    async def receive(self, timeout: float | None = None) -> BrowserMessage: ...

    async def send_bytes(self, data: bytes, compress: int | None = None) -> None: ...

    async def close(
        self, *, code: int = 1000, message: bytes = b"", drain: bool = True
    ) -> bool: ...


async def receive_binary(browser: BrowserSocket) -> bytes | Close:
    """The next binary message, or why there is none (text, a broken or a closed socket)."""
    msg = await browser.receive()
    if msg.type is WSMsgType.BINARY:
        data: bytes = msg.data
        return data
    if msg.type is WSMsgType.TEXT:
        return Close.TEXT_FRAME
    if msg.type is WSMsgType.ERROR:
        return Close.PROTOCOL_ERROR
    return Close.BROWSER_CLOSED
