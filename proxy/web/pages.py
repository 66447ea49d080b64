"""The console pages (noVNC for VNC, spice-html5 for SPICE), rendered from templates/."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from proxy.closecodes import PAGE_MESSAGES
from proxy.web.keys import CONFIG


@aiohttp_jinja2.template("console_vnc.html")
async def vnc_page(request: web.Request) -> dict[str, Any]:
    return console_page_context(request)


@aiohttp_jinja2.template("console_spice.html")
async def spice_page(request: web.Request) -> dict[str, Any]:
    return console_page_context(request)


def console_page_context(request: web.Request) -> dict[str, Any]:
    return {
        "page_title": "VM console",
        # The page warns before the proxy closes an idle console, so it needs the timeout.
        "idle_timeout": request.app[CONFIG].limits.idle_timeout,
        "close_messages": PAGE_MESSAGES,
    }
