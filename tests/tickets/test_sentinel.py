"""Redis Sentinel: two proxy instances follow a failover while consoles are open and mints run.

Real processes: a primary, two replicas and three sentinels (tests/support/sentinel.py), with a
password on the data nodes and another on the sentinels; the primary is SIGKILLed. Two proxy
apps run in-process against a simulated ZStack; the console target is an RFB server that
echoes what follows the handshake.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestServer

from proxy.app import create_app
from proxy.closecodes import Close
from proxy.config import Config, ConfigError, load_config, redis_sentinels, redis_wait_replicas
from proxy.demo.simulator import Inventory, create_simulator_app
from proxy.tickets.redis_client import redis_client_from_sentinels, redis_client_from_url
from proxy.tickets.redis_store import RedisTicketStore
from proxy.tickets.store import Ticket, TicketStoreUnavailable, new_token
from tests.support.binaries import require_binary
from tests.support.configs import make_config
from tests.support.net import TcpTarget, rfb_echo
from tests.support.rfb_client import ByteStream, RfbClosed, greet_as_browser
from tests.support.sentinel import DATA_PASSWORD, SENTINEL_PASSWORD, SERVICE, SentinelCluster
from tests.support.stack import zstack_login

VM = "0123456789abcdef0123456789abcdef"  # the long-lived consoles, the per-VM limit
BUSY_VM = "0123456789abcdef0123456789abcde1"  # minted and opened in a loop throughout
ADMIN_TOKEN = "sentinel-admin-token-for-tests"
INSTANCES = ("A", "B")
REDIS_TIMEOUT = 1.0
MAX_PER_VM = 4
# The bound: mints and redemptions work again this soon after the promotion.
RESUMES_WITHIN = 2.0

AiohttpServer = Callable[..., Awaitable[TestServer]]
StartTarget = Callable[..., Awaitable[TcpTarget]]


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelCluster]:
    cluster = SentinelCluster(require_binary("redis-server", "redis-server"), tmp_path / "redis")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def tickets_config(cluster: SentinelCluster, **extra: Any) -> dict[str, Any]:
    return {
        "store": "redis",
        "redis_sentinels": cluster.sentinel_addresses,
        "redis_service": SERVICE,
        "redis_sentinel_password": SENTINEL_PASSWORD,
        # Only the password and the database: the sentinels say where the primary is.
        "redis_url": f"redis://:{DATA_PASSWORD}@{SERVICE}/0",
        "redis_timeout": REDIS_TIMEOUT,
        **extra,
    }


# --- a client of both instances --------------------------------------------------------------


@dataclass
class Console:
    ws: aiohttp.ClientWebSocketResponse
    stream: ByteStream
    # When each echo came back, and how many bytes came back exactly as sent.
    echoed_at: list[float] = field(default_factory=list)
    echoed: int = 0

    async def echo(self, payload: bytes) -> None:
        await self.stream.write(payload)
        assert await self.stream.read_exactly(len(payload), 5) == payload
        self.echoed += len(payload)
        self.echoed_at.append(time.monotonic())

    async def keep_echoing(self, stop: asyncio.Event) -> None:
        """Numbered 4 KiB chunks, each checked byte for byte, until ``stop``."""
        number = 0
        while not stop.is_set():
            await self.echo(number.to_bytes(4, "big") * 1024)
            number += 1
            await asyncio.sleep(0.01)

    async def closed_with(self, timeout: float = 5) -> tuple[int, str]:
        while True:
            message = await self.ws.receive(timeout=timeout)
            if message.type is not WSMsgType.BINARY:
                assert message.type is WSMsgType.CLOSE, message
                return int(message.data), str(message.extra)


@dataclass
class Client:
    urls: dict[str, str]
    zstack: str
    http: aiohttp.ClientSession = field(
        default_factory=lambda: aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    )
    session: str = ""

    async def login(self) -> str:
        if not self.session:
            self.session = await zstack_login(self.http, self.zstack)
        return self.session

    async def mint(self, where: str, vm: str = VM) -> tuple[int, Any]:
        headers = {"Authorization": f"OAuth {await self.login()}"}
        async with self.http.post(
            f"{self.urls[where]}/api/v1/consoles", json={"vmUuid": vm}, headers=headers
        ) as answer:
            return answer.status, await answer.json()

    async def ticket(self, where: str, vm: str = VM) -> str:
        status, body = await self.mint(where, vm)
        assert status == 201, body
        return str(body["token"])

    async def console(self, where: str, token: str) -> Console:
        ws = await self.http.ws_connect(f"{self.urls[where]}/websockify?token={token}")
        try:
            stream = await greet_as_browser(ws)
            # ClientInit first (the proxy asks for a shared session: the echo host returns 1).
            await stream.write(b"\x01")
            assert await stream.read_exactly(1, 5) == b"\x01"
            return Console(ws, stream)
        except BaseException:
            await ws.close()
            raise

    async def refusal(self, where: str, token: str) -> int:
        """The close code of a console the proxy refuses before any console byte."""
        async with self.http.ws_connect(f"{self.urls[where]}/websockify?token={token}") as ws:
            message = await ws.receive(timeout=10)
        assert message.type is WSMsgType.CLOSE, message
        return int(message.data)

    async def ready(self, where: str) -> tuple[int, Any]:
        async with self.http.get(f"{self.urls[where]}/readyz") as answer:
            return answer.status, await answer.json()

    async def revoke(self, where: str) -> int:
        url = f"{self.urls[where]}/api/v1/admin/vms/{VM}/close-consoles"
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with self.http.post(url, headers=headers) as answer:
            return answer.status


@pytest.fixture
async def start_instances(
    aiohttp_server: AiohttpServer, tcp_target: StartTarget
) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    clients: list[Client] = []

    async def start(**tickets: Any) -> Client:
        target = await tcp_target(rfb_echo)
        vm = {"hostIp": "127.0.0.1", "protocol": "vnc", "vncPort": target.port, "owner": "admin"}
        inventory = Inventory.from_dict(
            {
                "accounts": [{"name": "admin", "password": "password"}],
                "vms": [
                    {**vm, "uuid": VM, "name": "vm", "state": "Running"},
                    {**vm, "uuid": BUSY_VM, "name": "busy", "state": "Running"},
                ],
            }
        )
        simulator = await aiohttp_server(create_simulator_app(inventory), access_log=None)
        zstack = str(simulator.make_url("/zstack"))
        config = make_config(
            server={"admin_token": ADMIN_TOKEN},
            zstack={"url": zstack},
            tickets=tickets,
            limits={"rate_burst": 10_000, "max_per_vm": MAX_PER_VM},
            audit={"sink": ""},
        )
        servers = [await aiohttp_server(create_app(config)) for _ in INSTANCES]
        urls = {
            name: str(s.make_url("")).rstrip("/")
            for name, s in zip(INSTANCES, servers, strict=False)
        }
        clients.append(Client(urls, zstack))
        return clients[-1]

    yield start
    for client in clients:
        await client.http.close()


# --- load: mints and redemptions in a loop ---------------------------------------------------


@dataclass
class Load:
    """Mint on one instance, open on the other, echo, close; over and over, timing each."""

    client: Client
    mints: list[tuple[float, int]] = field(default_factory=list)  # (done at, HTTP status)
    opens: list[tuple[float, bool]] = field(default_factory=list)  # (done at, echoed)

    async def run(self, mint_on: str, open_on: str, stop: asyncio.Event) -> None:
        while not stop.is_set():
            status, body = await self.client.mint(mint_on, BUSY_VM)
            self.mints.append((time.monotonic(), status))
            if status == 201:
                self.opens.append((time.monotonic(), await self._open(open_on, body["token"])))
            else:
                assert (status, body["error"]["code"]) == (503, "TICKETS.UNAVAILABLE"), body
            await asyncio.sleep(0.02)

    async def _open(self, where: str, token: str) -> bool:
        try:
            console = await self.client.console(where, token)
        except RfbClosed as refused:  # 4503 while the store is unavailable
            assert refused.code == Close.STORE_UNAVAILABLE.code, refused
            return False
        await console.echo(b"busy")
        await console.ws.close()
        return True

    def first_success(self, after: float) -> float:
        mints = [at for at, status in self.mints if at > after and status == 201]
        opens = [at for at, ok in self.opens if at > after and ok]
        assert mints and opens, f"no mint or open succeeded after {after}"
        return max(min(mints), min(opens))

    def failures(self, after: float) -> int:
        return sum(1 for at, status in self.mints if at > after and status == 503)


async def wait_for(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"waited {within} s for {what}"
        await asyncio.sleep(0.05)


# --- the failover ----------------------------------------------------------------------------


async def test_failover_with_open_consoles_and_mints_running(
    sentinels: SentinelCluster,
    start_instances: Callable[..., Awaitable[Client]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await start_instances(**tickets_config(sentinels))
    old_primary = sentinels.primary_address()

    used = await client.ticket("A")
    consoles = [await client.console("B", used)]
    consoles.append(await client.console("A", await client.ticket("B")))
    consoles.append(await client.console("B", await client.ticket("A")))
    unused = await client.ticket("A")  # opened during the outage: refused, still unused
    spare = await client.ticket("B")  # opened after the failover: it was replicated
    stop_echoing, stop_load = asyncio.Event(), asyncio.Event()
    echoing = [asyncio.create_task(c.keep_echoing(stop_echoing)) for c in consoles]
    load = Load(client)
    loops = [
        asyncio.create_task(load.run("A", "B", stop_load)),
        asyncio.create_task(load.run("B", "A", stop_load)),
    ]
    try:
        await wait_for(lambda: len(load.opens) >= 4, 10, "mints before the kill")

        killed_at = time.monotonic()
        sentinels.kill_primary()
        promotion = asyncio.create_task(
            asyncio.to_thread(sentinels.wait_for_new_primary, old_primary)
        )
        # While no primary is known: 503 on mints, 503 on /readyz, 4503 on upgrades.
        mint, ready, refused = await asyncio.gather(
            client.mint("A"), client.ready("B"), client.refusal("A", unused)
        )
        assert not promotion.done(), "the failover ended before the outage was observed"
        assert (mint[0], mint[1]["error"]["code"]) == (503, "TICKETS.UNAVAILABLE"), mint
        assert (ready[0], ready[1]["store"]) == (503, "TICKETS.UNAVAILABLE"), ready
        assert refused == Close.STORE_UNAVAILABLE.code

        new_primary = await promotion
        promoted_at = time.monotonic()
        await wait_for(lambda: bool(load.mints) and load.mints[-1][0] > promoted_at, 10, "load")
        await wait_for(
            lambda: any(ok and at > promoted_at for at, ok in load.opens), 10, "a redemption"
        )
        resumed_at = load.first_success(after=killed_at)
        print(
            f"\nfailover {old_primary} -> {new_primary}: promoted {promoted_at - killed_at:.2f} s"
            f" after the kill; mints and redemptions failed for {resumed_at - killed_at:.2f} s"
            f" ({load.failures(killed_at)} mints answered 503), resumed"
            f" {resumed_at - promoted_at:+.2f} s from the promotion"
        )
        assert load.failures(killed_at) > 0
        assert resumed_at - promoted_at < RESUMES_WITHIN
        assert new_primary in [node.address for node in sentinels.data if node.alive()]
    finally:
        stop_load.set()
        await asyncio.gather(*loops)

    # Consoles opened before the kill never stopped, and every byte came back as sent.
    stop_echoing.set()
    await asyncio.gather(*echoing)
    for console in consoles:
        gaps = [b - a for a, b in zip(console.echoed_at, console.echoed_at[1:], strict=False)]
        assert console.echoed >= 20 * 4096 and max(gaps) < 1.5, (console.echoed, max(gaps))
    for console in consoles:
        await console.echo(b"after the failover")

    # Single use held: the ticket redeemed before the kill is refused by both instances.
    for where in INSTANCES:
        assert await client.refusal(where, used) == Close.TICKET_INVALID.code
    # Each instance logged the change once.
    changes = [r.getMessage() for r in caplog.records if "Redis primary" in r.getMessage()]
    expected = f"Redis primary of {SERVICE} changed: {old_primary} -> {new_primary}"
    assert changes.count(expected) == len(INSTANCES), changes

    # The per-VM limit still counts the consoles of both instances (3 open + this one).
    consoles.append(await client.console("A", spare))
    assert await client.refusal("B", await client.ticket("A")) == Close.TOO_MANY_FOR_VM.code
    await consoles.pop().ws.close()
    await wait_for_console(client, "B", within=5)

    # Revocation from A reaches B over the resubscribed channel.
    on_b = [consoles[0], consoles[2]]
    deadline = time.monotonic() + 10
    while True:
        assert await client.revoke("A") == 200
        try:
            closed = await on_b[0].closed_with(timeout=0.25)
            break
        except TimeoutError:
            assert time.monotonic() < deadline, "revocations never reached B after the failover"
    assert closed == Close.REVOKED.value
    assert await on_b[1].closed_with() == Close.REVOKED.value
    for console in consoles:
        await console.ws.close()


async def wait_for_console(client: Client, where: str, within: float) -> None:
    """A console opens on ``where`` once a released count is gone (the release is async)."""
    deadline = time.monotonic() + within
    while True:
        try:
            console = await client.console(where, await client.ticket(where))
            break
        except RfbClosed as refused:
            assert refused.code == Close.TOO_MANY_FOR_VM.code, refused
            assert time.monotonic() < deadline, "the closed console kept counting"
            await asyncio.sleep(0.05)
    await console.echo(b"a count was free again")
    await console.ws.close()


# --- single use: a take counts once a replica has it -------------------------------------------


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[SentinelCluster]:
    """A primary and one replica, no sentinels."""
    pair = SentinelCluster(
        require_binary("redis-server", "redis-server"), tmp_path / "redis", replicas=1, sentinels=0
    )
    try:
        pair.start()
        yield pair
    finally:
        pair.stop()


def ticket(ttl: float = 30.0) -> Ticket:
    return Ticket(VM, "127.0.0.1", 5901, "vnc", time.time() + ttl)


async def test_a_use_no_replica_acknowledges_is_refused_and_spent(
    replicated: SentinelCluster,
) -> None:
    primary, replica = replicated.data
    url = f"redis://:{DATA_PASSWORD}@127.0.0.1:{primary.port}/0"
    store = RedisTicketStore(
        redis_client_from_url(url, REDIS_TIMEOUT),
        timeout=REDIS_TIMEOUT,
        wait_replicas=1,
        wait_timeout=0.3,
    )
    try:
        token, paused = new_token(), new_token()
        await store.put(token, ticket())
        await store.put(paused, ticket())
        assert await store.redeem(token) is not None  # the replica acknowledged the take
        assert await store.redeem(new_token()) is None  # nothing taken, nothing to wait for

        replica.pause()
        try:
            started = time.monotonic()
            with pytest.raises(TicketStoreUnavailable, match="0 of 1 replica"):
                await store.redeem(paused)
            assert time.monotonic() - started < REDIS_TIMEOUT
            with pytest.raises(TicketStoreUnavailable, match="0 of 1 replica"):
                await store.count_use("signed-ticket-id", 30)
        finally:
            replica.resume()
        # Refused, and spent: a promoted replica may still hold it, but it can be used only
        # there, once; never twice.
        assert await store.redeem(paused) is None
        assert await store.count_use("signed-ticket-id", 30) == 2
    finally:
        await store.close()


# --- configuration ---------------------------------------------------------------------------


def sentinel_config(**tickets: Any) -> Config:
    values = {
        "store": "redis",
        "redis_sentinels": ["10.0.0.5:26379", "[fd00::6]:26380", "s3"],
        "redis_service": "mymaster",
        **tickets,
    }
    return load_config(env={}, overrides={f"tickets.{k}": v for k, v in values.items()})


def test_sentinel_keys_load() -> None:
    config = sentinel_config(redis_url=f"rediss://:{DATA_PASSWORD}@mymaster/2")
    assert redis_sentinels(config) == [("10.0.0.5", 26379), ("fd00::6", 26380), ("s3", 26379)]
    assert redis_wait_replicas(config) == 1
    assert redis_wait_replicas(sentinel_config(redis_wait_replicas=0)) == 0
    assert redis_wait_replicas(make_config(tickets={"store": "redis://r:6379/0"})) == 0
    from_env = load_config(
        env={
            "CONSOLE_PROXY_TICKETS_STORE": "redis",
            "CONSOLE_PROXY_TICKETS_REDIS_SENTINELS": "10.0.0.5:26379,10.0.0.6:26379",
            "CONSOLE_PROXY_TICKETS_REDIS_SERVICE": "mymaster",
        }
    )
    assert redis_sentinels(from_env) == [("10.0.0.5", 26379), ("10.0.0.6", 26379)]


@pytest.mark.parametrize(
    ("tickets", "key"),
    [
        ({"redis_service": ""}, "tickets.redis_service"),
        ({"redis_sentinels": ["10.0.0.5:99999"]}, "tickets.redis_sentinels"),
        ({"redis_sentinels": [":26379"]}, "tickets.redis_sentinels"),
        ({"store": "memory"}, "tickets.redis_sentinels"),
        ({"store": "redis://r:6379/0"}, "tickets.redis_sentinels"),
        ({"redis_url": "unix:///run/redis.sock"}, "tickets.redis_url"),
        ({"redis_wait_timeout": 2.0}, "tickets.redis_wait_timeout"),
        ({"redis_wait_timeout": 0}, "tickets.redis_wait_timeout"),
        ({"redis_wait_replicas": -2}, "tickets.redis_wait_replicas"),
    ],
)
def test_bad_sentinel_settings_name_the_key(tickets: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as refused:
        sentinel_config(**tickets)
    assert refused.value.key == key


@pytest.mark.parametrize(
    ("tickets", "key"),
    [
        ({"store": "redis"}, "tickets.redis_url"),
        ({"store": "memory", "redis_service": "mymaster"}, "tickets.redis_service"),
        ({"store": "memory", "redis_sentinel_password": "pw"}, "tickets.redis_sentinel_password"),
    ],
)
def test_sentinel_keys_without_sentinels_name_the_key(tickets: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as refused:
        make_config(tickets=tickets)
    assert refused.value.key == key


async def test_data_connections_take_password_database_and_tls_from_redis_url() -> None:
    client = redis_client_from_sentinels(
        [("127.0.0.1", 1)],
        SERVICE,
        1.0,
        url="rediss://user:secret@ignored-host:6390/3?ssl_ca_certs=/etc/ca.pem",
        sentinel_password="sentinel-secret",
    )
    try:
        pool = client.connection_pool
        options = pool.connection_kwargs
        assert (options["username"], options["password"], options["db"]) == ("user", "secret", 3)
        assert options["ssl_ca_certs"] == "/etc/ca.pem" and "host" not in options
        assert pool.connection_class.__name__ == "SentinelManagedSSLConnection"
        (sentinel,) = pool.sentinel_manager.sentinels  # type: ignore[attr-defined]
        sentinel_options = sentinel.connection_pool.connection_kwargs
        assert sentinel_options["password"] == "sentinel-secret"
        assert sentinel_options["ssl_ca_certs"] == "/etc/ca.pem"
    finally:
        await client.aclose()
