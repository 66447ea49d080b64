"""README ``[tickets] token_plugin`` / ``token_source``: websockify's token plugins
(ReadOnlyTokenFile, TokenFile, JWTTokenApi, TokenRedis with a real redis-server, or
``module.Class``) as static ticket sources, through the running app. Static consoles pass
through untouched (no RFB handshake by the proxy), are reusable as in websockify, and still
obey ``[targets] allow``."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from jwcrypto import jwk, jwt
from redis import Redis

from proxy.closecodes import Close
from tests.support.configs import write_token_file
from tests.support.net import TcpTarget, echo
from tests.support.services import RedisServer
from tests.support.stack import AiohttpServer, Stack, start_stack

StartStack = Callable[..., Awaitable[Stack]]
StartTarget = Callable[..., Awaitable[TcpTarget]]


class FixedPlugin:
    """A ``module.Class`` plugin: the token ``fixed-<port>`` leads to 127.0.0.1:<port>."""

    def __init__(self, source: str) -> None:
        self.source = source

    def lookup(self, token: str) -> list[str] | None:
        if not token.startswith(self.source):
            return None
        return ["127.0.0.1", token[len(self.source) :]]


@pytest.fixture
async def stack(aiohttp_server: AiohttpServer) -> AsyncIterator[StartStack]:
    made: list[Stack] = []

    async def start(plugin: str, source: str, **sections: dict[str, Any]) -> Stack:
        tickets = {"token_plugin": plugin, "token_source": source}
        made.append(await start_stack(aiohttp_server, [], tickets=tickets, **sections))
        return made[-1]

    yield start
    for s in made:
        await s.close()


async def raw_echo(ws: aiohttp.ClientWebSocketResponse, payload: bytes) -> None:
    """The first bytes come straight back: no RFB greeting from the proxy in between."""
    await ws.send_bytes(payload)
    got = b""
    while len(got) < len(payload):
        message = await ws.receive(timeout=5)
        assert message.type is WSMsgType.BINARY, message
        got += message.data
    assert got == payload


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> tuple[int, str]:
    message = await ws.receive(timeout=10)
    await ws.close()
    assert message.type is WSMsgType.CLOSE, message
    return int(message.data), str(message.extra)


async def test_read_only_token_file_directory_opens_raw_reusable_consoles(
    stack: StartStack, tcp_target: StartTarget, tmp_path: Path
) -> None:
    target = await tcp_target(echo)
    folder = tmp_path / "tokens"
    folder.mkdir()
    write_token_file(folder / "vm-1", {"console-1": ("127.0.0.1", target.port)})
    s = await stack("ReadOnlyTokenFile", str(folder))
    for _ in range(2):  # static tokens are reusable, as in websockify
        ws = await s.open("console-1")
        await raw_echo(ws, b"RFB 003.008\n")
        await ws.close()
    assert target.connections == 2
    assert await closed_with(await s.open("console-2")) == Close.TICKET_INVALID.value


async def test_token_file_plugin_named_by_token_plugin(
    stack: StartStack, tcp_target: StartTarget, tmp_path: Path
) -> None:
    target = await tcp_target(echo)
    path = write_token_file(tmp_path / "tokens", {"abc": ("127.0.0.1", target.port)})
    s = await stack("TokenFile", str(path))
    ws = await s.open("abc")
    await raw_echo(ws, b"\x00\x01\x02 raw bytes")
    await ws.close()
    # TokenFile re-reads its file: a token added later works at once.
    write_token_file(path, {"abc": ("127.0.0.1", target.port), "def": ("127.0.0.1", target.port)})
    ws = await s.open("def")
    await raw_echo(ws, b"later")
    await ws.close()


async def test_module_class_plugin(stack: StartStack, tcp_target: StartTarget) -> None:
    target = await tcp_target(echo)
    s = await stack(f"{__name__}.FixedPlugin", "fixed-")
    ws = await s.open(f"fixed-{target.port}")
    await raw_echo(ws, b"custom plugin")
    await ws.close()
    assert await closed_with(await s.open("other-1")) == Close.TICKET_INVALID.value


def jwt_for(key: jwk.JWK, claims: dict[str, Any]) -> str:
    token = jwt.JWT(header={"alg": "HS256"}, claims=claims)
    token.make_signed_token(key)
    return str(token.serialize())


async def test_jwt_token_api_plugin(
    stack: StartStack, tcp_target: StartTarget, tmp_path: Path
) -> None:
    target = await tcp_target(echo)
    # websockify reads a PEM key, or else the file's text as the "k" of a symmetric JWK.
    key = jwk.JWK.generate(kty="oct", size=256)
    key_file = tmp_path / "jwt.key"
    key_file.write_text(key.export_symmetric(as_dict=True)["k"])
    s = await stack("JWTTokenApi", str(key_file))
    good = jwt_for(key, {"host": "127.0.0.1", "port": target.port, "exp": time.time() + 60})
    ws = await s.open(good)
    await raw_echo(ws, b"jwt")
    await ws.close()
    expired = jwt_for(key, {"host": "127.0.0.1", "port": target.port, "exp": time.time() - 60})
    assert await closed_with(await s.open(expired)) == Close.TICKET_INVALID.value
    forged = jwt_for(
        jwk.JWK.generate(kty="oct", size=256), {"host": "127.0.0.1", "port": target.port}
    )
    assert await closed_with(await s.open(forged)) == Close.TICKET_INVALID.value
    assert target.connections == 1


async def test_plugin_targets_still_obey_targets_allow(
    stack: StartStack, tcp_target: StartTarget, tmp_path: Path
) -> None:
    target = await tcp_target(echo)
    path = write_token_file(tmp_path / "tokens", {"t": ("127.0.0.1", target.port)})
    s = await stack("ReadOnlyTokenFile", str(path), targets={"allow": ["10.0.0.0/8"]})
    assert await closed_with(await s.open("t")) == Close.TARGET_REFUSED.value
    assert target.connections == 0


async def test_token_redis_plugin_with_a_real_redis(
    stack: StartStack, tcp_target: StartTarget, redis_server: RedisServer
) -> None:
    target = await tcp_target(echo)
    with Redis(port=redis_server.port) as admin:
        admin.set("consoles:json-token", json.dumps({"host": f"127.0.0.1:{target.port}"}))
        admin.set("consoles:plain-token", f"127.0.0.1:{target.port}")
    s = await stack("TokenRedis", f"127.0.0.1:{redis_server.port}:0::consoles")
    for token in ("json-token", "plain-token"):
        ws = await s.open(token)
        await raw_echo(ws, token.encode())
        await ws.close()
    assert await closed_with(await s.open("absent-token")) == Close.TICKET_INVALID.value
    assert target.connections == 2


async def test_token_redis_lookups_never_log_the_token(
    stack: StartStack,
    tcp_target: StartTarget,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)  # console-proxy's default --log-level
    target = await tcp_target(echo)
    token = "secret-static-token-0123456789"
    with Redis(port=redis_server.port) as admin:
        admin.set(token, f"127.0.0.1:{target.port}")
    s = await stack("TokenRedis", f"127.0.0.1:{redis_server.port}")
    ws = await s.open(token)
    await raw_echo(ws, b"x")
    await ws.close()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert token not in logged
