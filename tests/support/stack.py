"""The proxy app (``proxy.app.create_app``) and a simulated ZStack, started together in-process,
with an HTTP client that logs in, mints and opens consoles the way a portal and a browser do.

One helper for every test that needs "a portal asks for a console and the browser opens it":

- :func:`zstack_login` and :func:`request_console` are the portal's two requests, for any
  client and any proxy (an in-process app, a ``console-proxy serve`` process, behind nginx);
- :func:`start_stack` starts the simulator serving some VMs (:func:`vm_entry`) and the proxy
  configured by sections (:func:`tests.support.configs.make_config`);
- the ``stack`` fixture (registered in tests/conftest.py) does that with a VNC target that
  echoes and :func:`standard_vms`: a running VM of admin's and of alice's, a stopped one, and
  one outside loopback.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestServer

from proxy.app import create_app
from proxy.demo.simulator import Inventory, create_simulator_app
from proxy.web.accesslog import RedactingAccessLogger
from proxy.web.keys import CONFIG
from tests.support.configs import make_config
from tests.support.net import rfb_echo
from tests.support.rfb_client import WebSocketStream, greet_as_browser

VM = "0123456789abcdef0123456789abcdef"
STOPPED = "0123456789abcdef0123456789abcde0"
ALICE_VM = "0123456789abcdef0123456789abcde1"
FAR_VM = "0123456789abcdef0123456789abcde2"
ADMIN, PASSWORD = "admin", "password"
ALICE, ALICE_PASSWORD = "alice", "alice-pw"

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


def standard_vms(port: int) -> list[dict[str, Any]]:
    """admin's running VM with its VNC console on ``port``, a stopped one, alice's, and one
    outside loopback."""
    return [
        vm_entry(VM, name="vm", vncPort=port),
        vm_entry(STOPPED, name="stopped", state="Stopped", vncPort=port),
        vm_entry(ALICE_VM, name="alices", owner=ALICE, vncPort=port),
        vm_entry(FAR_VM, name="far", hostIp="10.1.2.3", vncPort=port),
    ]


def inventory(vms: Iterable[dict[str, Any]]) -> Inventory:
    """The simulator's inventory: the accounts admin and alice, and ``vms``."""
    accounts = [
        {"name": ADMIN, "password": PASSWORD},
        {"name": ALICE, "password": ALICE_PASSWORD},
    ]
    return Inventory.from_dict({"accounts": accounts, "vms": list(vms)})


async def zstack_login(
    http: aiohttp.ClientSession, zstack_url: str, name: str = ADMIN, password: str = PASSWORD
) -> str:
    """A ZStack session as a portal gets one (PUT accounts/login with the SHA-512 password);
    ``zstack_url`` ends in /zstack."""
    body = {
        "logInByAccount": {
            "accountName": name,
            "password": hashlib.sha512(password.encode()).hexdigest(),
        }
    }
    async with http.put(f"{zstack_url}/v1/accounts/login", json=body) as answer:
        assert answer.status == 200, await answer.text()
        return str((await answer.json())["inventory"]["uuid"])


async def request_console(
    http: aiohttp.ClientSession,
    url: str,
    session: str | None,
    body: Any,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, Any]:
    """POST ``body`` to the consoles endpoint ``url`` (``.../api/v1/consoles``) with the ZStack
    ``session`` (none: no Authorization), as a portal's backend does: (status, JSON answer)."""
    auth = {"Authorization": f"OAuth {session}"} if session else {}
    async with http.post(url, json=body, headers={**auth, **(headers or {})}, **kwargs) as answer:
        return answer.status, await answer.json()


class Stack:
    """A running proxy app and simulator; ``http`` is the portal's and browser's client.

    ``target`` is the console target the ``stack`` fixture started; ``session`` is admin's
    ZStack session once :meth:`admin_session` (or :meth:`mint`) got it; ``audit`` the proxy's
    audit file if it has one. :meth:`url` adds the proxy's ``server.base_path``.
    """

    def __init__(
        self,
        proxy: TestServer,
        simulator: TestServer | None,
        target: Any = None,
        audit: Path | None = None,
    ) -> None:
        self.proxy = proxy
        self.simulator = simulator
        self.target = target
        self.audit = audit
        self.base = proxy.app[CONFIG].server.base_path if proxy.app is not None else ""
        self.session = ""
        self._http: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        """Made on first use (a Stack whose client is never used needs no closing)."""
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    @property
    def zstack_url(self) -> str:
        assert self.simulator is not None
        return str(self.simulator.make_url("/zstack"))

    def url(self, path: str) -> str:
        return str(self.proxy.make_url(f"{self.base}{path}"))

    async def login(self, name: str = ADMIN, password: str = PASSWORD) -> str:
        """A new ZStack session."""
        return await zstack_login(self.http, self.zstack_url, name, password)

    async def admin_session(self) -> str:
        """admin's ZStack session, logged in once."""
        if not self.session:
            self.session = await self.login()
        return self.session

    async def request_console(
        self, session: str | None, body: Any, **kwargs: Any
    ) -> tuple[int, Any]:
        """POST /api/v1/consoles with ``body`` as it is: (status, JSON answer)."""
        return await request_console(
            self.http, self.url("/api/v1/consoles"), session, body, **kwargs
        )

    async def mint(
        self, vm: str = VM, protocol: str | None = None, session: str | None = None
    ) -> tuple[int, Any]:
        """Ask for a console of ``vm`` (as admin unless ``session``): (status, JSON answer)."""
        body: dict[str, Any] = {"vmUuid": vm}
        if protocol is not None:
            body["protocol"] = protocol
        return await self.request_console(session or await self.admin_session(), body)

    async def token(self, vm: str = VM, protocol: str | None = None) -> str:
        status, body = await self.mint(vm, protocol)
        assert status == 201, body
        return str(body["token"])

    async def open(self, token: str, **kwargs: Any) -> aiohttp.ClientWebSocketResponse:
        """The browser's console WebSocket for ``token``."""
        return await self.http.ws_connect(self.url(f"/websockify?token={token}"), **kwargs)

    async def console(
        self, vm: str = VM, **kwargs: Any
    ) -> tuple[aiohttp.ClientWebSocketResponse, WebSocketStream]:
        """Mint a console of ``vm``, open it and do the browser's RFB handshake: (ws, stream)."""
        ws = await self.open(await self.token(vm), **kwargs)
        return ws, await greet_as_browser(ws)

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
            assert answer.headers["Content-Type"].startswith("text/plain")
            return await answer.text()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()


