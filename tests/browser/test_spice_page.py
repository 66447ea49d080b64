"""The SPICE console page in a real Chromium: spice-html5 through the real app (tickets minted via
the ZStack simulator) to real QEMU SPICE, the password kept in the proxy."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from playwright.async_api import Page, WebSocket

from tests.support.browser import (
    SPICE_VM,
    StartConsoleStack,
    artifact,
    close_code,
    console_frame,
    reconnect,
    spice_inventory,
    status_text,
    wait_drawn,
    wait_state,
)
from tests.support.qemu import QemuVm

pytestmark = [pytest.mark.browser, pytest.mark.qemu]

PASSWORD = "zs-Sp1ce-secret"
# Short enough for a test to wait out, long enough for spice-html5 to open its channels.
WINDOW = 4.0


class Sockets:
    """The page's WebSockets and every frame it sent on them."""

    def __init__(self, page: Page) -> None:
        self.opened: list[WebSocket] = []
        self.sent = bytearray()
        page.on("websocket", self._opened)

    def _opened(self, ws: WebSocket) -> None:
        self.opened.append(ws)
        ws.on("framesent", self._sent)

    def _sent(self, payload: str | bytes) -> None:
        self.sent += payload if isinstance(payload, bytes) else payload.encode()


async def test_spice_console_draws_with_the_password_kept_in_the_proxy(
    start_console_stack: StartConsoleStack, new_page: Any
) -> None:
    async with QemuVm(spice=True, spice_ticketing=True) as vm:
        await vm.set_password(PASSWORD, protocol="spice")
        assert vm.spice_port is not None
        stack, _ = await start_console_stack(
            spice_inventory(vm.spice_port, PASSWORD), portal_vm=SPICE_VM
        )
        ticket = await stack.mint(SPICE_VM)
        assert ticket["protocol"] == "spice"
        assert ticket["consoleUrl"].endswith("/console/spice#token=" + ticket["token"])

        page = await new_page()
        sockets = Sockets(page)
        await page.goto(ticket["consoleUrl"])
        await wait_state(page, "connected")
        assert await status_text(page) == "Connected"
        stats = await wait_drawn(page, timeout=20.0)
        assert (stats.width, stats.height) == (720, 400)
        assert stats.colours > 1
        # One socket per channel: main, display, inputs, cursor.
        assert len(sockets.opened) >= 4
        assert page.url == stack.url("/console/spice")  # the ticket left the address bar
        # The password is nowhere in the page, and the page never sent it.
        assert PASSWORD not in await page.content()
        assert PASSWORD.encode() not in bytes(sockets.sent)
        await page.screenshot(path=str(artifact("console-spice.png")))

        # Ctrl-Alt-Del goes through spice-html5's inputs channel; the console stays up.
        await page.click("#btn-cad")
        await page.wait_for_timeout(300)
        assert await page.evaluate("document.body.dataset.state") == "connected"


async def test_spice_without_ticketing_scales_and_maps_the_mouse(
    start_console_stack: StartConsoleStack, new_page: Any
) -> None:
    async with QemuVm(spice=True) as vm:
        assert vm.spice_port is not None
        stack, _ = await start_console_stack(
            spice_inventory(vm.spice_port, None), portal_vm=SPICE_VM
        )
        page = await new_page()
        await page.goto((await stack.mint(SPICE_VM))["consoleUrl"] + "&scale=none")
        await wait_state(page, "connected")
        await wait_drawn(page, timeout=20.0)
        canvas = page.locator("#screen canvas")
        box = await canvas.bounding_box()
        assert box is not None and (round(box["width"]), round(box["height"])) == (720, 400)

        await page.select_option("#scale", "fit")
        box = await canvas.bounding_box()
        assert box is not None and box["width"] > 800  # 1024 px wide: room to grow
        # spice-html5 sends the pointer's offsetX/offsetY; scaled, they stay in VM pixels.
        await page.evaluate(
            """() => document.querySelector('#screen canvas').addEventListener('mousemove',
                   (e) => { window.lastOffset = [e.offsetX, e.offsetY]; })"""
        )
        await page.mouse.move(box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.5)
        x, y = await page.evaluate("window.lastOffset")
        assert abs(x - 540) <= 2 and abs(y - 200) <= 2


async def test_used_ticket_is_refused_after_the_channel_window(
    start_console_stack: StartConsoleStack, new_page: Any
) -> None:
    async with QemuVm(spice=True) as vm:
        assert vm.spice_port is not None
        stack, _ = await start_console_stack(
            spice_inventory(vm.spice_port, None),
            portal_vm=SPICE_VM,
            tickets={"spice_window": WINDOW},
        )
        ticket = await stack.mint(SPICE_VM)
        first = await new_page()
        await first.goto(ticket["consoleUrl"])
        await wait_state(first, "connected")
        await wait_drawn(first, timeout=20.0)
        await asyncio.sleep(WINDOW)

        second = await new_page()
        await second.goto(ticket["consoleUrl"])
        await wait_state(second, "disconnected")
        assert await close_code(second) == "4401"
        assert "already used" in await status_text(second)
        # The first console was not disturbed.
        assert await first.evaluate("document.body.dataset.state") == "connected"


async def test_wrong_password_in_zstack_is_explained_once(
    start_console_stack: StartConsoleStack, new_page: Any
) -> None:
    async with QemuVm(spice=True, spice_ticketing=True) as vm:
        await vm.set_password(PASSWORD, protocol="spice")
        assert vm.spice_port is not None
        stack, _ = await start_console_stack(
            spice_inventory(vm.spice_port, "not-it"), portal_vm=SPICE_VM
        )
        page = await new_page()
        sockets = Sockets(page)
        await page.goto((await stack.mint(SPICE_VM))["consoleUrl"])
        await wait_state(page, "disconnected")
        assert await close_code(page) == "4511"
        assert "rejected the console password" in await status_text(page)
        # Unlike spice_auto.html, the page does not try again and again.
        await page.wait_for_timeout(3000)
        assert len(sockets.opened) == 1
        assert await page.evaluate("document.body.dataset.state") == "disconnected"


async def test_in_portal_iframe_reconnect_asks_for_a_new_ticket(
    start_console_stack: StartConsoleStack, new_page: Any
) -> None:
    async with QemuVm(spice=True) as vm:
        assert vm.spice_port is not None
        stack, _ = await start_console_stack(
            spice_inventory(vm.spice_port, None), portal_vm=SPICE_VM
        )
        page = await new_page()
        await page.goto(stack.portal_url())
        frame = await console_frame(page, "#console")
        await wait_state(frame, "connected")
        await wait_drawn(frame, timeout=20.0)
        # Wait before closing the first session: QEMU 7.2 crashes when a display channel goes
        # away right after it was linked.
        await asyncio.sleep(1.0)
        await reconnect(frame, page.frame_locator("#console").locator("#btn-reconnect").click)
        assert await page.evaluate("window.ticketRequests") == 1
        await wait_drawn(frame, timeout=20.0)
        statuses = await page.evaluate("window.statuses.map((s) => s.state)")
        assert statuses[:2] == ["connecting", "connected"]
        assert statuses[-2:] == ["connecting", "connected"]
