"""The console page on a touch device and the local clipboard (issue #15), in a real Chromium:
the keyboard button raises the on-screen keyboard (a hidden text field whose input goes to the
VM as keys), the extra-keys bar sends what a phone's keyboard lacks, and Ctrl+V sends the local
clipboard to the VM first."""

from __future__ import annotations

import pytest

from proxy.demo.simulator import Inventory
from proxy.demo.vncserver import Rect, Scene
from tests.support.browser import (
    DEMO_VNC,
    FreshPage,
    StartConsoleStack,
    artifact,
    wait_drawn,
    wait_state,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.browser

PHONE = {"viewport": {"width": 412, "height": 800}, "has_touch": True, "is_mobile": True}
CTRL, ESC, BACKSPACE = 0xFFE3, 0xFF1B, 0xFF08


async def test_touch_device_gets_keyboard_button_and_extra_keys(
    start_console_stack: StartConsoleStack,
    demo_inventory: Inventory,
    fresh_page: FreshPage,
    pressed_keys: list[int],
) -> None:
    stack, _ = await start_console_stack(demo_inventory)
    page = await fresh_page(**PHONE, locale="zh-CN")
    await page.goto((await stack.mint(DEMO_VNC))["consoleUrl"])
    await wait_state(page, "connected")
    await wait_drawn(page)
    keyboard = page.locator("#btn-keyboard")
    assert await keyboard.is_visible()
    assert (await keyboard.inner_text()).strip() == "键盘"
    assert await page.locator("#extra-keys").is_visible()

    await keyboard.tap()
    assert await page.evaluate("document.activeElement.id") == "touch-input"
    await page.keyboard.type("ab")
    await page.keyboard.press("Backspace")
    await wait_until(
        lambda: pressed_keys == [ord("a"), ord("b"), BACKSPACE], message=lambda: f"{pressed_keys}"
    )
    # The extra keys: a held Ctrl, then Esc.
    await page.locator("#extra-keys [data-hold=Ctrl]").tap()
    await page.locator("#extra-keys [data-key=Esc]").tap()
    await wait_until(lambda: pressed_keys[3:] == [CTRL, ESC], message=lambda: f"{pressed_keys}")
    held = page.locator("#extra-keys [data-hold=Ctrl]")
    assert await held.get_attribute("aria-pressed") == "true"
    await page.screenshot(path=str(artifact("console-touch-zh-CN.png")))


async def test_desktop_has_no_keyboard_button(
    start_console_stack: StartConsoleStack, demo_inventory: Inventory, fresh_page: FreshPage
) -> None:
    stack, _ = await start_console_stack(demo_inventory)
    page = await fresh_page()
    await page.goto((await stack.mint(DEMO_VNC))["consoleUrl"])
    await wait_state(page, "connected")
    assert await page.locator("#btn-keyboard").is_hidden()
    assert await page.locator("#extra-keys").is_hidden()
    # The Keys menu shows the bar on request.
    await page.click("#btn-keys")
    await page.locator("#keys-menu [data-action=bar]").click()
    assert await page.locator("#extra-keys").is_visible()


async def test_ctrl_v_sends_the_local_clipboard_first(
    start_console_stack: StartConsoleStack,
    demo_inventory: Inventory,
    fresh_page: FreshPage,
    pressed_keys: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pasted: list[str] = []
    paste = Scene.paste

    def record_paste(scene: Scene, text: str) -> list[Rect]:
        pasted.append(text)
        return paste(scene, text)

    monkeypatch.setattr(Scene, "paste", record_paste)
    stack, _ = await start_console_stack(demo_inventory)
    page = await fresh_page()
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    await page.goto((await stack.mint(DEMO_VNC))["consoleUrl"])
    await wait_state(page, "connected")
    await page.evaluate("navigator.clipboard.writeText('from this computer')")
    await page.locator("#screen canvas").click(position={"x": 600, "y": 380})
    await page.keyboard.press("Control+v")
    await wait_until(lambda: pasted == ["from this computer"], message=lambda: f"{pasted}")
    # Then the keystroke itself, so the VM pastes the new text.
    await wait_until(lambda: pressed_keys == [CTRL, ord("v")], message=lambda: f"{pressed_keys}")
