"""A browser that stops reading must make the proxy stop reading the host (and vice versa).

The proxy runs as its own process so its memory can be measured alone.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from pathlib import Path
from typing import Any

from tests.conftest import write_token_file
from tests.proxy_process import ProxyProcess, rss_bytes

MiB = 1024 * 1024
FLOOD_LIMIT = 1024 * MiB
# What the proxy may hold for one stalled console, all buffers included, with slack for the
# allocator. Without backpressure it would hold everything the host sends: up to 1 GiB here.
RSS_GROWTH_LIMIT = 24 * MiB


def raw_upgrade(port: int, token: str) -> socket.socket:
    """A WebSocket client that does the handshake and then never reads: the worst browser."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /websockify?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def wait_until_stalled(counter: list[int], settle: float = 1.0, limit: float = 20.0) -> None:
    """Wait until the count stops growing for ``settle`` seconds."""
    last, still = -1, 0.0
    for _ in range(int(limit / 0.25)):
        await asyncio.sleep(0.25)
        still = still + 0.25 if counter[0] == last else 0.0
        last = counter[0]
        if still >= settle:
            return


async def test_stalled_browser_bounds_proxy_memory(tcp_target: Any, tmp_path: Path) -> None:
    sent = [0]
    chunk = os.urandom(256 * 1024)

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while sent[0] < FLOOD_LIMIT:
            writer.write(chunk)
            await writer.drain()
            sent[0] += len(chunk)

    target = await tcp_target(flood)
    tokens = write_token_file(tmp_path / "tokens", {"vm": ("127.0.0.1", target.port)})
    async with ProxyProcess("--token-file", str(tokens)) as proxy:
        warm = raw_upgrade(proxy.port, "nope")  # warm up the code paths before the baseline
        warm.close()
        await asyncio.sleep(0.5)
        baseline = rss_bytes(proxy.pid)
        client = await asyncio.to_thread(raw_upgrade, proxy.port, "vm")
        await wait_until_stalled(sent)
        growth = rss_bytes(proxy.pid) - baseline
        client.close()
    print(
        f"\nstalled browser: host sent {sent[0] / MiB:.1f} MiB, proxy RSS +{growth / MiB:.1f} MiB"
    )
    assert sent[0] < 64 * MiB, f"host sent {sent[0] / MiB:.0f} MiB into a stalled console"
    assert growth < RSS_GROWTH_LIMIT, f"proxy RSS grew {growth / MiB:.1f} MiB"


async def test_stalled_host_bounds_proxy_memory(tcp_target: Any, tmp_path: Path) -> None:
    stop = asyncio.Event()

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.transport.pause_reading()  # type: ignore[attr-defined]
        await stop.wait()

    target = await tcp_target(never_read)
    tokens = write_token_file(tmp_path / "tokens", {"vm": ("127.0.0.1", target.port)})
    async with ProxyProcess("--token-file", str(tokens)) as proxy:
        baseline = rss_bytes(proxy.pid)
        client = await asyncio.to_thread(raw_upgrade, proxy.port, "vm")
        client.setblocking(False)
        payload = os.urandom(64 * 1024)
        # A masked binary frame with a zero mask: valid, and the payload passes unchanged.
        frame = struct.pack("!BBQ", 0x82, 0x80 | 127, len(payload)) + b"\0\0\0\0" + payload
        pushed = [0]
        loop = asyncio.get_running_loop()
        for _ in range(2000):
            try:
                await asyncio.wait_for(loop.sock_sendall(client, frame), 2.0)
            except TimeoutError:
                break
            pushed[0] += len(payload)
        growth = rss_bytes(proxy.pid) - baseline
        client.close()
        stop.set()
    print(
        f"\nstalled host: browser pushed {pushed[0] / MiB:.1f} MiB,"
        f" proxy RSS +{growth / MiB:.1f} MiB"
    )
    assert pushed[0] < 64 * MiB, f"browser pushed {pushed[0] / MiB:.0f} MiB into a stalled host"
    assert growth < RSS_GROWTH_LIMIT, f"proxy RSS grew {growth / MiB:.1f} MiB"
