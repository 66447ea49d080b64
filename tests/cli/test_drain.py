"""README "Drain and restarts": a real ``console-proxy serve`` process gets SIGTERM while a console
is open. The console keeps flowing for ``[server] drain_timeout``, new connections are refused,
then the console closes with 1001 "proxy restarting, reconnecting" and the process exits 0."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from proxy.closecodes import Close
from tests.support.net import free_port
from tests.support.rfb_client import greet_as_browser
from tests.support.serve_process import ServeProcess
from tests.support.stack import VM, AiohttpServer, echo_vm_zstack, process_env, zstack_login

DRAIN = 4.0


async def test_sigterm_drains_open_consoles_then_closes_them_with_1001_and_exits_0(
    aiohttp_server: AiohttpServer, tcp_target: Any, tmp_path: Path
) -> None:
    zstack, target = await echo_vm_zstack(aiohttp_server, tcp_target)
    port = free_port()
    env = process_env(zstack, server_drain_timeout=str(DRAIN))
    proxy = ServeProcess(port, ["--listen", f"127.0.0.1:{port}"], tmp_path, env)
    async with proxy, aiohttp.ClientSession() as http:
        session = await zstack_login(http, zstack)
        tokens = []
        for _ in range(2):
            async with http.post(
                f"{proxy.url}/api/v1/consoles",
                json={"vmUuid": VM},
                headers={"Authorization": f"OAuth {session}"},
            ) as answer:
                assert answer.status == 201
                tokens.append((await answer.json())["token"])
        ws = await http.ws_connect(f"{proxy.url}/websockify?token={tokens[0]}")
        stream = await greet_as_browser(ws)
        await stream.write(b"before")
        assert await stream.read_exactly(6, 5) == b"before"

        proxy.send(signal.SIGTERM)
        signalled = time.monotonic()
        # The console keeps flowing during the drain, both ways, byte for byte.
        echoed = 0
        while time.monotonic() - signalled < DRAIN / 2:
            payload = f"during-{echoed:04d}".encode()
            await stream.write(payload)
            assert await stream.read_exactly(len(payload), 5) == payload
            echoed += 1
            await asyncio.sleep(0.1)
        assert echoed >= 5
        # New upgrades (with a ticket that is still valid) are refused: nobody listens.
        # (A session of its own: a refused upgrade's connection is closed with it, not by GC
        # during some later test, where it would show as an unclosed-connection warning.)
        async with aiohttp.ClientSession() as probe:
            with pytest.raises(aiohttp.ClientConnectionError):
                await probe.ws_connect(f"{proxy.url}/websockify?token={tokens[1]}")
        assert target.connections == 1
        assert proxy.process is not None and proxy.process.poll() is None

        # Then the proxy closes the console with 1001 and exits 0.
        message = await ws.receive(timeout=DRAIN + 15)
        closed_after = time.monotonic() - signalled
        while message.type is WSMsgType.BINARY:  # nothing more should come, but be exact
            message = await ws.receive(timeout=5)
        assert message.type is WSMsgType.CLOSE, message
        assert (message.data, message.extra) == Close.GOING_AWAY.value
        assert message.data == 1001
        assert closed_after >= DRAIN - 0.5  # not before the drain time ran out
        await ws.close()
        assert await proxy.wait_exit(15) == 0, proxy.stderr
    assert "draining 1 console(s)" in proxy.stderr
    assert "closed 1 console(s) still open after the drain" in proxy.stderr


async def test_sigterm_without_open_consoles_exits_0_at_once(tmp_path: Path) -> None:
    """The drain waits for open consoles only: an idle process does not sit out drain_timeout."""
    port = free_port()
    env = {"CONSOLE_PROXY_SERVER_DRAIN_TIMEOUT": "60"}
    proxy = ServeProcess(port, ["--listen", f"127.0.0.1:{port}"], tmp_path, env)
    async with proxy:
        proxy.send(signal.SIGTERM)
        # Far below the 60 s drain: it did not wait for consoles that do not exist.
        assert await proxy.wait_exit(30) == 0, proxy.stderr
