"""[limits]: ticket requests per client address (rate_per_minute, rate_burst) and open consoles
per VM (max_per_vm).

Others elsewhere: WebSocket upgrades per address in tests/web/test_upgrade_rate_limit.py, the
per-VM count across instances in tests/consoles/test_vm_counts.py, idle in
tests/consoles/test_idle.py, the frame size in tests/web/test_frame_size.py."""

from __future__ import annotations

from typing import Any

from aiohttp import WSMsgType

from tests.support.rfb_client import RfbClosed
from tests.support.stack import StartStack
from tests.support.waiting import wait_until


async def test_rate_limit_per_client_ip(stack: StartStack) -> None:
    p = await stack(limits={"rate_per_minute": 1, "rate_burst": 3})
    statuses = [(await p.mint())[0] for _ in range(5)]
    assert statuses[:3] == [201, 201, 201]
    assert statuses[3:] == [429, 429]
    _, body = await p.mint()
    assert body["error"]["code"] == "LIMIT.RATE"


async def test_per_vm_limit(stack: StartStack) -> None:
    p = await stack(limits={"max_per_vm": 1})
    first, _ = await p.console()
    _, body = await p.mint()
    second = await p.http.ws_connect(p.proxy.make_url(f"/websockify?token={body['token']}"))
    msg = await second.receive(timeout=5)
    assert msg.type is WSMsgType.CLOSE and msg.data == 4429 and "this VM" in str(msg.extra)
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
