"""The application factory: ``create_app(config)`` builds everything, tests included."""

from __future__ import annotations

import logging
import mimetypes
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import aiohttp_jinja2
import jinja2
from aiohttp import WSCloseCode, web

from proxy import views
from proxy.closecodes import Close
from proxy.config import Config
from proxy.consoles import ConsoleService
from proxy.errors import ApiError
from proxy.keys import CONFIG, CONSOLES, OPEN_SOCKETS, ZSTACK
from proxy.static_tokens import StaticTokens
from proxy.targets import TargetPolicy
from proxy.tickets import MemoryTicketStore
from proxy.zstack import ZStackClient

log = logging.getLogger(__name__)

# ES modules must be served as JavaScript; Python 3.11's table says application/javascript.
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/javascript", ".mjs")

REPO_ROOT = Path(__file__).resolve().parent.parent
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def assets_dir(config: Config) -> Path:
    return Path(config.server.assets_dir) if config.server.assets_dir else REPO_ROOT


def create_app(config: Config) -> web.Application:
    # Outermost first: security headers also go on the JSON errors made below them.
    app = web.Application(
        middlewares=[security_headers, error_middleware], client_max_size=64 * 1024
    )
    app[CONFIG] = config
    app[OPEN_SOCKETS] = weakref.WeakSet()
    root = assets_dir(config)
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(root / "templates"), autoescape=True)
    app.cleanup_ctx.append(zstack_client)
    app.on_shutdown.append(close_open_sockets)
    add_routes(app, config.server.base_path, root)
    return app


def add_routes(app: web.Application, base: str, root: Path) -> None:
    app.router.add_post(f"{base}/api/v1/consoles", views.mint_console)
    app.router.add_get(f"{base}/websockify", views.websockify)
    app.router.add_get(f"{base}/console/vnc", views.vnc_page)
    app.router.add_get(f"{base}/healthz", views.healthz)
    app.router.add_get(f"{base}/readyz", views.readyz)
    novnc = root / "static" / "node_modules" / "@novnc" / "novnc"
    if novnc.is_dir():
        app.router.add_static(f"{base}/static/novnc", novnc)
    app.router.add_static(f"{base}/static", root / "static")


async def zstack_client(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    async with aiohttp.ClientSession() as http:
        app[ZSTACK] = ZStackClient(http, config.zstack.url, config.zstack.timeout)
        app[CONSOLES] = ConsoleService(
            app[ZSTACK],
            MemoryTicketStore(config.tickets.max_tickets),
            TargetPolicy.parse(config.targets.allow),
            config.tickets.ttl,
            static_tokens(config),
        )
        yield
        await app[CONSOLES].store.close()


def static_tokens(config: Config) -> StaticTokens | None:
    tickets = config.tickets
    if tickets.token_file:
        return StaticTokens.load("TokenFile", tickets.token_file)
    if tickets.token_plugin:
        return StaticTokens.load(tickets.token_plugin, tickets.token_source)
    return None


async def close_open_sockets(app: web.Application) -> None:
    sockets = app[OPEN_SOCKETS]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=Close.GOING_AWAY.reason.encode())


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
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
