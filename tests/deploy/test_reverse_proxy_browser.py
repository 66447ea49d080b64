"""The whole app behind real nginx and real HAProxy, TLS terminated there, under /console-proxy,
driven end to end by Chromium.

For each reverse proxy the configs from deploy/ are rendered for loopback ports and a throw-away
self-signed certificate (tests/support/reverse_proxies.py); in front of them run the ZStack
simulator, a DemoVncServer VM and the proxy (``base_path = "/console-proxy"``, trusting
127.0.0.1). The test mints through the reverse proxy as a portal would, Chromium opens the
returned ``consoleUrl``, and the page's relative ``wss://…/console-proxy/websockify`` goes back
through the reverse proxy to the VM. Forwarded headers decide the console URL, the Origin check
and the client address in the audit log.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import WebSocket

from proxy.app import create_app
from proxy.demo.simulator import Inventory, create_simulator_app
from proxy.demo.vncserver import DemoVncServer
from tests.support.binaries import require_binary
from tests.support.browser import (
    VIEWPORT,
    PageProblems,
    chromium,
    status_text,
    wait_drawn,
    wait_state,
)
from tests.support.configs import make_config
from tests.support.reverse_proxies import (
    BASE,
    Tls,
    haproxy_config,
    nginx_setup,
    start_nginx_process,
)
from tests.support.services import HAProxy, stop
from tests.support.stack import zstack_login

pytestmark = pytest.mark.browser

Kind = Literal["nginx", "haproxy"]
VM_UUID = "4e7e0c0de0000000000000000000c001"
VM_NAME = "behind-the-proxy"
ADMIN, PASSWORD = "admin", "password"
# A second loopback address for a client that is not the reverse proxy: the proxy sees the
# reverse proxy's 127.0.0.1 as its peer, so only X-Forwarded-For can tell it this address.
OTHER_CLIENT = "127.0.0.3"

AiohttpServer = Callable[..., Awaitable[TestServer]]


@dataclass(frozen=True)
class Front:
    """A running reverse proxy: where browsers reach the console proxy."""

    kind: Kind
    https_port: int

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}{BASE}"


@dataclass(frozen=True)
class Stack:
    """The simulator, the VM's VNC server and the proxy, all on loopback behind ``front``."""

    simulator: TestServer
    proxy: TestServer
    audit: Path


@pytest.fixture
async def stack(aiohttp_server: AiohttpServer, tmp_path: Path) -> AsyncIterator[Stack]:
    async with DemoVncServer(name=VM_NAME) as vnc:
        inventory = Inventory.from_dict(
            {
                "accounts": [{"name": ADMIN, "password": PASSWORD}],
                "vms": [
                    {
                        "uuid": VM_UUID,
                        "name": VM_NAME,
                        "state": "Running",
                        "hostIp": "127.0.0.1",
                        "protocol": "vnc",
                        "vncPort": vnc.port,
                        "owner": ADMIN,
                    }
                ],
            }
        )
        simulator = await aiohttp_server(create_simulator_app(inventory))
        audit = tmp_path / "audit.jsonl"
        config = make_config(
            server={"base_path": BASE, "trusted_proxies": ["127.0.0.1/32"]},
            zstack={"url": str(simulator.make_url("/zstack")), "timeout": 5.0},
            audit={"sink": f"file:{audit}"},
        )
        proxy = await aiohttp_server(create_app(config))
        yield Stack(simulator, proxy, audit)


@pytest.fixture
def start_front(tmp_path: Path, tls: Tls) -> Iterator[Callable[[Kind, int], Front]]:
    """Start nginx or HAProxy from its deploy/ config in front of the proxy on ``upstream``."""
    nginxes: list[subprocess.Popen[bytes]] = []
    haproxies: list[HAProxy] = []

    def start(kind: Kind, upstream: int) -> Front:
        directory = tmp_path / kind
        directory.mkdir()
        if kind == "nginx":
            nginx = nginx_setup(directory, tls, upstream)
            nginxes.append(start_nginx_process(nginx))
            return Front(kind, nginx.https_port)
        config, https_port, _ = haproxy_config(directory, tls, [upstream])
        balancer = HAProxy(require_binary("haproxy", "haproxy"), config, https_port)
        haproxies.append(balancer)
        balancer.start()
        return Front(kind, https_port)

    yield start
    for process in nginxes:
        stop(process)
    for balancer in haproxies:
        balancer.stop()


# --- a portal's and an attacker's requests, through the reverse proxy --------------------------


async def login(stack: Stack) -> str:
    """A ZStack session, as the portal holds one (straight from the simulator)."""
    async with aiohttp.ClientSession() as http:
        zstack_url = str(stack.simulator.make_url("/zstack"))
        return await zstack_login(http, zstack_url, ADMIN, PASSWORD)


async def mint(front: Front, tls: Tls, session: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{front.base_url}/api/v1/consoles",
            json={"vmUuid": VM_UUID},
            headers={"Authorization": f"OAuth {session}"},
            ssl=tls.client_context(),
        ) as answer,
    ):
        body = await answer.json()
        assert answer.status == 201, body
        return dict(body)


