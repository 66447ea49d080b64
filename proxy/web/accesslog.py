"""An access log that never writes a query string: tickets may travel in ``?token=``."""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger


class RedactingAccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        query = "?…" if request.query_string else ""
        self.logger.info(
            '%s "%s %s%s" %s %s %.1fms',
            request.remote,
            request.method,
            request.path,
            query,
            response.status,
            response.body_length,
            time * 1000,
        )
