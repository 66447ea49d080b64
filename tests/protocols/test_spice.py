"""The SPICE link rewrite: the sans-IO core fed three ways, and the driver (``secure_spice`` then
``Bridge``) over real sockets against a scripted SPICE server.

Real QEMU SPICE behind the real application is in tests/protocols/test_spice_app.py."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from proxy.closecodes import Close
from proxy.protocols.spice.driver import SpiceLink, secure_spice
from proxy.protocols.spice.link import (
    CURSOR,
    INPUTS,
    NEED_DATA,
    ClientLink,
    LinkResult,
    LocalProtocolError,
    RemoteProtocolError,
    ServerLink,
    Side,
    SpiceLinkProxy,
    State,
    TicketRewritten,
)
from proxy.relay.bridge import Bridge, BridgeLimits
from proxy.relay.hostlink import HostLink
from tests.support.spice_client import (
    CAP_AUTH_SELECTION,
    CAP_MINI_HEADER,
    HEADER,
    LINK_MESS,
    LINK_PERMISSION_DENIED,
    RawSpiceClient,
    link_mess,
    ticket,
)
from tests.support.spice_server import decrypt, link_reply, public_der, server_key

# --- the sans-IO core ---------------------------------------------------------------------


def drive(proxy: SpiceLinkProxy, chunks: dict[Side, list[bytes]]) -> list[Any]:
    """Feed each side's chunks whenever the link waits for that side; return the events."""
    events: list[Any] = []
    while proxy.state is not State.DONE:
        event = proxy.next_event()
        if event is NEED_DATA:
            side = proxy.waiting_for
            assert side is not None
            if not chunks[side]:
                return events
            data = chunks[side].pop(0)
            (proxy.receive_from_browser if side is Side.BROWSER else proxy.receive_from_host)(data)
        else:
            events.append(event)
    return events


def split(messages: list[bytes], how: str) -> list[bytes]:
    if how == "bytewise":
        return [bytes([b]) for b in b"".join(messages)]
    if how == "together":
        return [b"".join(messages)]
    return list(messages)


@pytest.mark.parametrize("how", ["whole", "bytewise", "together"])
def test_link_rewrites_only_the_ticket(how: str) -> None:
    browser = [link_mess(INPUTS, channel_id=0, connection_id=77), ticket()]
    host = [link_reply(), struct.pack("<I", 0)]
    proxy = SpiceLinkProxy("s3cret")
    events = drive(proxy, {Side.BROWSER: split(browser, how), Side.HOST: split(host, how)})

    assert [type(e) for e in events] == [ClientLink, ServerLink, TicketRewritten, LinkResult]
    assert events[0] == ClientLink(77, INPUTS, 0, browser[0])
    assert events[1] == ServerLink(0, host[0])
    rewritten = events[2].data
    assert len(rewritten) == 4 + 128 and rewritten[:4] == struct.pack("<I", 1)
    assert decrypt(rewritten[4:]) == b"s3cret\0"  # as spice-html5 sends it: with its NUL
    assert events[3] == LinkResult(0, host[1])
    assert proxy.trailing_data == (b"", b"")
    assert proxy.channel_type == INPUTS


def test_trailing_bytes_belong_to_the_stream() -> None:
    browser = [link_mess(), ticket() + b"client-after"]
    host = [link_reply(), struct.pack("<I", 0) + b"server-after"]
    proxy = SpiceLinkProxy(None)
    events = drive(proxy, {Side.BROWSER: browser, Side.HOST: host})
    assert isinstance(events[-1], LinkResult) and events[-1].data == bytes(4)
    assert proxy.trailing_data == (b"client-after", b"server-after")
    assert decrypt(events[2].data[4:]) == b"\0"  # no password: an empty ticket


