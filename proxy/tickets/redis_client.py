"""The one way this package talks to Redis: a bounded client and a bounded call.

Every Redis wait ends within ``timeout`` seconds, and every failure becomes
:class:`StoreUnavailable` (or :class:`TicketStoreFull` when Redis is out of memory), so callers
answer 503 / close 4503 instead of hanging or falling back to memory, which would break single
use across instances.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import OutOfMemoryError, RedisError

from proxy.tickets.store import StoreUnavailable, TicketStoreFull, TicketStoreUnavailable

T = TypeVar("T")


def redis_client_from_url(url: str, timeout: float, retries: int = 3) -> Redis:
    """A client that reconnects with exponential backoff and bounds every socket wait."""
    retry = Retry(ExponentialBackoff(cap=min(1.0, timeout / 2), base=0.02), retries)
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=retry,
        health_check_interval=30,
        client_name="console-proxy",
    )


async def redis_call(
    command: str,
    pending: Awaitable[T],
    timeout: float,
    unavailable: type[StoreUnavailable] = TicketStoreUnavailable,
) -> T:
    """Await one Redis command; the client's retries and backoff stay inside ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            return await pending
    except OutOfMemoryError:
        raise TicketStoreFull from None
    except TimeoutError:
        raise unavailable(f"Redis {command} timed out after {timeout:g} s") from None
    except (RedisError, OSError) as exc:
        raise unavailable(f"Redis {command} failed: {exc}") from None
