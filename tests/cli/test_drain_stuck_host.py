"""A console whose hypervisor stopped reading must not hold the proxy's exit: the drain closes
the host side too, so the bridge wakes and the browser's close handshake completes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.configs import write_token_file
from tests.support.net import free_port
from tests.support.serve_process import ServeProcess

# Before the fix the exit waited out the WebSocket close timeout plus aiohttp's shutdown
# timeout (10 s and more); a prompt exit stays well below.
PROMPT = 8.0


async def test_sigterm_exits_promptly_with_a_console_stuck_on_a_host(
    tcp_target: Any, tmp_path: Path
) -> None:
    stop = asyncio.Event()

    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await stop.wait()

    target = await tcp_target(never_reads)
    tokens = write_token_file(tmp_path / "tokens", {"vm": ("127.0.0.1", target.port)})
    port = free_port()
    env = {
        "CONSOLE_PROXY_TARGETS_ALLOW": "127.0.0.0/8",
        "CONSOLE_PROXY_SERVER_DRAIN_TIMEOUT": "0",
        "CONSOLE_PROXY_AUDIT_SINK": "",
    }
    args = ["--listen", f"127.0.0.1:{port}", "--token-file", str(tokens)]
    proxy = ServeProcess(port, args, tmp_path, env)
    try:
        async with proxy, aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"{proxy.url}/websockify?token=vm")
            chunk = os.urandom(256 * 1024)

            async def flood() -> None:
                with contextlib.suppress(ConnectionError):
                    while True:
                        await ws.send_bytes(chunk)

            # Fill the host's socket buffers and the proxy's bounded queue: the bridge then
            # waits for a host that never reads, and so does this sender.
            sender = asyncio.create_task(flood())
            await asyncio.sleep(2)
            assert not sender.done()
            proxy.send(signal.SIGTERM)
            started = time.monotonic()
            status = await proxy.wait_exit(30)
            elapsed = time.monotonic() - started
            sender.cancel()
            assert status == 0, proxy.stderr
            assert elapsed < PROMPT, f"exit took {elapsed:.1f} s: {proxy.stderr}"
    finally:
        stop.set()
