"""GET <base>/websockify: check the Origin, upgrade, and hand the socket to the console sessions.

The ticket comes from ``?token=`` or from a ``token.<T>`` WebSocket subprotocol (which keeps it
out of URLs and access logs).
"""

from __future__ import annotations

import logging

from aiohttp import hdrs, web

from proxy.web.errors import ApiError
from proxy.web.keys import CONFIG, SESSIONS

log = logging.getLogger(__name__)

TOKEN_PROTOCOL_PREFIX = "token."
BINARY = "binary"
HEARTBEAT = 30.0  # pings find a browser that vanished without closing its socket


def offered_protocols(request: web.Request) -> list[str]:
    offered = request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "")
    return [proto.strip() for proto in offered.split(",") if proto.strip()]


def for_negotiation(request: web.Request) -> tuple[web.Request, tuple[str, ...]]:
    """The request aiohttp negotiates the subprotocol on, and the protocols we offer back.

    aiohttp logs every offered protocol when none overlaps its own, and a ``token.<T>``
    protocol is a live ticket. So aiohttp only ever sees the offer when ``binary`` is in it (we
    echo exactly that); otherwise it sees no Sec-WebSocket-Protocol at all.
    """
    if BINARY in offered_protocols(request):
        return request, (BINARY,)
    if hdrs.SEC_WEBSOCKET_PROTOCOL not in request.headers:
        return request, ()
    headers = request.headers.copy()
    del headers[hdrs.SEC_WEBSOCKET_PROTOCOL]
    return request.clone(headers=headers), ()


def token_from(request: web.Request) -> str:
    """The ticket from ``?token=`` or from a ``token.<T>`` WebSocket subprotocol."""
    if token := request.query.get("token", ""):
        return token
    for proto in offered_protocols(request):
        if proto.startswith(TOKEN_PROTOCOL_PREFIX):
            return proto[len(TOKEN_PROTOCOL_PREFIX) :]
    return ""


def origin_allowed(request: web.Request) -> bool:
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        # Only browsers send Origin, and only browsers can be tricked into cross-site requests.
        return True
    server = request.app[CONFIG].server
    if origin in server.allowed_origins:
        return True
    # With public_origins set the Host header is not believed: a rebound DNS name would make
    # the attacker's page's origin and the Host it sends agree.
    if server.public_origins:
        return origin in server.public_origins
    return origin == f"{request.scheme}://{request.host}"


async def websockify(request: web.Request) -> web.StreamResponse:
    # Checked before the upgrade: a page on another site must not borrow the user's ticket.
    if not origin_allowed(request):
        log.warning("refused WebSocket from origin %s", request.headers.get(hdrs.ORIGIN))
        raise ApiError(403, "ORIGIN.FORBIDDEN", "This page's origin may not open consoles here.")
    negotiated, protocols = for_negotiation(request)
    ws = web.WebSocketResponse(
        protocols=protocols,
        compress=False,  # console payloads are already compressed; deflate costs 30x throughput
        # aiohttp refuses a message of max_msg_size bytes; ours may be max_frame_size long.
        max_msg_size=request.app[CONFIG].limits.max_frame_size + 1,
        heartbeat=HEARTBEAT,
        timeout=5.0,
    )
    if not ws.can_prepare(negotiated).ok:
        raise ApiError(
            400, "REQUEST.NOT_WEBSOCKET", "This endpoint only accepts WebSocket upgrades."
        )
    await ws.prepare(negotiated)
    await request.app[SESSIONS].serve(ws, token_from(request), request.remote or "")
    return ws
