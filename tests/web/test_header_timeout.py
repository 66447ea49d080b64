"""Connections that never finish a request head are closed within [limits] header_timeout, an
address holds a bounded number of such connections, and aiohttp's own answers to requests it
cannot parse carry the security headers and no ticket (a real `console-proxy serve`)."""

from __future__ import annotations

import asyncio
import time

from tests.support.serve_process import listening_process

HEADER_TIMEOUT = 1.5
SLACK = 3.0


async def closed_after(port: int, drip: bytes = b"", every: float = 0.25) -> float:
    """Seconds until the proxy closes a connection that sends ``drip`` one byte at a time."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()

    async def dripping() -> None:
        for byte in drip:
            writer.write(bytes([byte]))
            await asyncio.sleep(every)

    task = asyncio.create_task(dripping())
    try:
        async with asyncio.timeout(HEADER_TIMEOUT + SLACK + 10):
            while await reader.read(4096):
                pass
    except ConnectionError:
        pass
    finally:
        task.cancel()
        writer.close()
    return time.monotonic() - started


async def test_silent_and_slow_header_sockets_are_closed() -> None:
    env = {"CONSOLE_PROXY_LIMITS_HEADER_TIMEOUT": str(HEADER_TIMEOUT)}
    async with listening_process(env=env) as proxy:
        slow = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
        silent, slow_header = await asyncio.gather(
            closed_after(proxy.port), closed_after(proxy.port, slow)
        )
        assert silent < HEADER_TIMEOUT + SLACK, silent
        assert slow_header < HEADER_TIMEOUT + SLACK, slow_header
        # A normal client is not affected.
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.read(4096)).startswith(b"HTTP/1.1 200")
        writer.close()


async def test_pending_connections_per_address_are_capped() -> None:
    env = {"CONSOLE_PROXY_LIMITS_MAX_PENDING_PER_ADDRESS": "5"}
    async with listening_process(env=env) as proxy:
        held = [await asyncio.open_connection("127.0.0.1", proxy.port) for _ in range(5)]
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        async with asyncio.timeout(5):
            assert await reader.read(4096) == b""  # closed at once
        writer.close()
        # Once one of them sends a request, it no longer counts: a new connection is served.
        held[0][1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await held[0][0].read(4096)).startswith(b"HTTP/1.1 200")
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):
            assert (await reader.read(4096)).startswith(b"HTTP/1.1 200")
        for _, w in [*held, (reader, writer)]:
            w.close()


async def test_aiohttps_own_400_has_security_headers_and_no_ticket() -> None:
    token = "TiCkEt" * 7
    async with listening_process() as proxy:
        for line in (
            b"GET /websockify?token=%s\x01 HTTP/1.1\r\n\r\n",
            b"GET /websockify?token=%s HTTP/1.1\r\nBad Header\r\n\r\n",
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(line % token.encode())
            async with asyncio.timeout(5):
                answer = await reader.read(65536)
            writer.close()
            head, _, body = answer.partition(b"\r\n\r\n")
            assert b" 400 " in head.split(b"\r\n")[0], answer
            for header in (b"Content-Security-Policy", b"X-Content-Type-Options"):
                assert header in head, answer
            assert token.encode() not in answer and token[:10].encode() not in answer
            assert b'"code": "HTTP.400"' in body
