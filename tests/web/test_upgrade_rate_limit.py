"""README: ``rate_per_minute``/``rate_burst`` bound mints (429 LIMIT.RATE) and failed ticket
redemptions (then close 4429) per client address, through the running app; valid tickets never
meet the limit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from proxy.closecodes import Close
from tests.support.net import TcpTarget, rfb_echo
from tests.support.rfb_client import greet_as_browser
from tests.support.stack import VM, AiohttpServer, Stack, start_stack, vm_entry

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
        made[-1].target = target
        return made[-1]

    yield start
    for s in made:
        await s.close()


async def test_valid_tickets_never_meet_the_limit_failed_redemptions_do(
    stack: StartStack,
) -> None:
    # One a minute: nothing refills during the test. The burst is 3 mints and 3 failures.
    s = await stack(limits={"rate_per_minute": 1, "rate_burst": 3})
    tokens = [await s.token() for _ in range(3)]
    status, body = await s.mint()  # the 4th mint from this address
    assert status == 429 and body["error"]["code"] == "LIMIT.RATE"
    for token in tokens:  # valid tickets cost nothing, however many
        ws = await s.open(token)
        await greet_as_browser(ws)
        await ws.close()
    for _ in range(3):  # guessing spends the failures' budget...
        assert await s.refusal("A" * 43) == Close.TICKET_INVALID.value
    # ...and then even a valid ticket is not looked at from this address.
    assert await s.refusal(tokens[0]) == Close.RATE_LIMITED.value
    assert s.target.connections == 3


async def test_the_upgrade_limit_is_per_client_address(stack: StartStack) -> None:
    # Behind a trusted reverse proxy each X-Forwarded-For address has its own bucket.
    s = await stack(
        limits={"rate_per_minute": 1, "rate_burst": 2},
        server={"trusted_proxies": ["127.0.0.0/8"]},
    )
    alice = {"X-Forwarded-For": "203.0.113.10"}
    bob = {"X-Forwarded-For": "203.0.113.20"}
    mallory = {"X-Forwarded-For": "203.0.113.30"}
    # The ticket is minted from a third address; alice spends her failures' budget guessing.
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
    assert s.target.connections == 1
