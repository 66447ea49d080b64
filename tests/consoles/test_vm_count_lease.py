"""README "Running several instances": ``max_per_vm`` holds across instances through Redis, and a
killed instance's consoles stop counting after a 60 s lease.

The lease is a module constant (``LEASE = 60.0`` in the cluster code), not a config key, so this
test waits the real 60 s: a ``console-proxy serve`` process holds the VM's one console and is
SIGKILLed (no goodbye to Redis); another instance refuses that VM with 4429 until the dead
console's lease runs out, then admits it. About 65 s in all.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import WSMsgType

from proxy.app import create_app
from proxy.closecodes import Close
from proxy.demo.simulator import create_simulator_app
from tests.support.binaries import require_binary
from tests.support.configs import make_config
from tests.support.net import free_port, rfb_echo
from tests.support.rfb_client import greet_as_browser
from tests.support.serve_process import ServeProcess
from tests.support.services import RedisServer
from tests.support.stack import VM, AiohttpServer, inventory, vm_entry, zstack_login

LEASE = 60.0


async def test_killed_instances_console_stops_counting_after_the_60s_lease(
    aiohttp_server: AiohttpServer, tcp_target: Any, tmp_path: Path
) -> None:
    redis_server = RedisServer(require_binary("redis-server", "redis-server"), tmp_path)
    redis_server.start()
    try:
        await lease_scenario(aiohttp_server, tcp_target, tmp_path, redis_server)
    finally:
        redis_server.stop()


async def lease_scenario(
    aiohttp_server: AiohttpServer, tcp_target: Any, tmp_path: Path, redis_server: RedisServer
) -> None:
    target = await tcp_target(rfb_echo)
    simulator = await aiohttp_server(
        create_simulator_app(inventory([vm_entry(VM, vncPort=target.port)])), access_log=None
    )
    zstack = str(simulator.make_url("/zstack"))
    port = free_port()
    env = {
        "CONSOLE_PROXY_ZSTACK_URL": zstack,
        "CONSOLE_PROXY_TARGETS_ALLOW": "127.0.0.0/8",
        "CONSOLE_PROXY_TICKETS_STORE": redis_server.url,
        "CONSOLE_PROXY_LIMITS_MAX_PER_VM": "1",
        "CONSOLE_PROXY_AUDIT_SINK": "",
    }
    doomed = ServeProcess(port, ["--listen", f"127.0.0.1:{port}"], tmp_path, env)
    survivor = await aiohttp_server(
        create_app(
            make_config(
                zstack={"url": zstack},
                tickets={"store": redis_server.url},
                limits={"max_per_vm": 1, "rate_burst": 10_000},
                audit={"sink": ""},
            )
        )
    )
    async with doomed, aiohttp.ClientSession() as http:
        session = await zstack_login(http, zstack)

        async def mint(base: str) -> str:
            async with http.post(
                f"{base}/api/v1/consoles",
                json={"vmUuid": VM},
                headers={"Authorization": f"OAuth {session}"},
            ) as answer:
                assert answer.status == 201, await answer.text()
                return str((await answer.json())["token"])

        async def try_survivor() -> tuple[int, str] | None:
            """None when the survivor admits a console for the VM, else its close."""
            token = await mint(str(survivor.make_url("")).rstrip("/"))
            ws = await http.ws_connect(survivor.make_url(f"/websockify?token={token}"))
            try:
                message = await ws.receive(timeout=10)
                if message.type is WSMsgType.BINARY:  # the proxy's RFB greeting: admitted
                    return None
                assert message.type is WSMsgType.CLOSE, message
                return int(message.data), str(message.extra)
            finally:
                await ws.close()

        claimed_from = time.time()
        held = await http.ws_connect(f"{doomed.url}/websockify?token={await mint(doomed.url)}")
        await greet_as_browser(held)  # the VM's one console, counted in Redis
        assert await try_survivor() == Close.TOO_MANY_FOR_VM.value  # cluster-wide while alive

        doomed.send(signal.SIGKILL)
        assert await doomed.wait_exit(10) == -signal.SIGKILL
        await held.close()
        # No goodbye reached Redis: the dead console counts until its lease runs out.
        refusals = 0
        deadline = claimed_from + LEASE + 20
        while (outcome := await try_survivor()) is not None:
            assert outcome == Close.TOO_MANY_FOR_VM.value
            refusals += 1
            assert time.time() < deadline, "the dead instance's console never stopped counting"
            await asyncio.sleep(1.0)
        admitted_at = time.time()
    assert refusals >= 10
    # Not before the lease (taken when the console opened) ran out.
    assert admitted_at >= claimed_from + LEASE - 1.0, admitted_at - claimed_from
