"""Operations features: metrics, audit, limits, revocation, forwarded headers, idle on input."""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestServer

from proxy.app import create_app
from proxy.demo.simulator import Inventory, create_simulator_app
from tests.support.configs import make_config
from tests.support.net import rfb_echo
from tests.support.rfb_client import RfbClosed, greet_as_browser
from tests.support.waiting import wait_until

VM = "0123456789abcdef0123456789abcdef"
FBUR = bytes([3, 1]) + struct.pack("!HHHH", 0, 0, 100, 100)
KEY = bytes([4, 1, 0, 0]) + struct.pack("!I", 0x61)


class Proxy:
    def __init__(self, server: TestServer, target: Any, http: aiohttp.ClientSession) -> None:
        self.server, self.target, self.http = server, target, http

    async def session(self) -> str:
        return "unused"

    async def mint(self, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        async with self.http.post(
            self.server.make_url("/api/v1/consoles"),
            json={"vmUuid": VM},
            headers={"Authorization": f"OAuth {self.login}", **(headers or {})},
        ) as response:
            return response.status, await response.json()

    async def console(self, **kwargs: Any) -> tuple[aiohttp.ClientWebSocketResponse, Any]:
        status, body = await self.mint()
        assert status == 201, body
        ws = await self.http.ws_connect(
            self.server.make_url(f"/websockify?token={body['token']}"), **kwargs
        )
        return ws, await greet_as_browser(ws)

    async def metrics(self) -> str:
        async with self.http.get(self.server.make_url("/metrics")) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            return await response.text()


@pytest.fixture
async def proxy(aiohttp_server: Any, tcp_target: Any) -> Any:
    sessions: list[aiohttp.ClientSession] = []

    async def start(**sections: Any) -> Proxy:
        target = await tcp_target(rfb_echo)
        inventory = Inventory.from_dict(
            {
                "accounts": [{"name": "admin", "password": "pw"}],
                "vms": [
                    {
                        "uuid": VM,
                        "name": "vm",
                        "state": "Running",
                        "hostIp": "127.0.0.1",
                        "protocol": "vnc",
                        "vncPort": target.port,
                        "owner": "admin",
                    }
                ],
            }
        )
        simulator = await aiohttp_server(create_simulator_app(inventory), access_log=None)
        sections.setdefault("zstack", {})["url"] = str(simulator.make_url("/zstack"))
        server = await aiohttp_server(create_app(make_config(**sections)))
        http = aiohttp.ClientSession()
        sessions.append(http)
        made = Proxy(server, target, http)
        body = {"logInByAccount": {"accountName": "admin", "password": _sha("pw")}}
        async with http.put(simulator.make_url("/zstack/v1/accounts/login"), json=body) as r:
            made.login = (await r.json())["inventory"]["uuid"]  # type: ignore[attr-defined]
        return made

    yield start
    for http in sessions:
        await http.close()


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha512(text.encode()).hexdigest()


def sample(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            if line.startswith(name + " ") or name.endswith("}"):
                return float(line.rsplit(" ", 1)[1])
    for line in metrics.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_follow_consoles(proxy: Any) -> None:
    p = await proxy()
    ws, stream = await p.console()
    await stream.write(b"hello")
    assert await stream.read_exactly(5, 5) == b"hello"
    text = await p.metrics()
    assert sample(text, "console_proxy_consoles_active") == 1
    assert 'console_proxy_tickets_minted_total{protocol="vnc"} 1.0' in text
    assert 'console_proxy_tickets_redeemed_total{result="ok"} 1.0' in text
    assert "console_proxy_zstack_request_seconds_count" in text
    await ws.close()

    async def closed_metrics() -> str | None:
        text = await p.metrics()
        return text if sample(text, "console_proxy_consoles_active") == 0 else None

    text = await wait_until(closed_metrics, message="the console stayed active")
    assert 'console_proxy_consoles_closed_total{reason="browser_closed"} 1.0' in text
    assert 'console_proxy_bytes_total{direction="to_host"}' in text
    assert "console_proxy_connect_seconds_bucket" in text


async def test_zstack_errors_are_counted_by_code(proxy: Any) -> None:
    p = await proxy()
    p.login = "0" * 32
    status, _ = await p.mint()
    assert status == 401
    assert 'console_proxy_zstack_errors_total{code="ID.1001"} 1.0' in await p.metrics()


async def test_audit_events_to_a_file_hold_no_secrets(proxy: Any, tmp_path: Path) -> None:
    sink = tmp_path / "audit.jsonl"
    p = await proxy(audit={"sink": f"file:{sink}"})
    status, body = await p.mint()
    ws = await p.http.ws_connect(p.server.make_url(f"/websockify?token={body['token']}"))
    stream = await greet_as_browser(ws)
    await stream.write(b"abc")
    await stream.read_exactly(3, 5)
    await ws.close()
    await wait_until(lambda: sink.exists() and len(sink.read_text().splitlines()) == 2)
    opened, closed = (json.loads(line) for line in sink.read_text().splitlines())
    assert opened["event"] == "console.open" and closed["event"] == "console.close"
    assert closed["vm"] == VM and closed["target"] == f"127.0.0.1:{p.target.port}"
    assert closed["client"] == "127.0.0.1"
    assert closed["reason"] == "browser_closed"
    assert closed["bytesToHost"] >= 3 and closed["bytesToBrowser"] >= 3
    assert closed["duration"] >= 0 and closed["start"].endswith("Z")
    text = sink.read_text()
    assert body["token"] not in text and p.login not in text


async def test_rate_limit_per_client_ip(proxy: Any) -> None:
    p = await proxy(limits={"rate_per_minute": 1, "rate_burst": 3})
    statuses = [(await p.mint())[0] for _ in range(5)]
    assert statuses[:3] == [201, 201, 201]
    assert statuses[3:] == [429, 429]
    _, body = await p.mint()
    assert body["error"]["code"] == "LIMIT.RATE"


async def test_per_vm_limit(proxy: Any) -> None:
    p = await proxy(limits={"max_per_vm": 1})
    first, _ = await p.console()
    _, body = await p.mint()
    second = await p.http.ws_connect(p.server.make_url(f"/websockify?token={body['token']}"))
    msg = await second.receive(timeout=5)
    assert msg.type is WSMsgType.CLOSE and msg.data == 4429 and "this VM" in msg.extra
    await second.close()
    await first.close()

    async def console_once_the_slot_is_free() -> Any:
        try:
            return (await p.console())[0]
        except RfbClosed as refused:  # the proxy frees the slot just after the close
            assert refused.code == 4429, refused
            return None

    again = await wait_until(console_once_the_slot_is_free, message="the slot stayed taken")
    await again.close()


async def test_admin_revocation_closes_the_vms_consoles(proxy: Any) -> None:
    p = await proxy(server={"admin_token": "adm1n-t0ken"})
    ws, _ = await p.console()
    url = p.server.make_url(f"/api/v1/admin/vms/{VM}/close-consoles")
    async with p.http.post(url) as r:
        assert r.status == 401
    async with p.http.post(url, headers={"Authorization": "Bearer wrong"}) as r:
        assert r.status == 401
    async with p.http.post(url, headers={"Authorization": "Bearer adm1n-t0ken"}) as r:
        assert r.status == 200 and (await r.json())["closedHere"] == 1
    msg = await ws.receive(timeout=5)
    assert msg.type is WSMsgType.CLOSE and msg.data == 4410
    assert msg.extra == "console closed by an administrator"


async def test_admin_endpoints_off_without_a_token(proxy: Any) -> None:
    p = await proxy()
    url = p.server.make_url(f"/api/v1/admin/vms/{VM}/close-consoles")
    async with p.http.post(url, headers={"Authorization": "Bearer x"}) as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == "ADMIN.DISABLED"


async def test_forwarded_headers_only_from_trusted_proxies(proxy: Any, tmp_path: Path) -> None:
    sink = tmp_path / "audit.jsonl"
    forwarded = {
        "X-Forwarded-For": "203.0.113.9, 127.0.0.1",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "consoles.example.com",
    }
    trusting = await proxy(
        server={"trusted_proxies": ["127.0.0.0/8"]}, audit={"sink": f"file:{sink}"}
    )
    status, body = await trusting.mint(forwarded)
    assert body["consoleUrl"].startswith("https://consoles.example.com/console/vnc#")
    # The Origin check follows the forwarded scheme and host.
    url = trusting.server.make_url(f"/websockify?token={body['token']}")
    ws = await trusting.http.ws_connect(
        url, headers=forwarded, origin="https://consoles.example.com"
    )
    await greet_as_browser(ws)
    await ws.close()
    await wait_until(lambda: sink.exists() and sink.read_text())
    assert json.loads(sink.read_text().splitlines()[0])["client"] == "203.0.113.9"

    untrusting = await proxy()
    status, body = await untrusting.mint(forwarded)
    assert body["consoleUrl"].startswith(str(untrusting.server.make_url("/console/vnc")))


async def test_idle_means_no_input_not_no_bytes(proxy: Any) -> None:
    idle = 1.0
    p = await proxy(limits={"idle_timeout": idle})
    ws, stream = await p.console()
    await stream.write(bytes([1]))  # ClientInit
    await stream.read_exactly(1, 5)
    started = time.monotonic()
    last_key = closed_at = None
    while time.monotonic() - started < 30:
        # Update requests all the time, key presses for the first half second only (the last
        # one at least 0.5 s in, however slow the machine): idle must still come, counted
        # from the last key.
        now = time.monotonic()
        message = KEY if last_key is None or last_key - started < 0.5 else FBUR
        try:
            with contextlib.suppress(ConnectionResetError):  # the close may beat our write
                await stream.write(message)
            if message is KEY:
                last_key = now
            await stream.read_exactly(len(message), 10)
        except RfbClosed as closed:
            closed_at, code = time.monotonic(), closed.code
            break
        await asyncio.sleep(0.05)
    assert closed_at is not None and last_key is not None, "update requests kept it open"
    assert code == 4408
    # Not before the idle timeout after the last key (had keys not counted, it would have
    # closed ~0.5 s after the last one); the upper bound only says that it did come.
    assert idle - 0.05 <= closed_at - last_key < idle + 10
    await ws.close()
