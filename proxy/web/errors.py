"""The JSON error every HTTP endpoint answers: ``{"error": {"code", "description", "details"}}``,
and the mapping from the lower layers' errors to HTTP statuses (the only place that knows them).
"""

from __future__ import annotations

from aiohttp import web

from proxy.consoles.errors import (
    BadUpstream,
    ConsoleError,
    InvalidRequest,
    TargetForbidden,
    TicketsFull,
    Unavailable,
)

STATUS_BY_KIND: dict[type[ConsoleError], int] = {
    InvalidRequest: 400,
    TargetForbidden: 403,
    Unavailable: 409,
    BadUpstream: 502,
    TicketsFull: 503,
}


class ApiError(Exception):
    """A failure with the HTTP status, a stable code and a sentence a person understands."""

    def __init__(self, status: int, code: str, description: str, details: str = "") -> None:
        super().__init__(f"{code}: {description}")
        self.status = status
        self.code = code
        self.description = description
        self.details = details

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.code!r}, {self.description!r})"

    @classmethod
    def from_console_error(cls, exc: ConsoleError) -> ApiError:
        return cls(STATUS_BY_KIND[type(exc)], exc.code, exc.description, exc.details)

    def response(self) -> web.Response:
        body = {
            "error": {"code": self.code, "description": self.description, "details": self.details}
        }
        return web.json_response(body, status=self.status)
