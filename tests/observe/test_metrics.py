"""README's /metrics table, through the running app: after rate limits, a per-VM limit, a bad
ticket and consoles closed by each side, the counters carry the right values and labels."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from proxy.closecodes import Close
from tests.support.metrics import Samples, parse, sample_value, value
from tests.support.net import TcpTarget, rfb_echo
from tests.support.rfb_client import greet_as_browser
from tests.support.stack import VM, AiohttpServer, Stack, start_stack, vm_entry
from tests.support.waiting import wait_until

StartStack = Callable[..., Awaitable[Stack]]


async def settled(s: Stack, name: str, expected: float, **labels: str) -> Samples:
    """/metrics once ``name`` reached ``expected`` (a console's end is counted after its close)."""
    deadline = time.monotonic() + 10
    while True:
        samples, _ = parse(await s.metrics())
        if value(samples, name, **labels) == expected or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.05)


@pytest.fixture
async def stack(
    aiohttp_server: AiohttpServer, tcp_target: Callable[..., Awaitable[TcpTarget]]
) -> AsyncIterator[StartStack]:
    made: list[Stack] = []

    async def start(host: Callable[..., Any] = rfb_echo, **sections: dict[str, Any]) -> Stack:
        target = await tcp_target(host)
        vms = [vm_entry(VM, vncPort=target.port)]
        made.append(await start_stack(aiohttp_server, vms, **sections))
        return made[-1]

    yield start
    for s in made:
        await s.close()


async def test_rejections_and_close_reasons_are_counted_with_their_labels(
    stack: StartStack,
) -> None:
    # One a minute, bursts of 2: two mints, then two failed redemptions, spend both budgets.
    s = await stack(limits={"rate_per_minute": 1, "rate_burst": 2, "max_per_vm": 1})
    first, second = await s.token(), await s.token()  # mints 1, 2
    ws = await s.open(first)  # the VM's one console (a valid ticket costs nothing)
    stream = await greet_as_browser(ws)
    assert await s.refusal(second) == Close.TOO_MANY_FOR_VM.value
    assert await s.refusal("B" * 43) == Close.TICKET_INVALID.value  # failure 1
    status, _ = await s.mint()  # mint 3: over the burst
    assert status == 429
    assert await s.refusal("C" * 43) == Close.TICKET_INVALID.value  # failure 2
    assert await s.refusal("D" * 43) == Close.RATE_LIMITED.value  # no budget left
    await stream.write(b"12345")
    assert await stream.read_exactly(5, 5) == b"12345"
    await ws.close()

    closed = "console_proxy_consoles_closed_total"
    samples = await settled(s, closed, 1.0, reason="browser_closed")
    _, types = parse(await s.metrics())
    expected = {
        ("console_proxy_requests_rejected_total", "limit", "rate"): 2.0,  # a mint, an upgrade
        ("console_proxy_requests_rejected_total", "limit", "max_per_vm"): 1.0,
        (closed, "reason", "browser_closed"): 1.0,
        (closed, "reason", "too_many_for_vm"): 1.0,
        (closed, "reason", "ticket_invalid"): 2.0,
        (closed, "reason", "rate_limited"): 1.0,
        ("console_proxy_tickets_minted_total", "protocol", "vnc"): 2.0,
        ("console_proxy_tickets_redeemed_total", "result", "ok"): 2.0,
        ("console_proxy_tickets_redeemed_total", "result", "invalid"): 2.0,
    }
    got = {key: value(samples, key[0], **{key[1]: key[2]}) for key in expected}
    assert got == expected
    assert value(samples, "console_proxy_requests_rejected_total", limit="max_connections") in (
        None,
        0.0,
    )
    assert value(samples, "console_proxy_consoles_active") == 0.0
    # What one console moved: at least the 5 echoed bytes each way, plus the handshake.
    assert value(samples, "console_proxy_bytes_total", direction="to_host") >= 5  # type: ignore[operator]
    assert value(samples, "console_proxy_bytes_total", direction="to_browser") >= 5  # type: ignore[operator]
    assert value(samples, "console_proxy_connect_seconds_count") == 1.0
    assert (
        value(samples, "console_proxy_zstack_request_seconds_count", call="console-addresses")
        == 2.0
    )
    assert types["console_proxy_requests_rejected"] == "counter"
    assert types["console_proxy_consoles_closed"] == "counter"
    assert types["console_proxy_consoles_active"] == "gauge"
    assert types["console_proxy_connect_seconds"] == "histogram"


async def test_host_closing_the_console_is_counted_as_host_closed(stack: StartStack) -> None:
    async def hangs_up_after_the_handshake(reader: asyncio.StreamReader, writer: Any) -> None:
        writer.write(b"RFB 003.008\n")
        await reader.readexactly(12)
        writer.write(bytes([1, 1]))
        await reader.readexactly(1)
        writer.write(bytes(4))
        await writer.drain()
        await reader.readexactly(1)  # ClientInit, then the VM's console goes away

    s = await stack(hangs_up_after_the_handshake)
    ws = await s.open(await s.token())
    stream = await greet_as_browser(ws)
    await stream.write(bytes([1]))
    message = await ws.receive(timeout=10)
    await ws.close()
    assert (message.data, message.extra) == Close.HOST_CLOSED.value
    samples = await settled(s, "console_proxy_consoles_closed_total", 1.0, reason="host_closed")
    assert value(samples, "console_proxy_consoles_closed_total", reason="host_closed") == 1.0
    assert value(samples, "console_proxy_consoles_closed_total", reason="browser_closed") is None


async def test_zstack_errors_are_counted_by_zstacks_code(stack: StartStack) -> None:
    s = await stack()
    status, body = await s.mint(vm="f" * 32)  # no such VM
    assert status == 404 and body["error"]["code"] == "SYS.1003"
    samples, _ = parse(await s.metrics())
    assert value(samples, "console_proxy_zstack_errors_total", code="SYS.1003") == 1.0
    assert value(samples, "console_proxy_tickets_minted_total", protocol="vnc") is None


async def test_metrics_follow_consoles(stack: StartStack) -> None:
    p = await stack()
    ws, stream = await p.console()
    await stream.write(b"hello")
    assert await stream.read_exactly(5, 5) == b"hello"
    text = await p.metrics()
    assert sample_value(text, "console_proxy_consoles_active") == 1
    assert 'console_proxy_tickets_minted_total{protocol="vnc"} 1.0' in text
    assert 'console_proxy_tickets_redeemed_total{result="ok"} 1.0' in text
    assert "console_proxy_zstack_request_seconds_count" in text
    await ws.close()

    async def closed_metrics() -> str | None:
        text = await p.metrics()
        return text if sample_value(text, "console_proxy_consoles_active") == 0 else None

    text = await wait_until(closed_metrics, message="the console stayed active")
    assert 'console_proxy_consoles_closed_total{reason="browser_closed"} 1.0' in text
    assert 'console_proxy_bytes_total{direction="to_host"}' in text
    assert "console_proxy_connect_seconds_bucket" in text


async def test_zstack_errors_are_counted_by_code(stack: StartStack) -> None:
    p = await stack()
    p.session = "0" * 32
    status, _ = await p.mint()
    assert status == 401
    assert 'console_proxy_zstack_errors_total{code="ID.1001"} 1.0' in await p.metrics()
