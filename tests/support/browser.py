"""Helpers for the real-browser tests: Debian's Chromium driven by Playwright, a console stack
(ZStack simulator + proxy + VNC servers) and a stand-in portal on a second origin.

Its fixtures (``browser``, ``new_page``, ``fresh_page``, ``start_console_stack``,
``demo_inventory``, ``pressed_keys``) are
registered in tests/conftest.py.

Playwright never downloads a browser here: it drives ``/usr/bin/chromium`` (``apt-get install
chromium``). Its async API runs inside pytest-aiohttp's event loop.
"""

from __future__ import annotations

import asyncio
import html
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Frame,
    Page,
    ViewportSize,
    async_playwright,
)

from proxy.app import create_app
from proxy.demo.portal import add_demo_routes
from proxy.demo.run import DEFAULT_INVENTORY, start_vnc_servers
from proxy.demo.simulator import Inventory, create_simulator_app, load_inventory
from proxy.demo.vncserver import Rect, Scene
from tests.support.binaries import IN_CI
from tests.support.configs import make_config
from tests.support.stack import request_console, zstack_login

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # we run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium keeps trying to reach the internet from a machine that cannot.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1024, "height": 700}
CONNECT_TIMEOUT_MS = 15_000


def require_chromium() -> str:
    """Chromium's path; locally a missing one skips with advice, under CI it fails."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    message = f"{CHROMIUM} not found: install it with 'apt-get install chromium'"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Chromium with a fresh, throw-away profile (Playwright's default)."""
    executable = require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


class PageProblems:
    """Collects what must never happen on our pages: script errors and CSP violations."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        text = message.text
        if "Content Security Policy" in text or "Refused to" in text:
            self.errors.append(f"CSP: {text}")

    def check(self) -> None:
        assert not self.errors, "\n".join(self.errors)


# --- the console page, seen from a test -------------------------------------------------------

CANVAS_STATS_JS = """
(rect) => {
    const canvas = document.querySelector('#screen canvas');
    if (!canvas || !canvas.width || !canvas.height) return null;
    const r = rect || {x: 0, y: 0, w: canvas.width, h: canvas.height};
    const data = canvas.getContext('2d').getImageData(r.x, r.y, r.w, r.h).data;
    const colours = new Set();
    let hash = 0;
    for (let i = 0; i < data.length; i += 4) {
        const rgb = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2];
        if (colours.size < 4096) colours.add(rgb);
        hash = (Math.imul(hash, 31) + rgb) | 0;
    }
    return {width: canvas.width, height: canvas.height, colours: colours.size, hash: hash};
}
"""


@dataclass(frozen=True)
class CanvasStats:
    width: int
    height: int
    colours: int
    hash: int


async def canvas_stats(
    frame: Page | Frame, rect: tuple[int, int, int, int] | None = None
) -> CanvasStats | None:
    """Size, number of distinct colours and a hash of the console canvas (or a part of it)."""
    arg = None if rect is None else dict(zip("xywh", rect, strict=True))
    found = await frame.evaluate(CANVAS_STATS_JS, arg)
    return None if found is None else CanvasStats(**found)


async def wait_state(frame: Page | Frame, state: str, timeout_ms: int = CONNECT_TIMEOUT_MS) -> None:
    """Wait for the page's ``data-state`` (connecting, connected, disconnected)."""
    await frame.locator(f"body[data-state={state}]").wait_for(state="attached", timeout=timeout_ms)


async def wait_drawn(frame: Page | Frame, timeout: float = 10.0) -> CanvasStats:
    """Wait until the canvas shows more than one colour: the console has been drawn."""
    deadline = time.monotonic() + timeout
    while True:
        stats = await canvas_stats(frame)
        if stats is not None and stats.colours > 1:
            return stats
        if time.monotonic() > deadline:
            raise AssertionError(f"the console canvas stayed blank: {stats}")
        await asyncio.sleep(0.2)


async def wait_changed(
    frame: Page | Frame, rect: tuple[int, int, int, int], before: CanvasStats, timeout: float = 5.0
) -> CanvasStats:
    deadline = time.monotonic() + timeout
    while True:
        stats = await canvas_stats(frame, rect)
        if stats is not None and stats.hash != before.hash:
            return stats
        if time.monotonic() > deadline:
            raise AssertionError(f"the console region {rect} did not change")
        await asyncio.sleep(0.1)


async def reconnect(frame: Page | Frame, click: Callable[[], Awaitable[None]]) -> None:
    """Run ``click`` (a press on a Reconnect button) and wait for a new, connected session.

    The old session stays up until the new ticket arrives, so "connecting" may flash by too fast
    to see: a new connection is recognised by noVNC's new canvas.
    """
    await frame.evaluate("document.querySelector('#screen canvas').dataset.old = '1'")
    await click()
    await frame.locator("#screen canvas:not([data-old])").wait_for(timeout=CONNECT_TIMEOUT_MS)
    await wait_state(frame, "connected")


