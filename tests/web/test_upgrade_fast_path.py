"""The upgrade skips the middleware chain (proxy.web.middlewares.upgrade_fast_path) and still
gets what of it applies: JSON errors with security headers, forwarded headers from trusted
proxies only, and a GET with a body still settled by the full chain."""

from __future__ import annotations

from typing import Any

import aiohttp

from proxy.app import create_app
from tests.support.configs import make_config

SECURITY_HEADERS = ("Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy")


async def test_a_foreign_origin_is_a_json_403_with_security_headers(aiohttp_client: Any) -> None:
    client = await aiohttp_client(create_app(make_config()))
    headers = {
        "Origin": "https://evil.example",
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    async with client.get("/websockify?token=x", headers=headers) as answer:
        assert answer.status == 403
        assert (await answer.json())["error"]["code"] == "ORIGIN.FORBIDDEN"
        for header in SECURITY_HEADERS:
            assert header in answer.headers, header


async def test_a_plain_get_is_a_json_400_with_security_headers(aiohttp_client: Any) -> None:
    client = await aiohttp_client(create_app(make_config()))
    async with client.get("/websockify") as answer:
        assert answer.status == 400
        assert (await answer.json())["error"]["code"] == "REQUEST.NOT_WEBSOCKET"
        for header in SECURITY_HEADERS:
            assert header in answer.headers, header


async def test_a_get_with_a_body_goes_through_the_whole_chain(aiohttp_client: Any) -> None:
    """The body is settled (read and discarded) before the connection is used again."""
    client = await aiohttp_client(create_app(make_config()))
    async with client.get("/websockify", data=b"x" * 1000) as answer:
        assert answer.status == 400
        assert "Content-Security-Policy" in answer.headers
    async with client.get("/healthz") as answer:  # the same connection, still in step
        assert answer.status == 200


async def test_forwarded_headers_count_only_from_trusted_proxies(
    aiohttp_client: Any,
) -> None:
    """The failures' budget is keyed by the forwarded client, as through the full chain."""
    config = make_config(
        server={"trusted_proxies": ["127.0.0.0/8"]},
        limits={"rate_burst": 1, "rate_per_minute": 1},
    )
    client = await aiohttp_client(create_app(config))

    async def close_code(forwarded_for: str) -> int | None:
        ws = await client.ws_connect(
            "/websockify?token=guess", headers={"X-Forwarded-For": forwarded_for}
        )
        message = await ws.receive(timeout=5)
        assert message.type is aiohttp.WSMsgType.CLOSE
        return int(message.data)

    assert await close_code("192.0.2.1") == 4401  # a wrong guess spends 192.0.2.1's budget
    assert await close_code("192.0.2.1") == 4429
    assert await close_code("192.0.2.2") == 4401  # another forwarded client has its own