def test_every_message_at_once_then_byte_by_byte_trailing() -> None:
    browser = b"".join([link_mess(), ticket(), b"xyz"])
    host = b"".join([link_reply(), bytes(4), b"abc"])
    proxy = SpiceLinkProxy("pw")
    drive(proxy, {Side.BROWSER: split([browser], "bytewise"), Side.HOST: [host]})
    # Byte by byte, the core stops asking for the browser as soon as the ticket is whole.
    assert proxy.state is State.DONE
    assert proxy.trailing_data == (b"", b"abc")


@pytest.mark.parametrize(
    ("client_caps", "server_caps"),
    [
        ((CAP_MINI_HEADER,), (CAP_AUTH_SELECTION | CAP_MINI_HEADER,)),
        ((CAP_AUTH_SELECTION,), (CAP_MINI_HEADER,)),
        ((), ()),
    ],
)
def test_without_auth_selection_the_ticket_stands_alone(
    client_caps: tuple[int, ...], server_caps: tuple[int, ...]
) -> None:
    proxy = SpiceLinkProxy("pw")
    browser = [link_mess(common=client_caps), ticket(mechanism=None) + b"\x01\x02"]
    host = [link_reply(common=server_caps), bytes(4)]
    events = drive(proxy, {Side.BROWSER: browser, Side.HOST: host})
    assert len(events[2].data) == 128 and decrypt(events[2].data) == b"pw\0"
    assert proxy.trailing_data == (b"\x01\x02", b"")


def test_server_link_error_ends_the_link() -> None:
    proxy = SpiceLinkProxy("pw")
    refusal = link_reply(error=5)  # NEED_SECURED
    events = drive(proxy, {Side.BROWSER: [link_mess()], Side.HOST: [refusal + b"junk"]})
    assert events[-1] == ServerLink(5, refusal)
    assert proxy.state is State.DONE
    assert proxy.trailing_data == (b"", b"junk")


def test_wrong_password_result_is_reported() -> None:
    proxy = SpiceLinkProxy("pw")
    result = struct.pack("<I", LINK_PERMISSION_DENIED)
    events = drive(
        proxy, {Side.BROWSER: [link_mess(), ticket()], Side.HOST: [link_reply(), result]}
    )
    assert events[-1] == LinkResult(LINK_PERMISSION_DENIED, result)


def test_link_error_in_place_of_a_result() -> None:
    # spice-server answers an auth mechanism it will not take with a whole link error message.
    proxy = SpiceLinkProxy("pw")
    refusal = link_reply(error=3)
    chunks = {
        Side.BROWSER: [link_mess(), ticket()],
        Side.HOST: [link_reply(), *split([refusal], "bytewise")],
    }
    events = drive(proxy, chunks)
    assert events[-1] == LinkResult(3, refusal)


@pytest.mark.parametrize(
    ("side", "browser", "host", "words"),
    [
        (Side.BROWSER, [b"GET / HTTP/1.1\r\n"], [], "not a SPICE client"),
        (Side.BROWSER, [HEADER.pack(b"REDQ", 2, 2, 1 << 20)], [], "link message of 1048576"),
        (Side.BROWSER, [HEADER.pack(b"REDQ", 2, 2, 4) + bytes(4)], [], "link message of 4"),
        (
            Side.BROWSER,
            [HEADER.pack(b"REDQ", 2, 2, 18) + LINK_MESS.pack(0, 1, 0, 1000, 0, 18)],
            [],
            "capabilities out of bounds",
        ),
        (Side.HOST, [link_mess()], [b"RFB 003.008\n"], "not a SPICE server"),
        (Side.HOST, [link_mess()], [HEADER.pack(b"REDQ", 2, 2, 100) + bytes(100)], "too short"),
        (Side.HOST, [link_mess()], [link_reply(der=b"\x30" + bytes(161))], "unreadable"),
        (Side.BROWSER, [link_mess(), ticket(mechanism=2)], [link_reply()], "mechanism 2"),
    ],
)
def test_bad_bytes_name_the_side(
    side: Side, browser: list[bytes], host: list[bytes], words: str
) -> None:
    proxy = SpiceLinkProxy("pw")
    with pytest.raises(RemoteProtocolError, match=words) as caught:
        drive(proxy, {Side.BROWSER: browser, Side.HOST: host})
    assert caught.value.side is side


