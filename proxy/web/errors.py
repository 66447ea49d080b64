"""The JSON error every HTTP endpoint answers: ``{"error": {"code", "description", "details"}}``."""

from __future__ import annotations

from aiohttp import web


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

    def response(self) -> web.Response:
        body = {
            "error": {"code": self.code, "description": self.description, "details": self.details}
        }
        return web.json_response(body, status=self.status)
