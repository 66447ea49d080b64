"""One test suite for every ticket store; the Redis one runs against a real redis-server."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from redis.asyncio import Redis

from proxy.config import decode_key
from proxy.tickets.memory import MemoryTicketStore
from proxy.tickets.redis_client import redis_client_from_url
from proxy.tickets.redis_store import RedisTicketStore
from proxy.tickets.store import (
    Ticket,
    TicketStore,
    TicketStoreFull,
    TicketStoreUnavailable,
    new_token,
)
from tests.support.services import RedisServer

TIMEOUT = 1.0
PASSWORD = "pw-Zq8#never-logged"


class Backend:
    """Makes store "instances": for Redis, separate clients on one server, as separate proxies."""

    def __init__(self, kind: str, server: RedisServer | None) -> None:
        self.kind = kind
        self.server = server
        self.memory = MemoryTicketStore()
        self.opened: list[TicketStore] = []

    def instance(self, encrypt_key: bytes | None = None, url: str | None = None) -> TicketStore:
        if self.server is None:
            return self.memory
        client = redis_client_from_url(url or self.server.url, TIMEOUT)
        store = RedisTicketStore(client, timeout=TIMEOUT, encrypt_key=encrypt_key)
        self.opened.append(store)
        return store

    async def close(self) -> None:
        for store in self.opened:
            await store.close()


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    server = request.getfixturevalue("redis_server") if request.param == "redis" else None
    made = Backend(request.param, server)
    yield made
    await made.close()


@pytest.fixture
async def redis_backend(redis_server: RedisServer) -> AsyncIterator[Backend]:
    made = Backend("redis", redis_server)
    yield made
    await made.close()


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A plain client for looking at what the store left in Redis."""
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


def ticket(ttl: float = 30.0, password: str | None = None) -> Ticket:
    return Ticket("vm-1", "127.0.0.1", 5901, "vnc", time.time() + ttl, password)


# --- every backend ---------------------------------------------------------------------------


async def test_put_then_redeem_returns_the_ticket(backend: Backend) -> None:
    store, token, minted = backend.instance(), new_token(), ticket()
    await store.put(token, minted)
    assert await store.redeem(token) == minted


async def test_a_ticket_is_redeemed_once(backend: Backend) -> None:
    store, token = backend.instance(), new_token()
    await store.put(token, ticket())
    assert await store.redeem(token) is not None
    assert await store.redeem(token) is None


async def test_unknown_token_redeems_nothing(backend: Backend) -> None:
    assert await backend.instance().redeem(new_token()) is None


async def test_expired_ticket_is_refused(backend: Backend) -> None:
    store, token = backend.instance(), new_token()
    await store.put(token, ticket(ttl=0.2))
    await asyncio.sleep(0.4)
    assert await store.redeem(token) is None


async def test_ticket_minted_already_expired_is_refused(backend: Backend) -> None:
    store, token = backend.instance(), new_token()
    await store.put(token, ticket(ttl=-1.0))
    assert await store.redeem(token) is None


async def test_two_instances_racing_redeem_exactly_one_wins(backend: Backend) -> None:
    first, second = backend.instance(), backend.instance()
    tokens = [new_token() for _ in range(20)]
    for token in tokens:
        await first.put(token, ticket())
    for token in tokens:
        attempts = [store.redeem(token) for _ in range(8) for store in (first, second)]
        results = await asyncio.gather(*attempts)
        assert sum(result is not None for result in results) == 1


async def test_multi_use_ticket_admits_its_uses_across_instances(backend: Backend) -> None:
    first, second, token = backend.instance(), backend.instance(), new_token()
    spice = replace(ticket(password=PASSWORD), protocol="spice", uses=3, window=5.0)
    await first.put(token, spice)
    results = await asyncio.gather(*(s.redeem(token) for _ in range(5) for s in (first, second)))
    used = [r for r in results if r is not None]
    assert len(used) == 3
    assert all(r.password == PASSWORD and r.protocol == "spice" for r in used)
    assert await first.redeem(token) is None