def test_only_rsa_1024_keys() -> None:
    big = public_der(server_key(2048))
    reply = HEADER.pack(b"REDQ", 2, 2, 4 + len(big) + 12)  # not even the right size of key
    proxy = SpiceLinkProxy("pw")
    with pytest.raises(RemoteProtocolError):
        drive(proxy, {Side.BROWSER: [link_mess()], Side.HOST: [reply + bytes(4) + big + bytes(12)]})


def test_link_proxy_misuse_raises_local_protocol_error() -> None:
    with pytest.raises(LocalProtocolError, match="too long"):
        SpiceLinkProxy("x" * 86)
    SpiceLinkProxy("x" * 85)  # 85 bytes and the NUL fill an OAEP-SHA1 block of RSA-1024
    proxy = SpiceLinkProxy(None)
    with pytest.raises(LocalProtocolError):
        _ = proxy.trailing_data
    drive(proxy, {Side.BROWSER: [link_mess(), ticket()], Side.HOST: [link_reply(), bytes(4)]})
    with pytest.raises(LocalProtocolError):
        proxy.receive_from_host(b"more")
    with pytest.raises(LocalProtocolError):
        proxy.next_event()
    assert "s3cret" not in repr(TicketRewritten(b"s3cret"))


# --- the driver, against a scripted SPICE server ------------------------------------------
# Not the proxy: a bare handler around the driver alone, so its results can be inspected. The
# real application's /websockify with real QEMU SPICE is tested in
# tests/protocols/test_spice_app.py.

RESULTS = web.AppKey("results", list)


