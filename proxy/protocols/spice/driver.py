"""Runs one SPICE channel's link (:class:`SpiceLinkProxy`) between the browser's WebSocket and
the host's asyncio streams, and says in a close code why a link failed."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from proxy.closecodes import Close
from proxy.protocols import HANDSHAKE_READ
from proxy.protocols.spice.link import (
    CHANNEL_NAMES,
    LINK_OK,
    LINK_PERMISSION_DENIED,
    NEED_DATA,
    ClientLink,
    LinkResult,
    LocalProtocolError,
    RemoteProtocolError,
    ServerLink,
    Side,
    SpiceLinkProxy,
    TicketRewritten,
    link_error_name,
)
from proxy.relay.browser import BrowserSocket, receive_binary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpiceLink:
    """A linked channel. ``to_host``/``to_browser``: bytes already read that belong to the other
    side, for ``Bridge.run(to_host, to_browser)``."""

    channel_type: int
    to_host: bytes
    to_browser: bytes


class _Ended(Exception):
    def __init__(self, close: Close) -> None:
        super().__init__(close.reason)
        self.close = close


async def secure_spice(
    ws: BrowserSocket,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    password: str | None,
    timeout: float,
) -> SpiceLink | Close:
    """Relay one channel's link, putting ``password`` in its ticket; or say why it failed.

    ``timeout`` bounds the whole link. A refusal by the server is forwarded to the browser
    before the Close is returned.
    """
    try:
        link = SpiceLinkProxy(password)
    except LocalProtocolError as exc:
        log.warning("cannot link SPICE: %s", exc.reason)
        return Close.AUTH_FAILED
    try:
        async with asyncio.timeout(timeout):
            return await _relay(link, ws, reader, writer, bool(password))
    except TimeoutError:
        if link.waiting_for is Side.HOST:
            return Close.HANDSHAKE_TIMEOUT
        return Close.PROTOCOL_ERROR
    except RemoteProtocolError as exc:
        log.warning("SPICE link failed: %s", exc.reason)
        return Close.HOST_PROTOCOL if exc.side is Side.HOST else Close.PROTOCOL_ERROR
    except _Ended as ended:
        return ended.close


async def _relay(
    link: SpiceLinkProxy,
    ws: BrowserSocket,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    has_password: bool,
) -> SpiceLink | Close:
    while True:
        event = link.next_event()
        if event is NEED_DATA:
            if link.waiting_for is Side.HOST:
                link.receive_from_host(await _read_host(reader))
            else:
                link.receive_from_browser(await _read_browser(ws))
        elif isinstance(event, ClientLink | TicketRewritten):
            await _to_host(writer, event.data)
        else:
            await _to_browser(ws, event.data)
            code = event.error if isinstance(event, ServerLink) else event.code
            if code != LINK_OK:
                return _refusal(code, link.channel_type, has_password)
            if isinstance(event, LinkResult):
                to_host, to_browser = link.trailing_data
                assert link.channel_type is not None
                return SpiceLink(link.channel_type, to_host, to_browser)


async def _read_host(reader: asyncio.StreamReader) -> bytes:
    try:
        data = await reader.read(HANDSHAKE_READ)
    except ConnectionError:
        data = b""
    if not data:
        raise _Ended(Close.HOST_CLOSED)
    return data


async def _read_browser(ws: BrowserSocket) -> bytes:
    data = await receive_binary(ws)
    if isinstance(data, Close):
        raise _Ended(data)
    return data


async def _to_host(writer: asyncio.StreamWriter, data: bytes) -> None:
    try:
        writer.write(data)
        await writer.drain()
    except ConnectionError:
        raise _Ended(Close.HOST_CLOSED) from None


async def _to_browser(ws: BrowserSocket, data: bytes) -> None:
    try:
        await ws.send_bytes(data)
    except ConnectionError:
        raise _Ended(Close.BROWSER_CLOSED) from None


def _refusal(code: int, channel_type: int | None, has_password: bool) -> Close:
    channel = CHANNEL_NAMES.get(channel_type or 0, f"type {channel_type}")
    log.warning("SPICE server refused the %s channel: %s", channel, link_error_name(code))
    if code == LINK_PERMISSION_DENIED:
        return Close.AUTH_FAILED if has_password else Close.PASSWORD_UNKNOWN
    return Close.HOST_PROTOCOL
