"""What workers share through the hub, behind the interfaces the Redis backends have.

:class:`HubTicketStore` is a :class:`TicketStore`, :class:`HubCounts` a
:class:`~proxy.consoles.cluster.SharedCounts`, :class:`HubDirectory` a
:class:`~proxy.consoles.live.ConsoleDirectory`. Unlike the Redis listing, a worker publishes
nothing ahead of time: the hub asks the other workers when an operator lists consoles, so idle
consoles cost no work every half second.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from proxy.consoles.cluster import ClusterUnavailable
from proxy.consoles.limits import RateLimiter, client_key
from proxy.consoles.live import OnClose, RecentListing, summarize, targets
from proxy.consoles.registry import ConsoleRegistry
from proxy.tickets.store import Ticket, TicketStore, TicketStoreUnavailable
from proxy.workers.client import HubClient

log = logging.getLogger(__name__)

OnRevoke = Callable[[str], Awaitable[int]]
# Addresses this worker spent a budget for, remembered (least recently used out first).
MAX_SPENDERS = 100_000


class HubTicketStore(TicketStore):
    def __init__(self, hub: HubClient) -> None:
        self._hub = hub

    async def put(self, token: str, ticket: Ticket) -> None:
        args = {"token": token, "ticket": asdict(ticket)}
        await self._hub.call("ticket.put", args, TicketStoreUnavailable)

    async def redeem(self, token: str) -> Ticket | None:
        fields = await self._hub.call("ticket.redeem", {"token": token}, TicketStoreUnavailable)
        return None if fields is None else Ticket(**fields)

    async def count_use(self, ticket_id: str, ttl: float) -> int:
        args = {"id": ticket_id, "ttl": ttl}
        return int(await self._hub.call("ticket.count_use", args, TicketStoreUnavailable))

    async def check_reachable(self) -> None:
        await self._hub.call("ping", {}, TicketStoreUnavailable)


class HubCounts:
    """Per-VM counts across the workers, and revocation reaching all of them."""

    def __init__(self, hub: HubClient, instance_id: str) -> None:
        self._hub = hub
        self.instance_id = instance_id

    async def claim(self, vm_uuid: str, console_id: str, limit: int) -> bool:
        args = {"vm": vm_uuid, "console": console_id, "limit": limit}
        return bool(await self._hub.call("vm.claim", args))

    async def release(self, vm_uuid: str, console_id: str) -> None:
        # No answer to wait for: the hub takes this worker's messages in order, so a claim sent
        # after this one already sees the slot free.
        self._hub.tell("vm.release", {"vm": vm_uuid, "console": console_id})

    async def refresh(self, consoles: object) -> None:
        """Nothing to do: the hub drops a worker's counts when its connection ends."""

    async def publish_revoke(self, vm_uuid: str) -> int:
        return int(await self._hub.call("broadcast", {"kind": "revoke", "body": vm_uuid}))

    async def listen_for_revocations(self, on_revoke: OnRevoke) -> None:
        async def revoke(body: Any) -> None:
            await on_revoke(str(body))

        self._hub.on("revoke", revoke)
        await asyncio.Event().wait()  # like Redis' listener: runs until cancelled


class HubDirectory:
    """The other workers' consoles, asked for when needed; this worker answers for its own."""

    def __init__(self, hub: HubClient, registry: ConsoleRegistry, instance: str) -> None:
        self._hub = hub
        self._registry = registry
        self._instance = instance
        self._cached = RecentListing()
        hub.on("consoles", self._our_consoles)
        hub.on("target", self._our_target)

    async def others(self) -> list[dict[str, Any]]:
        answers = await self._hub.call("ask", {"kind": "consoles"})
        return [dict(c) for answer in answers or () for c in answer or () if isinstance(c, dict)]

    async def others_cached(self, max_age: float = 0.5) -> list[dict[str, Any]]:
        return await self._cached.get(self.others, max_age)

    async def target(self, console_id: str) -> Ticket | None:
        answers = await self._hub.call("ask", {"kind": "target", "body": console_id})
        for fields in answers or ():
            if isinstance(fields, dict):
                return Ticket(**fields)
        return None

    async def publish_close(self, console_id: str) -> int:
        return int(await self._hub.call("broadcast", {"kind": "close", "body": console_id}))

    async def listen_for_closes(self, on_close: OnClose) -> None:
        async def close(body: Any) -> None:
            await on_close(str(body))

        self._hub.on("close", close)
        await asyncio.Event().wait()

    async def _our_consoles(self, _body: Any) -> list[dict[str, Any]]:
        loop_now = asyncio.get_running_loop().time()
        return [s.to_json() for s in summarize(self._registry, self._instance, loop_now)]

    async def _our_target(self, body: Any) -> dict[str, Any] | None:
        ticket = targets(self._registry).get(str(body))
        return None if ticket is None else asdict(ticket)


class HubBudget:
    """A per-address budget shared by the workers: the hub keeps the buckets.

    Spending asks the hub. Checking whether an address is exhausted asks it only for addresses
    that spent from this budget on this worker: every console setup checks the failures' budget,
    and a round trip for each would slow them all. An address that guesses on other workers
    spends here too before long (the kernel spreads its connections), so it can gain at most one
    attempt per worker. When the hub cannot answer, this worker's own bucket decides.
    """

    def __init__(self, hub: HubClient, name: str, per_minute: float, burst: int) -> None:
        self._hub = hub
        self._settings = {"name": name, "per_minute": per_minute, "burst": burst}
        self._own = RateLimiter(per_minute, burst)
        self._spent_here: OrderedDict[str, None] = OrderedDict()
        self._failing = False

    async def spend(self, key: str) -> bool:
        client = client_key(key)
        self._spent_here[client] = None
        self._spent_here.move_to_end(client)
        if len(self._spent_here) > MAX_SPENDERS:
            self._spent_here.popitem(last=False)
        return await self._ask("budget.spend", key, self._own.allow)

    async def exhausted(self, key: str) -> bool:
        if client_key(key) not in self._spent_here:
            return False
        return await self._ask("budget.exhausted", key, self._own.exhausted)

    async def _ask(self, op: str, key: str, own: Callable[[str], bool]) -> bool:
        try:
            answer = bool(await self._hub.call(op, {**self._settings, "key": key}))
        except ClusterUnavailable as exc:
            if not self._failing:
                log.warning(
                    "budget %s falls back to this worker's: %s", self._settings["name"], exc.reason
                )
            self._failing = True
            return own(key)
        self._failing = False
        return answer