async def test_multi_use_window_starts_at_first_use(backend: Backend) -> None:
    store, token = backend.instance(), new_token()
    # The window is long enough for the second use to fall in it on a loaded machine.
    await store.put(token, replace(ticket(), uses=5, window=1.0))
    assert await store.redeem(token) is not None
    assert await store.redeem(token) is not None
    await asyncio.sleep(1.2)
    assert await store.redeem(token) is None


async def test_signed_ticket_uses_are_counted_across_instances(backend: Backend) -> None:
    first, second = backend.instance(), backend.instance()
    assert await first.count_use("jti-1", 5.0) == 1
    assert await second.count_use("jti-1", 5.0) == 2
    assert await second.count_use("jti-2", 5.0) == 1
    counts = await asyncio.gather(*(s.count_use("jti-3", 5.0) for s in (first, second) * 5))
    assert sorted(counts) == list(range(1, 11))


async def test_signed_ticket_use_counts_expire(backend: Backend) -> None:
    store = backend.instance()
    assert await store.count_use("jti-x", 0.2) == 1
    await asyncio.sleep(0.4)
    assert await store.count_use("jti-x", 0.2) == 1


async def test_ticket_minted_on_one_instance_redeems_on_another(backend: Backend) -> None:
    first, second, token = backend.instance(), backend.instance(), new_token()
    await first.put(token, ticket(password=PASSWORD))
    assert (redeemed := await second.redeem(token)) is not None
    assert redeemed.password == PASSWORD


