"""State shared by every instance through Redis: per-VM console counts and revocation.

Counts: each VM has a sorted set of ``<instance>:<console>`` members scored by a lease expiry.
An instance refreshes its members' leases while their consoles are open, so the members of an
instance that died (SIGKILL, power loss) fall out after one lease. A Lua script counts live
members and adds one only below the limit, atomically across instances.

Revocation: a message on one channel; every instance closes its consoles of that VM.

With Redis Sentinel the client follows the promoted primary (see
:mod:`proxy.tickets.redis_client`); the subscription is made again on it, retried at most
``resubscribe_within`` seconds apart, so a failover of a few seconds costs about that much.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from proxy.tickets.redis_client import redis_call
from proxy.tickets.store import StoreUnavailable, TicketStoreFull

log = logging.getLogger(__name__)

LEASE = 60.0
REFRESH_EVERY = 20.0

# A member already counted (another channel socket of the same SPICE console) only renews.
CLAIM_SCRIPT = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local counted = redis.call('ZSCORE', KEYS[1], ARGV[4])
if not counted and redis.call('ZCOUNT', KEYS[1], now, '+inf') >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[4])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 5)
return 1
"""

OnRevoke = Callable[[str], Awaitable[int]]


class ClusterUnavailable(StoreUnavailable):
    """The shared per-VM counts or the revocation channel (Redis) cannot be used."""


class SharedCounts(Protocol):
    """Per-VM console counts and revocation shared by instances (Redis) or workers (the hub)."""

    instance_id: str

    async def claim(self, vm_uuid: str, console_id: str, limit: int) -> bool: ...

    async def release(self, vm_uuid: str, console_id: str) -> None: ...

    async def refresh(self, consoles: Iterable[tuple[str, str]]) -> None: ...

    async def publish_revoke(self, vm_uuid: str) -> int: ...

    async def listen_for_revocations(self, on_revoke: OnRevoke) -> None: ...


class ClusterState:
    def __init__(
        self, redis: Redis, prefix: str, timeout: float = 2.0, resubscribe_within: float = 10.0
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._timeout = timeout
        self._resubscribe_within = resubscribe_within
        self.instance_id = secrets.token_hex(6)
        self._claim = redis.register_script(CLAIM_SCRIPT)
        self._channel = f"{prefix}revoke"

    def _vm_key(self, vm_uuid: str) -> str:
        return f"{self._prefix}vm:{vm_uuid}"

    def _member(self, console_id: str) -> str:
        return f"{self.instance_id}:{console_id}"

    async def claim(self, vm_uuid: str, console_id: str, limit: int) -> bool:
        """Count a console of the VM cluster-wide; False when the VM already has ``limit``."""
        args: list[str | float] = [time.time(), limit, LEASE, self._member(console_id)]
        return bool(
            await self._call("EVALSHA", self._claim(keys=[self._vm_key(vm_uuid)], args=args))
        )

    async def release(self, vm_uuid: str, console_id: str) -> None:
        with contextlib.suppress(ClusterUnavailable):  # the lease expires it anyway
            await self._call(
                "ZREM", self._redis.zrem(self._vm_key(vm_uuid), self._member(console_id))
            )

    async def refresh(self, consoles: Iterable[tuple[str, str]]) -> None:
        """Extend the leases of this instance's open consoles, given as (vm, console id)."""
        until = time.time() + LEASE
        async with self._redis.pipeline(transaction=False) as pipe:
            for vm_uuid, console_id in consoles:
                pipe.zadd(self._vm_key(vm_uuid), {self._member(console_id): until}, xx=True)
                pipe.expire(self._vm_key(vm_uuid), int(LEASE) + 5)
            await self._call("ZADD", pipe.execute())

    async def publish_revoke(self, vm_uuid: str) -> int:
        """Tell every instance; return how many were listening (this one included)."""
        message = json.dumps({"vm": vm_uuid, "from": self.instance_id})
        return int(await self._call("PUBLISH", self._redis.publish(self._channel, message)))

    async def listen_for_revocations(self, on_revoke: OnRevoke) -> None:
        """Run until cancelled; resubscribe with backoff whenever Redis goes away."""
        backoff = _Backoff(self._resubscribe_within)
        while True:
            try:
                await self._listen(on_revoke, backoff)
            except (RedisError, OSError) as exc:
                delay = backoff.next()
                log.warning("revocation channel lost (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)

    async def _listen(self, on_revoke: OnRevoke, backoff: _Backoff) -> None:
        async with self._redis.pubsub() as pubsub:
            await pubsub.subscribe(self._channel)
            # Subscribed: a later outage starts from the shortest wait again, not where the
            # last one left off (revocations published meanwhile are lost).
            backoff.reset()
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    await self._on_message(message, on_revoke)

    async def _on_message(self, message: dict[str, Any], on_revoke: OnRevoke) -> None:
        try:
            body = json.loads(message["data"])
            vm_uuid, sender = str(body["vm"]), str(body["from"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed revocation message")
            return
        if sender != self.instance_id:
            closed = await on_revoke(vm_uuid)
            log.info(
                "revocation from instance %s closed %d console(s) of VM %s", sender, closed, vm_uuid
            )

    async def _call(self, command: str, pending: Awaitable[Any]) -> Any:
        try:
            return await redis_call(command, pending, self._timeout, ClusterUnavailable)
        except TicketStoreFull:
            raise ClusterUnavailable(f"Redis {command} failed: out of memory") from None


class _Backoff:
    """Doubling waits between resubscriptions: 0.5 s, 1 s, 2 s, ... up to ``last``."""

    FIRST = 0.5

    def __init__(self, last: float = 10.0) -> None:
        self._last = max(last, self.FIRST)
        self._next = self.FIRST

    def next(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self._last)
        return delay

    def reset(self) -> None:
        self._next = self.FIRST
