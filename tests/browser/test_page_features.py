"""README's console page toolbar in a real Chromium: "remote resize" scaling and the clipboard
from the VM to the browser, through the proxy (ticket minted via the simulator).

Neither the demo VNC server (no ExtendedDesktopSize, no ServerCutText) nor a plain QEMU VGA
display does both, so the VM here is a small RFB 3.8 server of the test's own that supports
ExtendedDesktopSize/SetDesktopSize and can copy text (ServerCutText) on demand.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from tests.support.browser import VIEWPORT, PageProblems, wait_drawn, wait_state
from tests.support.net import TcpTarget
from tests.support.stack import VM, AiohttpServer, Stack, start_stack, vm_entry

pytestmark = pytest.mark.browser

EXTENDED_DESKTOP_SIZE = -308
PIXEL_FORMAT = struct.pack("!BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
FIRST_SIZE = (320, 200)


class ResizableVm:
    """An RFB 3.8 server (security None) with a resizable screen and a clipboard it can copy
    from. It records the SetDesktopSize requests it gets and answers them as a VM would."""

    def __init__(self) -> None:
        self.size = FIRST_SIZE
        self.resize_requests: list[tuple[int, int]] = []
        self.announced_resize = False
        self.clipboard_on_connect = ""
        self._writer: asyncio.StreamWriter | None = None

    def copy(self, text: str) -> None:
        """Put ``text`` on the VM's clipboard: ServerCutText (Latin-1) to the viewer."""
        assert self._writer is not None, "no viewer connected"
        data = text.encode("latin-1")
        self._writer.write(struct.pack("!B3xI", 3, len(data)) + data)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"RFB 003.008\n")
        await reader.readexactly(12)
        writer.write(bytes([1, 1]))
        await reader.readexactly(1)
        writer.write(struct.pack("!I", 0))
        await reader.readexactly(1)  # ClientInit
        name = b"resizable"
        writer.write(struct.pack("!HH", *self.size) + PIXEL_FORMAT)
        writer.write(struct.pack("!I", len(name)) + name)
        self._writer = writer
        framed = False
        while kind := await reader.read(1):
            match kind[0]:
                case 0:  # SetPixelFormat (noVNC keeps 32 bpp)
                    await reader.readexactly(19)
                case 2:  # SetEncodings
                    _, count = struct.unpack("!BH", await reader.readexactly(3))
                    data = await reader.readexactly(4 * count)
                    encodings = struct.unpack(f"!{count}i", data)
                    if EXTENDED_DESKTOP_SIZE in encodings:
                        self.announced_resize = True
                        writer.write(self._desktop_size(reason=0, status=0))
                case 3:  # FramebufferUpdateRequest: only full-screen ones get pixels
                    incremental = (await reader.readexactly(9))[0]
                    if not incremental:
                        writer.write(self._frame())
                        if not framed and self.clipboard_on_connect:
                            self.copy(self.clipboard_on_connect)
                        framed = True
                case 4:  # KeyEvent
                    await reader.readexactly(7)
                case 5:  # PointerEvent
                    await reader.readexactly(5)
                case 6:  # ClientCutText
                    (length,) = struct.unpack("!3xI", await reader.readexactly(7))
                    await reader.readexactly(length)
                case 251:  # SetDesktopSize
                    _, width, height, screens = struct.unpack("!BHHB", await reader.readexactly(6))
                    await reader.readexactly(1 + 16 * screens)
                    self.resize_requests.append((width, height))
                    self.size = (width, height)
                    writer.write(self._desktop_size(reason=1, status=0) + self._frame())
                case other:
                    raise AssertionError(f"unexpected client message {other}")
            await writer.drain()

    def _desktop_size(self, reason: int, status: int) -> bytes:
        width, height = self.size
        screen = struct.pack("!IHHHHI", 1, 0, 0, width, height, 0)
        rect = struct.pack("!HHHHi", reason, status, width, height, EXTENDED_DESKTOP_SIZE)
        return struct.pack("!BxH", 0, 1) + rect + struct.pack("!B3x", 1) + screen

    def _frame(self) -> bytes:
        """The whole screen in Raw encoding: a left half and a right half of two colours."""
        width, height = self.size
        left, right = width // 2, width - width // 2
        row = b"\x20\x60\xc0\x00" * left + b"\xe0\xa0\x20\x00" * right
        rect = struct.pack("!HHHHi", 0, 0, width, height, 0)
        return struct.pack("!BxH", 0, 1) + rect + row * height


