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
from dataclasses import dataclass, field

# 32 random bytes, base64url: 256 bits, well over the 128 the design asks for.
TOKEN_BYTES = 32
# Minted tokens are 43 characters; static token files (websockify, ZStack's agent) use
# names like "<sessionUuid>_<vmUuid>". Anything else is refused before any look-up.
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,200}")


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

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at


class TicketStoreFull(Exception):
    """The store holds its maximum number of live tickets."""


class TicketStore(abc.ABC):
    @abc.abstractmethod
    async def put(self, token: str, ticket: Ticket) -> None:
        """Keep ``ticket`` under ``token`` until it is redeemed or expires."""

    @abc.abstractmethod
    async def redeem(self, token: str) -> Ticket | None:
        """Return the ticket and forget it, atomically; None if unknown, used or expired."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the memory store has none."""


class MemoryTicketStore(TicketStore):
    """Tickets of one process, bounded in number, expired lazily and on every put."""

    def __init__(self, max_tickets: int = 100_000) -> None:
        self._tickets: OrderedDict[str, Ticket] = OrderedDict()
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
        async with self._lock:
            ticket = self._tickets.pop(token, None)
        if ticket is None or ticket.expired():
            return None
        return ticket

    def _drop_expired(self) -> None:
        # Tickets are kept in minting order and all share one TTL, so the expired ones are
        # at the front: stop at the first live one.
        now = time.time()
        while self._tickets:
            token, ticket = next(iter(self._tickets.items()))
            if not ticket.expired(now):
                break
            del self._tickets[token]
