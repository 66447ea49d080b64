"""The live consoles of every instance, for operators: a listing, closing one, watching one.

Each console is summarized from the registry (its byte counters are the bridge's own, so they
are current). Without Redis the listing is this process's. With Redis every instance publishes
its summaries every :data:`PUBLISH_EVERY` seconds into a hash that expires after
:data:`LIVE_TTL` (an instance that dies drops out within it), and the listing reads them all.
The targets (host, port, console password) go into a second hash that the listing never
reads; only a watch reads one entry of it. Passwords there are AES-GCM sealed when ``[tickets]
encrypt_key`` is set, as in the ticket store.

Closing a console that runs elsewhere is a message on a channel, like revocation.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from redis.asyncio import Redis
from redis.exceptions import RedisError

from proxy.consoles.cluster import ClusterUnavailable
from proxy.consoles.registry import ConsoleRegistry, LiveConsole
from proxy.tickets.redis_client import redis_call
from proxy.tickets.store import Ticket, TicketStoreFull

log = logging.getLogger(__name__)

PUBLISH_EVERY = 0.5
LIVE_TTL = 5.0
NONCE = 12

OnClose = Callable[[str], Awaitable[int]]


def instance_name() -> str:
    """How operators see this process: host and pid."""
    return f"{socket.gethostname()}/{os.getpid()}"


@dataclass(frozen=True)
class ConsoleSummary:
    id: str
    vmUuid: str  # the JSON names, as listed
    protocol: str
    client: str
    account: str
    instance: str
    started: float
    bytesToHost: int
    bytesToBrowser: int
    idleSeconds: float | None
    viewOnly: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def summarize(registry: ConsoleRegistry, instance: str, loop_now: float) -> list[ConsoleSummary]:
    """One summary per console (a SPICE console's channel sockets together)."""
    groups: dict[str, list[LiveConsole]] = {}
    for console in registry.connected():
        groups.setdefault(console.counted_as, []).append(console)
    return sorted(
        (_summary(cid, sockets, instance, loop_now) for cid, sockets in groups.items()),
        key=lambda s: s.started,
    )


def _summary(
    console_id: str, sockets: list[LiveConsole], instance: str, loop_now: float
) -> ConsoleSummary:
    first = min(sockets, key=lambda c: c.started)
    ticket = first.ticket
    assert ticket is not None
    stats = [c.stats for c in sockets if c.stats is not None]
    inputs = [s.last_input for s in stats if s.last_input is not None]
    return ConsoleSummary(
        id=console_id,
        vmUuid=ticket.vm_uuid,
        protocol=ticket.protocol,
        client=first.client_ip,
        account=ticket.account_name,
        instance=instance,
        started=round(first.started, 3),
        bytesToHost=sum(s.bytes_to_host for s in stats),
        bytesToBrowser=sum(s.bytes_to_browser for s in stats),
        idleSeconds=round(max(0.0, loop_now - max(inputs)), 1) if inputs else None,
        viewOnly=ticket.view_only,
    )


def targets(registry: ConsoleRegistry) -> dict[str, Ticket]:
    """What each listed console reaches, by console id (server-side only)."""
    found: dict[str, Ticket] = {}
    for console in registry.connected():
        if console.ticket is not None:
            found.setdefault(console.counted_as, console.ticket)
    return found


class RecentListing:
    """The last listing of the other instances' consoles, kept for a moment: every open console
    page asks for its viewer count, and one read serves them all."""

    def __init__(self) -> None:
        self._when = 0.0
        self._listed: list[dict[str, Any]] = []

    async def get(
        self, read: Callable[[], Awaitable[list[dict[str, Any]]]], max_age: float
    ) -> list[dict[str, Any]]:
        if time.monotonic() - self._when > max_age:
            self._listed = await read()
            self._when = time.monotonic()
        return self._listed


class ConsoleDirectory(Protocol):
    """The other instances' (Redis) or workers' (the hub) consoles, as the web layer uses them."""

    async def others(self) -> list[dict[str, Any]]: ...

    async def others_cached(self, max_age: float = 0.5) -> list[dict[str, Any]]: ...

    async def target(self, console_id: str) -> Ticket | None: ...

    async def publish_close(self, console_id: str) -> int: ...


class LiveDirectory:
    """The Redis side: publish this instance's consoles, read every instance's, close anywhere."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        instance_id: str,
        encrypt_key: bytes | None = None,
        timeout: float = 2.0,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self.instance_id = instance_id
        self._aead = AESGCM(encrypt_key) if encrypt_key else None
        self._timeout = timeout
        self._instances = f"{prefix}live-instances"
        self._cached = RecentListing()
        self._channel = f"{prefix}close-console"

    def _live(self, instance: str) -> str:
        return f"{self._prefix}live:{instance}"

    def _targets(self, instance: str) -> str:
        return f"{self._prefix}live-targets:{instance}"

    async def publish(self, summaries: Iterable[ConsoleSummary], reach: dict[str, Ticket]) -> None:
        now = time.time()
        ttl_ms = int(LIVE_TTL * 1000)
        live, targets = self._live(self.instance_id), self._targets(self.instance_id)
        entries = {s.id: json.dumps(s.to_json(), separators=(",", ":")) for s in summaries}
        sealed = {cid: self._seal(cid, ticket) for cid, ticket in reach.items()}
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(live, targets)
            if entries:
                pipe.hset(live, mapping=entries)  # type: ignore[arg-type]
                pipe.pexpire(live, ttl_ms)
            if sealed:
                pipe.hset(targets, mapping=sealed)  # type: ignore[arg-type]
                pipe.pexpire(targets, ttl_ms)
            pipe.zadd(self._instances, {self.instance_id: now + LIVE_TTL})
            pipe.zremrangebyscore(self._instances, "-inf", now)
            await self._call("MULTI", pipe.execute())

    async def withdraw(self) -> None:
        """Leave the listing at once (on shutdown)."""
        live, targets = self._live(self.instance_id), self._targets(self.instance_id)
        with contextlib.suppress(ClusterUnavailable):
            await self._call("DEL", self._redis.delete(live, targets))
            await self._call("ZREM", self._redis.zrem(self._instances, self.instance_id))

    async def instances(self) -> list[str]:
        found = await self._call(
            "ZRANGEBYSCORE", self._redis.zrangebyscore(self._instances, time.time(), "+inf")
        )
        return [_text(i) for i in found]

    async def others(self) -> list[dict[str, Any]]:
        """The summaries the other instances published."""
        others = [i for i in await self.instances() if i != self.instance_id]
        listed: list[dict[str, Any]] = []
        for instance in others:
            values = await self._call("HVALS", self._redis.hvals(self._live(instance)))
            for value in values:
                with contextlib.suppress(ValueError, TypeError):
                    listed.append(dict(json.loads(value)))
        return listed

    async def others_cached(self, max_age: float = 0.5) -> list[dict[str, Any]]:
        """:meth:`others`, read at most once per ``max_age`` (every console page polls it)."""
        return await self._cached.get(self.others, max_age)

    async def target(self, console_id: str) -> Ticket | None:
        """What a console on another instance reaches (for a watch); None if none has it."""
        for instance in await self.instances():
            raw = await self._call("HGET", self._redis.hget(self._targets(instance), console_id))
            if raw is not None:
                return self._open(console_id, raw)
        return None

    async def publish_close(self, console_id: str) -> int:
        message = json.dumps({"id": console_id, "from": self.instance_id})
        return int(await self._call("PUBLISH", self._redis.publish(self._channel, message)))

    async def listen_for_closes(self, on_close: OnClose) -> None:
        """Run until cancelled; resubscribe after a pause whenever Redis goes away."""
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            await self._on_message(message["data"], on_close)
            except (RedisError, OSError) as exc:
                log.warning("console close channel lost (%s); retrying in 1 s", exc)
                await asyncio.sleep(1.0)

    async def _on_message(self, data: Any, on_close: OnClose) -> None:
        try:
            body = json.loads(data)
            console_id, sender = str(body["id"]), str(body["from"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed console close message")
            return
        if sender != self.instance_id:
            if await on_close(console_id):
                log.info("closed console %s for instance %s", console_id, sender)

    def _seal(self, console_id: str, ticket: Ticket) -> str:
        data = asdict(ticket)
        if self._aead is not None and ticket.password is not None:
            nonce = os.urandom(NONCE)
            sealed = self._aead.encrypt(nonce, ticket.password.encode(), console_id.encode())
            data["password"] = None
            data["sealed_password"] = base64.b64encode(nonce + sealed).decode()
        return json.dumps(data, separators=(",", ":"))

    def _open(self, console_id: str, raw: bytes | str) -> Ticket | None:
        try:
            data = json.loads(raw)
            sealed = data.pop("sealed_password", None)
            if sealed is not None:
                if self._aead is None:
                    return None
                blob = base64.b64decode(sealed)
                plain = self._aead.decrypt(blob[:NONCE], blob[NONCE:], console_id.encode())
                data["password"] = plain.decode()
            return Ticket(**data)
        except (ValueError, TypeError, InvalidTag):
            log.warning("unreadable console target in Redis; refusing to watch it")
            return None

    async def _call(self, command: str, pending: Awaitable[Any]) -> Any:
        try:
            return await redis_call(command, pending, self._timeout, ClusterUnavailable)
        except TicketStoreFull:
            raise ClusterUnavailable(f"Redis {command} failed: out of memory") from None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
