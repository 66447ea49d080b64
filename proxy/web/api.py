"""POST <base>/api/v1/consoles: a portal holding a ZStack session asks for a console ticket."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import hdrs, web

from proxy import i18n, safejson
from proxy.consoles.service import PROTOCOLS, normalize_vm_uuid
from proxy.tickets.store import StoreUnavailable, Ticket
from proxy.web.errors import ApiError
from proxy.web.keys import CONFIG, CONSOLES, METRICS, RATE_LIMITER
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
        body = safejson.loads(await request.read())
    except ValueError:  # malformed, not UTF-8, or nested deeper than any request needs
        raise ApiError(
            400, "REQUEST.INVALID_JSON", "The request body must be a JSON object."
        ) from None
    if not isinstance(body, dict):
        raise ApiError(400, "REQUEST.INVALID_JSON", "The request body must be a JSON object.")
    return body


def base_url(request: web.Request) -> str:
    server = request.app[CONFIG].server
    if server.public_origins:  # then the Host header is not believed
        return f"{server.public_origins[0]}{server.base_path}"
    return f"{request.scheme}://{request.host}{server.base_path}"


async def mint_console(request: web.Request) -> web.Response:
    if not await request.app[RATE_LIMITER].spend(request.remote or ""):
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
    view_only = body.get("viewOnly", False)
    if not isinstance(view_only, bool):
        raise ApiError(400, "REQUEST.INVALID_VIEW_ONLY", "viewOnly must be true or false.")
    language = body_language(body)
    try:
        token, ticket = await request.app[CONSOLES].mint(session, vm_uuid, protocol, view_only)
    except ZStackError as exc:
        request.app[METRICS].zstack_errors.labels(exc.code).inc()
        raise ApiError(exc.status, exc.code, exc.description, exc.details) from None
    except StoreUnavailable as exc:
        log.error("ticket store unavailable: %s", exc.reason)
        raise ApiError(
            503, exc.code, "The proxy cannot store console tickets right now; try again shortly."
        ) from None
    answer = ticket_answer(request, token, ticket, language)
    request.app[METRICS].mints.labels(ticket.protocol).inc()
    log.info("minted %s console for VM %s", ticket.protocol, vm_uuid)
    return web.json_response(answer, status=201)


def body_language(body: dict[str, Any]) -> str | None:
    """The mint's optional ``language``: one of the page's languages (proxy/languages/)."""
    if "language" not in body or body["language"] is None:
        return None
    language = i18n.canonical(body["language"])
    if language is None:
        raise ApiError(
            400,
            "REQUEST.INVALID_LANGUAGE",
            "language must be one of: " + ", ".join(i18n.available()) + ".",
        )
    return language


def ticket_answer(
    request: web.Request, token: str, ticket: Ticket, language: str | None = None
) -> dict[str, Any]:
    """The JSON a new ticket is handed out with (also for an operator's watch)."""
    expires = datetime.fromtimestamp(ticket.expires_at, UTC).isoformat(timespec="seconds")
    # The page learns view-only from the fragment (to hide its controls); the proxy enforces it.
    view = "&view_only=1" if ticket.view_only else ""
    # The page speaks the portal's language rather than guessing from the browser's.
    lang = f"&lang={language}" if language else ""
    return {
        "token": token,
        "consoleUrl": f"{base_url(request)}/console/{ticket.protocol}#token={token}{view}{lang}",
        "protocol": ticket.protocol,
        "expiresAt": expires.replace("+00:00", "Z"),
    }
