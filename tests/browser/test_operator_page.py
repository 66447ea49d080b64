"""The operator's day in Chromium: sign in through the form, see within 2 s a console another
browser opened, watch it read-only (the same VM on the operator's canvas, keys never reaching
it), and close it (the user's page says an administrator closed it).

Real components: Chromium (/usr/bin/chromium), the demo VNC server, the proxy app; only ZStack
is the simulator.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, BrowserContext, Page

from proxy.app import create_app
from proxy.demo.simulator import Inventory, create_simulator_app
from tests.support.browser import (
    VIEWPORT,
    ConsoleStack,
    PageProblems,
    canvas_stats,
    close_code,
    status_text,
    wait_drawn,
    wait_state,
)
from tests.support.configs import make_config

DEMO_VNC = "d3ad0c0de0000000000000000000a001"  # "demo-vnc" in proxy/demo/inventory.toml
# Where the demo VNC server draws the keys typed so far (Scene.keys_box for an 800 px screen).
KEYS_BOX = (16, 140, 768, 24)


async def new_context(browser: Browser, problems: list[PageProblems]) -> BrowserContext:
    context = await browser.new_context(viewport=VIEWPORT)
    context.on("page", lambda page: problems.append(PageProblems(page)))
    return context


async def sign_in(page: Page, stack: ConsoleStack, password: str) -> None:
    await page.goto(stack.url("/operator/"))
    await page.fill("input[name=account]", "admin")
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await page.locator("#operator-account").wait_for(timeout=5000)


async def test_sign_in_see_watch_and_close_a_console(
    browser: Browser, demo_inventory: Inventory, aiohttp_server: Any, tmp_path: Path
) -> None:
    simulator = await aiohttp_server(create_simulator_app(demo_inventory))
    audit = tmp_path / "audit.jsonl"
    config = make_config(
        zstack={"url": str(simulator.make_url("/zstack")), "timeout": 5.0},
        audit={"sink": f"file:{audit}"},
    )
    stack = ConsoleStack(await aiohttp_server(create_app(config)), simulator)
    admin_password = next(a.password for a in demo_inventory.accounts if a.name == "admin")
    problems: list[PageProblems] = []
    user_context = await new_context(browser, problems)
    operator_context = await new_context(browser, problems)
    try:
        operator = await operator_context.new_page()
        await sign_in(operator, stack, admin_password)
        assert "Live consoles" in await operator.title()

        # Another browser opens a console; the operator's table shows it within 2 s.
        user = await user_context.new_page()
        ticket = await stack.mint(DEMO_VNC)
        await user.goto(ticket["consoleUrl"])
        await wait_state(user, "connected")
        shown = time.monotonic()
        row = operator.locator(f"#consoles tr[data-vm='{DEMO_VNC}']")
        await row.first.wait_for(timeout=2000)
        assert time.monotonic() - shown < 2.0
        assert await row.locator(".account").text_content() == "admin"
        assert await row.locator(".view-only").text_content() == "no"
        user_screen = await wait_drawn(user)

        # Watch: a view-only console of the same VM in a new tab.
        async with operator_context.expect_page() as opened:
            await row.first.locator("button[data-action=watch]").click()
        watch = await opened.value
        await wait_state(watch, "connected")
        assert await status_text(watch) == "Connected to demo-vnc (view only)"
        assert await watch.locator("#view-only-badge").is_visible()
        assert not await watch.locator("#btn-cad").is_visible()
        assert not await watch.locator("#btn-clipboard").is_visible()
        watched = await wait_drawn(watch)
        assert (watched.width, watched.height) == (user_screen.width, user_screen.height)
        # Keys typed on the operator's canvas never reach the VM.
        keys_before = await canvas_stats(user, KEYS_BOX)
        await watch.locator("#screen canvas").click()
        await watch.keyboard.type("operator")
        await asyncio.sleep(1.0)
        assert await canvas_stats(user, KEYS_BOX) == keys_before
        # The user's page tells within 2 s that someone else is on this VM now.
        await user.locator("body[data-peers='1']").wait_for(timeout=2000)
        assert await user.locator("#viewers").text_content() == "1 other person is on this VM"
        # Both consoles stay open side by side (shared), and the table shows the watcher too.
        await operator.locator(f"#consoles tr[data-vm='{DEMO_VNC}']").nth(1).wait_for()
        assert await close_code(user) is None and await close_code(watch) is None

        # Close the user's console: their page says an administrator closed it.
        user_row = operator.locator(
            "#consoles tr", has=operator.locator(".view-only", has_text="no")
        )
        await user_row.locator("button[data-action=close]").click()
        await wait_state(user, "disconnected")
        assert await close_code(user) == "4410"
        overlay = await user.locator("#overlay-text").text_content() or ""
        assert "An administrator closed this console." in overlay
        await operator.locator("#message.info").wait_for()

        # Sign out: the table's page becomes the form again.
        await operator.click("form.signout button")
        await operator.locator("input[name=password]").wait_for()
    finally:
        await user_context.close()
        await operator_context.close()
        await stack.close()
        for found in problems:
            found.check()
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    kinds = [e["event"] for e in events if e["event"].startswith("operator.")]
    assert kinds == ["operator.login", "operator.watch", "operator.close", "operator.logout"]
    assert {e["operator"] for e in events if e["event"].startswith("operator.")} == {"admin"}
