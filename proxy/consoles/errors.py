"""What minting a console can fail with, in the proxy's own terms; ``web/`` maps each kind to an
HTTP status. ``code`` is stable (clients match on it) and ``description`` is a sentence a person
understands; neither ever holds a token, a password or a session."""

from __future__ import annotations


class ConsoleError(Exception):
    def __init__(self, code: str, description: str, details: str = "") -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.details = details

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.description!r})"


class InvalidRequest(ConsoleError):
    """The caller asked for something malformed."""


class TargetForbidden(ConsoleError):
    """The VM's console address is outside ``[targets] allow``."""


class Unavailable(ConsoleError):
    """The VM has no console of the kind asked for, or not in a way this proxy can reach."""


class BadUpstream(ConsoleError):
    """ZStack's answer lacks what a console needs."""


class TicketsFull(ConsoleError):
    """Too many unused tickets are held right now."""
