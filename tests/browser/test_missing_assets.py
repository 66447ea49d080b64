"""When noVNC or spice-html5 is not installed (no `npm ci` in static/), the console page is an
error page that names the fix, with a 503, never "Loading the console…" for ever; and when a file
goes missing after that check, the page's boot script says the same (issue #15)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from proxy.app import REPO_ROOT, create_app
from tests.support.browser import FreshPage, artifact
from tests.support.configs import make_config

NOVNC = Path("static/node_modules/@novnc/novnc")


def assets_copy(tmp_path: Path, *, novnc: bool = False) -> Path:
    """templates/ and static/ of the repository without node_modules (or with noVNC only)."""
    root = tmp_path / "assets"
    shutil.copytree(REPO_ROOT / "templates", root / "templates")
    shutil.copytree(
        REPO_ROOT / "static", root / "static", ignore=shutil.ignore_patterns("node_modules")
    )
    if novnc:
        shutil.copytree(REPO_ROOT / NOVNC, root / NOVNC)
    return root


@pytest.mark.parametrize(("page", "package"), [("vnc", "@novnc/novnc"), ("spice", "spice-html5")])
async def test_console_page_without_browser_code_names_the_fix(
    aiohttp_client: Any, tmp_path: Path, page: str, package: str
) -> None:
    config = make_config(server={"assets_dir": str(assets_copy(tmp_path))})
    client = await aiohttp_client(create_app(config))
    response = await client.get(f"/console/{page}")
    assert response.status == 503
    assert response.headers["Cache-Control"] == "no-store"
    html = await response.text()
    assert package in html and "npm ci" in html
    assert "Loading" not in html
    assert '<html lang="en">' in html

    response = await client.get(f"/console/{page}", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    html = await response.text()
    assert '<html lang="zh-CN">' in html
    assert "缺少浏览器端代码" in html and "npm ci" in html


@pytest.mark.browser
async def test_missing_page_shows_in_the_browser(
    tmp_path: Path, aiohttp_server: Any, fresh_page: FreshPage
) -> None:
    config = make_config(server={"assets_dir": str(assets_copy(tmp_path))})
    server = await aiohttp_server(create_app(config))
    page = await fresh_page(locale="zh-CN")
    response = await page.goto(str(server.make_url("/console/vnc")))
    assert response is not None and response.status == 503
    assert "npm ci" in await page.locator("main").inner_text()
    await page.screenshot(path=str(artifact("missing-assets-zh-CN.png")))


@pytest.mark.browser
async def test_a_file_missing_later_is_reported_by_the_page(
    tmp_path: Path, aiohttp_server: Any, fresh_page: FreshPage
) -> None:
    # rfb.js is there (the server's check passes) but a module it imports is not.
    root = assets_copy(tmp_path, novnc=True)
    (root / NOVNC / "core" / "display.js").unlink()
    server = await aiohttp_server(create_app(make_config(server={"assets_dir": str(root)})))
    page = await fresh_page()
    await page.goto(str(server.make_url("/console/vnc")) + "#token=x")
    await page.locator("body[data-assets-missing='1']").wait_for(state="attached", timeout=10_000)
    status = await page.locator("#status-text").inner_text()
    assert "npm ci" in status and "noVNC" in status
    assert await page.locator("#overlay").is_visible()
    assert await page.locator("#btn-overlay-reconnect").is_hidden()
