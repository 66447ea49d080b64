"""The console pages in a real Chromium: tickets minted through the real API (ZStack simulator),
the demo VNC server and real QEMU on the other end, the page inside a portal's iframe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page

from proxy.demo.simulator import Inventory
from proxy.demo.vncserver import Rect, Scene
from tests.support.browser import (
    DEMO_VNC,
    QEMU_VM,
    StartConsoleStack,
    artifact,
    canvas_stats,
    close_code,
    console_frame,
    qemu_inventory,
    reconnect,
    status_text,
    wait_changed,
    wait_drawn,
    wait_state,
)
from tests.support.configs import write_token_file
from tests.support.net import free_port
from tests.support.qemu import QemuVm
from tests.support.waiting import wait_until

pytestmark = pytest.mark.browser

DEMO_VNC_PASSWORD = "d3ad0c0de0000000000000000000a002"
# Where the demo VNC server draws the keys typed so far (Scene.keys_box for an 800 px screen).
KEYS_BOX = (16, 140, 768, 24)
# The keysyms noVNC presses for Ctrl-Alt-Del: Control_L, Alt_L, Delete.
CTRL_ALT_DEL = [0xFFE3, 0xFFE9, 0xFFFF]


async def open_console(page: Page, console_url: str) -> None:
    await page.goto(console_url)
    await wait_state(page, "connected")


# --- the console page on its own ----------------------------------------------------------


async def test_console_connects_draws_and_hides_the_ticket(
    start_console_stack: StartConsoleStack, demo_inventory: Inventory, new_page: Any
) -> None:
    stack, _ = await start_console_stack(demo_inventory)
    ticket = await stack.mint(DEMO_VNC)
    page = await new_page()
    await open_console(page, ticket["consoleUrl"])
    assert await status_text(page) == "Connected to demo-vnc"
    stats = await wait_drawn(page)
    assert (stats.width, stats.height) == (800, 480)
    assert stats.colours > 10
    # The ticket was taken out of the address bar (and history) once read.
    assert ticket["token"] not in page.url
    assert page.url == stack.url("/console/vnc")
    await page.screenshot(path=str(artifact("console-demo.png")))


async def test_used_ticket_shows_why(
    start_console_stack: StartConsoleStack, demo_inventory: Inventory, new_page: Any
) -> None:
    stack, _ = await start_console_stack(demo_inventory)
    ticket = await stack.mint(DEMO_VNC)
    first = await new_page()
    await open_console(first, ticket["consoleUrl"])

    second = await new_page()
    await second.goto(ticket["consoleUrl"])
    await wait_state(second, "disconnected")
    assert await close_code(second) == "4401"
    assert "already used" in await status_text(second)
    assert await second.locator("#overlay").is_visible()

    # Alone in a tab with no portal to ask, Reconnect explains where a new ticket comes from.
    await second.click("#btn-reconnect")
    assert "Open the console again from the portal" in await status_text(second)
    # The first page was not disturbed.
    assert await first.evaluate("document.body.dataset.state") == "connected"


async def test_clipboard_paste_and_ctrl_alt_del(
    start_console_stack: StartConsoleStack,
    demo_inventory: Inventory,
    new_page: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The demo VNC server draws only printable keys: record every key press it receives.
    pressed: list[int] = []
    draw_key = Scene.key

    def record_key(scene: Scene, keysym: int) -> list[Rect]:
        pressed.append(keysym)
        return draw_key(scene, keysym)

    monkeypatch.setattr(Scene, "key", record_key)
    stack, _ = await start_console_stack(demo_inventory)
    page = await new_page()
    await open_console(page, (await stack.mint(DEMO_VNC))["consoleUrl"])
    await wait_drawn(page)
    before = await canvas_stats(page, KEYS_BOX)
    assert before is not None

    await page.click("#btn-clipboard")
    await page.fill("#clipboard-send", "pasted")
    await page.click("#btn-clipboard-send")
    # The demo VNC server shows pasted text with the typed keys.
    await wait_changed(page, KEYS_BOX, before)

    assert pressed == []
    await page.click("#btn-cad")
    await wait_until(lambda: pressed == CTRL_ALT_DEL, message=lambda: f"the server got {pressed}")
    assert await page.evaluate("document.body.dataset.state") == "connected"


async def test_scaling_modes(
    start_console_stack: StartConsoleStack, demo_inventory: Inventory, new_page: Any
) -> None:
    stack, _ = await start_console_stack(demo_inventory)
    page = await new_page()
    await open_console(page, (await stack.mint(DEMO_VNC))["consoleUrl"] + "&scale=none")
    assert await page.locator("#scale").input_value() == "none"
    canvas = page.locator("#screen canvas")
    await wait_drawn(page)
    box = await canvas.bounding_box()
    assert box is not None and (box["width"], box["height"]) == (800, 480)

    await page.select_option("#scale", "fit")

    async def grown() -> bool:  # the 1024 px wide window leaves room to grow
        box = await canvas.bounding_box()
        return box is not None and box["width"] > 800

    await wait_until(grown, message="the canvas did not grow to fit the window")


async def test_view_only_page_says_so_and_disables_ctrl_alt_del(
    start_console_stack: StartConsoleStack, demo_inventory: Inventory, new_page: Any
) -> None:
    stack, _ = await start_console_stack(demo_inventory)
    page = await new_page()
    await open_console(page, (await stack.mint(DEMO_VNC))["consoleUrl"] + "&view_only=1")
    assert await status_text(page) == "Connected to demo-vnc (view only)"
    assert await page.locator("#btn-cad").is_disabled()
    assert page.url.endswith("/console/vnc#view_only=1")  # the ticket is gone, the rest stays


@pytest.mark.parametrize(
    ("host", "code", "words"),
    [
        ("10.255.1.2", "4403", "not allowed to connect"),  # outside [targets] allow
        ("127.0.0.1", "4502", "host unreachable"),  # nothing listens there: the proxy's reason
    ],
)
async def test_proxy_close_reasons_in_plain_words(
    start_console_stack: StartConsoleStack,
    new_page: Any,
    tmp_path: Path,
    host: str,
    code: str,
    words: str,
) -> None:
    tokens = write_token_file(tmp_path / "tokens", {"target": (host, free_port())})
    stack, _ = await start_console_stack(qemu_inventory(1), tickets={"token_file": str(tokens)})
    page = await new_page()
    await page.goto(stack.url("/console/vnc") + "#token=target")
    await wait_state(page, "disconnected")
    assert await close_code(page) == code
    assert words in await status_text(page)


# --- inside a portal's iframe ---------------------------------------------------------------


async def test_in_iframe_click_focuses_keyboard_and_reconnect_asks_portal(
    start_console_stack: StartConsoleStack, demo_inventory: Inventory, new_page: Any
) -> None:
    stack, _ = await start_console_stack(demo_inventory)
    page = await new_page()
    await page.goto(stack.portal_url())
    frame = await console_frame(page, "#console")
    await wait_state(frame, "connected")
    await wait_drawn(frame)
    before = await canvas_stats(frame, KEYS_BOX)
    assert before is not None

    # One click on the console gives it the keyboard, across the frame boundary.
    await (
        page.frame_locator("#console")
        .locator("#screen canvas")
        .click(position={"x": 600, "y": 380})
    )
    await page.keyboard.type("hi42")
    await wait_changed(frame, KEYS_BOX, before)
    statuses = await page.evaluate("window.statuses.map((s) => s.state)")
    assert statuses[:2] == ["connecting", "connected"]

    # Tickets are single-use: Reconnect asks the portal for a fresh one.
    await reconnect(frame, page.frame_locator("#console").locator("#btn-reconnect").click)
    assert await page.evaluate("window.ticketRequests") == 1
    statuses = await page.evaluate("window.statuses.map((s) => s.state)")
    assert statuses[-2:] == ["connecting", "connected"]
    await wait_drawn(frame)

    # A reload took the ticket out of the URL; the page asks the portal again by itself.
    await frame.evaluate("location.reload()")
    await frame.locator("#screen canvas").wait_for(timeout=15_000)
    await wait_state(frame, "connected")
    assert await page.evaluate("window.ticketRequests") == 2
    await page.screenshot(path=str(artifact("console-in-portal.png")))


async def test_idle_console_is_warned_then_closed(
    start_console_stack: StartConsoleStack, demo_inventory: Inventory, new_page: Any
) -> None:
    # noVNC asks for screen updates all the time; only keyboard and mouse input count.
    stack, _ = await start_console_stack(demo_inventory, limits={"idle_timeout": 8})
    page = await new_page()
    await page.goto(stack.portal_url())
    frame = await console_frame(page, "#console")
    await wait_state(frame, "connected")
    banner = frame.locator("#idle-warning")
    await banner.wait_for(state="visible", timeout=10_000)
    assert "closes in" in (await banner.text_content() or "")
    # Input on the console clears the warning and tells the portal.
    await (
        page.frame_locator("#console")
        .locator("#screen canvas")
        .hover(position={"x": 100, "y": 100})
    )
    await banner.wait_for(state="hidden", timeout=5_000)
    warnings = await page.evaluate("window.idleWarnings")
    assert warnings[-1] == "cleared" and all(isinstance(w, int) and w <= 5 for w in warnings[:-1])
    # Left alone again, the console is warned again and then closed by the proxy as idle.
    await banner.wait_for(state="visible", timeout=10_000)
    await wait_state(frame, "disconnected", 15_000)
    assert await close_code(frame) == "4408"
    assert "input" in (await status_text(frame)).lower()
    await page.screenshot(path=str(artifact("console-idle.png")))


async def test_reconnect_without_portal_answer_says_so(
    start_console_stack: StartConsoleStack, demo_inventory: Inventory, new_page: Any
) -> None:
    stack, _ = await start_console_stack(demo_inventory)
    page = await new_page()
    await page.goto(stack.portal_url("/?answer=0"))
    frame = await console_frame(page, "#console")
    await wait_state(frame, "connected")
    await page.frame_locator("#console").locator("#btn-reconnect").click()
    await frame.locator("#status-text", has_text="open the console again").wait_for(timeout=6000)
    # A working console stays up while no new ticket comes.
    assert await frame.evaluate("document.body.dataset.state") == "connected"
    assert await page.evaluate("window.ticketRequests") == 1


async def test_demo_index_opens_consoles(
    start_console_stack: StartConsoleStack, demo_inventory: Inventory, new_page: Any
) -> None:
    stack, _ = await start_console_stack(demo_inventory)
    page = await new_page()
    await page.goto(stack.url("/"))
    assert await page.locator("tr[data-vm-uuid]").count() == len(demo_inventory.vms)

    await page.click("tr[data-vm-name=demo-vnc] button[data-open=iframe]")
    frame = await console_frame(page, "#console-frame")
    await wait_state(frame, "connected")
    await wait_drawn(frame)
    # The demo page answers the console's ticket requests too.
    await reconnect(frame, page.frame_locator("#console-frame").locator("#btn-reconnect").click)
    await page.locator("#embed-status", has_text="connected").wait_for()
    await page.screenshot(path=str(artifact("demo-index.png")), full_page=True)

    async with page.context.expect_page() as opened:
        await page.click("tr[data-vm-name=demo-vnc] button[data-open=tab]")
    tab = await opened.value
    await wait_state(tab, "connected")
    await wait_drawn(tab)
    # A tab asks the page that opened it (window.opener) for its next ticket.
    await reconnect(tab, tab.locator("#btn-reconnect").click)

    await page.click("tr[data-vm-name=demo-stopped] button[data-open=iframe]")
    message = page.locator("#message")
    await message.wait_for()
    assert "VM.1010" in (await message.text_content() or "")


# --- real QEMU ------------------------------------------------------------------------------


async def test_proxy_handles_console_password(
    start_console_stack: StartConsoleStack, demo_inventory: Inventory, new_page: Any
) -> None:
    # The proxy fetched the password from ZStack and did the VNC login: no prompt in the page.
    stack, _ = await start_console_stack(demo_inventory)
    page = await new_page()
    await open_console(page, (await stack.mint(DEMO_VNC_PASSWORD))["consoleUrl"])
    assert await status_text(page) == "Connected to demo-vnc-password"
    assert await page.locator("#credentials").is_hidden()
    await wait_drawn(page)


@pytest.mark.qemu
async def test_qemu_console_draws(start_console_stack: StartConsoleStack, new_page: Any) -> None:
    async with QemuVm() as vm:
        stack, _ = await start_console_stack(qemu_inventory(vm.vnc_port), portal_vm=QEMU_VM)
        page = await new_page()
        await open_console(page, (await stack.mint(QEMU_VM))["consoleUrl"])
        assert await status_text(page) == "Connected to QEMU"
        stats = await wait_drawn(page)
        assert (stats.width, stats.height) == (720, 400)
        await page.screenshot(path=str(artifact("console-qemu.png")))


@pytest.mark.qemu
async def test_qemu_ctrl_alt_del_resets_the_guest(
    start_console_stack: StartConsoleStack, new_page: Any
) -> None:
    async with QemuVm() as vm:
        stack, _ = await start_console_stack(qemu_inventory(vm.vnc_port), portal_vm=QEMU_VM)
        page = await new_page()
        await open_console(page, (await stack.mint(QEMU_VM))["consoleUrl"])
        await wait_drawn(page)

        async def resets() -> int:
            await vm.qmp.query_vnc()  # QMP events come in with the answers
            return sum(event["event"] == "RESET" for event in vm.qmp.events)

        assert await resets() == 0
        await page.click("#btn-cad")
        # SeaBIOS (on its "No bootable device" screen) reboots on Ctrl-Alt-Del; QEMU reports it.
        await wait_until(resets, message="no guest reset: Ctrl-Alt-Del did not reach the guest")
        assert await page.evaluate("document.body.dataset.state") == "connected"


@pytest.mark.qemu
async def test_qemu_password_asked_in_page_when_proxy_has_none(
    start_console_stack: StartConsoleStack, new_page: Any, tmp_path: Path
) -> None:
    # A websockify token-file target carries no password, so the browser must supply it.
    async with QemuVm(vnc_password=True) as vm:
        await vm.set_password("s3cret12")
        tokens = write_token_file(tmp_path / "tokens", {"qemu-pw": ("127.0.0.1", vm.vnc_port)})
        stack, _ = await start_console_stack(
            qemu_inventory(vm.vnc_port), portal_vm=QEMU_VM, tickets={"token_file": str(tokens)}
        )
        url = stack.url("/console/vnc") + "#token=qemu-pw"

        page = await new_page()
        await page.goto(url)
        password = page.locator("#credentials-password")
        await password.wait_for(timeout=15_000)
        await password.fill("wrong")
        await password.press("Enter")
        await wait_state(page, "disconnected")
        assert "refused the login" in await status_text(page)

        page = await new_page()
        await page.goto(url)
        password = page.locator("#credentials-password")
        await password.wait_for(timeout=15_000)
        await password.fill("s3cret12")
        await page.click("#credentials-form button[type=submit]")
        await wait_state(page, "connected")
        assert await password.input_value() == ""  # not kept in the page
        await wait_drawn(page)