@pytest.fixture
async def console(
    aiohttp_server: AiohttpServer,
    tcp_target: Callable[..., Awaitable[TcpTarget]],
    browser: Browser,
) -> AsyncIterator[Callable[..., Awaitable[tuple[Page, ResizableVm]]]]:
    """Open the console page of a fresh ResizableVm in Chromium; (page, vm)."""
    stacks: list[Stack] = []
    context = await browser.new_context(viewport=VIEWPORT)
    problems: list[PageProblems] = []

    async def open_console(query: str = "", clipboard: str = "") -> tuple[Page, ResizableVm]:
        vm = ResizableVm()
        vm.clipboard_on_connect = clipboard
        target = await tcp_target(vm.serve)
        stack = await start_stack(aiohttp_server, [vm_entry(VM, vncPort=target.port)])
        stacks.append(stack)
        status, body = await stack.mint()
        assert status == 201, body
        page = await context.new_page()
        problems.append(PageProblems(page))
        await page.goto(body["consoleUrl"] + query)
        await wait_state(page, "connected")
        return page, vm

    yield open_console
    await context.close()
    for stack in stacks:
        await stack.close()
    for found in problems:
        found.check()


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
    return result


CANVAS_SIZE_JS = """() => {
    const c = document.querySelector('#screen canvas');
    return c ? [c.width, c.height] : null;
}"""
NOVNC_SCREEN_JS = """() => {
    const r = document.querySelector('#screen canvas').parentElement.getBoundingClientRect();
    return [Math.floor(r.width), Math.floor(r.height)];
}"""


async def canvas_size(page: Page) -> tuple[int, int]:
    width, height = await page.evaluate(CANVAS_SIZE_JS)
    return int(width), int(height)


async def test_remote_resize_asks_the_vm_for_the_window_size_and_follows_the_window(
    console: Callable[..., Awaitable[tuple[Page, ResizableVm]]],
) -> None:
    page, vm = await console("&scale=remote")
    assert await page.locator("#scale").input_value() == "remote"
    assert vm.announced_resize
    # noVNC asks the VM for the size of the console area, the VM agrees, the canvas follows.
    await until(lambda: asyncio.sleep(0, vm.resize_requests), "a SetDesktopSize request")
    wanted = tuple(await page.evaluate(NOVNC_SCREEN_JS))
    await until(lambda: asyncio.sleep(0, vm.size == wanted), f"the VM at {wanted}")
    assert wanted != FIRST_SIZE and wanted[0] > FIRST_SIZE[0]
    await until(lambda: _canvas_is(page, wanted), f"a {wanted} canvas")
    await wait_drawn(page)
    # A smaller window asks for a smaller screen.
    await page.set_viewport_size({"width": 800, "height": 560})
    smaller = await until(
        lambda: _smaller_request(vm, wanted), "a SetDesktopSize for the smaller window"
    )
    assert smaller[0] < wanted[0] and smaller[1] < wanted[1]
    assert smaller == tuple(await page.evaluate(NOVNC_SCREEN_JS))
    await until(lambda: _canvas_is(page, smaller), f"a {smaller} canvas")
    assert await page.evaluate("document.body.dataset.state") == "connected"


async def _canvas_is(page: Page, size: tuple[int, ...]) -> bool:
    return await canvas_size(page) == size


async def _smaller_request(vm: ResizableVm, than: tuple[int, ...]) -> tuple[int, int] | None:
    await asyncio.sleep(0)
    last = vm.resize_requests[-1]
    return last if last[0] < than[0] else None


async def test_switching_to_remote_resize_in_the_toolbar_resizes_the_vm(
    console: Callable[..., Awaitable[tuple[Page, ResizableVm]]],
) -> None:
    page, vm = await console()  # the default: scale to fit, the VM keeps its size
    await wait_drawn(page)
    await asyncio.sleep(1.0)
    assert vm.resize_requests == [] and vm.size == FIRST_SIZE
    await page.select_option("#scale", "remote")
    await until(lambda: asyncio.sleep(0, vm.resize_requests), "a SetDesktopSize request")
    wanted = tuple(await page.evaluate(NOVNC_SCREEN_JS))
    await until(lambda: _canvas_is(page, wanted), f"a {wanted} canvas")
    assert vm.size == wanted


async def test_text_copied_in_the_vm_shows_in_the_clipboard_panel(
    console: Callable[..., Awaitable[tuple[Page, ResizableVm]]],
) -> None:
    page, vm = await console(clipboard="Grüße from the VM")
    received = page.locator("#clipboard-received")

    async def has(text: str) -> bool:
        return bool(await received.input_value() == text)

    await until(lambda: has("Grüße from the VM"), "the VM's clipboard on the page")
    await page.click("#btn-clipboard")
    assert await page.locator("#clipboard-panel").is_visible()
    assert await received.is_visible()
    # A later copy in the VM replaces it, live.
    vm.copy("second copy, 2nd line\nend")
    await until(lambda: has("second copy, 2nd line\nend"), "the second copy on the page")
    assert await page.evaluate("document.body.dataset.state") == "connected"
