"""`console-proxy demo` end to end as a person runs it: index, portal login, mint, console."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import TextIO, cast

import aiohttp
import pytest

from tests.support.browser import FreshPage, artifact, status_text, wait_drawn, wait_state
from tests.support.net import free_port
from tests.support.rfb_client import RfbClient
from tests.support.waiting import wait_until

DEMO_VM = "d3ad0c0de0000000000000000000a001"
STOPPED_VM = "d3ad0c0de0000000000000000000a003"


@pytest.fixture
async def demo() -> AsyncIterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "demo", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    banner = await asyncio.wait_for(asyncio.to_thread(_banner, cast(TextIO, process.stdout)), 20)
    url = re.search(r"open (http://\S+/)", banner)
    assert url, banner
    BANNERS[url.group(1)] = banner
    try:
        yield url.group(1)
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0


BANNERS: dict[str, str] = {}


def _banner(stream: TextIO) -> str:
    """What the demo prints at start, up to the end of its curl recipe."""
    lines = []
    for line in stream:
        lines.append(line)
        if line.startswith("then open the consoleUrl"):
            break
    return "".join(lines)


async def test_demo_prints_a_curl_recipe_that_mints(demo: str) -> None:
    banner = BANNERS[demo]
    assert re.search(r"Simulated ZStack API: http://127\.0\.0\.1:\d+/zstack", banner)
    assert "admin / password" in banner
    recipe = banner.split("(the README's recipe):\n", 1)[1].rsplit("then open", 1)[0]
    result = await asyncio.to_thread(
        subprocess.run, ["bash", "-euo", "pipefail", "-c", recipe], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["consoleUrl"].startswith(f"{demo}console/vnc#token=")
    assert answer["protocol"] == "vnc"


async def test_demo_index_mint_and_console(demo: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(demo) as page:
            html = await page.text()
            assert page.status == 200
        assert "demo-vnc" in html and DEMO_VM in html
        async with http.post(f"{demo}demo/session") as answer:
            session = (await answer.json())["session"]
        headers = {"Authorization": f"OAuth {session}"}
        async with http.post(
            f"{demo}api/v1/consoles", json={"vmUuid": DEMO_VM}, headers=headers
        ) as answer:
            assert answer.status == 201
            ticket = await answer.json()
        assert ticket["consoleUrl"].startswith(f"{demo}console/vnc#token=")
        async with http.get(ticket["consoleUrl"].split("#")[0]) as page:
            assert page.status == 200
        ws = await http.ws_connect(
            f"{demo}websockify", protocols=("binary", f"token.{ticket['token']}")
        )
        client = RfbClient.over_websocket(ws)
        init = await client.handshake()
        assert init.name == "demo-vnc"
        assert init.width > 0 and init.height > 0
        await ws.close()
        async with http.post(
            f"{demo}api/v1/consoles", json={"vmUuid": STOPPED_VM}, headers=headers
        ) as answer:
            assert answer.status == 409
            assert (await answer.json())["error"]["code"] == "VM.1010"


@pytest.mark.parametrize(
    ("locale", "heading", "button", "connected", "embed_state"),
    [
        ("en-US", "Console proxy demo", "Open in iframe", "Connected to demo-vnc", "connected"),
        ("zh-CN", "控制台代理演示", "在 iframe 中打开", "已连接到 demo-vnc", "已连接"),
    ],
)
async def test_the_demo_page_speaks_the_browsers_language_and_embeds_a_console(
    demo: str,
    fresh_page: FreshPage,
    locale: str,
    heading: str,
    button: str,
    connected: str,
    embed_state: str,
) -> None:
    page = await fresh_page(locale=locale)
    await page.goto(demo)
    assert (await page.locator("h1").inner_text()).strip() == heading
    row = page.locator(f"tr[data-vm-uuid='{DEMO_VM}']")
    await row.get_by_role("button", name=button).click()
    frame = await wait_until(
        lambda: next((f for f in page.frames if "/console/vnc" in f.url), None), timeout=10
    )
    await wait_state(frame, "connected")
    assert await status_text(frame) == connected
    await wait_drawn(frame)
    await page.locator("#embed-status", has_text=embed_state).wait_for()
    await page.screenshot(path=str(artifact(f"demo-index-{locale}.png")))
