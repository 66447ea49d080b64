"""HTTP handlers: parse the request, call the domain, map domain errors to HTTP errors."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import hdrs, web

from proxy.bridge import Bridge, BridgeLimits, connect_host
from proxy.closecodes import Close
from proxy.consoles import PROTOCOLS, normalize_vm_uuid
from proxy.errors import ApiError
from proxy.keys import CONFIG, CONSOLES, OPEN_SOCKETS, ZSTACK
from proxy.zstack import ZStackError

log = logging.getLogger(__name__)

TOKEN_PROTOCOL_PREFIX = "token."


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
    session = session_from(request)
    body = await json_body(request)
    vm_uuid = normalize_vm_uuid(body.get("vmUuid"))
    protocol = body.get("protocol")
    if protocol is not None and protocol not in PROTOCOLS:
        raise ApiError(400, "REQUEST.INVALID_PROTOCOL", "protocol must be 'vnc' or 'spice'.")
    try:
        token, ticket = await request.app[CONSOLES].mint(session, vm_uuid, protocol)
    except ZStackError as exc:
        raise ApiError(exc.status, exc.code, exc.description, exc.details) from None
    expires = datetime.fromtimestamp(ticket.expires_at, UTC).isoformat(timespec="seconds")
    answer = {
        "token": token,
        "consoleUrl": f"{base_url(request)}/console/{ticket.protocol}#token={token}",
        "protocol": ticket.protocol,
        "expiresAt": expires.replace("+00:00", "Z"),
    }
    log.info("minted %s console for VM %s", ticket.protocol, vm_uuid)
    return web.json_response(answer, status=201)


@aiohttp_jinja2.template("console_vnc.html")
async def vnc_page(request: web.Request) -> dict[str, Any]:
    return {"page_title": "VM console"}


def token_from(request: web.Request) -> str:
    """The ticket from ``?token=`` or from a ``token.<T>`` WebSocket subprotocol."""
    if token := request.query.get("token", ""):
        return token
    offered = request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "")
    for proto in (p.strip() for p in offered.split(",")):
        if proto.startswith(TOKEN_PROTOCOL_PREFIX):
            return proto[len(TOKEN_PROTOCOL_PREFIX) :]
    return ""


def origin_allowed(request: web.Request) -> bool:
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        # Only browsers send Origin, and only browsers can be tricked into cross-site requests.
        return True
    own = f"{request.scheme}://{request.host}"
    return origin == own or origin in request.app[CONFIG].server.allowed_origins


async def websockify(request: web.Request) -> web.StreamResponse:
    # Checked before the upgrade: a page on another site must not borrow the user's ticket.
    if not origin_allowed(request):
        log.warning("refused WebSocket from origin %s", request.headers.get(hdrs.ORIGIN))
        raise ApiError(403, "ORIGIN.FORBIDDEN", "This page's origin may not open consoles here.")
    config = request.app[CONFIG]
    ws = web.WebSocketResponse(
        protocols=("binary",),
        compress=False,  # console payloads are already compressed; deflate costs 30x throughput
        max_msg_size=config.limits.max_frame_size,
        heartbeat=30.0,
        timeout=5.0,
    )
    if not ws.can_prepare(request).ok:
        raise ApiError(
            400, "REQUEST.NOT_WEBSOCKET", "This endpoint only accepts WebSocket upgrades."
        )
    await ws.prepare(request)
    sockets = request.app[OPEN_SOCKETS]
    sockets.add(ws)
    try:
        reason = await _serve_console(request, ws, len(sockets))
    finally:
        sockets.discard(ws)
    if not ws.closed:
        await ws.close(code=reason.code, message=reason.reason.encode())
    return ws


async def _serve_console(request: web.Request, ws: web.WebSocketResponse, open_count: int) -> Close:
    config = request.app[CONFIG]
    if open_count > config.limits.max_connections:
        return Close.TOO_MANY
    consoles = request.app[CONSOLES]
    ticket = await consoles.redeem(token_from(request))
    if ticket is None:
        return Close.TICKET_INVALID
    if not consoles.policy.permits(ticket.host, ticket.port):
        log.warning(
            "refused console target %s:%s: outside [targets] allow", ticket.host, ticket.port
        )
        return Close.TARGET_REFUSED
    started = time.monotonic()
    connected = await connect_host(ticket.host, ticket.port, config.limits.connect_timeout)
    if isinstance(connected, Close):
        return connected
    limits = BridgeLimits(config.limits.idle_timeout, config.limits.max_session)
    bridge = Bridge(ws, *connected, limits)
    log.info(
        "console open: VM %s via %s:%s (%.1f ms)",
        ticket.vm_uuid or "-",
        ticket.host,
        ticket.port,
        (time.monotonic() - started) * 1000,
    )
    reason = await bridge.run()
    log.info(
        "console closed: VM %s, %s, %d bytes to host, %d to browser",
        ticket.vm_uuid or "-",
        reason.name.lower(),
        bridge.stats.bytes_to_host,
        bridge.stats.bytes_to_browser,
    )
    return reason


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[ZSTACK].check_reachable()
    except ZStackError as exc:
        body = {"status": "unavailable", "zstack": exc.code}
        return web.json_response(body, status=503)
    return web.json_response({"status": "ready", "zstack": "ok"})
