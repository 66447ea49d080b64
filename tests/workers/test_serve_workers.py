"""README "Every core": a real ``console-proxy serve --workers 2`` on one port, without Redis.

Tickets minted on either worker redeem on either, once; the per-VM limit, the operators'
listing, revocation and ``/metrics`` cover both workers; an operator's sign-in holds on both; a
killed worker is replaced; SIGTERM stops everything; a supervisor that is SIGKILLed takes its
workers with it. Everything listens on loopback ephemeral ports and is stopped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from proxy.closecodes import Close
from proxy.web.operator_session import COOKIE
from tests.support.metrics import sample_value
from tests.support.net import free_port
from tests.support.rfb_client import ByteStream, RfbError, greet_as_browser
from tests.support.serve_process import ServeProcess
from tests.support.services import RedisServer
from tests.support.stack import (
    VM,
    AiohttpServer,
    close_code_of,
    echo_vm_zstack,
    process_env,
    zstack_login,
)
from tests.support.waiting import wait_until

ADMIN_TOKEN = "workers-admin-token-for-tests"
PER_VM = 12
BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(c) for c in (task / "children").read_text().split())
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status").read_text()
    return "State:\tZ" not in status


async def still_echoes(stream: ByteStream) -> bool:
    try:
        await stream.write(b"alive?")
        return await stream.read_exactly(6, 5) == b"alive?"
    except (RfbError, ConnectionError):
        return False


@dataclass
class Workers:
    proxy: ServeProcess
    http: aiohttp.ClientSession
    session: str

    async def mint(self) -> str:
        async with self.http.post(
            f"{self.proxy.url}/api/v1/consoles",
            json={"vmUuid": VM},
            headers={"Authorization": f"OAuth {self.session}"},
        ) as answer:
            assert answer.status == 201, await answer.text()
            return str((await answer.json())["token"])

    async def open(self, token: str) -> tuple[aiohttp.ClientWebSocketResponse, ByteStream]:
        ws = await self.http.ws_connect(f"{self.proxy.url}/websockify?token={token}")
        return ws, await greet_as_browser(ws)

    async def refusal(self, token: str) -> int:
        ws = await self.http.ws_connect(f"{self.proxy.url}/websockify?token={token}")
        return await close_code_of(ws)

    async def active_is(self, count: float) -> bool:
        return await self.active() == count

    async def listing(self) -> list[dict[str, Any]]:
        async with self.http.get(
            f"{self.proxy.url}/api/v1/admin/consoles", headers=BEARER
        ) as answer:
            assert answer.status == 200, await answer.text()
            return list((await answer.json())["consoles"])

    async def active(self) -> float:
        async with self.http.get(f"{self.proxy.url}/metrics") as answer:
            assert answer.status == 200
            return sample_value(await answer.text(), "console_proxy_consoles_active")


@contextlib.asynccontextmanager
async def serving_workers(
    aiohttp_server: AiohttpServer, tcp_target: Any, tmp_path: Path, **env: str
) -> AsyncIterator[Workers]:
    zstack, _target = await echo_vm_zstack(aiohttp_server, tcp_target)
    port = free_port()
    env = {
        **process_env(
            zstack,
            server_admin_token=ADMIN_TOKEN,
            server_drain_timeout="2",
            limits_max_per_vm=str(PER_VM),
        ),
        **env,
    }
    args = ["--workers", "2", "--listen", f"127.0.0.1:{port}"]
    proxy = ServeProcess(port, args, tmp_path, env, stop_timeout=30)
    async with proxy, aiohttp.ClientSession() as http:
        await wait_until(lambda: "2 workers serving" in proxy.stderr, timeout=30)
        yield Workers(proxy, http, await zstack_login(http, zstack))


@pytest.fixture
async def workers(
    aiohttp_server: AiohttpServer, tcp_target: Any, tmp_path: Path
) -> AsyncIterator[Workers]:
    async with serving_workers(aiohttp_server, tcp_target, tmp_path) as started:
        yield started


async def test_tickets_limits_listing_metrics_and_revocation_span_both_workers(
    workers: Workers,
) -> None:
    tokens = [await workers.mint() for _ in range(PER_VM + 1)]
    consoles = [await workers.open(token) for token in tokens[:PER_VM]]
    for n, (_ws, stream) in enumerate(consoles):
        await stream.write(f"hello-{n:02d}".encode())
        assert await stream.read_exactly(8, 5) == f"hello-{n:02d}".encode()

    # Both workers hold some of them (the kernel spread the connections), and the listing from
    # either worker shows all of them.
    pids = {str(pid) for pid in children(workers.proxy.pid)}
    for _ in range(4):
        listed = await workers.listing()
        assert len(listed) == PER_VM
        assert {c["instance"].rsplit("/", 1)[1] for c in listed} == pids
        assert await workers.active() == PER_VM

    # The VM's limit counts both workers' consoles: the next one is refused wherever it lands,
    # and a used ticket does not open a second console on either worker.
    assert await workers.refusal(tokens[PER_VM]) == Close.TOO_MANY_FOR_VM.code
    for token in tokens[:4]:
        assert await workers.refusal(token) == Close.TICKET_INVALID.code

    # Revocation reaches the other worker too.
    async with workers.http.post(
        f"{workers.proxy.url}/api/v1/admin/vms/{VM}/close-consoles", headers=BEARER
    ) as answer:
        body = await answer.json()
        assert answer.status == 200 and body["otherInstancesTold"] == 1, body
    for ws, _stream in consoles:
        assert await close_code_of(ws) == Close.REVOKED.code
    await wait_until(lambda: workers.active_is(0), timeout=5)
    assert await workers.listing() == []


async def test_an_operator_watches_and_closes_consoles_on_either_worker(workers: Workers) -> None:
    consoles = [await workers.open(await workers.mint()) for _ in range(6)]
    listed = await workers.listing()
    assert len({c["instance"] for c in listed}) == 2
    watchers = []
    for console in listed:
        async with workers.http.post(
            f"{workers.proxy.url}/api/v1/admin/consoles/{console['id']}/watch", headers=BEARER
        ) as answer:
            assert answer.status == 201, await answer.text()
            watchers.append(await workers.open((await answer.json())["token"]))
    assert len(watchers) == 6
    # Closing by id works from whichever worker the request reaches.
    for console in listed:
        async with workers.http.post(
            f"{workers.proxy.url}/api/v1/admin/consoles/{console['id']}/close", headers=BEARER
        ) as answer:
            assert answer.status == 200, await answer.text()
    for ws, _stream in consoles:
        assert await close_code_of(ws) == Close.REVOKED.code


async def test_the_mint_budget_is_the_machines(
    aiohttp_server: AiohttpServer, tcp_target: Any, tmp_path: Path
) -> None:
    """Four mints a minute from one address in all, not four per worker."""
    async with serving_workers(
        aiohttp_server,
        tcp_target,
        tmp_path,
        CONSOLE_PROXY_LIMITS_RATE_BURST="4",
        CONSOLE_PROXY_LIMITS_RATE_PER_MINUTE="1",
    ) as workers:
        statuses = []
        # New connections each time: the kernel spreads them over both workers.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as fresh:
            for _ in range(10):
                async with fresh.post(
                    f"{workers.proxy.url}/api/v1/consoles",
                    json={"vmUuid": VM},
                    headers={"Authorization": f"OAuth {workers.session}"},
                ) as answer:
                    statuses.append(answer.status)
        assert statuses == [201] * 4 + [429] * 6


async def test_sighup_is_passed_on_and_ends_no_worker(workers: Workers) -> None:
    before = children(workers.proxy.pid)
    workers.proxy.send(signal.SIGHUP)
    await wait_until(lambda: workers.proxy.stderr.count("SIGHUP: nothing to reload") == 2)
    assert children(workers.proxy.pid) == before
    await workers.proxy.wait_healthy()


async def test_an_operator_signed_in_on_one_worker_is_signed_in_on_both(
    workers: Workers,
) -> None:
    url = workers.proxy.url
    async with workers.http.post(
        f"{url}/operator/login",
        data={"account": "admin", "password": "password"},
        headers={"Origin": url},
        allow_redirects=False,
    ) as answer:
        assert answer.status == 303, await answer.text()
        cookie = SimpleCookie(answer.headers["Set-Cookie"])[COOKIE].value
    # Fresh connections, so the requests are spread over both workers.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
        for _ in range(12):
            headers = {"Cookie": f"{COOKIE}={cookie}"}
            async with fresh.get(f"{url}/api/v1/admin/consoles", headers=headers) as answer:
                assert answer.status == 200


async def test_a_killed_worker_is_replaced_and_its_vm_counts_are_freed(
    workers: Workers,
) -> None:
    tokens = [await workers.mint() for _ in range(PER_VM)]
    consoles = [await workers.open(token) for token in tokens]
    before = children(workers.proxy.pid)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    await wait_until(
        lambda: len(children(workers.proxy.pid) - before) == 1, timeout=15, interval=0.1
    )
    await workers.proxy.wait_healthy()
    # The killed worker's consoles no longer count against the VM: as many new ones open.
    survivors = sum([await still_echoes(stream) for _ws, stream in consoles])
    await wait_until(lambda: workers.active_is(survivors), timeout=5)
    assert 0 < survivors < PER_VM
    for _ in range(PER_VM - survivors):
        consoles.append(await workers.open(await workers.mint()))  # kept open (referenced)
        stream = consoles[-1][1]
        await stream.write(b"again!!!")
        assert await stream.read_exactly(8, 5) == b"again!!!"
    assert await workers.refusal(await workers.mint()) == Close.TOO_MANY_FOR_VM.code


async def test_sigterm_stops_every_worker_and_a_killed_supervisor_takes_them_along(
    workers: Workers, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    pids = children(workers.proxy.pid)
    workers.proxy.send(signal.SIGTERM)
    assert await workers.proxy.wait_exit(30) == 0
    assert not any(alive(pid) for pid in pids)

    # A supervisor that dies without a word (SIGKILL): the workers notice the hub is gone.
    port = free_port()
    other = ServeProcess(
        port,
        ["--workers", "2", "--listen", f"127.0.0.1:{port}"],
        tmp_path / "second",
        {"CONSOLE_PROXY_AUDIT_SINK": ""},
    )
    (tmp_path / "second").mkdir()
    async with other:
        await wait_until(lambda: "2 workers serving" in other.stderr, timeout=30)
        orphans = children(other.pid)
        other.send(signal.SIGKILL)
        await wait_until(lambda: not any(alive(pid) for pid in orphans), timeout=15)
    assert "the supervisor is gone" in other.stderr


@pytest.mark.parametrize("value", ["0", "-1", "many", "257"])
async def test_a_bad_worker_count_stops_the_start_naming_the_key(
    value: str, tmp_path: Path
) -> None:
    port = free_port()
    proxy = ServeProcess(port, ["--workers", value, "--listen", f"127.0.0.1:{port}"], tmp_path)
    proxy.start()
    assert await proxy.wait_exit(20) == 2
    assert "server.workers" in proxy.stderr and "auto" in proxy.stderr


async def test_with_redis_configured_the_workers_share_redis_not_the_hub(
    aiohttp_server: AiohttpServer, tcp_target: Any, tmp_path: Path, redis_server: RedisServer
) -> None:
    """Workers on several machines are instances of one Redis cluster: tickets go to Redis."""
    redis = Redis.from_url(redis_server.url)
    try:
        async with serving_workers(
            aiohttp_server, tcp_target, tmp_path, CONSOLE_PROXY_TICKETS_STORE=redis_server.url
        ) as workers:
            token = await workers.mint()
            assert len(await redis.keys("console-proxy:ticket:*")) == 1
            _ws, stream = await workers.open(token)
            await stream.write(b"via redis")
            assert await stream.read_exactly(9, 5) == b"via redis"
            assert await redis.keys("console-proxy:ticket:*") == []
    finally:
        await redis.aclose()


@pytest.mark.parametrize("count", ["1", "2"])
async def test_a_busy_port_is_one_clear_line_and_status_2(count: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proxy = ServeProcess(port, ["--workers", count, "--listen", f"127.0.0.1:{port}"], tmp_path)
        proxy.start()
        assert await proxy.wait_exit(30) == 2
    assert "server.listen: cannot listen on" in proxy.stderr
    assert "in use" in proxy.stderr and "Traceback" not in proxy.stderr
