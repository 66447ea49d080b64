"""The proxy app (``proxy.app.create_app``) and a simulated ZStack, started together in-process,
with an HTTP client that logs in, mints and opens consoles the way a portal and a browser do.

Used by the tests of README behaviours (test_api_errors, test_closecodes, test_metrics, ...).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiohttp
from aiohttp import WSMsgType
from aiohttp.test_utils import TestServer

from proxy.app import create_app
from proxy.demo.simulator import Inventory, create_simulator_app
from tests.support.configs import make_config

VM = "0123456789abcdef0123456789abcdef"
ADMIN, PASSWORD = "admin", "pw"

AiohttpServer = Callable[..., Awaitable[TestServer]]


def vm_entry(uuid: str = VM, **fields: Any) -> dict[str, Any]:
    """One simulator inventory VM on loopback, Running, owned by admin (override any field)."""
    base = {
        "uuid": uuid,
        "name": f"vm-{uuid[-4:]}",
        "state": "Running",
        "hostIp": "127.0.0.1",
        "protocol": "vnc",
        "owner": ADMIN,
    }
    return {**base, **fields}


def inventory(vms: Iterable[dict[str, Any]]) -> Inventory:
    return Inventory.from_dict(
        {"accounts": [{"name": ADMIN, "password": PASSWORD}], "vms": list(vms)}
    )


async def login(http: aiohttp.ClientSession, zstack_url: str) -> str:
    """Log in to the (simulated) ZStack at ``zstack_url`` (ending in /zstack); the session."""
    body = {
        "logInByAccount": {
            "accountName": ADMIN,
            "password": hashlib.sha512(PASSWORD.encode()).hexdigest(),
        }
    }
    async with http.put(f"{zstack_url}/v1/accounts/login", json=body) as answer:
        assert answer.status == 200, await answer.text()
        return str((await answer.json())["inventory"]["uuid"])


class Stack:
    """A running proxy app and simulator; ``http`` is the portal's and browser's client."""

    def __init__(self, proxy: TestServer, simulator: TestServer | None) -> None:
        self.proxy = proxy
        self.simulator = simulator
        self.http = aiohttp.ClientSession()
        self.session = ""

    @property
    def zstack_url(self) -> str:
        assert self.simulator is not None
        return str(self.simulator.make_url("/zstack"))

    def url(self, path: str) -> str:
        return str(self.proxy.make_url(path))

    async def login(self) -> str:
        if not self.session:
            self.session = await login(self.http, self.zstack_url)
        return self.session

    async def mint(
        self, vm: str = VM, protocol: str | None = None, session: str | None = None
    ) -> tuple[int, Any]:
        body: dict[str, Any] = {"vmUuid": vm}
        if protocol is not None:
            body["protocol"] = protocol
        headers = {"Authorization": f"OAuth {session or await self.login()}"}
        async with self.http.post(
            self.url("/api/v1/consoles"), json=body, headers=headers
        ) as answer:
            return answer.status, await answer.json()

    async def token(self, vm: str = VM, protocol: str | None = None) -> str:
        status, body = await self.mint(vm, protocol)
        assert status == 201, body
        return str(body["token"])

    async def open(self, token: str, **kwargs: Any) -> aiohttp.ClientWebSocketResponse:
        return await self.http.ws_connect(self.url(f"/websockify?token={token}"), **kwargs)

    async def refusal(self, token: str, timeout: float = 10.0) -> tuple[int, str]:
        """Open a console the proxy is expected to close before any console byte: (code, reason)."""
        ws = await self.open(token)
        try:
            while True:
                message = await ws.receive(timeout=timeout)
                if message.type is not WSMsgType.BINARY:
                    break
        finally:
            await ws.close()
        assert message.type is WSMsgType.CLOSE, message
        return int(message.data), str(message.extra)

    async def metrics(self) -> str:
        async with self.http.get(self.url("/metrics")) as answer:
            assert answer.status == 200
            return await answer.text()

    async def close(self) -> None:
        await self.http.close()


async def start_stack(
    aiohttp_server: AiohttpServer, vms: Iterable[dict[str, Any]], **sections: dict[str, Any]
) -> Stack:
    """The simulator serving ``vms`` and the proxy configured with ``sections`` (make_config)."""
    simulator = await aiohttp_server(create_simulator_app(inventory(vms)), access_log=None)
    zstack = {"url": str(simulator.make_url("/zstack")), **sections.pop("zstack", {})}
    proxy = await aiohttp_server(create_app(make_config(zstack=zstack, **sections)))
    return Stack(proxy, simulator)
