"""The operator pages in a real browser: signing in through the form, as a person does."""

from __future__ import annotations

from playwright.async_api import Page

from tests.support.browser import ConsoleStack


async def sign_in(page: Page, stack: ConsoleStack, account: str = "admin") -> None:
    """Sign in at ``/operator/`` with the simulator's password for ``account``."""
    await page.goto(stack.url("/operator/"))
    await page.fill("input[name=account]", account)
    await page.fill("input[name=password]", "password")
    await page.click("button[type=submit]")
    await page.locator("#operator-account").wait_for(timeout=5000)
