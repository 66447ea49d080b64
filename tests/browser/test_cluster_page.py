"""A console in real Chromium, inside a portal's iframe, served through HAProxy by three
``console-proxy serve`` processes sharing Redis: the instance holding the console is SIGKILLed
and the page reconnects through the balancer with a fresh ticket from the portal."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy.demo.simulator import Inventory, create_simulator_app
from proxy.demo.vncserver import DemoVncServer
from tests.support.binaries import require_binary
from tests.support.browser import (
    VIEWPORT,
    PageProblems,
    Portal,
    chromium,
    close_code,
    console_frame,
    status_text,
    wait_drawn,
    wait_state,
)
from tests.support.services import ProcessCluster, RedisServer
from tests.support.stack import request_console, zstack_login

pytestmark = pytest.mark.browser

VM = "c1a57e4c0de000000000000000000001"
AiohttpServer = Callable[..., Awaitable[TestServer]]


def inventory(port: int) -> Inventory:
    vm = {"uuid": VM, "name": "cluster-vm", "state": "Running", "hostIp": "127.0.0.1"}
    return Inventory.from_dict(
        {
            "accounts": [{"name": "admin", "password": "password"}],
            "vms": [{**vm, "protocol": "vnc", "vncPort": port, "owner": "admin"}],
        }
    )


class BalancerPortal(Portal):
    """A portal backend on its own origin: it holds a ZStack session, mints tickets through the
    balancer and answers the console page's ``console-proxy:need-ticket`` (see PORTAL_PAGE)."""

    def __init__(self, zstack_url: str) -> None:
        super().__init__(VM)
        self.zstack_url = zstack_url
        self.balancer_url = ""
        self.session = ""

    async def mint(self) -> dict[str, Any]:
        assert self.balancer_url, "the cluster is not running yet"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            if not self.session:
                self.session = await zstack_login(http, self.zstack_url)
            url = f"{self.balancer_url}/api/v1/consoles"
            status, ticket = await request_console(http, url, self.session, {"vmUuid": VM})
            assert status == 201, ticket
            return dict(ticket)


async def test_console_reconnects_through_the_balancer_when_its_instance_dies(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    require_binary("chromium", "chromium")
    redis = RedisServer(require_binary("redis-server", "redis-server"), tmp_path)
    redis.start()
    try:
        async with DemoVncServer(name="cluster-vm") as vnc:
            await reconnect_after_kill(aiohttp_server, tmp_path, redis, vnc)
    finally:
        redis.stop()


async def reconnect_after_kill(
    aiohttp_server: AiohttpServer, tmp_path: Path, redis: RedisServer, vnc: DemoVncServer
) -> None:
    simulator = await aiohttp_server(create_simulator_app(inventory(vnc.port)), access_log=None)
    portal = BalancerPortal(str(simulator.make_url("/zstack")))
    portal_server = await aiohttp_server(portal.app())
    env = {
        "CONSOLE_PROXY_ZSTACK_URL": portal.zstack_url,
        "CONSOLE_PROXY_TICKETS_STORE": redis.url,
        "CONSOLE_PROXY_SERVER_FRAME_ANCESTORS": json.dumps(
            ["'self'", str(portal_server.make_url("/").origin())]
        ),
        "CONSOLE_PROXY_SERVER_DRAIN_TIMEOUT": "0",
        "CONSOLE_PROXY_AUDIT_SINK": "",
    }
    async with ProcessCluster(3, env, tmp_path) as cluster, chromium() as browser:
        portal.balancer_url = cluster.balancer.url
        context = await browser.new_context(viewport=VIEWPORT)
        page = await context.new_page()
        problems = PageProblems(page)
        await page.goto(str(portal_server.make_url("/")))
        frame = await console_frame(page, "#console")
        await wait_state(frame, "connected")
        await wait_drawn(frame)
        (holder,) = [index for index, n in (await cluster.active_consoles()).items() if n == 1]

        cluster.kill(holder)
        await wait_state(frame, "disconnected", 10_000)
        assert await close_code(frame) == "1006"
        assert "connection to the console proxy was lost" in await status_text(frame)
        # The page asks the portal for a fresh ticket by itself (backing off) and lands on a
        # live instance: HAProxy retries elsewhere and its health checks drop the dead one.
        await wait_state(frame, "connected", 20_000)
        stats = await wait_drawn(frame)
        assert (stats.width, stats.height) == (800, 480) and stats.colours > 1
        assert 1 <= await page.evaluate("window.ticketRequests") <= 3
        active = await cluster.active_consoles()
        assert holder not in active and sum(active.values()) == 1
        await context.close()
        problems.check()
