"""The console page in the user's language (issue #15), in a real Chromium: the browser's
languages, the mint's "language" (carried in consoleUrl's fragment), the portal's
set-language message, and the close-code sentences."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Page

from proxy.demo.simulator import Inventory
from tests.support.browser import (
    DEMO_VNC,
    FreshPage,
    StartConsoleStack,
    artifact,
    close_code,
    console_frame,
    status_text,
    wait_drawn,
    wait_state,
)
from tests.support.configs import write_token_file
from tests.support.net import free_port
from tests.support.qemu import QemuVm

pytestmark = pytest.mark.browser

SPICE_VM = "5b1ce0c0de0000000000000000000c01"


async def toolbar_words(page: Page) -> dict[str, str]:
    found = {}
    for name in ("btn-reconnect", "btn-keys", "btn-fullscreen", "btn-clipboard"):
        found[name] = (await page.locator(f"#{name}").inner_text()).strip()
    return found


async def test_chinese_browser_sees_chinese(
    start_console_stack: StartConsoleStack, demo_inventory: Inventory, fresh_page: FreshPage
) -> None:
    stack, _ = await start_console_stack(demo_inventory)
    page = await fresh_page(locale="zh-CN")
    await page.goto((await stack.mint(DEMO_VNC))["consoleUrl"])
    await wait_state(page, "connected")
    assert await page.evaluate("document.documentElement.lang") == "zh-CN"
    assert await status_text(page) == "已连接到 demo-vnc"
    words = await toolbar_words(page)
    assert words["btn-reconnect"] == "重新连接"
    assert words["btn-keys"].startswith("组合键")
    assert words["btn-clipboard"] == "剪贴板"
    assert await page.title() == "云主机控制台"
    # The select's options and the labels only screen readers see are translated too.
    assert await page.locator("#scale option[value=fit]").inner_text() == "缩放以适应窗口"
    assert await page.locator(".toolbar").get_attribute("aria-label") == "控制台工具栏"
    await wait_drawn(page)
    await page.click("#btn-keys")
    await page.screenshot(path=str(artifact("console-zh-CN.png")))


async def test_english_browser_sees_english(
    start_console_stack: StartConsoleStack, demo_inventory: Inventory, fresh_page: FreshPage
) -> None:
    stack, _ = await start_console_stack(demo_inventory)
    page = await fresh_page(locale="en-US")
    await page.goto((await stack.mint(DEMO_VNC))["consoleUrl"])
    await wait_state(page, "connected")
    assert await page.evaluate("document.documentElement.lang") == "en"
    assert await status_text(page) == "Connected to demo-vnc"
    words = await toolbar_words(page)
    assert words["btn-reconnect"] == "Reconnect"
    assert words["btn-keys"].startswith("Keys")


async def test_the_mints_language_wins_over_the_browsers(
    start_console_stack: StartConsoleStack, demo_inventory: Inventory, fresh_page: FreshPage
) -> None:
    stack, _ = await start_console_stack(demo_inventory)
    ticket = await stack.mint(
        DEMO_VNC, language="zh-cn"
    )  # any case; the URL carries the proxy's spelling
    assert ticket["consoleUrl"].endswith("&lang=zh-CN")
    page = await fresh_page(locale="en-US")
    await page.goto(ticket["consoleUrl"])
    await wait_state(page, "connected")
    assert await page.evaluate("document.documentElement.lang") == "zh-CN"
    assert await status_text(page) == "已连接到 demo-vnc"
    assert (await toolbar_words(page))["btn-reconnect"] == "重新连接"
    # The ticket left the address bar; the language stays (a reload keeps it).
    assert page.url.endswith("/console/vnc#lang=zh-CN")


async def test_page_lang_parameter_and_close_code_in_chinese(
    start_console_stack: StartConsoleStack,
    fresh_page: FreshPage,
    tmp_path: Path,
    demo_inventory: Inventory,
) -> None:
    # Outside [targets] allow: the proxy closes with 4403, which the page explains in Chinese.
    tokens = write_token_file(tmp_path / "tokens", {"target": ("10.255.1.2", free_port())})
    stack, _ = await start_console_stack(demo_inventory, tickets={"token_file": str(tokens)})
    page = await fresh_page(locale="en-US")
    await page.goto(stack.url("/console/vnc?lang=zh-CN") + "#token=target")
    await wait_state(page, "disconnected")
    assert await close_code(page) == "4403"
    expected = "代理不允许连接此云主机的控制台（目标策略限制）。"
    assert await status_text(page) == expected
    assert await page.locator("#overlay-text").inner_text() == expected
    # Alone in a tab, Reconnect says plainly where a new console comes from.
    await page.click("#btn-overlay-reconnect")
    assert "请回到门户" in await status_text(page)
    await page.screenshot(path=str(artifact("console-zh-CN-closed.png")))


async def test_portal_switches_the_language_live(
    start_console_stack: StartConsoleStack, demo_inventory: Inventory, fresh_page: FreshPage
) -> None:
    stack, _ = await start_console_stack(demo_inventory)
    page = await fresh_page(locale="en-US")
    await page.goto(stack.portal_url())
    frame = await console_frame(page, "#console")
    await wait_state(frame, "connected")
    assert await status_text(frame) == "Connected to demo-vnc"

    async def ask(language: str) -> None:
        await page.evaluate(
            """(language) => document.getElementById('console').contentWindow.postMessage(
                {type: 'console-proxy:set-language', language}, '*')""",
            language,
        )

    await ask("zh-CN")
    await frame.locator("html[lang=zh-CN]").wait_for(state="attached")
    assert await status_text(frame) == "已连接到 demo-vnc"
    assert (await frame.locator("#btn-reconnect").inner_text()).strip() == "重新连接"
    await ask("xx-unknown")  # not available: nothing changes
    await ask("en")
    await frame.locator("html[lang=en]").wait_for(state="attached")
    assert await status_text(frame) == "Connected to demo-vnc"
    assert (await frame.locator("#btn-reconnect").inner_text()).strip() == "Reconnect"


@pytest.mark.qemu
async def test_spice_page_in_chinese_says_clipboard_is_not_available(
    start_console_stack: StartConsoleStack, fresh_page: FreshPage
) -> None:
    async with QemuVm(spice=True) as vm:
        assert vm.spice_port is not None
        inventory = Inventory.from_dict(
            {
                "accounts": [{"name": "admin", "password": "password"}],
                "vms": [
                    {
                        "uuid": SPICE_VM,
                        "name": "qemu-spice",
                        "state": "Running",
                        "hostIp": "127.0.0.1",
                        "protocol": "spice",
                        "spicePort": vm.spice_port,
                        "owner": "admin",
                    }
                ],
            }
        )
        stack, _ = await start_console_stack(inventory, portal_vm=SPICE_VM)
        page = await fresh_page(locale="zh-CN")
        await page.goto((await stack.mint(SPICE_VM))["consoleUrl"])
        await wait_state(page, "connected")
        assert await status_text(page) == "已连接"
        await wait_drawn(page, timeout=20.0)
        await page.click("#btn-clipboard")
        note = await page.locator("#clipboard-unavailable").inner_text()
        assert "不支持剪贴板" in note and "spice-html5" in note
        await page.screenshot(path=str(artifact("console-spice-zh-CN.png")))
