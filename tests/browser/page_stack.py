"""Fixtures for the console-page tests in this folder (language, keys, touch): a Chromium, a
console stack (ZStack simulator, demo VNC servers, proxy, a portal on a second origin) and pages
in browser contexts with a chosen locale or touch emulation. Import the fixtures by name."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page

from proxy.app import create_app
from proxy.demo.portal import add_demo_routes
from proxy.demo.run import DEFAULT_INVENTORY, start_vnc_servers
from proxy.demo.simulator import Inventory, create_simulator_app, load_inventory
from proxy.demo.vncserver import Rect, Scene
from tests.browser_support import VIEWPORT, ConsoleStack, PageProblems, Portal, chromium
from tests.conftest import make_config

DEMO_VNC = "d3ad0c0de0000000000000000000a001"  # "demo-vnc" in proxy/demo/inventory.toml

StartStack = Callable[..., Awaitable[tuple[ConsoleStack, Portal]]]
NewPage = Callable[..., Awaitable[Page]]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as browser:
        yield browser


@pytest.fixture
async def new_page(browser: Browser) -> AsyncIterator[NewPage]:
    """``await new_page(locale="zh-CN", has_touch=True, ...)``: a page in a fresh context with
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


@pytest.fixture
async def start_stack(aiohttp_server: Any) -> AsyncIterator[StartStack]:
    """Start the simulator, a portal on a second origin and the proxy (with the demo's routes)."""
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


async def mint(stack: ConsoleStack, vm_uuid: str = DEMO_VNC, **body: Any) -> dict[str, Any]:
    """Mint through the real API with extra body fields (``language``, ``viewOnly``)."""
    session = await stack.login()
    async with stack.http.post(
        stack.proxy.make_url("/api/v1/consoles"),
        json={"vmUuid": vm_uuid, **body},
        headers={"Authorization": f"OAuth {session}"},
    ) as answer:
        found = await answer.json()
        assert answer.status == 201, found
        return dict(found)


def artifact(name: str) -> Path:
    """Screenshots go to .test-artifacts/ (gitignored) for a person to look at."""
    directory = Path(__file__).resolve().parent.parent.parent / ".test-artifacts"
    directory.mkdir(exist_ok=True)
    return directory / name
