"""Middlewares: domain errors become JSON answers, and every page carries security headers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.config import Config
from proxy.consoles.errors import ConsoleError
from proxy.web.errors import ApiError
from proxy.web.keys import CONFIG

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except ConsoleError as exc:
        return ApiError.from_console_error(exc).response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return ApiError(exc.status, f"HTTP.{exc.status}", exc.reason).response()


def content_security_policy(config: Config) -> str:
    ancestors = " ".join(config.server.frame_ancestors) or "'none'"
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        f"connect-src 'self'; frame-ancestors {ancestors}; base-uri 'none'; form-action 'self'"
    )


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if isinstance(response, web.WebSocketResponse):
        return response
    response.headers.setdefault(
        "Content-Security-Policy", content_security_policy(request.app[CONFIG])
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


async def javascript_type(request: web.Request, response: web.StreamResponse) -> None:
    """Serve scripts as ``text/javascript`` (RFC 9239), which ES modules need in strict
    browsers; aiohttp's static files use their own type table, which says
    application/javascript."""
    if isinstance(response, web.FileResponse) and request.path.endswith((".js", ".mjs")):
        response.content_type = "text/javascript"
