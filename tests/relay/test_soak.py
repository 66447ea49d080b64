"""Soak: 500 concurrent consoles streaming both ways for a minute, all byte-exact.

The proxy runs as its own process; SOAK_SECONDS and SOAK_CONSOLES shorten or lengthen it
(`make soak` runs 500 consoles for 5 minutes).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.configs import write_token_file
from tests.support.serve_process import listening_process, rss_bytes

SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
CONSOLES = int(os.environ.get("SOAK_CONSOLES", "500"))
CHUNK = 4096
INTERVAL = 0.1


def chunk(seed: bytes, index: int) -> bytes:
    return hashlib.sha256(seed + index.to_bytes(8, "big")).digest() * (CHUNK // 32)


async def test_soak_many_consoles_byte_exact(tcp_target: Any, tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 8192)), hard))
    host_received: dict[bytes, hashlib._Hash] = {}
    host_sent: dict[bytes, int] = {}
    stop = asyncio.Event()

    async def host(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seed = await reader.readexactly(16)  # the client names its stream first
        digest = host_received[seed] = hashlib.sha256()
        host_sent[seed] = 0

        async def send() -> None:
            while not stop.is_set():
                writer.write(chunk(seed, host_sent[seed]))
                host_sent[seed] += 1
                await writer.drain()
                await asyncio.sleep(INTERVAL)

        sender = asyncio.create_task(send())
        try:
            while data := await reader.read(65536):
                digest.update(data)
        finally:
            sender.cancel()

    target = await tcp_target(host)
    tokens = write_token_file(tmp_path / "tokens", {"vm": ("127.0.0.1", target.port)})
    env = {
        "CONSOLE_PROXY_LIMITS_MAX_PER_VM": str(CONSOLES * 2),
        "CONSOLE_PROXY_LIMITS_MAX_CONNECTIONS": str(CONSOLES * 2),
        "CONSOLE_PROXY_LIMITS_RATE_PER_MINUTE": "1000000",
        "CONSOLE_PROXY_LIMITS_RATE_BURST": "100000",
        # Every console dials at once from one address: more than a real client ever has
        # waiting for its first request.
        "CONSOLE_PROXY_LIMITS_MAX_PENDING_PER_ADDRESS": str(CONSOLES * 2),
        "CONSOLE_PROXY_AUDIT_SINK": "",
    }
    async with listening_process("--token-file", str(tokens), env=env) as proxy:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            url = f"{proxy.url}/websockify?token=vm"
            results = await asyncio.gather(
                *(console(http, url, os.urandom(16), stop) for _ in range(CONSOLES))
            )
            peak_rss = rss_bytes(proxy.pid)
    for seed, sent_up, got_down, down_digest in results:
        assert got_down > 0 and sent_up > 0
        # What the host sent downstream arrived whole and in order...
        expected = hashlib.sha256(b"".join(chunk(seed, i) for i in range(got_down // CHUNK)))
        assert down_digest == expected.hexdigest()
        # ...and what the browser sent upstream arrived whole and in order.
        assert (
            host_received[seed].hexdigest()
            == hashlib.sha256(b"".join(chunk(seed[::-1], i) for i in range(sent_up))).hexdigest()
        )
    total = sum(r[2] for r in results) / 1e6
    print(
        f"\nsoak: {CONSOLES} consoles, {SECONDS:.0f} s, {total:.0f} MB down, "
        f"proxy RSS {peak_rss / 2**20:.0f} MiB"
    )


async def console(
    http: aiohttp.ClientSession, url: str, seed: bytes, stop: asyncio.Event
) -> tuple[bytes, int, int, str]:
    async with http.ws_connect(url, max_msg_size=0) as ws:
        await ws.send_bytes(seed)
        sent_up, got_down = 0, 0
        down = hashlib.sha256()
        deadline = time.monotonic() + SECONDS

        async def upstream() -> None:
            nonlocal sent_up
            while time.monotonic() < deadline:
                await ws.send_bytes(chunk(seed[::-1], sent_up))
                sent_up += 1
                await asyncio.sleep(INTERVAL)
            stop.set()

        sender = asyncio.create_task(upstream())
        pending = b""
        while not sender.done() or got_down % CHUNK:
            try:
                msg = await ws.receive(timeout=1.0)
            except TimeoutError:
                continue
            assert msg.type is aiohttp.WSMsgType.BINARY, msg
            pending += msg.data
            whole = len(pending) - len(pending) % CHUNK
            down.update(pending[:whole])
            got_down += whole
            pending = pending[whole:]
        await sender
        # Give the host time to receive the last upstream bytes before closing.
        await asyncio.sleep(1.0)
    return seed, sent_up, got_down, down.hexdigest()
