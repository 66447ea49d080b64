"""``POST <base>/api/v1/consoles/peers`` with ``{"token": T}``: how many other consoles show the
same VM right now, cluster-wide with Redis. The console page polls it with its own (already
used) ticket, in the body so it stays out of URLs and logs; an unknown token learns nothing."""

from __future__ import annotations

from aiohttp import web

from proxy.consoles.sessions import token_key
from proxy.tickets.store import StoreUnavailable, is_well_formed
from proxy.web.api import json_body
from proxy.web.errors import ApiError
from proxy.web.keys import LIVE, REGISTRY


async def peers(request: web.Request) -> web.Response:
    body = await json_body(request)
    token = body.get("token")
    if not isinstance(token, str) or not is_well_formed(token):
        raise ApiError(400, "REQUEST.INVALID_TOKEN", "token must be a console ticket.")
    registry = request.app[REGISTRY]
    console = registry.by_token(token_key(token))
    if console is None or not console.vm_uuid:
        raise ApiError(404, "CONSOLE.NOT_FOUND", "This console is not open.")
    here = {c.counted_as for c in registry.connected() if c.vm_uuid == console.vm_uuid}
    others = len(here - {console.counted_as})
    live = request.app.get(LIVE)
    if live is not None and console.ticket is not None:
        vm = console.ticket.vm_uuid
        try:
            others += sum(1 for c in await live.others_cached() if c.get("vmUuid") == vm)
        except StoreUnavailable:
            pass  # this instance's own count is still worth showing
    return web.json_response({"others": others})
