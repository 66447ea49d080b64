"""Who the client is: `Forwarded` vs `X-Forwarded-*` from trusted proxies, validated, and the
shipped nginx and HAProxy configs, which must not let a browser's own `Forwarded` through.

A client that can forge its address escapes the per-address limits and writes what it likes
into the audit's ``client``; one that can forge the host gets a consoleUrl on its own site.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest
from aiohttp import web

from proxy.config import ConfigError, load_config
from proxy.consoles.limits import RateLimiter
from tests.support.binaries import require_binary
from tests.support.reverse_proxies import (
    BASE,
    Tls,
    haproxy_config,
    nginx_setup,
    start_nginx_process,
)
from tests.support.rfb_client import greet_as_browser
from tests.support.services import HAProxy, stop
from tests.support.stack import VM, AiohttpServer, Stack, StartStack, post_mint, start_audited_stack
from tests.support.waiting import wait_until

Kind = Literal["nginx", "haproxy"]
# The browser's address behind the reverse proxy; its TCP peer is the reverse proxy, 127.0.0.1.
CLIENT = "127.0.0.3"


async def audited_clients(audit: Path | None, count: int) -> list[str]:
    """The ``client`` of the first ``count`` consoles opened (waits for their audit lines)."""
    assert audit is not None, "the proxy has no audit file"
    deadline = time.monotonic() + 10
    while True:
        # Only whole lines: one may be half written while we read.
        lines = audit.read_text().split("\n")[:-1] if audit.exists() else []
        opened = [e for line in lines if (e := json.loads(line))["event"] == "console.open"]
        if len(opened) >= count:
            return [str(event["client"]) for event in opened[:count]]
        assert time.monotonic() < deadline, f"no console.open #{count} in the audit: {lines}"
        await asyncio.sleep(0.05)


# --- the proxy on its own, its peer (127.0.0.1) a trusted proxy ---------------------------------


@pytest.fixture
async def trusting(
    aiohttp_server: AiohttpServer, tcp_target: Any, tmp_path: Path
) -> Callable[..., Awaitable[Stack]]:
    async def start(limits: dict[str, Any] | None = None, **server: Any) -> Stack:
        server.setdefault("trusted_proxies", ["127.0.0.1/32"])
        return await start_audited_stack(
            aiohttp_server, tcp_target, tmp_path, server=server, limits=limits or {}
        )

    return start


FORGED = {"Forwarded": 'for=10.66.0.1;host=evil.example;proto=http, for="[2001:db8::66]"'}


async def test_forwarded_is_ignored_by_default(trusting: Callable[..., Awaitable[Stack]]) -> None:
    s = await trusting()
    headers = {**FORGED, "X-Forwarded-For": "198.51.100.7", "X-Forwarded-Host": "c.example"}
    status, body = await post_mint(s.url("/api/v1/consoles"), s.session, headers)
    assert status == 201, body
    assert body["consoleUrl"].startswith("http://c.example/console/vnc#")
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(s.url(f"/websockify?token={body['token']}"), headers=headers)
        await greet_as_browser(ws)
        await ws.close()
    assert await audited_clients(s.audit, 1) == ["198.51.100.7"]


async def test_forwarded_family_when_configured(trusting: Callable[..., Awaitable[Stack]]) -> None:
    s = await trusting(forwarded_headers="forwarded")
    headers = {
        "Forwarded": 'for="[2001:db8::7]:4711";proto=https;host=consoles.example.com:8443',
        "X-Forwarded-For": "198.51.100.7",
        "X-Forwarded-Host": "x.example",
        "X-Forwarded-Proto": "http",
    }
    status, body = await post_mint(s.url("/api/v1/consoles"), s.session, headers)
    assert status == 201, body
    assert body["consoleUrl"].startswith("https://consoles.example.com:8443/console/vnc#")
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(
            s.url(f"/websockify?token={body['token']}"),
            headers=headers,
            origin="https://consoles.example.com:8443",
        )
        await greet_as_browser(ws)
        await ws.close()
    assert await audited_clients(s.audit, 1) == ["2001:db8::7"]


@pytest.mark.parametrize(
    ("family", "headers"),
    [
        ("forwarded", {"Forwarded": 'for="x\\nforged line";host="evil/x";proto=gopher'}),
        ("forwarded", {"Forwarded": 'for=_hidden;host="user@evil.example"'}),
        ("forwarded", {"Forwarded": 'for=unknown;host="a b.example"'}),
        ("x-forwarded", {"X-Forwarded-For": "not an address", "X-Forwarded-Host": "evil/path"}),
        ("x-forwarded", {"X-Forwarded-For": "<script>", "X-Forwarded-Proto": "javascript"}),
        ("x-forwarded", {"X-Forwarded-Host": "evil.example:port", "X-Forwarded-For": "1.2.3"}),
        ("x-forwarded", {"X-Forwarded-For": "fe80::1%<b>x", "X-Forwarded-Host": "a.example:99999"}),
    ],
)
async def test_malformed_forwarded_values_are_ignored(
    trusting: Callable[..., Awaitable[Stack]], family: str, headers: dict[str, str]
) -> None:
    s = await trusting(**({} if family == "x-forwarded" else {"forwarded_headers": family}))
    status, body = await post_mint(s.url("/api/v1/consoles"), s.session, headers)
    assert status == 201, body
    assert body["consoleUrl"].startswith(s.url("/console/vnc#"))
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(s.url(f"/websockify?token={body['token']}"), headers=headers)
        await greet_as_browser(ws)
        await ws.close()
    assert await audited_clients(s.audit, 1) == ["127.0.0.1"]


async def test_unknown_client_reported_by_a_trusted_hop_is_not_skipped(
    trusting: Callable[..., Awaitable[Stack]],
) -> None:
    # The right-most hop said "unknown": what stands left of it came from the client.
    s = await trusting(forwarded_headers="forwarded", trusted_proxies=["127.0.0.0/8"])
    headers = {"Forwarded": "for=203.0.113.66, for=unknown, for=127.0.0.2"}
    status, body = await post_mint(s.url("/api/v1/consoles"), s.session, headers)
    assert status == 201, body
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(s.url(f"/websockify?token={body['token']}"), headers=headers)
        await greet_as_browser(ws)
        await ws.close()
    assert await audited_clients(s.audit, 1) != ["203.0.113.66"]


def test_forwarded_headers_config_key() -> None:
    assert load_config(env={}).server.forwarded_headers == "x-forwarded"
    env = {"CONSOLE_PROXY_SERVER_FORWARDED_HEADERS": "forwarded"}
    assert load_config(env=env).server.forwarded_headers == "forwarded"
    with pytest.raises(ConfigError) as error:
        load_config(env={}, overrides={"server.forwarded_headers": "both"})
    assert error.value.key == "server.forwarded_headers"
    assert "x-forwarded" in error.value.problem and "forwarded" in error.value.problem


async def test_ipv6_clients_share_a_rate_limit_per_64(
    trusting: Callable[..., Awaitable[Stack]],
) -> None:
    # One host holds a whole /64: rotating the low 64 bits must not give it fresh buckets.
    s = await trusting(limits={"rate_per_minute": 1, "rate_burst": 3})
    url, bad_session = s.url("/api/v1/consoles"), "0" * 32
    statuses = []
    for n in range(6):
        headers = {"X-Forwarded-For": f"2001:db8:1:2::{n + 1:x}"}
        statuses.append((await post_mint(url, bad_session, headers))[0])
    assert statuses == [401, 401, 401, 429, 429, 429]
    # Another /64 and IPv4 clients have buckets of their own; IPv4 is keyed by the full address.
    for forwarded_for in ("2001:db8:1:3::1", "192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"):
        status, _ = await post_mint(url, bad_session, {"X-Forwarded-For": forwarded_for})
        assert status == 401, forwarded_for


def test_rate_limiter_keys_ipv6_by_64_and_ipv4_by_address() -> None:
    limiter = RateLimiter(per_minute=1, burst=1)
    assert limiter.allow("2001:db8:0:1::1", now=0)
    assert not limiter.allow("2001:db8:0:1:ffff:ffff:ffff:ffff", now=0)
    assert limiter.allow("2001:db8:0:2::1", now=0)
    assert limiter.allow("192.0.2.1", now=0) and limiter.allow("192.0.2.2", now=0)
    # An IPv4-mapped IPv6 address is that IPv4 client, not a /64 of its own.
    assert not limiter.allow("::ffff:192.0.2.1", now=0)


# --- through the shipped nginx and HAProxy configs -----------------------------------------------


@pytest.fixture
def start_front(tmp_path: Path, tls: Tls) -> Iterator[Callable[[Kind, int], int]]:
    """nginx or HAProxy from deploy/ in front of ``upstream``; returns its HTTPS port."""
    nginxes: list[subprocess.Popen[bytes]] = []
    haproxies: list[HAProxy] = []

    def start(kind: Kind, upstream: int) -> int:
        directory = tmp_path / kind
        directory.mkdir()
        if kind == "nginx":
            nginx = nginx_setup(directory, tls, upstream)
            nginxes.append(start_nginx_process(nginx))
            return nginx.https_port
        config, https_port, _ = haproxy_config(directory, tls, [upstream])
        balancer = HAProxy(require_binary("haproxy", "haproxy"), config, https_port)
        haproxies.append(balancer)
        balancer.start()
        return https_port

    yield start
    for process in nginxes:
        stop(process)
    for balancer in haproxies:
        balancer.stop()


async def wait_ready(url: str, tls: Tls) -> None:
    """Until ``url`` answers 200 through the reverse proxy (HAProxy health-checks first)."""
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(url, ssl=tls.client_context()) as answer:
                if answer.status == 200:
                    return
            assert time.monotonic() < deadline, f"{url} answered {answer.status}"
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
async def test_a_clients_forwarded_header_changes_nothing_behind_the_reverse_proxy(
    kind: Kind,
    aiohttp_server: AiohttpServer,
    tcp_target: Any,
    tmp_path: Path,
    tls: Tls,
    start_front: Callable[[Kind, int], int],
) -> None:
    s = await start_audited_stack(
        aiohttp_server,
        tcp_target,
        tmp_path,
        server={"base_path": BASE, "trusted_proxies": ["127.0.0.1/32"]},
        limits={"rate_per_minute": 1, "rate_burst": 5},
    )
    port = await asyncio.to_thread(start_front, kind, int(s.proxy.port or 0))
    origin = f"https://127.0.0.1:{port}"
    await wait_ready(f"{origin}{BASE}/healthz", tls)

    def forged(n: int) -> dict[str, str]:
        return {
            "Forwarded": f"for=10.66.{n}.1;host=evil.example;proto=http",
            "X-Forwarded-For": f"10.77.{n}.1",
        }

    def connector() -> aiohttp.TCPConnector:
        return aiohttp.TCPConnector(local_addr=(CLIENT, 0))

    url = f"{origin}{BASE}/api/v1/consoles"
    ssl = tls.client_context()
    status, body = await post_mint(url, s.session, forged(0), ssl=ssl, connector=connector())
    assert status == 201, body
    # Built on the host and scheme the browser used, not on the forged ones.
    assert body["consoleUrl"] == f"{origin}{BASE}/console/vnc#token={body['token']}"

    async with (
        aiohttp.ClientSession(connector=connector()) as http,
        http.ws_connect(
            f"{origin}{BASE}/websockify",
            ssl=ssl,
            headers={**forged(1), "Origin": origin},
            protocols=("binary", f"token.{body['token']}"),
        ) as ws,
    ):
        await greet_as_browser(ws)
    assert await audited_clients(s.audit, 1) == [CLIENT]

    # One mint of the burst of five went above (a valid ticket's upgrade costs nothing); every
    # one claims another address, yet the limit holds for the one address they all come from.
    statuses = [
        (await post_mint(url, "0" * 32, forged(n), ssl=ssl, connector=connector()))[0]
        for n in range(2, 9)
    ]
    assert statuses == [401, 401, 401, 401, 429, 429, 429]


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
async def test_the_reverse_proxy_removes_a_clients_forwarded_header(
    kind: Kind,
    aiohttp_server: AiohttpServer,
    tls: Tls,
    start_front: Callable[[Kind, int], int],
) -> None:
    seen: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        if request.path.endswith("/echo"):
            seen.append(dict(request.headers))
        return web.json_response({"status": "ready"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    upstream = await aiohttp_server(app, access_log=None)
    port = await asyncio.to_thread(start_front, kind, int(upstream.port or 0))
    await wait_ready(f"https://127.0.0.1:{port}{BASE}/readyz", tls)
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"https://127.0.0.1:{port}{BASE}/echo",
            ssl=tls.client_context(),
            headers={"Forwarded": "for=10.66.0.1;host=evil.example"},
        ) as answer,
    ):
        assert answer.status == 200
    (headers,) = seen
    assert "Forwarded" not in headers, headers
    assert headers["X-Forwarded-For"].endswith("127.0.0.1")


async def test_forwarded_headers_only_from_trusted_proxies(
    stack: StartStack, tmp_path: Path
) -> None:
    sink = tmp_path / "audit.jsonl"
    forwarded = {
        "X-Forwarded-For": "203.0.113.9, 127.0.0.1",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "consoles.example.com",
    }
    trusting = await stack(
        server={"trusted_proxies": ["127.0.0.0/8"]}, audit={"sink": f"file:{sink}"}
    )
    status, body = await trusting.request_console(
        await trusting.admin_session(), {"vmUuid": VM}, headers=forwarded
    )
    assert body["consoleUrl"].startswith("https://consoles.example.com/console/vnc#")
    # The Origin check follows the forwarded scheme and host.
    url = trusting.proxy.make_url(f"/websockify?token={body['token']}")
    ws = await trusting.http.ws_connect(
        url, headers=forwarded, origin="https://consoles.example.com"
    )
    await greet_as_browser(ws)
    await ws.close()
    await wait_until(lambda: sink.exists() and sink.read_text())
    assert json.loads(sink.read_text().splitlines()[0])["client"] == "203.0.113.9"

    untrusting = await stack()
    status, body = await untrusting.request_console(
        await untrusting.admin_session(), {"vmUuid": VM}, headers=forwarded
    )
    assert body["consoleUrl"].startswith(str(untrusting.proxy.make_url("/console/vnc")))
