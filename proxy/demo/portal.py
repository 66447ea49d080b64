"""The demo's stand-in for a portal: an index of demo VMs and a login to the simulated ZStack.

A real portal already holds the user's ZStack session; the demo gets one by logging in to the
simulator as its admin, then the page mints through the proxy's real API like a portal would.
"""

from __future__ import annotations

import hashlib
from typing import Any

import aiohttp
import aiohttp_jinja2
from aiohttp import web

from proxy import i18n
from proxy.demo.simulator import ADMIN, Inventory
from proxy.web.errors import ApiError
from proxy.web.keys import CONFIG
from proxy.web.pages import language_context, page_language

INVENTORY = web.AppKey("demo_inventory", Inventory)
SIMULATOR_URL = web.AppKey("demo_simulator_url", str)


def add_demo_routes(app: web.Application, inventory: Inventory, simulator_url: str) -> None:
    app[INVENTORY] = inventory
    app[SIMULATOR_URL] = simulator_url
    base = app[CONFIG].server.base_path
    app.router.add_get(f"{base}/", index)
    app.router.add_post(f"{base}/demo/session", demo_session)


@aiohttp_jinja2.template("demo_index.html")
async def index(request: web.Request) -> dict[str, Any]:
    vms = [
        {
            "uuid": vm.uuid,
            "name": vm.name,
            "state": vm.state,
            "protocol": vm.protocol,
            "has_password": vm.console_password is not None,
        }
        for vm in request.app[INVENTORY].vms
    ]
    language = page_language(request)
    demo_text = i18n.section(language, "demo")
    return {**language_context(language), "vms": vms, "demo_text": demo_text}


async def demo_session(request: web.Request) -> web.Response:
    admin = next(a for a in request.app[INVENTORY].accounts if a.name == ADMIN)
    body = {
        "logInByAccount": {
            "accountName": admin.name,
            "password": hashlib.sha512(admin.password.encode()).hexdigest(),
        }
    }
    url = f"{request.app[SIMULATOR_URL]}/v1/accounts/login"
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as http, http.put(url, json=body) as answer:
        if answer.status != 200:
            raise ApiError(502, "DEMO.LOGIN_FAILED", "The demo could not log in to its ZStack.")
        inventory = (await answer.json())["inventory"]
    return web.json_response({"session": inventory["uuid"]})
