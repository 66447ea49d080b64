"""The SPICE page in a real Chromium against real QEMU SPICE: the ticket travels as a
``token.<T>`` WebSocket subprotocol on every channel socket, never in a request URL."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from playwright.async_api import Request, WebSocket

from tests.support.browser import (
    SPICE_VM,
    StartConsoleStack,
    spice_inventory,
    wait_drawn,
    wait_state,
)
from tests.support.qemu import QemuVm

pytestmark = [pytest.mark.browser, pytest.mark.qemu]


async def test_spice_ticket_is_in_no_url(
    start_console_stack: StartConsoleStack, new_page: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with QemuVm(spice=True) as vm:
        assert vm.spice_port is not None
        stack, _ = await start_console_stack(
            spice_inventory(vm.spice_port, None), portal_vm=SPICE_VM
        )
        ticket = await stack.mint(SPICE_VM)
        token = ticket["token"]
        page = await new_page()
        urls: list[str] = []
        sockets: list[WebSocket] = []

        def on_request(request: Request) -> None:
            urls.append(request.url)

        def on_websocket(ws: WebSocket) -> None:
            sockets.append(ws)
            urls.append(ws.url)

        page.on("request", on_request)
        page.on("websocket", on_websocket)
        with caplog.at_level(logging.DEBUG):
            await page.goto(ticket["consoleUrl"])
            await wait_state(page, "connected")
            await wait_drawn(page, timeout=20.0)
        assert len(sockets) >= 4  # main, display, inputs, cursor: each admitted by the ticket
        assert all(ws.url.endswith("/websockify") for ws in sockets), urls
        # The fragment (#token=) is never sent; no URL a server sees carries the ticket.
        assert not [u for u in urls if token in u.split("#")[0]], urls
        assert not [r for r in caplog.records if token in r.getMessage()]
