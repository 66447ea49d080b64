"""Tickets and the memory store: single use, expiry, bound."""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy.tickets.memory import MemoryTicketStore
from proxy.tickets.store import Ticket, TicketStoreFull, is_well_formed, new_token


def ticket(ttl: float = 30.0, password: str | None = None) -> Ticket:
    return Ticket("vm", "127.0.0.1", 5900, "vnc", time.time() + ttl, password)


def test_tokens_are_long_random_and_well_formed() -> None:
    tokens = {new_token() for _ in range(1000)}
    assert len(tokens) == 1000
    assert all(len(t) >= 43 and is_well_formed(t) for t in tokens)


def test_password_never_in_repr() -> None:
    assert "hunter2" not in repr(ticket(password="hunter2"))


async def test_redeem_is_single_use_even_when_concurrent() -> None:
    store = MemoryTicketStore()
    await store.put("t", ticket())
    results = await asyncio.gather(*(store.redeem("t") for _ in range(10)))
    assert sum(r is not None for r in results) == 1


async def test_expired_ticket_is_not_redeemed_and_is_dropped() -> None:
    store = MemoryTicketStore()
    await store.put("old", ticket(ttl=-1))
    assert await store.redeem("old") is None
    await store.put("old2", ticket(ttl=-1))
    await store.put("new", ticket())
    assert len(store) == 1


async def test_store_is_bounded() -> None:
    store = MemoryTicketStore(max_tickets=2)
    await store.put("a", ticket())
    await store.put("b", ticket())
    with pytest.raises(TicketStoreFull):
        await store.put("c", ticket())