async def status_text(frame: Page | Frame) -> str:
    return (await frame.locator("#status-text").text_content() or "").strip()


async def close_code(frame: Page | Frame) -> str | None:
    code = await frame.evaluate("document.body.dataset.closeCode ?? null")
    return None if code is None else str(code)


# --- the console stack: simulator + proxy ---------------------------------------------------


@dataclass
class ConsoleStack:
    """A running proxy and the ZStack simulator behind it, with a client to play the portal."""

    proxy: TestServer
    simulator: TestServer | None
    portal_server: TestServer | None = None
    http: aiohttp.ClientSession = field(default_factory=aiohttp.ClientSession)

    @property
    def proxy_origin(self) -> str:
        return str(self.proxy.make_url("/").origin())

    def url(self, path: str) -> str:
        return str(self.proxy.make_url(path))

    def portal_url(self, path: str = "/") -> str:
        assert self.portal_server is not None
        return str(self.portal_server.make_url(path))

    async def login(self, name: str = "admin", password: str = "password") -> str:
        assert self.simulator is not None
        zstack_url = str(self.simulator.make_url("/zstack"))
        return await zstack_login(self.http, zstack_url, name, password)

    async def mint(self, vm_uuid: str, session: str | None = None, **body: Any) -> dict[str, Any]:
        """Mint a console ticket through the proxy's real API, as a portal does; ``body`` adds
        fields to the request (``language``, ``viewOnly``)."""
        session = session or await self.login()
        status, found = await request_console(
            self.http, self.url("/api/v1/consoles"), session, {"vmUuid": vm_uuid, **body}
        )
        assert status == 201, found
        return dict(found)

    async def close(self) -> None:
        await self.http.close()


# --- a portal on another origin, embedding the console in an iframe ---------------------------