async def start_stack(
    aiohttp_server: AiohttpServer, vms: Iterable[dict[str, Any]], **sections: dict[str, Any]
) -> Stack:
    """The simulator serving ``vms`` and the proxy configured with ``sections`` (make_config).
    The caller closes the Stack."""
    simulator = await aiohttp_server(create_simulator_app(inventory(vms)), access_log=None)
    zstack = {"url": str(simulator.make_url("/zstack")), **sections.pop("zstack", {})}
    proxy = await aiohttp_server(create_app(make_config(zstack=zstack, **sections)))
    return Stack(proxy, simulator)


async def start_audited_stack(
    aiohttp_server: AiohttpServer, tcp_target: Any, tmp_path: Path, **sections: Any
) -> Stack:
    """One VM whose target speaks RFB and echoes, the proxy writing its audit to a file
    (``stack.audit``), and admin logged in (``stack.session``); ``sections`` as for
    :func:`start_stack`."""
    target = await tcp_target(rfb_echo)
    audit = tmp_path / "audit.jsonl"
    sections.setdefault("audit", {})["sink"] = f"file:{audit}"
    stack = await start_stack(
        aiohttp_server, [vm_entry(VM, name="vm", vncPort=target.port)], **sections
    )
    stack.target, stack.audit = target, audit
    async with aiohttp.ClientSession() as http:
        stack.session = await zstack_login(http, stack.zstack_url)
    return stack


async def post_mint(
    url: str, session: str, headers: dict[str, str], **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    """Ask for a console of :data:`VM` at the consoles endpoint ``url`` (perhaps through a
    reverse proxy) with a client of its own (``connector=`` one's own connector)."""
    async with aiohttp.ClientSession(connector=kwargs.pop("connector", None)) as http:
        status, body = await request_console(http, url, session, {"vmUuid": VM}, headers, **kwargs)
        return status, dict(body)


StartStack = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def stack(aiohttp_server: Any, tcp_target: Any) -> AsyncIterator[StartStack]:
    """``await stack(**config_sections)``: a started Stack whose target speaks RFB and echoes,
    serving :func:`standard_vms`."""

    async def start(**sections: Any) -> Stack:
        target = await tcp_target(rfb_echo)
        # The simulator stands in for ZStack, whose logs are not ours: keep them out of caplog.
        simulator = await aiohttp_server(
            create_simulator_app(inventory(standard_vms(target.port))), access_log=None
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
        await s.close()


async def close_code_of(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0) -> int:
    """Wait (past any binary messages) for the proxy to close ``ws``; its close code."""
    while True:
        message = await ws.receive(timeout=timeout)
        if message.type is not WSMsgType.BINARY:
            assert message.type is WSMsgType.CLOSE, message
            return int(message.data)


async def echo_vm_zstack(aiohttp_server: AiohttpServer, tcp_target: Any) -> tuple[str, Any]:
    """A simulated ZStack whose VM :data:`VM` has an echoing VNC console: (its API URL, the
    console's :class:`~tests.support.net.TcpTarget`)."""
    target = await tcp_target(rfb_echo)
    simulator = await aiohttp_server(
        create_simulator_app(inventory([vm_entry(VM, vncPort=target.port)])), access_log=None
    )
    return str(simulator.make_url("/zstack")), target


def process_env(zstack_url: str, **settings: str) -> dict[str, str]:
    """The environment of a ``console-proxy serve`` process using ``zstack_url`` and loopback
    targets, no audit lines on stderr, plus ``CONSOLE_PROXY_<KEY>`` for each of ``settings``."""
    return {
        "CONSOLE_PROXY_ZSTACK_URL": zstack_url,
        "CONSOLE_PROXY_TARGETS_ALLOW": "127.0.0.0/8",
        "CONSOLE_PROXY_AUDIT_SINK": "",
        **{f"CONSOLE_PROXY_{key.upper()}": value for key, value in settings.items()},
    }
