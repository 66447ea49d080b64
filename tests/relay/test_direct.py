"""Host -> browser frames written straight onto the browser's socket (relay.direct): byte-exact,
never interleaved with aiohttp's control frames, bounded when the browser stops reading, seen by
a recorder, and not used over TLS."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.base_protocol import BaseProtocol
from aiohttp.test_utils import TestServer

from proxy.app import create_app
from proxy.closecodes import Close
from proxy.relay import direct
from proxy.web.keys import REGISTRY
from tests.recording.support import to_browser
from tests.support.certs import Pki
from tests.support.configs import make_config, write_token_file
from tests.support.net import raw_upgrade
from tests.support.waiting import wait_until

MiB = 1024 * 1024
CHUNK = 256 * 1024


def pattern(seed: int, size: int) -> bytes:
    # Seed-dependent and non-repeating per 64 KiB, so a lost or reordered chunk shows.
    blocks = (
        hashlib.sha256(f"{seed}:{i}".encode()).digest() * 2048 for i in range(size // 65536 + 1)
    )
    return b"".join(blocks)[:size]


def streaming_host(data: bytes, then: str = "close") -> Callable[..., Any]:
    """A host that writes ``data`` in large chunks, then closes in order or resets."""

    async def host(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for offset in range(0, len(data), CHUNK):
            writer.write(data[offset : offset + CHUNK])
            await writer.drain()
        if then == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        elif then == "close":
            writer.close()
        else:  # "hold": keep the connection until the proxy closes it
            await reader.read()

    return host


@pytest.fixture
def direct_bytes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every frame the proxy wrote straight onto a browser's socket."""
    written: list[int] = []
    real = direct.BrowserWire.send

    def counting(self: direct.BrowserWire, data: bytes) -> None:
        written.append(len(data))
        real(self, data)

    monkeypatch.setattr(direct.BrowserWire, "send", counting)
    return written


@pytest.fixture
async def proxy(
    aiohttp_server: Any, tcp_target: Any, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    async def start(host: Callable[..., Any], ssl_context: Any = None, **sections: Any) -> Any:
        target = await tcp_target(host)
        tokens = write_token_file(tmp_path / "tokens", {"vm": ("127.0.0.1", target.port)})
        sections.setdefault("tickets", {})["token_file"] = str(tokens)
        sections.setdefault("audit", {})["sink"] = ""
        app = create_app(make_config(**sections))
        return await aiohttp_server(app, ssl=ssl_context)

    yield start


async def read_all(ws: aiohttp.ClientWebSocketResponse) -> tuple[bytes, Any]:
    got = bytearray()
    while True:
        msg = await ws.receive(timeout=30)
        if msg.type is not WSMsgType.BINARY:
            return bytes(got), msg
        got += msg.data


def test_frame_headers_follow_rfc_6455() -> None:
    assert direct.frame_header(0) == b"\x82\x00"
    assert direct.frame_header(125) == b"\x82\x7d"
    assert direct.frame_header(126) == b"\x82\x7e\x00\x7e"
    assert direct.frame_header(65535) == b"\x82\x7e\xff\xff"
    assert direct.frame_header(65536) == b"\x82\x7f" + (65536).to_bytes(8, "big")
    assert direct.frame_header(MiB) == b"\x82\x7f" + MiB.to_bytes(8, "big")


async def test_a_streaming_host_arrives_byte_exact_then_closed_in_order(
    proxy: Any, direct_bytes: list[int]
) -> None:
    data = pattern(1, 24 * MiB + 12345)
    server = await proxy(streaming_host(data))
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.make_url("/websockify?token=vm"), max_msg_size=0) as ws:
            got, last = await read_all(ws)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert last.type is WSMsgType.CLOSE and (last.data, last.extra) == Close.HOST_CLOSED.value
    # Most of the stream was written straight onto the socket, not through send_bytes.
    assert sum(direct_bytes) > len(data) // 2, f"only {sum(direct_bytes)} bytes written directly"


async def test_a_host_reset_mid_stream_closes_4502(proxy: Any, direct_bytes: list[int]) -> None:
    data = pattern(2, 8 * MiB)
    server = await proxy(streaming_host(data, then="reset"))
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.make_url("/websockify?token=vm"), max_msg_size=0) as ws:
            got, last = await read_all(ws)
    assert direct_bytes
    assert last.type is WSMsgType.CLOSE and (last.data, last.extra) == Close.HOST_RESET.value
    assert data.startswith(got)  # what arrived before the reset is the stream, unaltered


