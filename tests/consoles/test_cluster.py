"""Several proxy instances behind HAProxy sharing one Redis: tickets, per-VM limits, revocation,
a Redis restart and a SIGKILLed instance.

Three instances (A, B, C) use one simulated ZStack and one real redis-server, behind a real
HAProxy balancing round robin; everything listens on loopback ephemeral ports and is stopped
afterwards. The console target is an RFB server that echoes what follows the handshake.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestServer

from proxy.app import create_app
from proxy.closecodes import Close
from proxy.demo.simulator import Inventory, create_simulator_app
from tests.support.configs import make_config
from tests.support.net import TcpTarget, rfb_echo
from tests.support.rfb_client import ByteStream, RfbClosed, RfbError, greet_as_browser
from tests.support.services import (
    ProcessCluster,
    RedisServer,
    read_metric,
    start_round_robin,
)
from tests.support.stack import zstack_login
from tests.support.waiting import wait_until

VM = "0123456789abcdef0123456789abcdef"
ADMIN_TOKEN = "cluster-admin-token-for-tests"
SIGNING_KEY = base64.b64encode(os.urandom(32)).decode()
INSTANCES = ("A", "B", "C")
BALANCER = "balancer"
REDIS_TIMEOUT = 1.0
STORES = {
    "stored": {},
    # Stateless tickets: any instance verifies them; Redis only counts their uses.
    "signed": {"signing_keys": [SIGNING_KEY]},
}

AiohttpServer = Callable[..., Awaitable[TestServer]]
StartTarget = Callable[..., Awaitable[TcpTarget]]


def inventory(port: int) -> Inventory:
    vm = {"uuid": VM, "name": "vm", "state": "Running", "hostIp": "127.0.0.1", "owner": "admin"}
    return Inventory.from_dict(
        {
            "accounts": [{"name": "admin", "password": "password"}],
            "vms": [{**vm, "protocol": "vnc", "vncPort": port}],
        }
    )


@dataclass
class Console:
    ws: aiohttp.ClientWebSocketResponse
    stream: ByteStream

    async def echo(self, payload: bytes) -> None:
        await self.stream.write(payload)
        assert await self.stream.read_exactly(len(payload), 5) == payload

    async def closed_with(self) -> tuple[int, str]:
        """Wait for the proxy to close the console; its close code and reason."""
        while True:
            message = await self.ws.receive(timeout=5)
            if message.type is not WSMsgType.BINARY:
                assert message.type is WSMsgType.CLOSE, message
                return int(message.data), str(message.extra)

    async def close(self) -> None:
        await self.ws.close()


@dataclass
class Cluster:
    """A client of the cluster: ``where`` is an instance name or BALANCER."""

    urls: dict[str, str]
    zstack: str
    target: TcpTarget
    # A connection per request, so that HAProxy balances every request on its own.
    http: aiohttp.ClientSession = field(
        default_factory=lambda: aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True),
            timeout=aiohttp.ClientTimeout(total=10),
        )
    )
    session: str = ""

    async def login(self) -> str:
        if not self.session:
            self.session = await zstack_login(self.http, self.zstack)
        return self.session

    async def mint(self, where: str) -> tuple[int, Any]:
        """POST /api/v1/consoles; the JSON answer, or the text of anything else (HAProxy's)."""
        headers = {"Authorization": f"OAuth {await self.login()}"}
        async with self.http.post(
            f"{self.urls[where]}/api/v1/consoles", json={"vmUuid": VM}, headers=headers
        ) as answer:
            if answer.content_type == "application/json":
                return answer.status, await answer.json()
            return answer.status, await answer.text()

    async def ticket(self, where: str) -> str:
        status, body = await self.mint(where)
        assert status == 201, body
        return str(body["token"])

    async def open(self, where: str, token: str) -> aiohttp.ClientWebSocketResponse:
        return await self.http.ws_connect(f"{self.urls[where]}/websockify?token={token}")

    async def console(self, where: str, token: str) -> Console:
        """Open a console and do the browser's side of the RFB handshake."""
        ws = await self.open(where, token)
        try:
            return Console(ws, await greet_as_browser(ws))
        except BaseException:
            await ws.close()
            raise

    async def refusal(self, where: str, token: str) -> tuple[int, str]:
        """Open a WebSocket that the proxy is expected to close at once; code and reason."""
        ws = await self.open(where, token)
        try:
            message = await ws.receive(timeout=5)
        finally:
            await ws.close()
        assert message.type is WSMsgType.CLOSE, message
        return int(message.data), str(message.extra)

    async def get(self, where: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.http.get(f"{self.urls[where]}{path}", **kwargs) as answer:
            return answer.status, await answer.json()

    async def revoke(self, where: str, token: str = ADMIN_TOKEN) -> tuple[int, Any]:
        url = f"{self.urls[where]}/api/v1/admin/vms/{VM}/close-consoles"
        headers = {"Authorization": f"Bearer {token}"}
        async with self.http.post(url, headers=headers) as answer:
            return answer.status, await answer.json()

    async def close(self) -> None:
        await self.http.close()


StartCluster = Callable[..., Awaitable[Cluster]]


@pytest.fixture
async def simulator(
    aiohttp_server: AiohttpServer, tcp_target: StartTarget
) -> tuple[str, TcpTarget]:
    """The console target and a simulated ZStack naming it; the ZStack base URL."""
    target = await tcp_target(rfb_echo)
    server = await aiohttp_server(create_simulator_app(inventory(target.port)), access_log=None)
    return str(server.make_url("/zstack")), target


@pytest.fixture
async def start_cluster(
    redis_server: RedisServer,
    aiohttp_server: AiohttpServer,
    simulator: tuple[str, TcpTarget],
    tmp_path: Path,
) -> AsyncIterator[StartCluster]:
    """Three in-process instances behind HAProxy (round robin, no health checks).

    Redis is set up first so that it outlives the instances at teardown."""
    started: list[Cluster] = []
    balancers = []
    zstack, target = simulator

    async def start(**sections: dict[str, Any]) -> Cluster:
        config = make_config(
            server={"admin_token": ADMIN_TOKEN},
            zstack={"url": zstack},
            tickets={"store": redis_server.url, "redis_timeout": REDIS_TIMEOUT}
            | sections.get("tickets", {}),
            # Every request comes from 127.0.0.1 here, so the per-address rate is not the test.
            limits={"rate_burst": 10_000} | sections.get("limits", {}),
            audit={"sink": ""},
        )
        servers = [await aiohttp_server(create_app(config)) for _ in INSTANCES]
        balancer = await asyncio.to_thread(
            start_round_robin, tmp_path, [int(server.port or 0) for server in servers]
        )
        balancers.append(balancer)
        urls = {
            name: str(s.make_url("")).rstrip("/")
            for name, s in zip(INSTANCES, servers, strict=True)
        }
        started.append(Cluster({**urls, BALANCER: balancer.url}, zstack, target))
        return started[-1]

    yield start
    for cluster in started:
        await cluster.close()
    for balancer in balancers:
        balancer.stop()


async def invalid_redeems(cluster: Cluster, where: str) -> float:
    return await read_metric(
        cluster.urls[where], "console_proxy_tickets_redeemed_total", result="invalid"
    )


# --- tickets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("store", STORES)
async def test_ticket_minted_on_one_instance_opens_once_through_the_balancer(
    start_cluster: StartCluster, store: str
) -> None:
    cluster = await start_cluster(tickets=STORES[store])
    token = await cluster.ticket("A")
    assert token.startswith("s1.") == (store == "signed")
    console = await cluster.console(BALANCER, token)
    await console.echo(b"through the balancer")

    # Replays: twice round the balancer's rotation, then at each instance directly.
    for where in [BALANCER] * 2 * len(INSTANCES) + list(INSTANCES):
        assert await cluster.refusal(where, token) == Close.TICKET_INVALID.value, where
    for name in INSTANCES:
        assert await invalid_redeems(cluster, name) == 3, f"instance {name} saw every replay"
    await console.echo(b"the first console is untouched")
    await console.close()
    assert cluster.target.connections == 1


@pytest.mark.parametrize("store", STORES)
async def test_expired_ticket_is_refused_by_every_instance(
    start_cluster: StartCluster, store: str
) -> None:
    cluster = await start_cluster(tickets={"ttl": 0.3, **STORES[store]})
    token = await cluster.ticket("A")
    await asyncio.sleep(0.5)
    for where in [BALANCER] * len(INSTANCES) + list(INSTANCES):
        assert await cluster.refusal(where, token) == Close.TICKET_INVALID.value, where
    assert cluster.target.connections == 0


# --- per-VM limit and revocation -------------------------------------------------------------


async def test_per_vm_limit_counts_consoles_on_every_instance(start_cluster: StartCluster) -> None:
    cluster = await start_cluster(limits={"max_per_vm": 2})
    on_a = await cluster.console("A", await cluster.ticket("A"))
    on_b = await cluster.console("B", await cluster.ticket("A"))
    code, reason = await cluster.refusal("C", await cluster.ticket("C"))
    assert (code, reason) == (4429, "too many consoles are open for this VM")
    await on_b.echo(b"still open")

    await on_a.close()

    # The instance releases its count just after the close handshake: allow it a moment.
    async def third_console() -> Console | None:
        try:
            return await cluster.console("C", await cluster.ticket("B"))
        except RfbClosed as refused:
            assert refused.code == 4429, refused
            return None

    on_c = await wait_until(third_console, message="A's count was never released")
    await on_c.echo(b"third console")
    await on_b.close()
    await on_c.close()


async def test_revocation_on_one_instance_closes_the_console_on_another(
    start_cluster: StartCluster,
) -> None:
    cluster = await start_cluster()
    on_c = await cluster.console("C", await cluster.ticket("A"))
    await on_c.echo(b"before")

    assert (await cluster.revoke("A", token="wrong"))[0] == 401
    await on_c.echo(b"a refused admin call changes nothing")
    status, body = await cluster.revoke("A")
    assert status == 200, body
    assert body == {"vmUuid": VM, "closedHere": 0, "otherInstancesTold": 2}
    assert await on_c.closed_with() == (4410, "console closed by an administrator")
    await on_c.close()


# --- Redis goes away and comes back ----------------------------------------------------------


async def test_redis_restart(start_cluster: StartCluster, redis_server: RedisServer) -> None:
    cluster = await start_cluster()
    # Held on C, so that revoking it from A below takes Redis's pub/sub.
    console = await cluster.console("C", await cluster.ticket("A"))
    unused = await cluster.ticket("B")

    redis_server.stop()
    for where in (*INSTANCES, BALANCER):
        started = time.monotonic()
        status, body = await cluster.mint(where)
        assert status == 503, body
        assert body["error"]["code"] == "TICKETS.UNAVAILABLE"
        assert "cannot store console tickets" in body["error"]["description"]
        assert time.monotonic() - started < REDIS_TIMEOUT + 3  # not a hang; a loaded machine
        status, body = await cluster.get(where, "/readyz")
        assert (status, body["store"]) == (503, "TICKETS.UNAVAILABLE"), body
    assert await cluster.refusal("C", unused) == Close.STORE_UNAVAILABLE.value
    # Open consoles need no Redis: bytes keep flowing both ways.
    await console.echo(b"redis is down" * 1000)

    redis_server.start()  # same port, empty (no persistence)
    for where in (*INSTANCES, BALANCER):
        await ticket_when_redis_is_back(cluster, where)
        assert (await cluster.get(where, "/readyz"))[0] == 200
    second = await cluster.console(BALANCER, await cluster.ticket("C"))
    await second.echo(b"after the restart")
    await console.echo(b"the old console survived it")
    # Revocation needs the instances' pub/sub subscriptions back.
    await revoke_until_closed(cluster, console, within=20)
    await second.close()


async def test_revocation_resumes_soon_after_each_redis_restart(
    start_cluster: StartCluster, redis_server: RedisServer
) -> None:
    # A long outage first, then a short one: the second must not inherit the first's backoff.
    # Resubscribing waits 0.5 s, 1 s, 2 s, 4 s, ...: after the 7 s outage the next wait would be
    # 8 s, while a fresh start waits 0.5 s (1.5 s after a second failure). The bound lies
    # between, with room for a loaded machine.
    cluster = await start_cluster()
    for outage in (7.0, 0.3):
        console = await cluster.console("C", await ticket_when_redis_is_back(cluster, "A"))
        redis_server.stop()
        await asyncio.sleep(outage)
        redis_server.start()
        took = await revoke_until_closed(cluster, console, within=20)
    assert took < 5, f"revocations reached the other instances only {took:.1f} s after Redis"


async def ticket_when_redis_is_back(cluster: Cluster, where: str, within: float = 20) -> str:
    deadline = time.monotonic() + within
    while (answer := await cluster.mint(where))[0] != 201:
        assert time.monotonic() < deadline, f"{where} still fails: {answer}"
        await asyncio.sleep(0.1)
    return str(answer[1]["token"])


async def revoke_until_closed(cluster: Cluster, console: Console, within: float) -> float:
    """Revoke the VM's consoles from A until ``console`` (not on A) closes; how long it took.

    Pub/sub delivers only to instances subscribed at the time, so the call is repeated."""
    started = time.monotonic()
    while True:
        assert (await cluster.revoke("A"))[0] == 200
        try:
            async with asyncio.timeout(0.25):
                closed = await console.closed_with()
            break
        except TimeoutError:
            assert time.monotonic() - started < within, "revocations never reached the others"
    assert closed == (4410, "console closed by an administrator")
    await console.close()
    return time.monotonic() - started


# --- an instance dies (real processes) -------------------------------------------------------


async def console_through_balancer(cluster: Cluster, within: float) -> Console:
    """Mint and open through the balancer, retrying while HAProxy still sends to a dead server."""
    deadline = time.monotonic() + within
    while True:
        try:
            status, body = await cluster.mint(BALANCER)
            if status == 201:
                return await cluster.console(BALANCER, body["token"])
            failure = f"mint answered {status}: {body}"
        except (aiohttp.ClientError, RfbError) as exc:
            failure = repr(exc)
        assert time.monotonic() < deadline, failure
        await asyncio.sleep(0.1)


async def test_sigkilled_instance_leaves_the_others_serving(
    simulator: tuple[str, TcpTarget], redis_server: RedisServer, tmp_path: Path
) -> None:
    zstack, target = simulator
    env = {
        "CONSOLE_PROXY_ZSTACK_URL": zstack,
        "CONSOLE_PROXY_TICKETS_STORE": redis_server.url,
        "CONSOLE_PROXY_LIMITS_RATE_BURST": "10000",
        # The dead instance's console keeps counting against its VM until its lease runs out.
        "CONSOLE_PROXY_LIMITS_MAX_PER_VM": "100",
        "CONSOLE_PROXY_SERVER_DRAIN_TIMEOUT": "0",
        "CONSOLE_PROXY_AUDIT_SINK": "",
    }
    async with ProcessCluster(len(INSTANCES), env, tmp_path) as processes:
        urls = dict(zip(INSTANCES, processes.urls, strict=True))
        cluster = Cluster({**urls, BALANCER: processes.balancer.url}, zstack, target)
        try:
            # Mints and upgrades alternate round the rotation of three: one console each.
            held: dict[int, Console] = {}
            for _ in INSTANCES:
                before = await processes.active_consoles()
                console = await console_through_balancer(cluster, 0)
                after = await processes.active_consoles()
                (holder,) = [i for i in after if after[i] == before[i] + 1]
                held[holder] = console
            assert sorted(held) == [0, 1, 2]

            processes.kill(1)
            with pytest.raises((RfbError, aiohttp.ClientError, TimeoutError)):
                await held[1].echo(b"its instance is gone")
            await held[0].echo(b"still here")
            await held[2].echo(b"still here")

            fresh = [await console_through_balancer(cluster, 20) for _ in range(2 * len(INSTANCES))]
            for console in fresh:
                await console.echo(b"served by a survivor")
            active = await processes.active_consoles()
            assert set(active) == {0, 2} and sum(active.values()) == 2 + len(fresh)
            for console in [*held.values(), *fresh]:
                await console.close()
        finally:
            await cluster.close()