PORTAL_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Test portal</title></head>
<body>
<h1>Test portal</h1>
<iframe id="console" src="%(src)s" width="900" height="600" allow="fullscreen"></iframe>
<script>
// What a portal adds to embed the console: answer the page's ticket requests.
window.statuses = [];
window.idleWarnings = [];
window.ticketRequests = 0;
const frame = document.getElementById('console');
const proxyOrigin = new URL(frame.src).origin;
const answer = %(answer)s;
window.addEventListener('message', async (event) => {
    if (event.source !== frame.contentWindow || event.origin !== proxyOrigin) return;
    const data = event.data || {};
    if (data.type === 'console-proxy:status') window.statuses.push(data);
    if (data.type === 'console-proxy:idle-warning') window.idleWarnings.push(data.secondsLeft);
    if (data.type === 'console-proxy:idle-cleared') window.idleWarnings.push('cleared');
    if (data.type === 'console-proxy:need-ticket') {
        window.ticketRequests += 1;
        if (!answer) return;
        const reply = await fetch('mint', {method: 'POST'});
        const ticket = await reply.json();
        event.source.postMessage({type: 'console-proxy:ticket', token: ticket.token}, proxyOrigin);
    }
});
</script>
</body></html>
"""


class Portal:
    """A portal backend on its own origin: it mints tickets server-side (with its ZStack session)
    and embeds ``consoleUrl`` in an iframe. ``GET /?answer=0`` serves a portal page that ignores
    the console's ticket requests.

    It starts before the proxy (whose ``frame_ancestors`` must name its origin), so ``stack`` is
    set once the proxy runs.
    """

    def __init__(self, vm_uuid: str) -> None:
        self.vm_uuid = vm_uuid
        self.stack: ConsoleStack | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app[PORTAL] = self
        app.router.add_get("/", _portal_page)
        app.router.add_post("/mint", _portal_mint)
        return app

    async def mint(self) -> dict[str, Any]:
        assert self.stack is not None, "the proxy is not running yet"
        return await self.stack.mint(self.vm_uuid)


PORTAL = web.AppKey("portal", Portal)


async def _portal_page(request: web.Request) -> web.Response:
    ticket = await request.app[PORTAL].mint()
    page = PORTAL_PAGE % {
        "src": html.escape(ticket["consoleUrl"], quote=True),
        "answer": "false" if request.query.get("answer") == "0" else "true",
    }
    return web.Response(text=page, content_type="text/html")


async def _portal_mint(request: web.Request) -> web.Response:
    ticket = await request.app[PORTAL].mint()
    return web.json_response({"token": ticket["token"]})


async def console_frame(page: Page, selector: str = "iframe") -> Frame:
    """The Frame of an iframe on ``page``, once it exists."""
    handle = await page.wait_for_selector(selector, state="attached")
    assert handle is not None
    frame = await handle.content_frame()
    assert frame is not None
    return frame


# --- fixtures: Chromium, watched pages, the console stack, the demo's VMs ----------------------

DEMO_VNC = "d3ad0c0de0000000000000000000a001"  # "demo-vnc" in proxy/demo/inventory.toml
QEMU_VM = "0e3a0c0de0000000000000000000b001"
SPICE_VM = "5b1ce0c0de0000000000000000000c01"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as browser:
        yield browser


FreshPage = Callable[..., Awaitable[Page]]


@pytest.fixture
async def fresh_page(browser: Browser) -> AsyncIterator[FreshPage]:
    """``await fresh_page(locale="zh-CN", has_touch=True, ...)``: a page in a fresh context with
    those options; each fails the test on a script error or a CSP block."""
    contexts = []
    watched: list[PageProblems] = []

    async def open_page(**options: Any) -> Page:
        options.setdefault("viewport", VIEWPORT)
        context = await browser.new_context(**options)
        contexts.append(context)
        page = await context.new_page()
        watched.append(PageProblems(page))
        return page

    yield open_page
    for context in contexts:
        await context.close()
    for problems in watched:
        problems.check()


StartConsoleStack = Callable[..., Awaitable[tuple[ConsoleStack, Portal]]]


@pytest.fixture
async def new_page(browser: Browser) -> AsyncIterator[Callable[[], Awaitable[Page]]]:
    """Pages in one fresh browser context; each fails the test on a script error or CSP block."""
    context = await browser.new_context(viewport=VIEWPORT)
    watched: dict[Page, PageProblems] = {}

    def watch(page: Page) -> None:
        if page not in watched:
            watched[page] = PageProblems(page)

    async def open_page() -> Page:
        page = await context.new_page()
        watch(page)
        return page

    context.on("page", watch)  # also tabs the pages open themselves
    yield open_page
    await context.close()
    for problems in watched.values():
        problems.check()


@pytest.fixture
async def start_console_stack(
    aiohttp_server: Any, tmp_path: Path
) -> AsyncIterator[StartConsoleStack]:
    """``await start_console_stack(inventory, portal_vm=..., **config_sections)``: the simulator
    serving ``inventory``, a portal on a second origin and the proxy (with the demo's routes)."""
    started: list[ConsoleStack] = []

    async def start(
        inventory: Inventory, *, portal_vm: str = DEMO_VNC, **sections: Any
    ) -> tuple[ConsoleStack, Portal]:
        simulator: TestServer = await aiohttp_server(create_simulator_app(inventory))
        portal = Portal(portal_vm)
        portal_server: TestServer = await aiohttp_server(portal.app())
        zstack_url = str(simulator.make_url("/zstack"))
        server = sections.setdefault("server", {})
        server["frame_ancestors"] = ["'self'", str(portal_server.make_url("/").origin())]
        config = make_config(zstack={"url": zstack_url, "timeout": 5.0}, **sections)
        app = create_app(config)
        add_demo_routes(app, inventory, zstack_url)
        stack = ConsoleStack(await aiohttp_server(app), simulator, portal_server)
        portal.stack = stack
        started.append(stack)
        return stack, portal

    yield start
    for stack in started:
        await stack.close()


@pytest.fixture
async def demo_inventory() -> AsyncIterator[Inventory]:
    """The demo's inventory, its VMs served by live demo VNC servers."""
    inventory, servers = await start_vnc_servers(load_inventory(DEFAULT_INVENTORY))
    yield inventory
    for server in servers:
        await server.close()


def qemu_inventory(port: int) -> Inventory:
    return Inventory.from_dict(
        {
            "accounts": [{"name": "admin", "password": "password"}],
            "vms": [
                {
                    "uuid": QEMU_VM,
                    "name": "qemu",
                    "state": "Running",
                    "hostIp": "127.0.0.1",
                    "protocol": "vnc",
                    "vncPort": port,
                    "owner": "admin",
                }
            ],
        }
    )


def spice_inventory(port: int, password: str | None) -> Inventory:
    vm: dict[str, Any] = {
        "uuid": SPICE_VM,
        "name": "qemu-spice",
        "state": "Running",
        "hostIp": "127.0.0.1",
        "protocol": "spice",
        "spicePort": port,
        "owner": "admin",
    }
    if password is not None:
        vm["consolePassword"] = password
    return Inventory.from_dict(
        {"accounts": [{"name": "admin", "password": "password"}], "vms": [vm]}
    )


def artifact(name: str) -> Path:
    """Screenshots go to .test-artifacts/ (gitignored) for a person to look at."""
    directory = REPO / ".test-artifacts"
    directory.mkdir(exist_ok=True)
    return directory / name


@pytest.fixture
def pressed_keys(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The keysyms the demo VNC server gets pressed (it draws only printable ones)."""
    pressed: list[int] = []
    draw_key = Scene.key

    def record_key(scene: Scene, keysym: int) -> list[Rect]:
        pressed.append(keysym)
        return draw_key(scene, keysym)

    monkeypatch.setattr(Scene, "key", record_key)
    return pressed