async def test_password_survives_but_stays_out_of_repr_and_logs(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store, token = backend.instance(encrypt_key=os.urandom(32)), new_token()
    await store.put(token, ticket(password=PASSWORD))
    redeemed = await store.redeem(token)
    assert redeemed is not None and redeemed.password == PASSWORD
    assert PASSWORD not in repr(redeemed) and PASSWORD not in repr(store)
    assert PASSWORD not in caplog.text and token not in caplog.text


async def test_ticket_without_password_keeps_none(backend: Backend) -> None:
    store, token = backend.instance(encrypt_key=os.urandom(16)), new_token()
    await store.put(token, ticket())
    assert (redeemed := await store.redeem(token)) is not None
    assert redeemed.password is None


# --- Redis only ------------------------------------------------------------------------------


async def test_redis_expires_the_entry(redis_backend: Backend, admin: Redis) -> None:
    store, token = redis_backend.instance(), new_token()
    await store.put(token, ticket(ttl=5.0))
    assert 2000 < await admin.pttl(f"console-proxy:ticket:{token}") <= 5000
    await store.put(token, ticket(ttl=0.1))
    await asyncio.sleep(0.3)
    assert await admin.exists(f"console-proxy:ticket:{token}") == 0


async def test_password_is_encrypted_at_rest_when_a_key_is_set(
    redis_backend: Backend, admin: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    key = os.urandom(32)
    minting, peer = redis_backend.instance(key), redis_backend.instance(key)
    stranger, keyless = redis_backend.instance(os.urandom(32)), redis_backend.instance()
    tokens = [new_token() for _ in range(3)]
    for token in tokens:
        await minting.put(token, ticket(password=PASSWORD))
    raw = await admin.get(f"console-proxy:ticket:{tokens[0]}")
    assert raw is not None and PASSWORD.encode() not in raw
    assert (redeemed := await peer.redeem(tokens[0])) is not None
    assert redeemed.password == PASSWORD
    assert await stranger.redeem(tokens[1]) is None
    assert await keyless.redeem(tokens[2]) is None
    assert "encrypt_key" in caplog.text and PASSWORD not in caplog.text


async def test_sealed_password_is_bound_to_its_token(redis_backend: Backend, admin: Redis) -> None:
    store = redis_backend.instance(os.urandom(32))
    token, other = new_token(), new_token()
    await store.put(token, ticket(password=PASSWORD))
    raw = await admin.get(f"console-proxy:ticket:{token}")
    assert raw is not None
    await admin.set(f"console-proxy:ticket:{other}", raw, px=30_000)
    assert await store.redeem(other) is None


async def test_without_a_key_the_password_is_stored_in_clear(
    redis_backend: Backend, admin: Redis
) -> None:
    # Documented: without encrypt_key only Redis's own access control protects the password.
    store, token = redis_backend.instance(), new_token()
    await store.put(token, ticket(password=PASSWORD))
    raw = await admin.get(f"console-proxy:ticket:{token}")
    assert raw is not None and PASSWORD.encode() in raw


async def test_unreadable_entry_is_refused(
    redis_backend: Backend, admin: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    token = new_token()
    await admin.set(f"console-proxy:ticket:{token}", b"{not json", px=30_000)
    assert await redis_backend.instance().redeem(token) is None
    assert "unreadable ticket" in caplog.text


async def test_redis_down_raises_within_the_timeout_then_recovers(
    redis_backend: Backend, redis_server: RedisServer
) -> None:
    store = redis_backend.instance()
    assert isinstance(store, RedisTicketStore)
    await store.put(new_token(), ticket())  # the pool now holds a live connection
    redis_server.stop()
    for call in (
        store.redeem(new_token()),
        store.put(new_token(), ticket()),
        store.check_reachable(),
    ):
        started = time.monotonic()
        with pytest.raises(TicketStoreUnavailable) as caught:
            await call
        # Within the timeout, give or take a loaded machine: not a hang.
        assert time.monotonic() - started < TIMEOUT + 2
        assert caught.value.code == "TICKETS.UNAVAILABLE"
    redis_server.start()  # same port
    token = new_token()
    await store.put(token, ticket())
    assert await store.redeem(token) is not None
    await store.check_reachable()


async def test_hung_redis_times_out(redis_backend: Backend, redis_server: RedisServer) -> None:
    store, token = redis_backend.instance(), new_token()
    await store.put(token, ticket())
    redis_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(TicketStoreUnavailable, match="timed out"):
            await store.redeem(token)
        # Not before the timeout; the upper bound, with room for a loaded machine, says that it
        # did not hang, nor wait out the client's retries (four socket timeouts: over 4 s).
        assert TIMEOUT * 0.9 <= time.monotonic() - started < TIMEOUT + 2
    finally:
        redis_server.resume()
    # The timed-out GETDEL may or may not have run; either way nothing is redeemed twice.
    again = new_token()
    await store.put(again, ticket())
    assert await store.redeem(again) is not None


async def test_redis_out_of_memory_means_store_full(redis_backend: Backend, admin: Redis) -> None:
    await admin.config_set("maxmemory", "1")
    try:
        with pytest.raises(TicketStoreFull):
            await redis_backend.instance().put(new_token(), ticket())
    finally:
        await admin.config_set("maxmemory", "0")


async def test_acl_user_limited_to_the_prefix_is_enough(
    redis_backend: Backend, redis_server: RedisServer, admin: Redis
) -> None:
    # The ACL rule the module docstring recommends.
    rule = (
        "on >acl-secret ~console-proxy:* +set +get +del +incr +pexpire +evalsha +eval +script|load"
        " +ping +client|setname"
    )
    await admin.execute_command("ACL", "SETUSER", "console-proxy", *rule.split())
    url = f"redis://console-proxy:acl-secret@127.0.0.1:{redis_server.port}/0"
    store, token = redis_backend.instance(url=url), new_token()
    await store.put(token, ticket(password=PASSWORD))
    assert (redeemed := await store.redeem(token)) is not None
    assert redeemed.password == PASSWORD
    assert isinstance(store, RedisTicketStore)
    await store.check_reachable()


async def test_wrong_redis_password_is_unavailable(
    redis_backend: Backend, redis_server: RedisServer
) -> None:
    store = redis_backend.instance(url=f"redis://nobody:wrong@127.0.0.1:{redis_server.port}/0")
    with pytest.raises(TicketStoreUnavailable):
        await store.redeem(new_token())


def test_decode_key() -> None:
    key = os.urandom(32)
    assert decode_key(base64.urlsafe_b64encode(key).decode()) == key
    assert decode_key(base64.b64encode(key).decode() + "\n") == key
    with pytest.raises(ValueError, match="32 bytes"):
        decode_key(base64.b64encode(b"short").decode())
    with pytest.raises(ValueError, match="base64"):
        decode_key("not base64!")


def test_unavailable_error_repr() -> None:
    error = TicketStoreUnavailable("Redis GETDEL timed out after 1 s")
    assert repr(error).startswith("TicketStoreUnavailable(code='TICKETS.UNAVAILABLE', reason=")
