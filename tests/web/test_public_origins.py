"""[server] public_origins: the origins browsers reach the proxy on, so that neither the WebSocket
Origin check nor consoleUrl trusts the request's Host (DNS rebinding: a page on evil.example
whose name now resolves to the proxy sends ``Host: evil.example`` and ``Origin:
http://evil.example``, which match each other)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy.config import ConfigError, load_config
from tests.support.rfb_client import greet_as_browser
from tests.support.stack import Stack, post_mint, start_audited_stack

AiohttpServer = Callable[..., Awaitable[TestServer]]
PUBLIC = "https://console.example.com"


@pytest.fixture
async def stack(
    aiohttp_server: AiohttpServer, tcp_target: Any, tmp_path: Path
) -> Callable[..., Awaitable[Stack]]:
    async def start(**server: Any) -> Stack:
        return await start_audited_stack(aiohttp_server, tcp_target, tmp_path, server=server)

    return start


async def upgrade_status(s: Stack, origin: str, host: str = "") -> int:
    """Mint, then open the console WebSocket with this Origin (and Host); the HTTP status."""
    status, body = await post_mint(s.url("/api/v1/consoles"), s.session, {})
    assert status == 201, body
    headers = {"Host": host} if host else {}
    async with aiohttp.ClientSession() as http:
        try:
            ws = await http.ws_connect(
                s.url(f"/websockify?token={body['token']}"), origin=origin, headers=headers
            )
        except aiohttp.WSServerHandshakeError as refused:
            return refused.status
        await greet_as_browser(ws)
        await ws.close()
        return 101


async def test_rebound_host_is_not_the_proxys_origin(
    stack: Callable[..., Awaitable[Stack]],
) -> None:
    s = await stack(
        public_origins=[PUBLIC, "https://console.example.net:8443"],
        allowed_origins=["https://portal.example.com"],
    )
    assert await upgrade_status(s, "http://evil.example:6080", host="evil.example:6080") == 403
    own = f"http://127.0.0.1:{s.proxy.port}"
    assert await upgrade_status(s, own) == 403  # the Host it listens on is no longer enough
    assert await upgrade_status(s, PUBLIC, host="evil.example") == 101
    assert await upgrade_status(s, "https://console.example.net:8443") == 101
    assert await upgrade_status(s, "https://portal.example.com") == 101


async def test_console_url_on_the_first_public_origin(
    stack: Callable[..., Awaitable[Stack]],
) -> None:
    s = await stack(
        public_origins=[PUBLIC, "https://console.example.net"],
        base_path="/console-proxy",
        trusted_proxies=["127.0.0.1/32"],
    )
    forwarded = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http", "Host": "h.x"}
    status, body = await post_mint(s.url("/api/v1/consoles"), s.session, forwarded)
    assert status == 201, body
    assert body["consoleUrl"] == f"{PUBLIC}/console-proxy/console/vnc#token={body['token']}"


async def test_without_public_origins_the_host_still_decides(
    stack: Callable[..., Awaitable[Stack]],
) -> None:
    s = await stack()
    assert await upgrade_status(s, f"http://127.0.0.1:{s.proxy.port}") == 101
    status, body = await post_mint(s.url("/api/v1/consoles"), s.session, {})
    assert body["consoleUrl"].startswith(f"http://127.0.0.1:{s.proxy.port}/console/vnc#")


@pytest.mark.parametrize(
    "bad",
    [
        "console.example.com",
        "https://console.example.com/",
        "https://console.example.com/console-proxy",
        "ftp://console.example.com",
        "https://user@console.example.com",
        "https://console.example.com:70000",
        "https://console example.com",
    ],
)
def test_public_origins_are_checked(bad: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(env={}, overrides={"server.public_origins": [PUBLIC, bad]})
    assert error.value.key == "server.public_origins" and repr(bad) in error.value.problem


def test_public_origins_from_the_environment() -> None:
    env = {"CONSOLE_PROXY_SERVER_PUBLIC_ORIGINS": f"{PUBLIC},https://b.example:8443"}
    assert load_config(env=env).server.public_origins == (PUBLIC, "https://b.example:8443")
