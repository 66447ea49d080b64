"""The proxy in-process beside the ZStack simulator and a console target: log in, mint, connect.

One helper for every test that needs "a portal asks for a console and the browser opens it".
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy.app import create_app
from proxy.demo.simulator import Inventory, create_simulator_app
from proxy.web.accesslog import RedactingAccessLogger
from tests.support.configs import make_config
from tests.support.net import rfb_echo

VM = "0123456789abcdef0123456789abcdef"
STOPPED = "0123456789abcdef0123456789abcde0"
ALICE_VM = "0123456789abcdef0123456789abcde1"
FAR_VM = "0123456789abcdef0123456789abcde2"


def inventory(port: int) -> Inventory:
    """admin and alice; a running VM of each, a stopped one, one outside loopback."""
    vm = {"hostIp": "127.0.0.1", "protocol": "vnc", "vncPort": port, "owner": "admin"}
    return Inventory.from_dict(
        {
            "accounts": [
                {"name": "admin", "password": "password"},
                {"name": "alice", "password": "alice-pw"},
            ],
            "vms": [
                {**vm, "uuid": VM, "name": "vm", "state": "Running"},
                {**vm, "uuid": STOPPED, "name": "stopped", "state": "Stopped"},
                {**vm, "uuid": ALICE_VM, "name": "alices", "state": "Running", "owner": "alice"},
                {**vm, "uuid": FAR_VM, "name": "far", "state": "Running", "hostIp": "10.1.2.3"},
            ],
        }
    )


async def zstack_login(
    http: aiohttp.ClientSession, zstack_url: str, name: str, password: str
) -> str:
    """A ZStack session as a portal gets one (PUT accounts/login with the SHA-512 password)."""
    body = {
        "logInByAccount": {
            "accountName": name,
            "password": hashlib.sha512(password.encode()).hexdigest(),
        }
    }
    async with http.put(f"{zstack_url}/v1/accounts/login", json=body) as response:
        assert response.status == 200, await response.text()
        return str((await response.json())["inventory"]["uuid"])


class Stack:
    """The simulator, the proxy and a console target, started together."""

    def __init__(self, proxy: TestServer, simulator: TestServer, target: Any) -> None:
        self.proxy = proxy
        self.simulator = simulator
        self.target = target
        self.http = aiohttp.ClientSession()

    @property
    def zstack_url(self) -> str:
        return str(self.simulator.make_url("/zstack"))

    async def login(self, name: str = "admin", password: str = "password") -> str:
        return await zstack_login(self.http, self.zstack_url, name, password)

    async def mint(self, session: str | None, body: Any, **kwargs: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"OAuth {session}"} if session else {}
        async with self.http.post(
            self.proxy.make_url("/api/v1/consoles"), json=body, headers=headers, **kwargs
        ) as response:
            return response.status, await response.json()

    async def connect(self, token: str) -> aiohttp.ClientWebSocketResponse:
        return await self.http.ws_connect(self.proxy.make_url(f"/websockify?token={token}"))


StartStack = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def stack(aiohttp_server: Any, tcp_target: Any) -> AsyncIterator[StartStack]:
    """``await stack(**config_sections)``: a started Stack whose target speaks RFB and echoes."""

    async def start(**sections: Any) -> Stack:
        target = await tcp_target(rfb_echo)
        # The simulator stands in for ZStack, whose logs are not ours: keep them out of caplog.
        simulator = await aiohttp_server(
            create_simulator_app(inventory(target.port)), access_log=None
        )
        sections.setdefault("zstack", {}).setdefault("url", str(simulator.make_url("/zstack")))
        proxy = await aiohttp_server(
            create_app(make_config(**sections)), access_log_class=RedactingAccessLogger
        )
        made.append(Stack(proxy, simulator, target))
        return made[-1]

    made: list[Stack] = []
    yield start
    for s in made:
        await s.http.close()
