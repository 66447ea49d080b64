"""Tickets in Redis, shared by every proxy instance behind one load balancer.

A ticket minted by one instance can be redeemed by any other. A Lua script (``TAKE_SCRIPT``)
takes one use atomically across all of them (the whole ticket for VNC, one of several channel
sockets for SPICE), and Redis itself expires unredeemed tickets (``px=``).

Security: a ticket may carry the VM's console password, and it is stored as part of the
ticket's JSON. Keep Redis on a private network, require a password or an ACL user limited to
the key prefix::

    ACL SETUSER console-proxy on >secret ~console-proxy:* +set +get +del +incr +pexpire
        +evalsha +eval +script|load +ping +client|setname +publish +subscribe +zadd +zrem
        +zcount +zremrangebyscore +expire +wait +script|exists

(plus ``+select`` for a database other than 0), turn off persistence or protect its files, and
pass ``encrypt_key`` (16, 24 or 32 random bytes, the same on every instance) so that the
password is stored AES-GCM encrypted, bound to its token.

When Redis cannot be reached every call raises :class:`TicketStoreUnavailable` within about
``timeout`` seconds (see :mod:`proxy.tickets.redis_client`).

Failover (Redis Sentinel): replication is asynchronous, so a take acknowledged by the old
primary alone could be undone by promoting a replica that never saw it, and the ticket would
open a second console. With ``wait_replicas`` set, a take counts only once that many replicas
have it (``WAIT`` on the same connection, right after the script); otherwise the redemption is
refused as unavailable, and the ticket is spent: at most once, never twice.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Awaitable
from dataclasses import asdict
from typing import Any, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from proxy.tickets.redis_client import redis_call
from proxy.tickets.store import Ticket, TicketStore, TicketStoreUnavailable

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "console-proxy:ticket:"

# Count a use of a signed ticket's id; the first use starts the key's life (ARGV[1] ms).
COUNT_SCRIPT = """
local uses = redis.call('INCR', KEYS[1])
if uses == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return uses
"""
NONCE_BYTES = 12
T = TypeVar("T")

# Use a ticket once, atomically across instances: return it as it was, and keep what remains
# of a multi-use (SPICE) ticket, its deadline pulled in to the first use plus its window (the
# same rule as Ticket.after_use). ARGV[1] is now in ms. Lua's cjson keeps the other fields.
TAKE_SCRIPT = """
local raw = redis.call('GET', KEYS[1])
if not raw then return nil end
local ok, t = pcall(cjson.decode, raw)
if not ok or type(t) ~= 'table' then
  redis.call('DEL', KEYS[1])
  return raw
end
local now = tonumber(ARGV[1]) / 1000
if t.uses and t.uses > 1 then
  t.uses = t.uses - 1
  if t.window and t.window > 0 then
    t.expires_at = math.min(t.expires_at, now + t.window)
    t.window = 0
  end
  local ttl = math.floor((t.expires_at - now) * 1000)
  if ttl > 0 then
    redis.call('SET', KEYS[1], cjson.encode(t), 'PX', ttl)
    return raw
  end
