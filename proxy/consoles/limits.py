"""Per-client rate limits: a token bucket per IP, in a bounded table."""

from __future__ import annotations

import functools
import ipaddress
import time
from collections import OrderedDict
from typing import Protocol


class Budget(Protocol):
    """A per-address budget as the web layer and the sessions spend it: this process's own
    (:class:`LocalBudget`) or shared by the workers of one machine (proxy.workers.shared)."""

    async def spend(self, key: str) -> bool:
        """Take one event from ``key``'s budget; False when none is left."""
        ...

    async def exhausted(self, key: str) -> bool:
        """Whether ``key`` has no event left, without spending one."""
        ...


class RateLimiter:
    """Allows ``burst`` events at once and ``per_minute`` sustained, per key.

    The table keeps at most ``max_keys`` clients; the least recently seen are forgotten first,
    which errs on the side of letting a forgotten client through.
    """

    def __init__(self, per_minute: float, burst: int, max_keys: int = 100_000) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, key: str, now: float | None = None) -> bool:
        """Take one event from ``key``'s budget; False when none is left."""
        return self._take(key, 1.0, now)

    def exhausted(self, key: str, now: float | None = None) -> bool:
        """Whether ``key`` has no event left, without spending one."""
        return not self._take(key, 0.0, now)

    def _take(self, key: str, cost: float, now: float | None) -> bool:
        now = time.monotonic() if now is None else now
        key = client_key(key)
        tokens, last = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - cost if allowed else tokens, now)
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return allowed


class LocalBudget:
    """A :class:`RateLimiter` of this process behind the :class:`Budget` interface."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def spend(self, key: str) -> bool:
        return self.limiter.allow(key)

    async def exhausted(self, key: str) -> bool:
        return self.limiter.exhausted(key)


# Remembered: a console's setup asks for its address's key more than once, and parsing an
# address is a noticeable share of a setup's CPU.
@functools.lru_cache(maxsize=4096)
def client_key(address: str) -> str:
    """Whom a limit counts: an IPv4 address, or an IPv6 client's /64.

    One IPv6 host is usually given a whole /64, so its addresses are one client; an
    IPv4-mapped IPv6 address is the IPv4 client it maps. Anything else is its own key.
    """
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])  # a link-local zone is no client
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
