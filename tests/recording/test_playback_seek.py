"""Seeking in an hour-long recording, in Chromium: the time slider lands anywhere within 2 s and
shows the same screen as drawing everything up to there; and 1×, 2×, 4× and 8× play at their rate.

The recording is a real QEMU console (a guest printing a scrolling log, paused most of the time)
recorded through the proxy for CAPTURE seconds with a keyframe asked every CAPTURE / 360 s, then
stretched to one hour (tests/support/long_recording.py): 360 keyframes 10 s apart, a burst of
scrolling every six minutes, the bytes exactly as QEMU sent them in Tight with its zlib streams.

Real components: QEMU (VNC), Chromium, the proxy app; only ZStack is the simulator.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from proxy.app import create_app
from proxy.demo.simulator import create_simulator_app
from tests.recording.support import metadata, recordings_in
from tests.support.browser import VIEWPORT, ConsoleStack, PageProblems, artifact, canvas_stats
from tests.support.configs import make_config
from tests.support.long_recording import boot_disk, record_qemu_console, stretch
from tests.support.operator_page import sign_in
from tests.support.qemu import QemuVm
from tests.support.stack import VM, inventory, standard_vms

pytestmark = [pytest.mark.browser, pytest.mark.qemu]

CAPTURE = 40.0  # real seconds of QEMU
BURSTS = 10  # of scrolling, each BURST seconds (the guest is paused otherwise)
BURST = 1.0
HOUR_MS = 3_600_000
KEYFRAME_EVERY_MS = 10_000
SEEK_LIMIT = 2.0  # the "lands anywhere within 2 s"
# The log scrolls in the last quarter of each six minutes (HOUR_MS / BURSTS): 270-360 s, ...
POSITIONS = [
    3_599_900,  # the end, from the start
    1_000_000,  # back, inside the third burst
    1_060_000,  # forward within that burst
    2_500_000,  # forward, inside the seventh burst
    2_870_000,  # inside the eighth burst
    356_000,  # back, inside the first burst
    2_183_400,  # after the sixth burst: its last screen
    1_435_700,  # back, inside the fourth burst
]


async def finished(path: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if metadata(path)["closed"]:
                return
        except FileNotFoundError:  # a .rec gets its .json a moment after it is created
            pass
        assert time.monotonic() < deadline, "the recording did not close"
        await asyncio.sleep(0.1)


async def record_an_hour(aiohttp_server: Any, tmp_path: Path) -> tuple[ConsoleStack, Path, Path]:
    """The proxy serving the recording of a real QEMU console as it was made (CAPTURE seconds)
    and stretched to an hour."""
    directory = tmp_path / "recordings"
    disk = boot_disk(tmp_path / "log.img")
    async with QemuVm(extra_args=("-drive", f"file={disk},format=raw,if=ide")) as vm:
        await vm.wait_for_screen(720, 400)
        simulator = await aiohttp_server(create_simulator_app(inventory(standard_vms(vm.vnc_port))))
        config = make_config(
            zstack={"url": str(simulator.make_url("/zstack")), "timeout": 5.0},
            recording={"dir": str(directory), "keyframe_interval": CAPTURE / 360},
        )
        stack = ConsoleStack(await aiohttp_server(create_app(config)), simulator)
        token = (await stack.mint(VM))["token"]
        url = stack.url(f"/websockify?token={token}")
        await record_qemu_console(stack.http, url, vm, CAPTURE, BURSTS, BURST)
        [captured] = recordings_in(directory)
        await finished(captured)
    hour = directory / f"{captured.stem[:16]}-{'0' * 11}1"
    counts = stretch(captured, hour.with_suffix(".rec"), HOUR_MS)
    # Roughly one keyframe every 10 s of the hour (the proxy's timer drifts a little).
    assert abs(counts["keyframes"] - HOUR_MS // KEYFRAME_EVERY_MS) < 40, counts
    return stack, captured, hour.with_suffix(".rec")


async def slide_to(page: Page, ms: int) -> float:
    """Move the slider to ``ms`` as a person lets go of it; seconds until the canvas shows it."""
    started = time.monotonic()
    await page.locator("#slider").fill(str(ms))
    await page.locator(f"body[data-state=paused][data-position='{ms}']").wait_for(timeout=30_000)
    return time.monotonic() - started


async def screen_hash(page: Page) -> tuple[int, int]:
    stats = await canvas_stats(page)
    assert stats is not None
    return stats.hash, stats.colours


async def drawn_from_the_start(page: Page, ms: int) -> int:
    """The canvas after noVNC is fed and draws every record up to ``ms`` from a fresh start:
    what the seek must show, found without keyframes or undrawn decoding."""
    await page.evaluate(
        "async (ms) => { const p = window.player; await p.settled(); await p.start();"
        " p.feedTo(ms); await p.settled(); }",
        ms,
    )
    return (await screen_hash(page))[0]


async def playing_rate(page: Page, speed: str, seconds: float = 1.5) -> float:
    """Recording milliseconds played per wall-clock millisecond at ``speed`` (``shownAt``: when
    the position shown was reached)."""
    await page.select_option("#speed", speed)
    await page.evaluate("window.player.play()")
    clock = "[window.player.position, window.player.shownAt]"
    await asyncio.sleep(0.3)
    position, now = await page.evaluate(clock)
    await asyncio.sleep(seconds)
    later, then = await page.evaluate(clock)
    await page.evaluate("window.player.pause()")
    return float((later - position) / (then - now))


async def test_an_hour_long_recording_seeks_within_2_s_and_plays_at_each_speed(
    browser: Browser, aiohttp_server: Any, tmp_path: Path
) -> None:
    stack, captured, path = await record_an_hour(aiohttp_server, tmp_path)
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    problems = PageProblems(page)
    await sign_in(page, stack)
    await page.goto(stack.url(f"/operator/recordings/{path.stem}"))
    await page.locator("body[data-state=playing]").wait_for(timeout=30_000)
    await page.evaluate("window.player.pause()")
    assert await page.get_attribute("body", "data-integrity") == "match"
    assert abs(int(await page.get_attribute("body", "data-duration") or 0) - HOUR_MS) <= 1

    seen: dict[int, tuple[int, int]] = {}
    report: list[dict[str, Any]] = []
    for ms in POSITIONS:
        took = await slide_to(page, ms)
        seen[ms] = await screen_hash(page)
        last = await page.evaluate("window.player.lastSeek")
        report.append({"position_ms": ms, "wall_s": round(took, 3), **last})
        await page.screenshot(path=str(artifact(f"seek-{ms}.png")))
        assert took < SEEK_LIMIT, report[-1]
        assert seen[ms][1] > 1, f"the screen at {ms} ms is blank"
    print(json.dumps(report, indent=1))
    # Both ways of getting there ran: from a snapshot of the decoders, and onwards from the
    # position shown.
    assert any(r["restored"] for r in report) and any(r["restored"] is None for r in report)
    # The positions show different screens (a wrong frame could not pass unnoticed) ...
    assert len({h for h, _ in seen.values()}) >= len(POSITIONS) - 2
    # ... each the one that drawing every record up to it shows.
    for ms in POSITIONS:
        assert await drawn_from_the_start(page, ms) == seen[ms][0], ms
    full_screens = await page.evaluate("window.player.scout.starts.length")
    artifact("seek-times.json").write_text(
        json.dumps({"full_screens": full_screens, "seeks": report}, indent=1) + "\n"
    )

    # Each speed plays that many recording seconds per second (from the eighth burst on).
    await slide_to(page, 2_850_000)
    for speed in ("1", "2", "4", "8"):
        rate = await playing_rate(page, speed)
        assert abs(rate / int(speed) - 1) < 0.05, (speed, rate)

    # Without the Scout (a noVNC it does not know), seeks decode from the start and draw from
    # the keyframe markers. Those are only as good as the server's answers: in the stretched
    # hour an idle QEMU answers a keyframe request a refresh later (up to 3 s, now minutes), so
    # this is checked on the recording as it was made, in real time.
    await page.goto(stack.url(f"/operator/recordings/{captured.stem}"))
    await page.locator("body[data-state=playing]").wait_for(timeout=30_000)
    await page.evaluate("window.player.pause(); window.player.scout.usable = false")
    real = [int(CAPTURE * 1000 * f) // 100 * 100 for f in (0.97, 0.2, 0.55, 0.3)]
    screens = {}
    for ms in real:
        assert await slide_to(page, ms) < SEEK_LIMIT
        screens[ms] = await screen_hash(page)
    assert all(colours > 1 for _, colours in screens.values())
    for ms in real:
        assert await drawn_from_the_start(page, ms) == screens[ms][0], ms
    problems.check()
    await context.close()
    await stack.close()
