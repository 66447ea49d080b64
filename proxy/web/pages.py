"""The console pages (noVNC for VNC, spice-html5 for SPICE), rendered from templates/.

A page is rendered in the language its ``?lang=`` asks for, else the browser's
``Accept-Language``, else English; it carries every language's words and switches itself to the
language in its fragment (``#...&lang=zh-CN``, from the mint) or the portal's postMessage.
When the browser code it needs (noVNC, spice-html5) is not installed, it is an error page that
says how to install it (503), never a page that stays at "Loading…".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp_jinja2
from aiohttp import hdrs, web

from proxy import i18n
from proxy.keynames import page_keys
from proxy.web.keys import CONFIG

# What each page imports from static/node_modules, and the npm package it comes from.
BROWSER_CODE = {
    "vnc": ("@novnc/novnc", "core/rfb.js"),
    "spice": ("@spice-project/spice-html5", "src/main.js"),
}


async def vnc_page(request: web.Request) -> web.StreamResponse:
    return console_page(request, "vnc")


async def spice_page(request: web.Request) -> web.StreamResponse:
    return console_page(request, "spice")


def console_page(request: web.Request, protocol: str) -> web.StreamResponse:
    language = page_language(request)
    package, entry = BROWSER_CODE[protocol]
    if not (assets_root(request) / "static" / "node_modules" / package / entry).is_file():
        return missing_assets_page(request, language, package)
    return aiohttp_jinja2.render_template(
        f"console_{protocol}.html", request, console_page_context(request, language)
    )


def console_page_context(request: web.Request, language: str) -> dict[str, Any]:
    config = request.app[CONFIG]
    return {
        **language_context(language),
        # The page warns before the proxy closes an idle console, so it needs the timeout.
        "idle_timeout": config.limits.idle_timeout,
        "close_messages": i18n.close_messages(language),
        "i18n": {"language": language, "names": i18n.names(), "tables": i18n.console_tables()},
        "keys": page_keys(config.page.key_combos),
    }


def language_context(language: str) -> dict[str, Any]:
    """What every template needs to speak ``language``: ``lang`` and ``t("section.key")``."""
    return {"lang": language, "t": i18n.translator(language)}


def page_language(request: web.Request) -> str:
    """``?lang=`` when it names an available language, else the browser's preferences."""
    asked = i18n.canonical(request.query.get("lang", ""))
    if asked is not None:
        return asked
    return i18n.negotiate(i18n.accept_language(request.headers.get(hdrs.ACCEPT_LANGUAGE, "")))


def assets_root(request: web.Request) -> Path:
    # Imported here: proxy.app imports the routes, which import this module.
    from proxy.app import assets_dir

    return assets_dir(request.app[CONFIG])


def missing_assets_page(request: web.Request, language: str, package: str) -> web.Response:
    t = i18n.translator(language)
    context = {
        **language_context(language),
        "root": "../",
        "status": 503,
        "code": "ASSETS.MISSING",
        "description": t("error.assetsTitle"),
        "details": [t("error.assetsWhat", package=package), t("error.assetsFix")],
    }
    response = aiohttp_jinja2.render_template("error.html", request, context, status=503)
    response.headers[hdrs.CACHE_CONTROL] = "no-store"
    return response
