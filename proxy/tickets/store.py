"""Console tickets: what a token admits, and the interface of the stores that keep them.

A VNC ticket admits one WebSocket; a SPICE ticket admits ``uses`` sockets (one per channel)
within ``window`` seconds of the first. :meth:`TicketStore.redeem` takes one use atomically and
forgets the ticket once nothing remains. Stores are pluggable (aiohttp-session style), one module
per backend: ``memory``, ``redis_store``; ``signed`` needs no store but for counting uses, and
``static`` reads websockify token files and plugins.
"""

from __future__ import annotations

import abc
import re
import secrets
import time
from dataclasses import dataclass, field, replace

from proxy.errors import ReasonError

# 32 random bytes, base64url: 256 bits, well over the 128 the design asks for.
TOKEN_BYTES = 32
# Minted tokens are 43 characters, signed ones a few hundred; static token files (websockify,
# ZStack's agent) use names like "<sessionUuid>_<vmUuid>". Anything else is refused unread.
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,2048}")


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def is_well_formed(token: str) -> bool:
    return TOKEN_PATTERN.fullmatch(token) is not None


@dataclass(frozen=True, slots=True)
class Ticket:
    """What a token lets its holder reach. ``password`` never leaves the proxy."""

    vm_uuid: str
    host: str
    port: int
    protocol: str
    expires_at: float
    password: str | None = field(default=None, repr=False)
    # SPICE opens one socket per channel: such a ticket admits ``uses`` sockets, all within
    # ``window`` seconds of the first.
    uses: int = 1
    window: float = 0.0
    # Dial with TLS (SPICE's TLS port).
    tls: bool = False
    # The ZStack account that minted it (for the audit); empty for static tokens.
    account_uuid: str = ""
    account_name: str = ""
    # The proxy forwards none of the browser's keyboard, mouse or clipboard input.
    view_only: bool = False

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at

    def after_use(self, now: float) -> Ticket | None:
        """What remains of this ticket once one socket used it; None when nothing does."""
        if self.uses <= 1:
            return None
        deadline = min(self.expires_at, now + self.window) if self.window else self.expires_at
        return replace(self, uses=self.uses - 1, expires_at=deadline, window=0.0)


class TicketStoreFull(Exception):
    """The store holds its maximum number of live tickets."""


class StoreUnavailable(ReasonError):
    """Shared state (Redis) cannot be reached or refused the command: answer 503 / close 4503."""

    code = "TICKETS.UNAVAILABLE"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, reason={self.reason!r})"


class TicketStoreUnavailable(StoreUnavailable):
    """The ticket store in particular is unavailable."""


class TicketStore(abc.ABC):
    @abc.abstractmethod
    async def put(self, token: str, ticket: Ticket) -> None:
        """Keep ``ticket`` under ``token`` until it is redeemed or expires."""

    @abc.abstractmethod
    async def redeem(self, token: str) -> Ticket | None:
        """Use the ticket once, atomically (see :meth:`Ticket.after_use`); None if unknown,
        used up or expired."""

    @abc.abstractmethod
    async def count_use(self, ticket_id: str, ttl: float) -> int:
        """Count one use of a signed ticket's id (kept ``ttl`` seconds); return the uses so far."""

    async def check_reachable(self) -> None:
        """Raise when the store cannot be reached (for /readyz); memory always can."""
        return None

    async def close(self) -> None:
        """Release connections; the memory store has none."""
        return None