async def wait_ready(front: Front, tls: Tls) -> None:
    """Until ``/readyz`` answers 200 through the reverse proxy (HAProxy health-checks it)."""
    deadline = time.monotonic() + 10
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"{front.base_url}/readyz", ssl=tls.client_context()) as answer:
                if answer.status == 200:
                    return
            assert time.monotonic() < deadline, f"{front.kind}: /readyz answered {answer.status}"
            await asyncio.sleep(0.1)


async def open_websocket(
    front: Front, tls: Tls, token: str, origin: str, local: str = "127.0.0.1"
) -> bytes:
    """Open the console WebSocket through the reverse proxy with this Origin, from ``local``;
    return the first bytes the proxy sends (its RFB greeting)."""
    connector = aiohttp.TCPConnector(local_addr=(local, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.ws_connect(
            f"{front.base_url}/websockify",
            ssl=tls.client_context(),
            headers={"Origin": origin},
            protocols=("binary", f"token.{token}"),
        ) as ws,
    ):
        assert ws.protocol == "binary"
        message = await ws.receive(timeout=5)
        assert message.type == aiohttp.WSMsgType.BINARY, message
        return bytes(message.data)


async def refused_status(front: Front, tls: Tls, token: str, origin: str) -> int:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await open_websocket(front, tls, token, origin)
    return refused.value.status


async def audited_client(audit: Path, count: int) -> str:
    """The client address of the ``count``-th console opened (waits for its audit line)."""
    deadline = time.monotonic() + 5
    while True:
        lines = audit.read_text().splitlines() if audit.exists() else []
        opened = [event for line in lines if (event := json.loads(line))["event"] == "console.open"]
        if len(opened) >= count:
            assert opened[count - 1]["vm"] == VM_UUID, opened
            return str(opened[count - 1]["client"])
        assert time.monotonic() < deadline, f"no console.open #{count} in the audit log: {lines}"
        await asyncio.sleep(0.05)


def second_loopback_address_works() -> bool:
    try:
        with socket.socket() as sock:
            sock.bind((OTHER_CLIENT, 0))
    except OSError:
        return False
    return True


# --- the test ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
async def test_console_in_chromium_through_reverse_proxy_over_tls(
    kind: Kind, stack: Stack, start_front: Callable[[Kind, int], Front], tls: Tls
) -> None:
    front = await asyncio.to_thread(start_front, kind, int(stack.proxy.port or 0))
    await wait_ready(front, tls)
    session = await login(stack)

    # The console URL is built from what the reverse proxy forwarded: https, its host and port,
    # and the base path; not from the plain-HTTP loopback address the proxy itself listens on.
    ticket = await mint(front, tls, session)
    token = ticket["token"]
    assert ticket["consoleUrl"] == f"{front.base_url}/console/vnc#token={token}"

    async with chromium() as browser:
        context = await browser.new_context(viewport=VIEWPORT, ignore_https_errors=True)
        page = await context.new_page()
        problems = PageProblems(page)
        sockets: list[str] = []

        def record(ws: WebSocket) -> None:
            sockets.append(ws.url)

        page.on("websocket", record)
        await page.goto(ticket["consoleUrl"])
        # The page's Origin is the reverse proxy's https origin: accepted because the proxy
        # compares it with the forwarded scheme and host.
        await wait_state(page, "connected")
        assert await status_text(page) == f"Connected to {VM_NAME}"
        stats = await wait_drawn(page)
        assert stats.colours > 1
        assert sockets == [f"wss://127.0.0.1:{front.https_port}{BASE}/websockify"]
        assert page.url == f"{front.base_url}/console/vnc"  # the ticket left the address bar
        problems.check()
        await context.close()
    # The browser's address, as X-Forwarded-For gave it.
    assert await audited_client(stack.audit, 1) == "127.0.0.1"

    # A page on another origin cannot borrow a ticket through the reverse proxy; nor can a plain
    # http:// page on the same host (the proxy's own socket is plain HTTP: only the forwarded
    # scheme makes https the expected one). Refused before the ticket is redeemed.
    token = (await mint(front, tls, session))["token"]
    assert await refused_status(front, tls, token, "https://evil.example") == 403
    assert await refused_status(front, tls, token, f"http://127.0.0.1:{front.https_port}") == 403

    # Linux routes all of 127.0.0.0/8 to lo, so this binds wherever the test runs.
    assert second_loopback_address_works(), f"cannot bind {OTHER_CLIENT} for the XFF check"
    # The same, still unused ticket from the reverse proxy's own origin, from another address:
    # the proxy's TCP peer is the reverse proxy (127.0.0.1), so the audited 127.0.0.3 can only
    # have come from X-Forwarded-For.
    greeting = await open_websocket(front, tls, token, front.origin, local=OTHER_CLIENT)
    assert greeting.startswith(b"RFB 003.00")
    assert await audited_client(stack.audit, 2) == OTHER_CLIENT
