"""HTTP handlers: parse the request, call the domain, map domain errors to HTTP errors."""

from __future__ import annotations

import hmac
import json
import logging
from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import hdrs, web

from proxy.closecodes import Close
from proxy.consoles.service import PROTOCOLS, normalize_vm_uuid
from proxy.tickets.store import TicketStoreUnavailable
from proxy.web.errors import ApiError
from proxy.web.keys import CLUSTER, CONFIG, CONSOLES, METRICS, RATE_LIMITER, REGISTRY, ZSTACK
from proxy.zstack.client import ZStackError

log = logging.getLogger(__name__)


def session_from(request: web.Request) -> str:
    scheme, _, session = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    if scheme != "OAuth" or not session.strip():
        raise ApiError(
            401,
            "AUTH.MISSING_SESSION",
            "Send the caller's ZStack session as 'Authorization: OAuth <session-uuid>'.",
        )
    return session.strip()


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(
            400, "REQUEST.INVALID_JSON", "The request body must be a JSON object."
        ) from None
    if not isinstance(body, dict):
        raise ApiError(400, "REQUEST.INVALID_JSON", "The request body must be a JSON object.")
    return body


def base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}{request.app[CONFIG].server.base_path}"


async def mint_console(request: web.Request) -> web.Response:
    if not request.app[RATE_LIMITER].allow(request.remote or ""):
        request.app[METRICS].rejected.labels("rate").inc()
        raise ApiError(
            429, "LIMIT.RATE", "Too many console requests from your address; try again shortly."
        )
    session = session_from(request)
    body = await json_body(request)
    vm_uuid = normalize_vm_uuid(body.get("vmUuid"))
    protocol = body.get("protocol")
    if protocol is not None and protocol not in PROTOCOLS:
        raise ApiError(400, "REQUEST.INVALID_PROTOCOL", "protocol must be 'vnc' or 'spice'.")
    try:
        token, ticket = await request.app[CONSOLES].mint(session, vm_uuid, protocol)
    except ZStackError as exc:
        request.app[METRICS].zstack_errors.labels(exc.code).inc()
        raise ApiError(exc.status, exc.code, exc.description, exc.details) from None
    except TicketStoreUnavailable as exc:
        log.error("ticket store unavailable: %s", exc.reason)
        raise ApiError(
            503, exc.code, "The proxy cannot store console tickets right now; try again shortly."
        ) from None
    expires = datetime.fromtimestamp(ticket.expires_at, UTC).isoformat(timespec="seconds")
    answer = {
        "token": token,
        "consoleUrl": f"{base_url(request)}/console/{ticket.protocol}#token={token}",
        "protocol": ticket.protocol,
        "expiresAt": expires.replace("+00:00", "Z"),
    }
    request.app[METRICS].mints.labels(ticket.protocol).inc()
    log.info("minted %s console for VM %s", ticket.protocol, vm_uuid)
    return web.json_response(answer, status=201)


@aiohttp_jinja2.template("console_vnc.html")
async def vnc_page(request: web.Request) -> dict[str, Any]:
    return console_page_context(request)


@aiohttp_jinja2.template("console_spice.html")
async def spice_page(request: web.Request) -> dict[str, Any]:
    return console_page_context(request)


def console_page_context(request: web.Request) -> dict[str, Any]:
    # The page warns before the proxy closes an idle console, so it needs the timeout.
    return {"page_title": "VM console", "idle_timeout": request.app[CONFIG].limits.idle_timeout}


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[METRICS].exposition()
    response = web.Response(body=body)
    response.headers[hdrs.CONTENT_TYPE] = content_type
    return response


def require_admin(request: web.Request) -> None:
    expected = request.app[CONFIG].server.admin_token
    scheme, _, given = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    if not expected:
        raise ApiError(404, "ADMIN.DISABLED", "Admin endpoints are off (set server.admin_token).")
    if scheme != "Bearer" or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(401, "ADMIN.UNAUTHORIZED", "Send 'Authorization: Bearer <admin token>'.")


async def revoke_vm(request: web.Request) -> web.Response:
    """Close every live console of a VM (e.g. on migration or stop)."""
    require_admin(request)
    vm_uuid = normalize_vm_uuid(request.match_info["uuid"])
    cluster = request.app.get(CLUSTER)
    listening = 0
    if cluster is not None:
        try:
            listening = await cluster.publish_revoke(vm_uuid)
        except TicketStoreUnavailable as exc:
            raise ApiError(
                503, exc.code, "Other proxy instances could not be told; try again shortly."
            ) from None
    closed = await request.app[REGISTRY].close_vm(vm_uuid, Close.REVOKED)
    log.info("revoked %d console(s) of VM %s here", closed, vm_uuid)
    # An instance that was reconnecting to Redis missed the message: the count tells.
    others = max(0, listening - 1)
    return web.json_response(
        {"vmUuid": vm_uuid, "closedHere": closed, "otherInstancesTold": others}
    )


async def readyz(request: web.Request) -> web.Response:
    body = {"status": "ready", "zstack": "ok", "store": "ok"}
    try:
        await request.app[ZSTACK].check_reachable()
    except ZStackError as exc:
        body.update(status="unavailable", zstack=exc.code)
    try:
        await request.app[CONSOLES].store.check_reachable()
    except TicketStoreUnavailable as exc:
        body.update(status="unavailable", store=exc.code)
    return web.json_response(body, status=200 if body["status"] == "ready" else 503)
