"""Operators' view of live consoles: the listing (current bytes, no secrets), closing one, and
watching one read-only; on one instance, and on two instances sharing a real Redis."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestServer

from proxy.app import create_app
from proxy.demo.simulator import Inventory, create_simulator_app
from proxy.web.keys import CONFIG
from tests.support.configs import make_config
from tests.support.recording_vnc import RecordingVncServer
from tests.support.rfb_client import ByteStream, greet_as_browser
from tests.support.rfb_messages import FBUR, KEY, POINTER
from tests.support.services import RedisServer
from tests.support.stack import ADMIN, PASSWORD, VM, StartStack, close_code_of, zstack_login

TOKEN = "admin-consoles-test-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
SECRET = "vm-secret"


class Instance:
    def __init__(self, server: TestServer, http: aiohttp.ClientSession) -> None:
        self.server = server
        self.http = http

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def mint(self, session: str, view_only: bool = False) -> dict[str, Any]:
        async with self.http.post(
            self.url("/api/v1/consoles"),
            json={"vmUuid": VM, "viewOnly": view_only},
            headers={"Authorization": f"OAuth {session}"},
        ) as r:
            assert r.status == 201, await r.text()
            return dict(await r.json())

    async def open(self, token: str) -> tuple[aiohttp.ClientWebSocketResponse, ByteStream]:
        ws = await self.http.ws_connect(self.url(f"/websockify?token={token}"))
        stream = await greet_as_browser(ws)
        await stream.write(b"\x00")  # ClientInit, exclusive: the proxy makes it shared
        await stream.read_exactly(24 + len(b"recorder"), 5)
        return ws, stream

    async def listing(self) -> list[dict[str, Any]]:
        async with self.http.get(self.url("/api/v1/admin/consoles"), headers=BEARER) as r:
            assert r.status == 200, await r.text()
            return list((await r.json())["consoles"])

    async def post(self, path: str) -> tuple[int, Any]:
        async with self.http.post(self.url(path), headers=BEARER) as r:
            return r.status, await r.json()


Start = Callable[..., Awaitable[list[Instance]]]


@pytest.fixture
async def recorder() -> AsyncIterator[RecordingVncServer]:
    server = await RecordingVncServer().start()
    yield server
    await server.close()


@pytest.fixture
async def instances(
    aiohttp_server: Any, recorder: RecordingVncServer, tmp_path: Path
) -> AsyncIterator[Start]:
    http = aiohttp.ClientSession()

    async def start(count: int = 1, **tickets: Any) -> list[Instance]:
        inventory = Inventory.from_dict(
            {
                "accounts": [{"name": ADMIN, "password": PASSWORD}],
                "vms": [
                    {
                        "uuid": VM,
                        "name": "vm",
                        "state": "Running",
                        "hostIp": "127.0.0.1",
                        "protocol": "vnc",
                        "vncPort": recorder.port,
                        "owner": "admin",
                        "consolePassword": SECRET,
                    }
                ],
            }
        )
        simulator = await aiohttp_server(create_simulator_app(inventory), access_log=None)
        made = []
        for i in range(count):
            config = make_config(
                zstack={"url": str(simulator.make_url("/zstack"))},
                server={"admin_token": TOKEN},
                tickets=tickets,
                audit={"sink": f"file:{tmp_path / f'audit{i}.jsonl'}"},
            )
            made.append(Instance(await aiohttp_server(create_app(config)), http))
        return made

    yield start
    await http.close()


async def portal_session(http: aiohttp.ClientSession, proxy: Instance) -> str:
    return await zstack_login(http, proxy.server.app[CONFIG].zstack.url)


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 2.0) -> Any:
    """``check()``'s first truthy answer within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.05)


