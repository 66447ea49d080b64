"""Faults and bad input: each gets the expected outcome, nothing is dialled, nothing leaks."""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import random
import socket
import string
import struct
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from proxy.app import create_app
from proxy.closecodes import Close
from proxy.relay.dial import dial
from proxy.web.keys import REGISTRY
from tests.support.configs import make_config, write_token_file
from tests.support.net import echo
from tests.support.waiting import wait_until


@pytest.fixture
async def started(aiohttp_server: Any, tcp_target: Any, tmp_path: Path) -> Any:
    async def start(handler: Any = echo, **sections: Any) -> tuple[Any, Any]:
        target = await tcp_target(handler)
        tokens = write_token_file(tmp_path / "tokens", {"vm": ("127.0.0.1", target.port)})
        sections.setdefault("tickets", {})["token_file"] = str(tokens)
        sections.setdefault("audit", {})["sink"] = ""
        server = await aiohttp_server(create_app(make_config(**sections)))
        return server, target

    return start


async def test_host_reset_mid_stream_closes_cleanly(started: Any) -> None:
    async def reset_after_hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")
        await writer.drain()
        await reader.read(1)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST, not FIN

    server, _ = await started(reset_after_hello)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.make_url("/websockify?token=vm")) as ws:
            assert (await ws.receive(timeout=5)).data == b"hello"
            await ws.send_bytes(b"x")
            msg = await ws.receive(timeout=5)
            # A reset is not an orderly close: the browser is told so, with its own reason.
            assert msg.type is WSMsgType.CLOSE
            assert (msg.data, msg.extra) == Close.HOST_RESET.value
    await wait_for_no_consoles(server)


async def test_browser_vanishing_without_close_frees_the_host(started: Any) -> None:
    host_saw_eof = asyncio.Event()

    async def watch(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass
        host_saw_eof.set()

    server, target = await started(watch)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(
        b"GET /websockify?token=vm HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    await wait_until(lambda: target.connections == 1)  # the proxy dialled the host
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()  # RST: no close frame, no FIN
    await asyncio.wait_for(host_saw_eof.wait(), 30)
    await wait_for_no_consoles(server)


async def wait_for_no_consoles(server: Any) -> None:
    await wait_until(lambda: len(server.app[REGISTRY]) == 0, message="a console stayed registered")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_10000_open_close_cycles_leak_no_fds_or_tasks(started: Any) -> None:
    server, target = await started(
        limits={"rate_per_minute": 1e9, "rate_burst": 1_000_000, "max_per_vm": 1000}
    )
    url = server.make_url("/websockify?token=vm")
    async with aiohttp.ClientSession() as http:

        async def cycle() -> None:
            async with http.ws_connect(url) as ws:
                await ws.send_bytes(b"p")
                assert (await ws.receive(timeout=5)).data == b"p"

        for _ in range(200):  # warm up pools and caches before the baseline
            await cycle()
        await wait_for_no_consoles(server)
        gc.collect()
        fds, tasks = open_fds(), len(asyncio.all_tasks())
        started_at = time.monotonic()
        for _ in range(100):
            await asyncio.gather(*(cycle() for _ in range(100)))
        print(f"\n10,000 cycles in {time.monotonic() - started_at:.1f} s")
        await wait_for_no_consoles(server)

        def settled() -> bool:  # the last sockets and tasks end just after their consoles
            gc.collect()
            return open_fds() <= fds + 5 and len(asyncio.all_tasks()) <= tasks + 5

        await wait_until(
            settled,
            interval=0.2,
            message=lambda: (
                f"fds {fds} -> {open_fds()}, tasks {tasks} -> {len(asyncio.all_tasks())}"
            ),
        )
    assert target.connections == 10_200


def fuzzed_tokens(count: int) -> list[str]:
    """Random tokens of every kind: empty, huge, unicode, control characters, URL syntax."""
    rng = random.Random(6143)
    alphabet = string.printable + "äß€漢字\u0000\u202e/?#&=%+;,"
    tokens = ["", " ", "%00", "../../etc/passwd", "a" * 5000, "token.vm", "vm\n", "VM"]
    tokens += [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 300))) for _ in range(count)
    ]
    return tokens


async def test_any_wrong_token_is_refused_with_4401_and_nothing_dialled(started: Any) -> None:
    server, target = await started(limits={"rate_per_minute": 1e9, "rate_burst": 1_000_000})
    async with aiohttp.ClientSession() as http:
        for token in fuzzed_tokens(150):
            url = server.make_url("/websockify").with_query(token=token)
            async with http.ws_connect(url) as ws:
                msg = await ws.receive(timeout=5)
                assert msg.type is WSMsgType.CLOSE and msg.data == 4401, (token, msg)
    assert target.connections == 0


async def test_huge_headers_and_bad_methods(started: Any) -> None:
    server, target = await started()
    async with aiohttp.ClientSession() as http:
        async with http.get(
            server.make_url("/websockify?token=vm"), headers={"X-Big": "a" * 20000}
        ) as r:
            assert r.status in (400, 431)
        async with http.delete(server.make_url("/api/v1/consoles")) as r:
            assert r.status == 405
            assert (await r.json())["error"]["code"] == "HTTP.405"
        async with http.put(server.make_url("/websockify")) as r:
            assert r.status == 405
        async with http.get(server.make_url("/nope")) as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "HTTP.404"
    assert target.connections == 0


async def test_running_out_of_descriptors_is_not_blamed_on_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_fds(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(asyncio, "open_connection", no_fds)
    assert await dial("127.0.0.1", 5900, 1.0) is Close.TOO_MANY
