"""Who is asking for the admin endpoints: an operator's sealed session cookie, or the bearer
``[server] admin_token``.

The cookie holds the account name and an expiry, sealed with AES-GCM under ``[operator]
cookie_key``: nothing in it can be read or changed without the key, and no server-side session
table exists (any instance with the same key accepts it). State-changing requests made with the
cookie must come from the proxy's own origin (or ``allowed_origins``); SameSite=Strict already
keeps other sites' requests from carrying it.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from aiohttp import hdrs, web

from proxy.web.errors import ApiError
from proxy.web.keys import CONFIG, OPERATOR_COOKIES
from proxy.web.websocket import origin_allowed

COOKIE = "console_proxy_operator"
TOKEN_IDENTITY = "admin-token"


@dataclass(frozen=True)
class Operator:
    account: str
    # True when the cookie signed the request in (then state changes check the Origin).
    by_cookie: bool


def set_cookie(request: web.Request, response: web.StreamResponse, account: str) -> None:
    sealer = request.app[OPERATOR_COOKIES]
    response.set_cookie(
        COOKIE,
        sealer.seal(account),
        max_age=int(sealer.ttl),
        path=cookie_path(request),
        secure=request.scheme == "https",
        httponly=True,
        samesite="Strict",
    )


def clear_cookie(request: web.Request, response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path=cookie_path(request))


def cookie_path(request: web.Request) -> str:
    return request.app[CONFIG].server.base_path + "/"


def signed_in(request: web.Request) -> str | None:
    """The operator account of a valid session cookie that is still listed; else None."""
    value = request.cookies.get(COOKIE)
    if not value:
        return None
    account = request.app[OPERATOR_COOKIES].open(value)
    # Taking an account off the list ends its sessions at once.
    return account if account in request.app[CONFIG].operator.accounts else None


def require_operator(request: web.Request) -> Operator:
    """The bearer admin token or an operator's cookie; state changes by cookie check Origin."""
    if request.headers.get(hdrs.AUTHORIZATION):
        return Operator(_bearer(request), by_cookie=False)
    account = signed_in(request)
    if account is None:
        raise ApiError(
            401,
            "ADMIN.UNAUTHORIZED",
            "Sign in at operator/ or send 'Authorization: Bearer <admin token>'.",
        )
    if request.method not in ("GET", "HEAD") and not same_origin(request):
        raise ApiError(403, "ORIGIN.FORBIDDEN", "This page's origin may not act for operators.")
    return Operator(account, by_cookie=True)


def same_origin(request: web.Request) -> bool:
    """A state-changing request comes from our own pages (or allowed_origins), not another site."""
    site = request.headers.get("Sec-Fetch-Site")
    if site == "same-origin":
        return True
    if site == "cross-site":
        return False
    return origin_allowed(request)


def _bearer(request: web.Request) -> str:
    expected = request.app[CONFIG].server.admin_token
    scheme, _, given = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    if not expected:
        raise ApiError(404, "ADMIN.DISABLED", "Admin endpoints are off (set server.admin_token).")
    if scheme != "Bearer" or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(401, "ADMIN.UNAUTHORIZED", "Send 'Authorization: Bearer <admin token>'.")
    return TOKEN_IDENTITY