async def test_the_listing_shows_live_bytes_and_no_secrets(
    instances: Start, recorder: RecordingVncServer
) -> None:
    (a,) = await instances()
    session = await portal_session(a.http, a)
    ws, stream = await a.open((await a.mint(session))["token"])
    (entry,) = await until(a.listing)
    assert set(entry) == {
        "id", "vmUuid", "protocol", "client", "account", "instance", "started",
        "bytesToHost", "bytesToBrowser", "idleSeconds", "viewOnly",
    }  # fmt: skip
    assert entry["vmUuid"] == VM and entry["protocol"] == "vnc" and entry["account"] == "admin"
    assert entry["client"] == "127.0.0.1" and entry["viewOnly"] is False
    assert abs(entry["started"] - time.time()) < 10 and entry["idleSeconds"] < 5
    text = json.dumps(entry)
    assert SECRET not in text and str(recorder.port) not in text
    before = entry["bytesToHost"]
    await stream.write(FBUR * 5)

    async def grown() -> bool:
        return bool((await a.listing())[0]["bytesToHost"] >= before + 50)

    await until(grown)
    await ws.close()
    await until(lambda: _empty(a))


async def _empty(instance: Instance) -> bool:
    return not await instance.listing()


async def test_close_one_console(instances: Start, tmp_path: Path) -> None:
    (a,) = await instances()
    session = await portal_session(a.http, a)
    first, _ = await a.open((await a.mint(session))["token"])
    second, _ = await a.open((await a.mint(session))["token"])
    listed = await until(a.listing)
    target = listed[0]["id"]
    status, body = await a.post(f"/api/v1/admin/consoles/{target}/close")
    assert status == 200 and body == {"id": target, "closedHere": 1, "otherInstancesTold": 0}
    assert await close_code_of(first) == 4410
    assert [c["id"] for c in await a.listing()] == [listed[1]["id"]]  # the other one stays
    assert (await a.post(f"/api/v1/admin/consoles/{target}/close"))[0] == 404
    assert (await a.post("/api/v1/admin/consoles/NOT-AN-ID/close"))[0] == 400
    await second.close()
    audit = [json.loads(line) for line in (tmp_path / "audit0.jsonl").read_text().splitlines()]
    closes = [e for e in audit if e["event"] == "operator.close"]
    assert closes == [
        {
            "time": closes[0]["time"],
            "event": "operator.close",
            "operator": "admin-token",
            "client": "127.0.0.1",
            "console": target,
        }
    ]


async def test_watch_is_view_only_and_shares_the_screen(
    instances: Start, recorder: RecordingVncServer
) -> None:
    (a,) = await instances()
    session = await portal_session(a.http, a)
    user, _ = await a.open((await a.mint(session))["token"])
    (entry,) = await until(a.listing)
    status, ticket = await a.post(f"/api/v1/admin/consoles/{entry['id']}/watch")
    assert status == 201 and ticket["consoleUrl"].endswith("&view_only=1")
    watcher, stream = await a.open(ticket["token"])
    await stream.write(KEY + POINTER + FBUR)

    async def watched() -> bool:
        return len(recorder.viewers) == 2 and recorder.viewers[1].types == [3]

    await until(watched)
    await asyncio.sleep(0.2)
    assert recorder.viewers[1].types == [3]  # the key and the click never reached the VM
    assert [v.shared for v in recorder.viewers] == [1, 1]
    assert not user.closed  # the user's console stays open beside the watcher
    rows = await until(lambda: _rows(a, 2))
    assert [r["viewOnly"] for r in rows] == [False, True]
    assert (await a.post("/api/v1/admin/consoles/0123456789ab/watch"))[0] == 404
    await watcher.close()
    await user.close()


async def _rows(instance: Instance, count: int) -> list[dict[str, Any]] | None:
    rows = await instance.listing()
    return rows if len(rows) == count else None


async def test_the_admin_api_needs_an_operator(instances: Start) -> None:
    (a,) = await instances()
    async with a.http.get(a.url("/api/v1/admin/consoles")) as r:
        assert r.status == 401
    async with a.http.get(
        a.url("/api/v1/admin/consoles"), headers={"Authorization": "Bearer nope"}
    ) as r:
        assert r.status == 401
    async with a.http.post(a.url("/api/v1/admin/consoles/0123456789ab/watch")) as r:
        assert r.status == 401