def driver_app(host: str, port: int, password: str | None, timeout: float = 2.0) -> web.Application:
    """Only the SPICE driver behind a WebSocket: dial, link with secure_spice, Bridge the rest."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("binary",))
        await ws.prepare(request)
        reader, writer = await asyncio.open_connection(host, port)
        try:
            linked = await secure_spice(ws, reader, writer, password, timeout)
            request.app[RESULTS].append(linked)
            if isinstance(linked, Close):
                await ws.close(code=linked.code, message=linked.reason.encode())
            else:
                bridge = Bridge(ws, HostLink.adopt(reader, writer), BridgeLimits(60.0, 60.0))
                await bridge.run(linked.to_host, linked.to_browser)
        finally:
            writer.close()
        return ws

    app = web.Application()
    app[RESULTS] = []
    app.router.add_get("/websockify", handler)
    return app


class FakeSpiceServer:
    """Answers one link like spice-server, checks the password, then echoes."""

    def __init__(self, password: str = "", *, early: bytes = b"") -> None:
        self.password = password
        self.early = early
        self.received: list[bytes] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, _, _, size = HEADER.unpack(await reader.readexactly(16))
        await reader.readexactly(size)
        writer.write(link_reply())
        mechanism = await reader.readexactly(4)
        assert mechanism == struct.pack("<I", 1)
        plain = decrypt(await reader.readexactly(128))
        self.received.append(plain)
        ok = plain == self.password.encode() + b"\0"
        writer.write(
            struct.pack("<I", 0 if ok else LINK_PERMISSION_DENIED) + (self.early if ok else b"")
        )
        await writer.drain()
        if not ok:
            return
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


@pytest.fixture
async def driver_ws(
    aiohttp_server: Any, tcp_target: Callable[..., Any]
) -> AsyncIterator[Callable[..., Awaitable[tuple[aiohttp.ClientWebSocketResponse, list[Any]]]]]:
    """Open a browser WebSocket through ``driver_app`` to a scripted server ``handler`` on a
    loopback port; return it with the list of what ``secure_spice`` returned."""
    session = aiohttp.ClientSession()

    async def open_ws(
        handler: Any, password: str | None, timeout: float = 2.0
    ) -> tuple[aiohttp.ClientWebSocketResponse, list[Any]]:
        port = (await tcp_target(handler)).port
        server = await aiohttp_server(driver_app("127.0.0.1", port, password, timeout))
        ws = await session.ws_connect(server.make_url("/websockify"), protocols=("binary",))
        return ws, server.app[RESULTS]

    yield open_ws
    await session.close()


async def test_driver_links_and_then_bridges(driver_ws: Any) -> None:
    server = FakeSpiceServer("right", early=b"hello")
    ws, results = await driver_ws(server, "right")
    client = RawSpiceClient(ws)
    assert await client.link(CURSOR) == 0
    assert server.received == [b"right\0"]
    assert await client.read(5) == b"hello"  # sent with the link result: to_browser
    await ws.send_bytes(b"ping")
    assert await client.read(4) == b"ping"
    assert results == [SpiceLink(CURSOR, b"", b"hello")]
    await ws.close()


@pytest.mark.parametrize(
    ("password", "close"), [("wrong", Close.AUTH_FAILED), (None, Close.PASSWORD_UNKNOWN)]
)
async def test_driver_refused_password(driver_ws: Any, password: str | None, close: Close) -> None:
    ws, results = await driver_ws(FakeSpiceServer("right"), password)
    client = RawSpiceClient(ws)
    assert await client.link() == LINK_PERMISSION_DENIED  # forwarded, then closed
    msg = await ws.receive(timeout=5.0)
    assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, close.code, close.reason)
    assert results == [close]


async def test_driver_link_error_from_server(driver_ws: Any) -> None:
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(16)
        writer.write(link_reply(error=5))  # NEED_SECURED: this channel wants TLS
        await writer.drain()
        await reader.read()

    ws, results = await driver_ws(server, "pw")
    assert await RawSpiceClient(ws).link() == 5
    msg = await ws.receive(timeout=5.0)
    assert (msg.type, msg.data) == (WSMsgType.CLOSE, Close.HOST_PROTOCOL.code)


@pytest.mark.parametrize(
    ("reply", "close"),
    [
        (b"RFB 003.008\n", Close.HOST_PROTOCOL),  # a VNC server on the SPICE port
        (b"", Close.HOST_CLOSED),  # closes at once
        (None, Close.HANDSHAKE_TIMEOUT),  # says nothing
    ],
)
async def test_driver_host_failures(driver_ws: Any, reply: bytes | None, close: Close) -> None:
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(16)
        if reply is None:
            await reader.read()
        writer.write(reply or b"")
        await writer.drain()

    ws, results = await driver_ws(server, "pw", timeout=0.5)
    await ws.send_bytes(link_mess())
    msg = await ws.receive(timeout=5.0)
    assert (msg.type, msg.data) == (WSMsgType.CLOSE, close.code)
    assert results == [close]


async def test_driver_browser_failures(driver_ws: Any) -> None:
    ws, results = await driver_ws(FakeSpiceServer(), None)
    await ws.send_str("hello")
    msg = await ws.receive(timeout=5.0)
    assert (msg.type, msg.data) == (WSMsgType.CLOSE, Close.TEXT_FRAME.code)

    ws, results = await driver_ws(FakeSpiceServer(), None, timeout=0.3)
    await ws.send_bytes(link_mess()[:10])  # and then nothing
    msg = await ws.receive(timeout=5.0)
    assert (msg.type, msg.data) == (WSMsgType.CLOSE, Close.PROTOCOL_ERROR.code)

    ws, results = await driver_ws(FakeSpiceServer(), None)
    await ws.send_bytes(b"GET / HTTP/1.1\r\n\r\n")
    msg = await ws.receive(timeout=5.0)
    assert (msg.type, msg.data) == (WSMsgType.CLOSE, Close.PROTOCOL_ERROR.code)
