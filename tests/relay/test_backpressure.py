"""A browser that stops reading must make the proxy stop reading the host (and vice versa).

The proxy runs as its own process so its memory can be measured alone. What is measured is the
bound: how much one side could push into a console whose other side does not read, once that
stopped growing while the proxy demonstrably had the CPU to read more (a stall alone proves
nothing on a loaded machine, where CPU starvation stalls a transfer too).
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.configs import write_token_file
from tests.support.net import raw_upgrade
from tests.support.serve_process import ServeProcess, listening_process, rss_bytes

MiB = 1024 * 1024
# What may go into a stalled console: the socket buffers on both sides of the proxy (a few MiB
# each on loopback) and the proxy's own bounded buffers. Without backpressure there is no
# limit: the sender stops only at SEND_LIMIT.
PUSHED_LIMIT = 64 * MiB
SEND_LIMIT = 256 * MiB
# What the proxy may hold for one stalled console, all buffers included, with slack for the
# allocator. Without backpressure it would hold everything that was pushed.
RSS_GROWTH_LIMIT = 24 * MiB


async def settled(count: Callable[[], int], proxy: ServeProcess, what: str) -> int:
    """``count`` once it stayed put for a second in which the proxy answered five requests: it
    had the CPU to read more, and did not. Fails as soon as it passes PUSHED_LIMIT."""
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        while True:
            before = count()
            for _ in range(5):
                await asyncio.sleep(0.2)
                async with http.get(f"{proxy.url}/healthz") as answer:
                    assert answer.status == 200
            now = count()
            assert now < PUSHED_LIMIT, f"{what} {now / MiB:.0f} MiB into a stalled console"
            if now == before:
                return now
            assert time.monotonic() < deadline, f"{what} more and more: {now / MiB:.0f} MiB"


async def test_stalled_browser_bounds_proxy_memory(tcp_target: Any, tmp_path: Path) -> None:
    sent = [0]
    chunk = os.urandom(256 * 1024)

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while sent[0] < SEND_LIMIT:
            writer.write(chunk)
            await writer.drain()
            sent[0] += len(chunk)

    target = await tcp_target(flood)
    tokens = write_token_file(tmp_path / "tokens", {"vm": ("127.0.0.1", target.port)})
    async with listening_process("--token-file", str(tokens)) as proxy:
        warm = raw_upgrade(proxy.port, "nope")  # warm up the code paths before the baseline
        warm.close()
        await asyncio.sleep(0.5)
        baseline = rss_bytes(proxy.pid)
        client = await asyncio.to_thread(raw_upgrade, proxy.port, "vm")
        try:
            bound = await settled(lambda: sent[0], proxy, "the host sent")
            growth = rss_bytes(proxy.pid) - baseline
        finally:
            client.close()
    print(f"\nstalled browser: host sent {bound / MiB:.1f} MiB, proxy RSS +{growth / MiB:.1f} MiB")
    assert growth < RSS_GROWTH_LIMIT, f"proxy RSS grew {growth / MiB:.1f} MiB"


def push(sock: socket.socket, frame: bytes, pushed: list[int], stop: threading.Event) -> None:
    """Send ``frame`` over and over, counting every byte the socket takes, until ``stop``."""
    sock.settimeout(0.2)
    view, offset = memoryview(frame), 0
    while not stop.is_set() and pushed[0] < SEND_LIMIT:
        try:
            sent = sock.send(view[offset:])
        except TimeoutError:
            continue
        pushed[0] += sent
        offset = (offset + sent) % len(frame)


async def test_stalled_host_bounds_proxy_memory(tcp_target: Any, tmp_path: Path) -> None:
    stop, gone = asyncio.Event(), asyncio.Event()

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.transport.pause_reading()  # type: ignore[attr-defined]
        await stop.wait()
        writer.close()
        await writer.wait_closed()
        gone.set()

    target = await tcp_target(never_read)
    tokens = write_token_file(tmp_path / "tokens", {"vm": ("127.0.0.1", target.port)})
    async with listening_process("--token-file", str(tokens)) as proxy:
        baseline = rss_bytes(proxy.pid)
        client = await asyncio.to_thread(raw_upgrade, proxy.port, "vm")
        payload = os.urandom(64 * 1024)
        # A masked binary frame with a zero mask: valid, and the payload passes unchanged.
        frame = struct.pack("!BBQ", 0x82, 0x80 | 127, len(payload)) + b"\0\0\0\0" + payload
        pushed, done = [0], threading.Event()
        pusher = asyncio.create_task(asyncio.to_thread(push, client, frame, pushed, done))
        try:
            bound = await settled(lambda: pushed[0], proxy, "the browser pushed")
            growth = rss_bytes(proxy.pid) - baseline
        finally:
            done.set()
            await pusher
            client.close()
            # The host goes away before the proxy is stopped: a console stuck on a host that
            # never reads holds the proxy's exit for 10 s (its WebSocket close timeout).
            stop.set()
            await asyncio.wait_for(gone.wait(), 30)
    print(
        f"\nstalled host: browser pushed {bound / MiB:.1f} MiB, proxy RSS +{growth / MiB:.1f} MiB"
    )
    assert growth < RSS_GROWTH_LIMIT, f"proxy RSS grew {growth / MiB:.1f} MiB"
