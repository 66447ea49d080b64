"""Connections before they are requests: what aiohttp has no option for.

- A connection that has not sent a complete request head within ``[limits] header_timeout`` is
  closed: that is aiohttp's ``keepalive_timeout``, which also runs from the moment a connection
  is accepted (see :func:`runner_options`).
- An address may hold at most ``[limits] max_pending_per_address`` connections that have not
  yet sent their first request head (silent or slow sockets); trusted reverse proxies, which
  carry everyone's connections, are exempt.
- aiohttp answers requests it cannot parse (a malformed request line, a bad header) itself,
  before any middleware or signal runs, with a text body that quotes the bad line (which may
  hold ``?token=``). Those answers get our JSON error and the security headers instead.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ipaddress
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestHandler

from proxy.config import Config
from proxy.web.middlewares import add_security_headers

log = logging.getLogger(__name__)

# aiohttp's stand-in method for a request it could not parse (web_protocol.ERROR).
UNPARSED_METHOD = "UNKNOWN"


def runner_options(config: Config) -> dict[str, Any]:
    """AppRunner keyword arguments for the limits aiohttp enforces itself."""
    # keepalive_timeout starts when a connection is accepted and again after every answer, and
    # closes the connection if no complete request head has arrived by then: a silent or
    # slow-header socket, or an idle keep-alive one, lives at most header_timeout.
    return {"keepalive_timeout": config.limits.header_timeout}


class SecuredRequest(web.Request):
    """Adds the security headers to every answer, aiohttp's own error answers included."""

    config: Config  # set on the per-runner subclass made by secured_request_class

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        await super()._prepare_hook(response)
        if isinstance(response, web.WebSocketResponse):
            return
        if self.method == UNPARSED_METHOD and isinstance(response, web.Response):
            _replace_error_body(response)
        add_security_headers(response, self.config)


def secured_request_class(config: Config) -> type[SecuredRequest]:
    return type("SecuredRequest", (SecuredRequest,), {"config": config})


def _replace_error_body(response: web.Response) -> None:
    # aiohttp's text quotes the unparsable request line; the answer says what went wrong only.
    status = response.status
    description = (
        "The request could not be parsed." if status < 500 else "The console proxy failed."
    )
    error = {"code": f"HTTP.{status}", "description": description, "details": ""}
    body = json.dumps({"error": error}).encode()
    response.body = body
    response.headers[hdrs.CONTENT_TYPE] = "application/json; charset=utf-8"
    response.headers[hdrs.CONTENT_LENGTH] = str(len(body))


class GuardedServer(web.Server):
    """aiohttp's connection manager with a cap on pending connections per address."""

    def __init__(
        self, handler: Any, *, config: Config, loop: asyncio.AbstractEventLoop, **kwargs: Any
    ) -> None:
        super().__init__(handler, loop=loop, **kwargs)
        self._config = config
        self._limit = config.limits.max_pending_per_address
        self._exempt = _exempt_networks(config.server.trusted_proxies)
        self._pending: collections.Counter[str] = collections.Counter()
        self._waiting: dict[RequestHandler, str] = {}
        self._requests = self.request_factory
        self.request_factory = self._first_request_settles

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        address = _peer(transport)
        if self._exempt(address):
            return
        if self._pending[address] >= self._limit:
            log.warning("refused a connection from %s: too many pending connections", address)
            transport.close()
            return
        self._pending[address] += 1
        self._waiting[handler] = address

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        self._settle(handler)
        super().connection_lost(handler, exc)

    def _first_request_settles(
        self, message: Any, payload: Any, protocol: RequestHandler, writer: Any, task: Any
    ) -> web.BaseRequest:
        self._settle(protocol)
        return self._requests(message, payload, protocol, writer, task)

    def _settle(self, handler: RequestHandler) -> None:
        address = self._waiting.pop(handler, None)
        if address is not None:
            self._pending[address] -= 1
            if not self._pending[address]:
                del self._pending[address]


class GuardedAppRunner(web.AppRunner):
    """An AppRunner whose connections go through :class:`GuardedServer`."""

    def __init__(self, app: web.Application, config: Config, **kwargs: Any) -> None:
        super().__init__(app, **runner_options(config), **kwargs)
        self._config = config

    async def _make_server(self) -> web.Server:
        loop = asyncio.get_running_loop()
        plain = await super()._make_server()  # starts the application, as AppRunner does
        app = self.app
        request_class = secured_request_class(self._config)

        def make_request(*args: Any) -> web.BaseRequest:
            message, payload, protocol, writer, task = args
            return request_class(
                message, payload, protocol, writer, task, loop,
                client_max_size=app._client_max_size,
            )  # fmt: skip

        # The RequestHandler options aiohttp gathered (access log, timeouts, debug).
        options = dict(plain._kwargs)
        return GuardedServer(
            app._handle, config=self._config, loop=loop, request_factory=make_request, **options
        )


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


def _exempt_networks(cidrs: tuple[str, ...]) -> Callable[[str], bool]:
    networks = [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]

    @functools.lru_cache(maxsize=4096)  # asked on every connection, by few addresses
    def exempt(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return True  # a Unix socket: no address to count by
        return any(ip in network for network in networks)

    return exempt
