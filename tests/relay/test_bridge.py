"""The WebSocket <-> TCP bridge against real loopback TCP targets, through static tokens."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestServer

from proxy.app import create_app
from proxy.server import graceful_shutdown
from tests.support.configs import make_config, write_token_file
from tests.support.net import echo
from tests.support.waiting import wait_until

MiB = 1024 * 1024


@pytest.fixture
async def serve_proxy(aiohttp_server: Any, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    async def start(tokens_to: dict[str, tuple[str, int]], **sections: Any) -> TestServer:
        tokens = write_token_file(tmp_path / "tokens", tokens_to)
        sections.setdefault("tickets", {})["token_file"] = str(tokens)
        return await aiohttp_server(create_app(make_config(**sections)))

    yield start


async def open_console(
    server: TestServer, token: str, **kwargs: Any
) -> aiohttp.ClientWebSocketResponse:
    session = aiohttp.ClientSession()
    try:
        ws = await session.ws_connect(server.make_url(f"/websockify?token={token}"), **kwargs)
    except BaseException:
        await session.close()
        raise
    ws._test_session = session  # closed by close_console
    return ws


async def close_console(ws: aiohttp.ClientWebSocketResponse) -> None:
    await ws.close()
    await ws._test_session.close()  # type: ignore[attr-defined]


async def test_echo_round_trip(serve_proxy: Any, tcp_target: Any) -> None:
    target = await tcp_target(echo)
    server = await serve_proxy({"vm1": ("127.0.0.1", target.port)})
    ws = await open_console(server, "vm1", protocols=("binary",))
    assert ws.protocol == "binary"
    await ws.send_bytes(b"hello console")
    msg = await ws.receive(timeout=5)
    assert msg.type is WSMsgType.BINARY and msg.data == b"hello console"
    await close_console(ws)


def pattern(seed: int, size: int) -> bytes:
    # Non-repeating, seed-dependent data so a dropped or reordered chunk changes the digest.
    return b"".join(
        hashlib.sha256(f"{seed}:{i}".encode()).digest() * 2048 for i in range(size // 65536)
    )


async def test_64_mib_each_way_byte_exact(serve_proxy: Any, tcp_target: Any) -> None:
    size = 64 * MiB
    downstream = pattern(1, size)
    upstream = pattern(2, size)
    received_by_host = hashlib.sha256()

    async def host(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def send() -> None:
            for offset in range(0, size, 256 * 1024):
                writer.write(downstream[offset : offset + 256 * 1024])
                await writer.drain()

        sender = asyncio.create_task(send())
        remaining = size
        while remaining:
            chunk = await reader.read(min(remaining, 1 << 20))
            assert chunk, "browser side closed early"
            received_by_host.update(chunk)
            remaining -= len(chunk)
        await sender
        await reader.read()  # keep the socket until the browser closes

    target = await tcp_target(host)
    server = await serve_proxy({"vm": ("127.0.0.1", target.port)})
    ws = await open_console(server, "vm", max_msg_size=0)

    async def send_up() -> None:
        for offset in range(0, size, 64 * 1024):
            await ws.send_bytes(upstream[offset : offset + 64 * 1024])

    sender = asyncio.create_task(send_up())
    got = hashlib.sha256()
    count = 0
    while count < size:
        msg = await ws.receive(timeout=30)
        assert msg.type is WSMsgType.BINARY, msg
        got.update(msg.data)
        count += len(msg.data)
    await sender
    upstream_digest = hashlib.sha256(upstream).digest()
    await wait_until(lambda: received_by_host.digest() == upstream_digest, timeout=30)
    assert count == size
    assert got.hexdigest() == hashlib.sha256(downstream).hexdigest()
    assert received_by_host.hexdigest() == hashlib.sha256(upstream).hexdigest()
    await close_console(ws)


async def test_unknown_and_malformed_tokens_close_4401_and_dial_nothing(
    serve_proxy: Any, tcp_target: Any
) -> None:
    target = await tcp_target(echo)
    server = await serve_proxy({"vm": ("127.0.0.1", target.port)})
    for token in ("nope", "bad token!", "x" * 500, "../../etc/passwd"):
        ws = await open_console(server, token)
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.CLOSE
        assert msg.data == 4401
        assert "ticket" in str(msg.extra)
        await close_console(ws)
    assert target.connections == 0


async def test_no_token_at_all_closes_4401(serve_proxy: Any) -> None:
    server = await serve_proxy({})
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(server.make_url("/websockify")) as ws:
            msg = await ws.receive(timeout=5)
            assert msg.type is WSMsgType.CLOSE and msg.data == 4401


async def test_token_in_subprotocol(serve_proxy: Any, tcp_target: Any) -> None:
    target = await tcp_target(echo)
    server = await serve_proxy({"vm7": ("127.0.0.1", target.port)})
    async with aiohttp.ClientSession() as session:
        url = server.make_url("/websockify")
        async with session.ws_connect(url, protocols=("binary", "token.vm7")) as ws:
            assert ws.protocol == "binary"
            await ws.send_bytes(b"ping")
            assert (await ws.receive(timeout=5)).data == b"ping"


async def test_foreign_origin_refused_before_upgrade(serve_proxy: Any, tcp_target: Any) -> None:
    target = await tcp_target(echo)
    server = await serve_proxy({"vm": ("127.0.0.1", target.port)})
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
            await session.ws_connect(
                server.make_url("/websockify?token=vm"), origin="https://evil.example"
            )
        assert raised.value.status == 403
        own = f"http://{server.host}:{server.port}"
        async with session.ws_connect(server.make_url("/websockify?token=vm"), origin=own) as ws:
            await ws.send_bytes(b"ok")
            assert (await ws.receive(timeout=5)).data == b"ok"
    assert target.connections == 1


async def test_allowed_origins_from_config(serve_proxy: Any, tcp_target: Any) -> None:
    target = await tcp_target(echo)
    server = await serve_proxy(
        {"vm": ("127.0.0.1", target.port)},
        server={"allowed_origins": ["https://portal.example.com"]},
    )
    async with aiohttp.ClientSession() as session:
        url = server.make_url("/websockify?token=vm")
        async with session.ws_connect(url, origin="https://portal.example.com") as ws:
            await ws.send_bytes(b"ok")
            assert (await ws.receive(timeout=5)).data == b"ok"


async def test_plain_get_is_not_an_upgrade(serve_proxy: Any) -> None:
    server = await serve_proxy({})
    async with aiohttp.ClientSession() as session:
        async with session.get(server.make_url("/websockify?token=x")) as response:
            assert response.status == 400
            body = await response.json()
            assert body["error"]["code"] == "REQUEST.NOT_WEBSOCKET"


async def test_target_outside_policy_closes_4403_and_dials_nothing(
    serve_proxy: Any, tcp_target: Any
) -> None:
    target = await tcp_target(echo)
    server = await serve_proxy(
        {"vm": ("127.0.0.1", target.port)}, targets={"allow": ["10.0.0.0/8"]}
    )
    ws = await open_console(server, "vm")
    msg = await ws.receive(timeout=5)
    assert msg.type is WSMsgType.CLOSE and msg.data == 4403
    await close_console(ws)
    assert target.connections == 0


async def test_host_refusing_closes_4502(serve_proxy: Any) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = await serve_proxy({"vm": ("127.0.0.1", port)})
    ws = await open_console(server, "vm")
    msg = await ws.receive(timeout=5)
    assert msg.data == 4502 and "unreachable" in str(msg.extra)
    await close_console(ws)


async def test_host_not_answering_syn_closes_4504_in_time(serve_proxy: Any) -> None:
    # A listener whose accept queue is full drops further SYNs: connect() hangs, on loopback.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(listener.getsockname())
        fillers.append(filler)

    def queue_full() -> bool:  # the first filler got in: the queue (of one) is full
        try:
            return bool(fillers[0].getpeername())
        except OSError:  # not connected yet
            return False

    await wait_until(queue_full)
    server = await serve_proxy({"vm": listener.getsockname()}, limits={"connect_timeout": 1.0})
    started = time.monotonic()
    ws = await open_console(server, "vm")
    msg = await ws.receive(timeout=30)
    elapsed = time.monotonic() - started
    assert msg.data == 4504, msg
    # Not before the timeout; well before TCP gives up on its own (about two minutes).
    assert 0.9 <= elapsed < 15
    await close_console(ws)
    for sock in (*fillers, listener):
        sock.close()


async def test_host_closing_closes_1000_with_reason(serve_proxy: Any, tcp_target: Any) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"RFB 003.008\n")
        await writer.drain()

    target = await tcp_target(hang_up)
    server = await serve_proxy({"vm": ("127.0.0.1", target.port)})
    ws = await open_console(server, "vm")
    assert (await ws.receive(timeout=5)).data == b"RFB 003.008\n"
    msg = await ws.receive(timeout=5)
    assert msg.type is WSMsgType.CLOSE and msg.data == 1000
    assert "closed the connection" in str(msg.extra)
    await close_console(ws)


async def test_text_frame_closes_1003(serve_proxy: Any, tcp_target: Any) -> None:
    target = await tcp_target(echo)
    server = await serve_proxy({"vm": ("127.0.0.1", target.port)})
    ws = await open_console(server, "vm")
    await ws.send_str("hello")
    msg = await ws.receive(timeout=5)
    assert msg.type is WSMsgType.CLOSE and msg.data == 1003
    await close_console(ws)


async def test_oversize_frame_closes_1009(serve_proxy: Any, tcp_target: Any) -> None:
    target = await tcp_target(echo)
    server = await serve_proxy({"vm": ("127.0.0.1", target.port)}, limits={"max_frame_size": 65536})
    ws = await open_console(server, "vm")
    await ws.send_bytes(b"x" * 65537)
    msg = await ws.receive(timeout=5)
    assert msg.type is WSMsgType.CLOSE and msg.data == 1009
    await close_console(ws)


async def test_idle_timeout_closes_4408(serve_proxy: Any, tcp_target: Any) -> None:
    target = await tcp_target(echo)
    server = await serve_proxy({"vm": ("127.0.0.1", target.port)}, limits={"idle_timeout": 0.5})
    ws = await open_console(server, "vm")
    started = time.monotonic()
    msg = await ws.receive(timeout=30)
    assert msg.type is WSMsgType.CLOSE and msg.data == 4408
    assert 0.4 < time.monotonic() - started
    await close_console(ws)


async def test_max_session_closes_4409_despite_input(serve_proxy: Any, tcp_target: Any) -> None:
    target = await tcp_target(echo)
    # Input every 0.1 s; an idle timeout far longer than that, so that a stall of the test on a
    # loaded machine does not end the console as idle first.
    server = await serve_proxy(
        {"vm": ("127.0.0.1", target.port)}, limits={"max_session": 1.0, "idle_timeout": 60}
    )
    ws = await open_console(server, "vm")
    started = time.monotonic()
    while time.monotonic() - started < 30:
        with contextlib.suppress(ConnectionResetError):  # the close may beat our send
            await ws.send_bytes(b"k")
        msg = await ws.receive(timeout=30)
        if msg.type is not WSMsgType.BINARY:
            break
        await asyncio.sleep(0.1)
    assert msg.type is WSMsgType.CLOSE and msg.data == 4409
    assert 0.9 < time.monotonic() - started < 30
    await close_console(ws)


async def test_connection_cap_closes_4429(serve_proxy: Any, tcp_target: Any) -> None:
    target = await tcp_target(echo)
    server = await serve_proxy({"vm": ("127.0.0.1", target.port)}, limits={"max_connections": 1})
    first = await open_console(server, "vm")
    await first.send_bytes(b"a")
    assert (await first.receive(timeout=5)).data == b"a"
    second = await open_console(server, "vm")
    msg = await second.receive(timeout=5)
    assert msg.type is WSMsgType.CLOSE and msg.data == 4429
    await close_console(second)
    await close_console(first)


async def test_shutdown_drains_then_closes_consoles_1001(
    aiohttp_server: Any, tmp_path: Path, tcp_target: Any
) -> None:
    target = await tcp_target(echo)
    tokens = write_token_file(tmp_path / "t", {"vm": ("127.0.0.1", target.port)})
    drain = 3.0  # long enough for the checks below on a loaded machine
    config = make_config(tickets={"token_file": str(tokens)}, server={"drain_timeout": drain})
    server = await aiohttp_server(create_app(config))
    ws = await open_console(server, "vm")
    await ws.send_bytes(b"a")
    assert (await ws.receive(timeout=5)).data == b"a"
    started = time.monotonic()
    assert server.runner is not None
    closing = asyncio.create_task(graceful_shutdown(server.runner))

    async def refused() -> bool:
        try:
            await close_console(await open_console(server, "vm"))
        except aiohttp.ClientConnectionError:
            return True
        return False

    # During the drain new connections are no longer accepted; the console still works.
    await wait_until(refused, message="new connections were still accepted")
    await ws.send_bytes(b"b")
    assert (await ws.receive(timeout=5)).data == b"b"
    msg = await ws.receive(timeout=30)
    assert msg.type is WSMsgType.CLOSE and msg.data == 1001
    assert "restarting" in str(msg.extra)
    assert drain - 0.1 < time.monotonic() - started < drain + 20
    await close_console(ws)
    await closing
    await server.close()


async def test_shutdown_with_no_consoles_is_immediate(aiohttp_server: Any) -> None:
    server = await aiohttp_server(create_app(make_config(server={"drain_timeout": 30})))
    started = time.monotonic()
    await graceful_shutdown(server.runner)
    assert time.monotonic() - started < 10  # not the 30 s drain


async def test_token_file_directory_as_zstack_agent_writes(
    aiohttp_server: Any, tmp_path: Path, tcp_target: Any
) -> None:
    target = await tcp_target(echo)
    folder = tmp_path / "tokens"
    folder.mkdir()
    server = await aiohttp_server(create_app(make_config(tickets={"token_file": str(folder)})))
    # ZStack's agent writes one file per console after the proxy started: it must be seen.
    token = f"{os.urandom(16).hex()}_{os.urandom(16).hex()}"
    write_token_file(folder / "console-1", {token: ("127.0.0.1", target.port)})
    ws = await open_console(server, token)
    await ws.send_bytes(b"zstack")
    assert (await ws.receive(timeout=5)).data == b"zstack"
    await close_console(ws)
