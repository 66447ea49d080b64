"""Console tickets: what a token admits, and where minted tickets are kept until redeemed.

A minted ticket is single-use: :meth:`TicketStore.redeem` hands it out once and forgets it.
Stores are pluggable (aiohttp-session style): the memory store lives here, others in their own
modules.
"""

from __future__ import annotations

import abc
import asyncio
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace

# 32 random bytes, base64url: 256 bits, well over the 128 the design asks for.
TOKEN_BYTES = 32
# Minted tokens are 43 characters, signed ones a few hundred; static token files (websockify,
# ZStack's agent) use names like "<sessionUuid>_<vmUuid>". Anything else is refused unread.
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,2048}")


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def is_well_formed(token: str) -> bool:
    return TOKEN_PATTERN.fullmatch(token) is not None


@dataclass(frozen=True)
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


class TicketStoreUnavailable(Exception):
    """The ticket store cannot be reached or refused the command; the caller should answer 503."""

    code = "TICKETS.UNAVAILABLE"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __repr__(self) -> str:
        return f"TicketStoreUnavailable(code={self.code!r}, reason={self.reason!r})"


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

    async def check_reachable(self) -> None:  # noqa: B027 - optional hook
        """Raise when the store cannot be reached (for /readyz); memory always can."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the memory store has none."""


class MemoryTicketStore(TicketStore):
    """Tickets of one process, bounded in number, expired lazily and on every put."""

    def __init__(self, max_tickets: int = 100_000) -> None:
        self._tickets: OrderedDict[str, Ticket] = OrderedDict()
        self._used: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._max_tickets = max_tickets
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._tickets)

    async def put(self, token: str, ticket: Ticket) -> None:
        async with self._lock:
            self._drop_expired()
            if len(self._tickets) >= self._max_tickets:
                raise TicketStoreFull
            self._tickets[token] = ticket

    async def redeem(self, token: str) -> Ticket | None:
        now = time.time()
        async with self._lock:
            ticket = self._tickets.pop(token, None)
            if ticket is None or ticket.expired(now):
                return None
            if (rest := ticket.after_use(now)) is not None:
                self._tickets[token] = rest
        return ticket

    async def count_use(self, ticket_id: str, ttl: float) -> int:
        now = time.time()
        async with self._lock:
            while self._used and next(iter(self._used.values()))[1] <= now:
                self._used.popitem(last=False)
            uses, until = self._used.get(ticket_id, (0, now + ttl))
            if not uses and len(self._used) >= self._max_tickets:
                raise TicketStoreFull
            self._used[ticket_id] = (uses + 1, until)
        return uses + 1

    def _drop_expired(self) -> None:
        # Tickets are kept in minting order and all share one TTL, so the expired ones are
        # at the front: stop at the first live one.
        now = time.time()
        while self._tickets:
            token, ticket = next(iter(self._tickets.items()))
            if not ticket.expired(now):
                break
            del self._tickets[token]
