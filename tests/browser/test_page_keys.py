"""The Keys menu, held modifiers and configured combinations (issue #15), in a real Chromium:
the keys reach the demo VNC server (which records them here), and real QEMU over VNC and SPICE
(SeaBIOS reboots on Ctrl-Alt-Del, which QEMU reports as a RESET event)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from playwright.async_api import Page

from proxy.demo.simulator import Inventory
from tests.support.browser import FreshPage, StartConsoleStack, wait_drawn, wait_state
from tests.support.qemu import QemuVm
from tests.support.waiting import wait_until

pytestmark = pytest.mark.browser

DEMO_VNC = "d3ad0c0de0000000000000000000a001"
QEMU_VM = "0e3a0c0de0000000000000000000b001"
CTRL, ALT, SHIFT, DELETE, ESC, F1 = 0xFFE3, 0xFFE9, 0xFFE1, 0xFFFF, 0xFF1B, 0xFFBE


async def open_console(page: Page, url: str) -> None:
    await page.goto(url)
    await wait_state(page, "connected")


async def choose(page: Page, label: str) -> None:
    await page.click("#btn-keys")
    await page.locator("#keys-menu").get_by_role("menuitem", name=label, exact=True).click()


async def test_menu_combinations_reach_the_vm(
    start_console_stack: StartConsoleStack,
    demo_inventory: Inventory,
    fresh_page: FreshPage,
    pressed_keys: list[int],
) -> None:
    stack, _ = await start_console_stack(demo_inventory, page={"key_combos": ["ctrl+shift+escape"]})
    page = await fresh_page()
    await open_console(page, (await stack.mint(DEMO_VNC))["consoleUrl"])

    await choose(page, "Ctrl+Alt+F1")
    await wait_until(lambda: pressed_keys == [CTRL, ALT, F1], message=lambda: f"{pressed_keys}")
    assert await page.locator("#keys-menu").is_hidden()
    assert "Ctrl+Alt+F1" in await page.locator("#status-text").inner_text()

    # [page] key_combos adds entries, spelled the proxy's way.
    pressed_keys.clear()
    await choose(page, "Ctrl+Shift+Esc")
    await wait_until(lambda: pressed_keys == [CTRL, SHIFT, ESC], message=lambda: f"{pressed_keys}")


async def test_held_modifier_combines_with_typed_keys(
    start_console_stack: StartConsoleStack,
    demo_inventory: Inventory,
    fresh_page: FreshPage,
    pressed_keys: list[int],
) -> None:
    stack, _ = await start_console_stack(demo_inventory)
    page = await fresh_page()
    await open_console(page, (await stack.mint(DEMO_VNC))["consoleUrl"])
    await page.click("#btn-keys")
    hold = page.locator("#keys-menu [data-hold=Ctrl]")
    await hold.click()
    assert await hold.get_attribute("aria-checked") == "true"
    assert await page.evaluate("document.body.dataset.heldKeys") == "Ctrl"
    await page.keyboard.press("Escape")  # closes the menu, back on the Keys button
    await page.locator("#screen canvas").click(position={"x": 600, "y": 380})
    await page.keyboard.press("c")
    await wait_until(lambda: pressed_keys == [CTRL, ord("c")], message=lambda: f"{pressed_keys}")
    # A combination from the menu does not press (or let go of) the held Ctrl again.
    await choose(page, "Ctrl+Alt+Del")
    await wait_until(lambda: pressed_keys[2:] == [ALT, DELETE], message=lambda: f"{pressed_keys}")
    assert await page.evaluate("document.body.dataset.heldKeys") == "Ctrl"


async def test_keys_menu_works_from_the_keyboard(
    start_console_stack: StartConsoleStack,
    demo_inventory: Inventory,
    fresh_page: FreshPage,
    pressed_keys: list[int],
) -> None:
    stack, _ = await start_console_stack(demo_inventory)
    page = await fresh_page()
    await open_console(page, (await stack.mint(DEMO_VNC))["consoleUrl"])
    await page.focus("#btn-cad")
    await page.keyboard.press("ArrowRight")  # the toolbar's arrow keys
    assert await page.evaluate("document.activeElement.id") == "btn-keys"
    # A visible focus ring on the focused control.
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
    await page.keyboard.press("ArrowDown")
    assert await page.locator("#keys-menu").is_visible()
    focused = await page.evaluate("document.activeElement.textContent")
    assert focused == "Ctrl+Alt+Del"
    await page.keyboard.press("ArrowDown")
    await page.keyboard.press("Enter")  # Ctrl+Alt+Backspace
    await wait_until(lambda: pressed_keys == [CTRL, ALT, 0xFF08], message=lambda: f"{pressed_keys}")
    # Every control of the toolbar has a name.
    unnamed = await page.evaluate(
        """() => [...document.querySelectorAll(
                '.toolbar button, .toolbar select, #extra-keys button')]
            .filter((el) => !(el.getAttribute('aria-label') || el.textContent.trim()
                              || (el.labels && el.labels.length)))
            .map((el) => el.outerHTML)"""
    )
    assert unnamed == []


# --- real QEMU ------------------------------------------------------------------------------


def qemu_inventory(protocol: str, port: int) -> Inventory:
    return Inventory.from_dict(
        {
            "accounts": [{"name": "admin", "password": "password"}],
            "vms": [
                {
                    "uuid": QEMU_VM,
                    "name": "qemu",
                    "state": "Running",
                    "hostIp": "127.0.0.1",
                    "protocol": protocol,
                    f"{protocol}Port": port,
                    "owner": "admin",
                }
            ],
        }
    )


def resets_of(vm: QemuVm) -> Callable[[], Awaitable[int]]:
    async def resets() -> int:
        await vm.qmp.execute("query-status")  # QMP events come in with the answers
        return sum(event["event"] == "RESET" for event in vm.qmp.events)

    return resets


@pytest.mark.qemu
@pytest.mark.parametrize("protocol", ["vnc", "spice"])
async def test_menu_ctrl_alt_del_resets_qemu(
    start_console_stack: StartConsoleStack, fresh_page: FreshPage, protocol: str
) -> None:
    options: dict[str, Any] = {"spice": True} if protocol == "spice" else {}
    async with QemuVm(**options) as vm:
        port = vm.spice_port if protocol == "spice" else vm.vnc_port
        assert port is not None
        stack, _ = await start_console_stack(qemu_inventory(protocol, port), portal_vm=QEMU_VM)
        page = await fresh_page()
        await open_console(page, (await stack.mint(QEMU_VM))["consoleUrl"])
        await wait_drawn(page, timeout=20.0)
        resets = resets_of(vm)
        assert await resets() == 0
        # SPICE: the page builds the key messages itself (scancodes on the inputs channel).
        await choose(page, "Ctrl+Alt+Del")
        await wait_until(resets, message="no guest reset: the keys did not reach the guest")
        assert await page.evaluate("document.body.dataset.state") == "connected"