end
redis.call('DEL', KEYS[1])
return raw
"""


class RedisTicketStore(TicketStore):
    """Tickets as JSON under ``prefix + token``, expired by Redis, taken by ``TAKE_SCRIPT``."""

    def __init__(
        self,
        redis: Redis,
        prefix: str = DEFAULT_PREFIX,
        *,
        timeout: float = 2.0,
        encrypt_key: bytes | None = None,
        wait_replicas: int = 0,
        wait_timeout: float = 0.5,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        # An overall deadline per call: the client's retries and backoff stay inside it.
        self._timeout = timeout
        self._wait_replicas = wait_replicas
        self._wait_ms = max(1, int(wait_timeout * 1000))  # WAIT's 0 would mean forever
        self._aead = AESGCM(encrypt_key) if encrypt_key is not None else None
        self._take = redis.register_script(TAKE_SCRIPT)
        self._count = redis.register_script(COUNT_SCRIPT)

    def __repr__(self) -> str:
        encrypted = self._aead is not None
        return f"RedisTicketStore(prefix={self._prefix!r}, encrypted={encrypted})"

    async def put(self, token: str, ticket: Ticket) -> None:
        ttl_ms = int((ticket.expires_at - time.time()) * 1000)
        if ttl_ms <= 0:
            return  # already expired: nothing could redeem it
        value = json.dumps(self._encode(token, ticket), separators=(",", ":"))
        await self._call("SET", self._redis.set(self._prefix + token, value, px=ttl_ms))

    async def redeem(self, token: str) -> Ticket | None:
        now_ms = int(time.time() * 1000)
        raw = await self._replicated(self._take, [self._prefix + token], [now_ms])
        if raw is None:
            return None
        ticket = self._decode(token, raw)
        if ticket is None or ticket.expired():
            return None
        return ticket

    async def count_use(self, ticket_id: str, ttl: float) -> int:
        key = f"{self._prefix}used:{ticket_id}"
        ttl_ms = max(1, int(ttl * 1000))
        return int(await self._replicated(self._count, [key], [ttl_ms]))

    async def check_reachable(self) -> None:
        """Raise TicketStoreUnavailable unless Redis answers PING (for /readyz)."""
        await self._call("PING", self._redis.ping())

    async def close(self) -> None:
        await self._redis.aclose()

    async def _call(self, command: str, pending: Awaitable[T]) -> T:
        return await redis_call(command, pending, self._timeout)

    async def _replicated(self, script: AsyncScript, keys: list[str], args: list[int]) -> Any:
        """Run a use-taking script; with ``wait_replicas``, only once replicas acknowledge it."""
        if not self._wait_replicas:
            return await self._call("EVALSHA", script(keys=keys, args=args))
        # One connection for both: WAIT waits for this connection's writes.
        async with self._redis.pipeline(transaction=False) as pipe:
            await script(keys=keys, args=args, client=pipe)
            pipe.wait(self._wait_replicas, self._wait_ms)
            result, acknowledged = await self._call("EVALSHA+WAIT", pipe.execute())
        if result is not None and acknowledged < self._wait_replicas:
            raise TicketStoreUnavailable(
                f"Redis WAIT: {acknowledged} of {self._wait_replicas} replica(s) acknowledged"
                f" a ticket use within {self._wait_ms} ms; refusing it"
            )
        return result

    def _encode(self, token: str, ticket: Ticket) -> dict[str, Any]:
        data = asdict(ticket)
        if self._aead is not None and ticket.password is not None:
            nonce = os.urandom(NONCE_BYTES)
            # The token is the associated data: a sealed password only opens under its own key.
            sealed = self._aead.encrypt(nonce, ticket.password.encode(), token.encode())
            data["password"] = None
            data["sealed_password"] = base64.b64encode(nonce + sealed).decode()
        return data

    def _decode(self, token: str, raw: bytes | str) -> Ticket | None:
        # Never log the value: it may hold a password.
        try:
            data = json.loads(raw)
            sealed = data.pop("sealed_password", None)
            if sealed is not None:
                data["password"] = self._open(token, sealed)
            return Ticket(**data)
        except InvalidTag:
            log.warning("ticket password does not decrypt: is encrypt_key the same everywhere?")
        except _NoKey:
            log.warning("ticket password is encrypted but this instance has no encrypt_key")
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("unreadable ticket in Redis (%s); refusing it", type(exc).__name__)
        return None

    def _open(self, token: str, sealed: str) -> str:
        if self._aead is None:
            raise _NoKey
        blob = base64.b64decode(sealed)
        nonce, ciphertext = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
        return self._aead.decrypt(nonce, ciphertext, token.encode()).decode()


class _NoKey(Exception):
    pass