# ----- a raw browser: reads when the test says so, and sees every byte of every frame ---------


def client_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked


def parse_frames(
    stream: bytes | bytearray, whole: bool = True
) -> tuple[list[tuple[int, int, int]], int]:
    """(opcode, start, end) of every frame of a server's stream (unmasked, FIN set), and where
    the frames parsed end; fails on anything malformed (and, if ``whole``, on a cut frame)."""
    frames = []
    at = done = 0
    while at + 2 <= len(stream):
        first, second = stream[at], stream[at + 1]
        assert first & 0x80 and not first & 0x70, f"bad first byte {first:#x} at {at}"
        assert not second & 0x80, f"a masked server frame at {at}"
        size, at = second & 0x7F, at + 2
        if size == 126:
            size, at = int.from_bytes(stream[at : at + 2], "big"), at + 2
        elif size == 127:
            size, at = int.from_bytes(stream[at : at + 8], "big"), at + 8
        if at + size > len(stream):
            break
        frames.append((first & 0x0F, at, at + size))
        at = done = at + size
    assert not whole or done == len(stream), f"a frame cut short at {done} of {len(stream)}"
    return frames, done


def receive_data(sock: socket.socket, size: int) -> bytes:
    """Read until the data frames received carry ``size`` bytes."""
    sock.settimeout(30)
    got = bytearray()
    while True:
        frames, _ = parse_frames(got, whole=False)
        if sum(end - start for op, start, end in frames if op == 0x2) >= size:
            return bytes(got)
        got += sock.recv(4 * MiB)


def receive_until_closed(sock: socket.socket) -> bytes:
    sock.settimeout(30)
    got = bytearray()
    while chunk := sock.recv(MiB):
        got += chunk
    return bytes(got)


def held_by_proxy(server: TestServer) -> int:
    """Bytes the proxy's transport to the (only) browser holds: a frame's unsent rest."""
    consoles: list[Any] = server.app[REGISTRY].connected()
    return sum(c.ws._writer.transport.get_write_buffer_size() for c in consoles)


async def stall_mid_frame(server: TestServer) -> socket.socket:
    assert server.port is not None
    sock = await asyncio.to_thread(raw_upgrade, server.port)
    # The browser reads nothing: the proxy fills its socket and keeps the rest of the frame it
    # was writing in its transport, and stops reading the host.
    await wait_until(lambda: held_by_proxy(server) > 0)
    return sock


@pytest.mark.parametrize("then", ["ping", "close"])
async def test_control_frames_wait_for_a_half_written_frame(
    proxy: Any, direct_bytes: list[int], then: str
) -> None:
    data = pattern(3, 64 * MiB)
    server = await proxy(streaming_host(data, then="hold"))
    sock = await stall_mid_frame(server)
    assert direct_bytes, "nothing was written directly"
    stream = b""
    if then == "ping":
        sock.sendall(client_frame(0x9, b"are you there"))
        await asyncio.sleep(0.3)  # aiohttp answers now, while a data frame is half written
        # Reading again: the frame's rest, the pong, then the rest of the stream, all of it
        # written while the proxy's transport may still hold bytes.
        stream = await asyncio.to_thread(receive_data, sock, len(data))
        sock.sendall(client_frame(0x8, struct.pack("!H", 1000)))
    else:
        sock.sendall(client_frame(0x8, struct.pack("!H", 1000) + b"bye"))
    stream += await asyncio.to_thread(receive_until_closed, sock)
    sock.close()
    frames, _ = parse_frames(stream)
    opcodes = [op for op, _, _ in frames]
    assert opcodes[-1] == 0x8, opcodes[-5:]
    received = b"".join(stream[start:end] for op, start, end in frames if op == 0x2)
    assert received and data.startswith(received)
    if then == "ping":
        assert received == data
        pong = opcodes.index(0xA)
        _, start, end = frames[pong]
        assert stream[start:end] == b"are you there"
        assert set(opcodes[:pong]) == {0x2}
    assert set(opcodes[:-1]) <= {0x2, 0xA}
    await wait_until(lambda: len(server.app[REGISTRY]) == 0)


async def test_a_stalled_browser_stops_the_proxy_reading_the_host(
    proxy: Any, direct_bytes: list[int]
) -> None:
    sent = [0]

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chunk = os.urandom(CHUNK)
        while sent[0] < 256 * MiB:
            writer.write(chunk)
            await writer.drain()
            sent[0] += len(chunk)

    server = await proxy(flood)
    sock = await stall_mid_frame(server)
    before = -1
    while before != sent[0]:  # settled: the host can push no more
        before = sent[0]
        await asyncio.sleep(0.5)
    # Socket buffers on both sides (a few MiB each on loopback) and one frame: not the 256 MiB.
    assert sent[0] < 64 * MiB, f"{sent[0] / MiB:.0f} MiB went into a stalled console"
    assert direct_bytes
    sock.close()
    await wait_until(lambda: len(server.app[REGISTRY]) == 0)


