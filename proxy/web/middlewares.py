"""Middlewares: domain errors become JSON answers, and every page carries security headers."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.config import Config
from proxy.consoles.errors import ConsoleError
from proxy.web.errors import ApiError
from proxy.web.keys import CONFIG

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# An answer given before the body was read (401, 429, 413...) discards at most this much of it,
# for at most this long; a longer or slower body closes the connection instead.
DISCARD_LIMIT = 64 * 1024
DISCARD_TIMEOUT = 1.0


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
    except ConnectionError:
        # The client went away (a browser closing mid-answer): nobody to answer, nothing wrong.
        raise
    except Exception as exc:  # last resort: a JSON 500 (with security headers), one log line
        log.error(
            "unhandled %s in %s %s at %s", type(exc).__name__, request.method, request.path,
            _where(exc),
        )  # fmt: skip
        return ApiError(
            500, "INTERNAL", "The console proxy ran into an internal error; try again."
        ).response()


def _where(exc: BaseException) -> str:
    """file:line of the innermost frame: enough to find the bug, never the exception's text
    (which may quote a request body or a token)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


@web.middleware
async def settle_request_body(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A connection must not be reused while part of a request body is unread: a reverse proxy
    that reuses it (HAProxy with an h2 frontend) would have the next user's request read as the
    rest of that body. An early answer (401, 429, 413...) discards the rest of a small body, and
    closes the connection after a large or slow one."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        await _settle(request, exc)
        raise
    await _settle(request, response)
    return response


async def _settle(request: web.Request, response: web.StreamResponse) -> None:
    if isinstance(response, web.WebSocketResponse) or not request.body_exists:
        return
    content = request.content
    discarded = 0
    try:
        async with asyncio.timeout(DISCARD_TIMEOUT):
            while not content.is_eof() and discarded <= DISCARD_LIMIT:
                discarded += len(await content.readany())
    except (TimeoutError, ConnectionError):
        pass
    if content.is_eof():
        return
    # Answer now and close: aiohttp would otherwise keep reading the rest (up to its 10 s
    # lingering time) before it lets the connection go.
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    if request.transport is not None:
        request.transport.close()


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
    add_security_headers(response, request.app[CONFIG])
    return response


def add_security_headers(response: web.StreamResponse, config: Config) -> None:
    response.headers.setdefault("Content-Security-Policy", content_security_policy(config))
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")


async def javascript_type(request: web.Request, response: web.StreamResponse) -> None:
    """Serve scripts as ``text/javascript`` (RFC 9239), which ES modules need in strict
    browsers; aiohttp's static files use their own type table, which says
    application/javascript."""
    if isinstance(response, web.FileResponse) and request.path.endswith((".js", ".mjs")):
        response.content_type = "text/javascript"


def upgrade_fast_path(
    rewrite: Callable[[web.Request], web.Request], upgrade: Handler
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The outermost middleware: a console's upgrade skips the rest of the chain.

    A WebSocket console runs inside its request's handler for hours, and every middleware
    around it keeps a coroutine frame alive that long (some 250 bytes each, per console). An
    upgrade (``upgrade``'s route, no body to settle) gets what of the chain applies to it: the
    forwarded headers, the JSON errors, security headers on an error answer.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.handler is not upgrade or request.body_exists:
            return await handler(request)
        response = await error_middleware(rewrite(request), upgrade)
        if not isinstance(response, web.WebSocketResponse):
            add_security_headers(response, request.app[CONFIG])
        return response

    return middleware
