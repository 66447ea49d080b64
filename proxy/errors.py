"""The base of the proxy's own exceptions that carry a reason fit to show a user."""

from __future__ import annotations


class ReasonError(Exception):
    """``reason`` is a sentence a person understands; it never holds a secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r})"