async def test_tls_to_the_browser_keeps_aiohttps_writer(
    proxy: Any, direct_bytes: list[int], pki: Pki
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    data = pattern(4, 4 * MiB)
    server = await proxy(streaming_host(data), ssl_context=context)
    client = ssl.create_default_context(cafile=str(pki.ca_cert))
    url = server.make_url("/websockify?token=vm")
    assert url.scheme == "https"
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, ssl=client, max_msg_size=0) as ws:
            got, last = await read_all(ws)
    assert got == data
    assert (last.data, last.extra) == Close.HOST_CLOSED.value
    assert not direct_bytes


async def test_the_recorder_sees_every_byte_written_directly(
    proxy: Any, direct_bytes: list[int], tmp_path: Path
) -> None:
    data = pattern(5, 4 * MiB)
    server = await proxy(streaming_host(data), recording={"dir": str(tmp_path / "recordings")})
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.make_url("/websockify?token=vm"), max_msg_size=0) as ws:
            got, _ = await read_all(ws)
    assert got == data
    assert direct_bytes
    await wait_until(lambda: len(server.app[REGISTRY]) == 0)
    (recording,) = (tmp_path / "recordings").glob("*.rec")
    assert to_browser(recording) == data


# ----- the wire alone, on a real socket whose reader the test controls -------------------------


async def wire_to_stalled_peer() -> tuple[direct.BrowserWire, socket.socket, Any]:
    listener = socket.create_server(("127.0.0.1", 0))
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(
        lambda: BaseProtocol(loop), *listener.getsockname()
    )
    peer, _ = listener.accept()
    listener.close()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    writer = SimpleNamespace(
        transport=transport, protocol=protocol, _closing=False, use_mask=False, compress=0
    )
    wire = direct.BrowserWire.of(SimpleNamespace(_writer=writer, closed=False))
    assert wire is not None
    return wire, peer, transport


async def test_the_wire_never_overtakes_what_its_transport_holds() -> None:
    wire, peer, transport = await wire_to_stalled_peer()
    data = pattern(6, 32 * MiB)
    sent = 0
    while wire.ready() and sent < len(data):  # the peer reads nothing: a frame is cut
        wire.send(data[sent : sent + MiB])
        sent += MiB
    assert transport.get_write_buffer_size() > 0
    # The peer reads, so its socket has room, before the event loop lets the transport write:
    # a frame written now would overtake the cut frame's rest.
    first = peer.recv(MiB)
    assert first
    assert not wire.ready()
    # aiohttp writes a pong now: it must come after the cut frame, whole.
    transport.write(b"\x8a\x02hi")
    stream = asyncio.create_task(asyncio.to_thread(receive_until_closed, peer))
    while not wire.ready():
        await wire.drain()
        await asyncio.sleep(0.01)
    transport.close()
    got = first + await stream
    peer.close()
    frames, _ = parse_frames(got)
    assert [op for op, _, _ in frames] == [0x2] * (len(frames) - 1) + [0xA]
    assert b"".join(got[start:end] for op, start, end in frames if op == 0x2) == data[:sent]


def helper_tasks() -> list[asyncio.Task[Any]]:
    return [
        t
        for t in asyncio.all_tasks()
        if "_host_to_browser" in t.get_coro().__qualname__  # type: ignore[union-attr]
    ]


async def test_an_idle_console_holds_no_helper_task_until_the_host_closes(proxy: Any) -> None:
    async def echo_until_bye(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"RFB 003.008\n")
        while (data := await reader.read(100)) and data != b"bye":
            writer.write(data)
        writer.close()

    server = await proxy(echo_until_bye)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.make_url("/websockify?token=vm")) as ws:
            assert (await ws.receive(timeout=5)).data == b"RFB 003.008\n"
            for n in range(20):  # each echo is written from the host link's data_received
                await ws.send_bytes(b"ping %d" % n)
                assert (await ws.receive(timeout=5)).data == b"ping %d" % n
            assert helper_tasks() == []
            await ws.send_bytes(b"bye")  # the host's end still ends the console, in order
            last = await ws.receive(timeout=5)
            assert (last.data, last.extra) == Close.HOST_CLOSED.value
