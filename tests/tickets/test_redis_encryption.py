"""README ``[tickets] encrypt_key`` with Redis, through the running app: the demo inventory's
password-protected VM is minted with ``store = "redis"``; the ticket Redis holds does not contain
the console password, and the console still opens (the proxy answers VNC Authentication), on
the instance that minted it or another with the same key."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from proxy.app import create_app
from proxy.closecodes import Close
from proxy.demo.run import DEFAULT_INVENTORY
from proxy.demo.simulator import create_simulator_app, load_inventory
from proxy.demo.vncserver import DemoVncServer
from tests.support.configs import make_config
from tests.support.rfb_client import greet_as_browser
from tests.support.services import RedisServer
from tests.support.stack import AiohttpServer, zstack_login

LOCKED = "demo-vnc-password"  # the demo VM with a console password


class Demo:
    def __init__(self, zstack: str, vm_uuid: str, password: str, width: int) -> None:
        self.zstack, self.vm_uuid, self.password, self.width = zstack, vm_uuid, password, width
        self.http = aiohttp.ClientSession()

    async def mint(self, proxy: TestServer) -> str:
        session = await zstack_login(self.http, self.zstack)
        async with self.http.post(
            proxy.make_url("/api/v1/consoles"),
            json={"vmUuid": self.vm_uuid},
            headers={"Authorization": f"OAuth {session}"},
        ) as answer:
            assert answer.status == 201, await answer.text()
            return str((await answer.json())["token"])

    async def server_init_width(self, proxy: TestServer, token: str) -> int:
        """Open the console as noVNC would (security None offered to it) up to ServerInit."""
        ws = await self.http.ws_connect(proxy.make_url(f"/websockify?token={token}"))
        try:
            stream = await greet_as_browser(ws)
            await stream.write(bytes([1]))  # ClientInit
            return int.from_bytes(await stream.read_exactly(2, 10), "big")
        finally:
            await ws.close()


@pytest.fixture
async def demo(aiohttp_server: AiohttpServer) -> AsyncIterator[Demo]:
    inventory = load_inventory(DEFAULT_INVENTORY)
    locked = inventory.vm(LOCKED)
    assert locked.console_password
    async with DemoVncServer(password=locked.console_password, width=640) as vnc:
        inventory = inventory.with_ports({LOCKED: vnc.port})
        simulator = await aiohttp_server(create_simulator_app(inventory), access_log=None)
        made = Demo(str(simulator.make_url("/zstack")), locked.uuid, locked.console_password, 640)
        yield made
        await made.http.close()


async def proxy_instance(
    aiohttp_server: AiohttpServer, demo: Demo, redis_server: RedisServer, key: str
) -> TestServer:
    tickets: dict[str, Any] = {"store": "redis", "redis_url": redis_server.url}
    if key:
        tickets["encrypt_key"] = key
    return await aiohttp_server(
        create_app(make_config(zstack={"url": demo.zstack}, tickets=tickets))
    )


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


async def raw_ticket(redis_server: RedisServer, token: str) -> bytes:
    admin = Redis.from_url(redis_server.url)
    try:
        keys = [key async for key in admin.scan_iter(match="*")]
        # The one ticket entry, wherever the prefix puts it.
        matching = [key for key in keys if token.encode() in key]
        assert len(matching) == 1, keys
        raw = await admin.get(matching[0])
    finally:
        await admin.aclose()
    assert raw is not None
    return bytes(raw)  # type: ignore[arg-type]  # bytes: no decode_responses


async def test_encrypted_ticket_in_redis_hides_the_password_and_the_console_opens(
    aiohttp_server: AiohttpServer, demo: Demo, redis_server: RedisServer
) -> None:
    key = new_key()
    minting = await proxy_instance(aiohttp_server, demo, redis_server, key)
    token = await demo.mint(minting)
    raw = await raw_ticket(redis_server, token)
    assert demo.password.encode() not in raw
    assert base64.b64encode(demo.password.encode()) not in raw
    assert demo.password.encode().hex().encode() not in raw
    # The proxy decrypted it and answered the VNC challenge: noVNC saw None, then ServerInit.
    assert await demo.server_init_width(minting, token) == demo.width


async def test_another_instance_with_the_same_key_opens_it_one_with_another_key_cannot(
    aiohttp_server: AiohttpServer, demo: Demo, redis_server: RedisServer
) -> None:
    key = new_key()
    minting = await proxy_instance(aiohttp_server, demo, redis_server, key)
    peer = await proxy_instance(aiohttp_server, demo, redis_server, key)
    stranger = await proxy_instance(aiohttp_server, demo, redis_server, new_key())
    assert await demo.server_init_width(peer, await demo.mint(minting)) == demo.width

    token = await demo.mint(minting)
    ws = await demo.http.ws_connect(stranger.make_url(f"/websockify?token={token}"))
    message = await ws.receive(timeout=10)
    await ws.close()
    assert message.type is WSMsgType.CLOSE
    assert (message.data, message.extra) == Close.TICKET_INVALID.value


async def test_without_encrypt_key_the_password_is_in_redis_in_clear(
    aiohttp_server: AiohttpServer, demo: Demo, redis_server: RedisServer
) -> None:
    """The control: what the first test looks for is really there without the key."""
    proxy = await proxy_instance(aiohttp_server, demo, redis_server, "")
    token = await demo.mint(proxy)
    assert demo.password.encode() in await raw_ticket(redis_server, token)
    assert await demo.server_init_width(proxy, token) == demo.width
