"""Tickets kept in this process: the default store for a single instance."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from proxy.tickets.store import Ticket, TicketStore, TicketStoreFull


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
