"""Operators' endpoints on live consoles (operator cookie or bearer admin token):

- ``GET <base>/api/v1/admin/consoles``: every live console of every instance;
- ``POST <base>/api/v1/admin/consoles/{id}/close``: close one, wherever it runs;
- ``POST <base>/api/v1/admin/consoles/{id}/watch``: a view-only ticket to the same VM console,
  minted without any ZStack session (the target comes from the live console's ticket).
"""

from __future__ import annotations

import asyncio
import logging
import re

from aiohttp import web

from proxy.closecodes import Close
from proxy.consoles.live import summarize
from proxy.tickets.store import StoreUnavailable, Ticket
from proxy.web.api import ticket_answer
from proxy.web.errors import ApiError
from proxy.web.keys import AUDIT, CONSOLES, INSTANCE, LIVE, REGISTRY
from proxy.web.operator_session import require_operator

log = logging.getLogger(__name__)

CONSOLE_ID = re.compile(r"[0-9a-f]{12,16}")
UNAVAILABLE = "Other proxy instances could not be asked; try again shortly."


def console_id_from(request: web.Request) -> str:
    console_id = request.match_info["id"]
    if not CONSOLE_ID.fullmatch(console_id):
        raise ApiError(400, "REQUEST.INVALID_CONSOLE_ID", "That is not a console id.")
    return console_id


async def list_consoles(request: web.Request) -> web.Response:
    require_operator(request)
    loop_now = asyncio.get_running_loop().time()
    here = summarize(request.app[REGISTRY], request.app[INSTANCE], loop_now)
    listed = [s.to_json() for s in here]
    live = request.app.get(LIVE)
    if live is not None:
        try:
            listed += await live.others()
        except StoreUnavailable as exc:
            raise ApiError(503, exc.code, UNAVAILABLE) from None
    listed.sort(key=lambda c: float(c.get("started") or 0))
    return web.json_response({"consoles": listed})


async def close_console(request: web.Request) -> web.Response:
    operator = require_operator(request)
    console_id = console_id_from(request)
    closed = await request.app[REGISTRY].close_console(console_id, Close.REVOKED)
    told = 0
    live = request.app.get(LIVE)
    if not closed and live is not None:
        try:
            if any(c.get("id") == console_id for c in await live.others()):
                told = max(0, await live.publish_close(console_id) - 1)
        except StoreUnavailable as exc:
            raise ApiError(503, exc.code, UNAVAILABLE) from None
    if not closed and not told:
        raise ApiError(404, "CONSOLE.NOT_FOUND", "No live console has that id.")
    request.app[AUDIT].operator("close", operator.account, request.remote or "", console=console_id)
    log.info("operator %s closed console %s", operator.account, console_id)
    return web.json_response({"id": console_id, "closedHere": closed, "otherInstancesTold": told})


async def watch_console(request: web.Request) -> web.Response:
    operator = require_operator(request)
    console_id = console_id_from(request)
    target = await _target(request, console_id)
    if target is None:
        raise ApiError(404, "CONSOLE.NOT_FOUND", "No live console has that id.")
    if target.protocol not in ("vnc", "spice"):
        raise ApiError(409, "CONSOLE.NOT_WATCHABLE", "Only VNC and SPICE consoles can be watched.")
    service = request.app[CONSOLES]
    ticket = service.watch_ticket(target, operator.account)
    try:
        token = await service.issue(ticket)
    except StoreUnavailable as exc:
        raise ApiError(503, exc.code, "The proxy cannot store console tickets right now.") from None
    request.app[AUDIT].operator(
        "watch", operator.account, request.remote or "", console=console_id, vm=ticket.vm_uuid
    )
    return web.json_response(ticket_answer(request, token, ticket), status=201)


async def _target(request: web.Request, console_id: str) -> Ticket | None:
    console = request.app[REGISTRY].find(console_id)
    if console is not None:
        return console.ticket
    live = request.app.get(LIVE)
    if live is None:
        return None
    try:
        return await live.target(console_id)
    except StoreUnavailable as exc:
        raise ApiError(503, exc.code, UNAVAILABLE) from None
