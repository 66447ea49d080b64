"""README: ``rate_per_minute``/``rate_burst`` bound mints (429 LIMIT.RATE) and WebSocket upgrades
(close 4429) per client address, through the running app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from proxy.closecodes import Close
from tests.conftest import TcpTarget, greet_as_browser, rfb_echo
from tests.support.app_stack import VM, AiohttpServer, Stack, start_stack, vm_entry

StartStack = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def stack(
    aiohttp_server: AiohttpServer, tcp_target: Callable[..., Awaitable[TcpTarget]]
) -> AsyncIterator[StartStack]:
    made: list[Stack] = []

    async def start(**sections: dict[str, Any]) -> Stack:
        target = await tcp_target(rfb_echo)
        made.append(
            await start_stack(aiohttp_server, [vm_entry(VM, vncPort=target.port)], **sections)
        )
        made[-1].target = target  # type: ignore[attr-defined]
        return made[-1]

    yield start
    for s in made:
        await s.close()


async def test_upgrades_beyond_the_burst_close_4429_and_leave_the_ticket_unused(
    stack: StartStack,
) -> None:
    # One token a minute: nothing refills during the test. Mints and upgrades share the bucket.
    s = await stack(limits={"rate_per_minute": 1, "rate_burst": 3})
    first, second = await s.token(), await s.token()  # 2 of 3
    ws = await s.open(first)  # 3 of 3
    await greet_as_browser(ws)
    await ws.close()
    code, reason = await s.refusal(second)  # the 4th request from this address
    assert (code, reason) == Close.RATE_LIMITED.value
    assert code == 4429 and "your address" in reason
    assert s.target.connections == 1  # type: ignore[attr-defined]
    status, body = await s.mint()
    assert status == 429 and body["error"]["code"] == "LIMIT.RATE"


async def test_the_upgrade_limit_is_per_client_address(stack: StartStack) -> None:
    # Behind a trusted reverse proxy each X-Forwarded-For address has its own bucket.
    s = await stack(
        limits={"rate_per_minute": 1, "rate_burst": 2},
        server={"trusted_proxies": ["127.0.0.0/8"]},
    )
    alice = {"X-Forwarded-For": "203.0.113.10"}
    bob = {"X-Forwarded-For": "203.0.113.20"}
    mallory = {"X-Forwarded-For": "203.0.113.30"}
    # The ticket is minted from a third address, so alice's and bob's buckets count upgrades.
    async with s.http.post(
        s.url("/api/v1/consoles"),
        json={"vmUuid": VM},
        headers={"Authorization": f"OAuth {await s.login()}", **mallory},
    ) as answer:
        assert answer.status == 201
        token = (await answer.json())["token"]
    spare = [await s.open("A" * 43, headers=alice) for _ in range(2)]  # alice's burst, spent
    for ws in spare:
        message = await ws.receive(timeout=5)
        assert message.data == Close.TICKET_INVALID.code
        await ws.close()
    ws = await s.open(token, headers=alice)
    message = await ws.receive(timeout=5)
    await ws.close()
    assert (message.data, message.extra) == Close.RATE_LIMITED.value
    # bob is another address: his upgrade goes through with the very ticket alice could not use.
    ws = await s.open(token, headers=bob)
    await greet_as_browser(ws)
    await ws.close()
    assert s.target.connections == 1  # type: ignore[attr-defined]