async def test_two_instances_with_redis_list_watch_and_close_each_others_consoles(
    redis_server: RedisServer, instances: Start, recorder: RecordingVncServer
) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    a, b = await instances(2, store=redis_server.url, encrypt_key=key)
    session = await portal_session(a.http, a)
    on_a, _ = await a.open((await a.mint(session))["token"])
    on_b, _ = await b.open((await b.mint(session))["token"])

    async def both_everywhere() -> list[dict[str, Any]] | None:
        seen_a, seen_b = await a.listing(), await b.listing()
        ok = len(seen_a) == 2 and {c["id"] for c in seen_a} == {c["id"] for c in seen_b}
        return seen_a if ok else None

    listed = await until(both_everywhere)
    assert len({c["instance"] for c in listed}) in (1, 2)  # same host/pid name in one process
    b_id = _only_id(await _local(b))
    a_id = next(c["id"] for c in listed if c["id"] != b_id)
    # The password went through Redis sealed: not in the clear anywhere.
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_server.url)
    try:
        for redis_key in await client.keys("*live*"):
            if (await client.type(redis_key)) == b"hash":
                assert SECRET.encode() not in b"".join((await client.hgetall(redis_key)).values())  # type: ignore[arg-type]  # bytes: no decode_responses
    finally:
        await client.aclose()
    # B mints a watch of A's console: the target and password come from Redis.
    status, ticket = await b.post(f"/api/v1/admin/consoles/{a_id}/watch")
    assert status == 201, ticket
    watcher, stream = await b.open(ticket["token"])
    await stream.write(KEY + FBUR)
    await watcher.close()
    # B closes A's console.
    status, body = await b.post(f"/api/v1/admin/consoles/{a_id}/close")
    assert status == 200 and body["closedHere"] == 0 and body["otherInstancesTold"] >= 1
    assert await close_code_of(on_a) == 4410
    assert not on_b.closed
    await on_b.close()


async def _local(instance: Instance) -> list[dict[str, Any]]:
    from proxy.consoles.live import summarize
    from proxy.web.keys import REGISTRY

    return [s.to_json() for s in summarize(instance.server.app[REGISTRY], "", 0.0)]


def _only_id(rows: list[dict[str, Any]]) -> str:
    (row,) = rows
    return str(row["id"])


async def peers(instance: Instance, token: str) -> tuple[int, Any]:
    async with instance.http.post(
        instance.url("/api/v1/consoles/peers"), json={"token": token}
    ) as r:
        return r.status, await r.json()


async def test_a_console_learns_how_many_others_are_on_its_vm(
    redis_server: RedisServer, instances: Start
) -> None:
    a, b = await instances(2, store=redis_server.url)
    session = await portal_session(a.http, a)
    first = (await a.mint(session))["token"]
    ws_a, _ = await a.open(first)
    assert await peers(a, first) == (200, {"others": 0})
    second = (await b.mint(session))["token"]
    ws_b, _ = await b.open(second)

    async def one_other() -> bool:
        return await peers(a, first) == (200, {"others": 1}) and await peers(b, second) == (
            200,
            {"others": 1},
        )

    await until(one_other)
    assert (await peers(a, "never-minted"))[0] == 404
    assert (await peers(a, "bad token!"))[0] == 400
    await ws_b.close()
    await ws_a.close()


async def test_admin_revocation_closes_the_vms_consoles(stack: StartStack) -> None:
    p = await stack(server={"admin_token": "adm1n-t0ken"})
    ws, _ = await p.console()
    url = p.proxy.make_url(f"/api/v1/admin/vms/{VM}/close-consoles")
    async with p.http.post(url) as r:
        assert r.status == 401
    async with p.http.post(url, headers={"Authorization": "Bearer wrong"}) as r:
        assert r.status == 401
    async with p.http.post(url, headers={"Authorization": "Bearer adm1n-t0ken"}) as r:
        assert r.status == 200 and (await r.json())["closedHere"] == 1
    msg = await ws.receive(timeout=5)
    assert msg.type is WSMsgType.CLOSE and msg.data == 4410
    assert msg.extra == "console closed by an administrator"


async def test_admin_endpoints_off_without_a_token(stack: StartStack) -> None:
    p = await stack()
    url = p.proxy.make_url(f"/api/v1/admin/vms/{VM}/close-consoles")
    async with p.http.post(url, headers={"Authorization": "Bearer x"}) as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == "ADMIN.DISABLED"
