"""The one way this package talks to Redis: a bounded client and a bounded call.

The client talks to one Redis (``redis_client_from_url``) or to whichever primary a set of
Sentinels names (``redis_client_from_sentinels``): after a failover, new connections go to the
promoted primary, and one line is logged naming the old and the new address.

Every Redis wait ends within ``timeout`` seconds, and every failure becomes
:class:`StoreUnavailable` (or :class:`TicketStoreFull` when Redis is out of memory), so callers
answer 503 / close 4503 instead of hanging or falling back to memory, which would break single
use across instances.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import OutOfMemoryError, RedisError

from proxy.tickets.store import StoreUnavailable, TicketStoreFull, TicketStoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
CLIENT_NAME = "console-proxy"
# Asking one sentinel must not eat the whole call's budget when it is unreachable: the next
# one is asked instead.
SENTINEL_CONNECT_TIMEOUT = 0.5


def redis_client_from_url(url: str, timeout: float, retries: int = 3) -> Redis:
    """A client that reconnects with exponential backoff and bounds every socket wait."""
    return Redis.from_url(url, **_client_options(timeout, retries))


def redis_client_from_sentinels(
    sentinels: Sequence[tuple[str, int]],
    service: str,
    timeout: float,
    *,
    url: str = "",
    sentinel_password: str = "",
    retries: int = 3,
) -> Redis:
    """A client of the primary that ``sentinels`` name for ``service``, followed over failovers.

    ``url`` (``redis://`` or ``rediss://``, its host and port ignored) gives the data
    connections their user, password, database and TLS settings; the sentinels are reached
    with the same TLS settings and ``sentinel_password``.
    """
    data = _url_options(url) if url else {}
    tls = {key: value for key, value in data.items() if key.startswith("ssl")}
    sentinel_options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": min(timeout, SENTINEL_CONNECT_TIMEOUT),
        # The next sentinel is the retry: a dead one is not asked again and again.
        "retry": Retry(NoBackoff(), 0),
        "password": sentinel_password or None,
        **tls,
    }
    # redis-py's Sentinel classes carry no type hints.
    manager = Sentinel(list(sentinels), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    client: Redis = manager.master_for(
        service,
        redis_class=_PrimaryClient,
        connection_pool_class=_PrimaryPool,
        **data,
        **_client_options(timeout, retries),
    )
    return client


def _client_options(timeout: float, retries: int) -> dict[str, Any]:
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(ExponentialBackoff(cap=min(1.0, timeout / 2), base=0.02), retries),
        "health_check_interval": 30,
        "client_name": CLIENT_NAME,
    }


def _url_options(url: str) -> dict[str, Any]:
    """What a redis:// or rediss:// URL says about a connection, but not where it goes."""
    options: dict[str, Any] = dict(parse_url(url))
    for key in ("host", "port", "path"):
        options.pop(key, None)
    if options.pop("connection_class", None) is SSLConnection:
        options["ssl"] = True  # the Sentinel pool picks its own TLS connection class
    return options


class _PrimaryClient(Redis):
    """Closing the client also closes its connections to the sentinels."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        pool = self.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            await pool.sentinel_manager.aclose()


class _PrimaryPool(SentinelConnectionPool):
    """redis-py's Sentinel pool, logging once when the sentinels name another primary."""

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        self._known: tuple[str, int] | None = None

    async def get_master_address(self) -> tuple[str, int]:
        address: tuple[str, int] = await super().get_master_address()  # type: ignore[no-untyped-call]
        # Several connections may ask at once after a failover: no await between the test
        # and the update, so only one of them logs.
        if address != self._known:
            old, self._known = self._known, address
            if old is None:
                log.info("Redis primary of %s is %s:%s", self.service_name, *address)
            else:
                log.warning(
                    "Redis primary of %s changed: %s:%s -> %s:%s",
                    self.service_name,
                    *old,
                    *address,
                )
        return address


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
