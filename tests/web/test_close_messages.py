"""Close codes have one source: every code the proxy sends has a sentence, and the console page
receives the table from the server."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from proxy.app import create_app
from proxy.closecodes import PAGE_MESSAGES, Close
from tests.support.configs import make_config


def test_every_close_code_has_a_page_sentence() -> None:
    missing = sorted({c.code for c in Close} - PAGE_MESSAGES.keys())
    assert not missing, f"close codes without a page sentence: {missing}"


@pytest.mark.parametrize("page", ["vnc", "spice"])
async def test_console_page_carries_the_table(aiohttp_client: Any, page: str) -> None:
    client = await aiohttp_client(create_app(make_config()))
    response = await client.get(f"/console/{page}")
    html = await response.text()
    match = re.search(r'<script type="application/json" id="close-messages">(.*?)</script>', html)
    assert match is not None
    table = {int(code): text for code, text in json.loads(match[1]).items()}
    assert table == PAGE_MESSAGES
    # The codes the page used to show only as "Disconnected (code N)".
    assert {4503, 4513, 4515, 4516, 4517} <= table.keys()


async def test_scripts_are_served_as_text_javascript(aiohttp_client: Any) -> None:
    client = await aiohttp_client(create_app(make_config()))
    for path in ("/static/js/closecodes.js", "/static/novnc/core/rfb.js"):
        response = await client.get(path)
        assert response.status == 200, path
        assert response.headers["Content-Type"].startswith("text/javascript"), path
