"""A real QEMU console recorded through the proxy and played back in Chromium: the playback's
canvas ends on the same screen the live console showed, at 8× speed, and the time slider lands
anywhere in well under 2 s.

Real components: QEMU (VNC), Chromium, the proxy app; only ZStack is the simulator.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from proxy.app import create_app
from proxy.demo.simulator import create_simulator_app
from tests.recording.support import metadata, recordings_in
from tests.support.browser import (
    VIEWPORT,
    ConsoleStack,
    PageProblems,
    canvas_stats,
    wait_drawn,
    wait_state,
)
from tests.support.configs import make_config
from tests.support.qemu import QemuVm
from tests.support.stack import VM, inventory, standard_vms

pytestmark = [pytest.mark.browser, pytest.mark.qemu]
ARTIFACTS = Path(__file__).resolve().parent.parent.parent / ".test-artifacts"


async def screens(page: Page, seconds: float) -> set[int]:
    """The canvas hashes seen over ``seconds`` (the BIOS text cursor blinks: two of them)."""
    seen: set[int] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        stats = await canvas_stats(page)
        if stats is not None:
            seen.add(stats.hash)
        await asyncio.sleep(0.1)
    return seen


def closed(path: Path) -> bool:
    try:  # a .rec gets its .json a moment after it is created
        return bool(metadata(path)["closed"])
    except FileNotFoundError:
        return False


async def test_a_recorded_qemu_console_plays_back_the_same_screen(
    browser: Browser, aiohttp_server: Any, tmp_path: Path
) -> None:
    directory = tmp_path / "recordings"
    async with QemuVm() as vm:
        simulator = await aiohttp_server(create_simulator_app(inventory(standard_vms(vm.vnc_port))))
        config = make_config(
            zstack={"url": str(simulator.make_url("/zstack")), "timeout": 5.0},
            recording={"dir": str(directory), "keyframe_interval": 1.0},
        )
        stack = ConsoleStack(await aiohttp_server(create_app(config)), simulator)
        context = await browser.new_context(viewport=VIEWPORT)
        live = await context.new_page()
        problems = PageProblems(live)
        await live.goto((await stack.mint(VM))["consoleUrl"])
        await wait_state(live, "connected")
        await wait_drawn(live)
        await asyncio.sleep(1.5)
        await vm.qmp.execute("system_reset")  # the screen goes through the BIOS again
        await asyncio.sleep(3.0)
        final = await screens(live, 2.0)
        assert len(final) <= 3, "the live screen settled"
        await live.close()
        deadline = time.monotonic() + 15
        while not (recordings_in(directory) and closed(recordings_in(directory)[0])):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    [path] = recordings_in(directory)
    meta = metadata(path)
    assert meta["complete"] and meta["playable"]

    page = await context.new_page()
    problems = PageProblems(page)
    await page.goto(stack.url("/operator/"))
    await page.fill("input[name=account]", "admin")
    await page.fill("input[name=password]", "password")
    await page.click("button[type=submit]")
    await page.locator("#operator-account").wait_for(timeout=5000)
    # The operator page lists the recording, with a link to its playback.
    play = page.locator("#recordings a")
    await play.wait_for(timeout=15_000)
    assert VM in (await page.locator("#recordings tr").first.text_content() or "")
    href = await play.get_attribute("href")
    assert href == f"recordings/{path.stem}"
    await page.goto(stack.url(f"/operator/{href}"))
    await page.locator("body[data-state=playing]").wait_for(timeout=15_000)
    assert await page.get_attribute("body", "data-integrity") == "match"
    duration = int(await page.get_attribute("body", "data-duration") or 0)
    assert duration > 3000

    # Speed: from the start at 8×, the whole recording plays in an eighth of its length.
    await page.evaluate("window.player.pause()")
    await page.select_option("#speed", "8")
    await page.evaluate("window.player.seek(0)")
    started = time.monotonic()
    await page.click("#play")
    await page.locator("body[data-state=ended]").wait_for(timeout=duration)
    took = time.monotonic() - started
    assert duration / 8000 * 0.8 < took < duration / 8000 + 3.0, (took, duration)
    assert (await canvas_stats(page)).hash in final  # type: ignore[union-attr]
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "recording-playback.png"))

    # Seeking: back to before the reset, and to the end again, each well within 2 s.
    keyframes = await page.evaluate(
        "() => window.player.records.filter(r => r.kind === 2).map(r => r.ms)"
    )
    assert keyframes, "keyframe markers are in the recording"
    for target, expected in [(1, None), (duration, final)]:
        took_ms = await page.evaluate(
            "async (ms) => { const t = performance.now(); await window.player.seek(ms);"
            " return performance.now() - t; }",
            target,
        )
        assert took_ms < 2000
        assert int(await page.get_attribute("body", "data-position") or -1) == min(target, duration)
        if expected is not None:
            await asyncio.sleep(0.5)  # JPEG rectangles decode asynchronously
            assert (await canvas_stats(page)).hash in expected  # type: ignore[union-attr]
    problems.check()
    await context.close()
    await stack.close()
