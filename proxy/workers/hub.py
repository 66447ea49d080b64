"""The state the workers of one machine share, kept in the supervisor: what Redis is to instances.

- Tickets: the memory store itself (:class:`MemoryTicketStore`), so a ticket minted by one worker
  redeems on any, once.
- Per-VM console counts: a member per (worker, console), claimed below the limit atomically (the
  hub handles one request at a time); a worker's members go when its connection does, so a
  worker that dies frees its VMs' slots at once, with no lease to wait out.
- Per-address budgets (mints, failed redemptions, operator sign-ins), spent by every worker.
- Messages between workers: ``broadcast`` (revocation, closing a console) reaches every other
  worker; ``ask`` puts a question to every other worker (their consoles for the operators'
  listing, one console's target for a watch, their metrics) and gathers the answers that come
  within :data:`ASK_TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

from proxy.consoles.limits import RateLimiter
from proxy.tickets.memory import MemoryTicketStore
from proxy.tickets.store import Ticket, TicketStoreFull
from proxy.workers.wire import (
    ASK_TIMEOUT,
    BAD_REQUEST,
    FULL,
    MAX_LINE,
    NO_ANSWER,
    decode,
    encode,
)

log = logging.getLogger(__name__)

# Per-address budgets (mints, failed redemptions, operator sign-ins): a few names, not more.
MAX_BUDGETS = 16
# A worker that stops reading its answers is dropped past this much unsent data.
MAX_PENDING_WRITE = 64 * 1024 * 1024


class BadRequest(Exception):
    """A request the hub cannot carry out as sent (unknown operation, wrong arguments)."""


@dataclass(eq=False)
class Peer:
    ident: int
    writer: asyncio.StreamWriter
    # (VM, console) pairs this worker counts.
    claims: set[tuple[str, str]] = field(default_factory=set)
    # The worker listens on the port.
    ready: bool = False

    def send(self, message: dict[str, Any]) -> None:
        if self.writer.is_closing():
            return
        if self.writer.transport.get_write_buffer_size() > MAX_PENDING_WRITE:
            log.warning("worker connection %d stopped reading; dropping it", self.ident)
            self.writer.transport.abort()
            return
        self.writer.write(encode(message))


class Hub:
    def __init__(self, max_tickets: int = 100_000) -> None:
        self.tickets = MemoryTicketStore(max_tickets)
        self._peers: dict[int, Peer] = {}
        self._by_vm: dict[str, set[tuple[int, str]]] = {}
        self._ids = itertools.count(1)
        self._questions: dict[int, asyncio.Future[Any]] = {}
        self._budgets: dict[str, RateLimiter] = {}

    def __len__(self) -> int:
        return len(self._peers)

    def ready(self) -> int:
        """How many workers listen on the port."""
        return sum(p.ready for p in self._peers.values())

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One worker's connection, until it closes."""
        if not _same_user(writer):
            log.warning("refused a hub connection from another user")
            writer.close()
            return
        peer = Peer(next(self._ids), writer)
        self._peers[peer.ident] = peer
        tasks: set[asyncio.Task[None]] = set()
        try:
            while line := await reader.readline():
                message = self._request(peer, line)
                if message is None:
                    continue
                if message.get("op") == "ask":  # waits for other workers: not in others' way
                    task = asyncio.create_task(self._handle(peer, message))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                else:  # answered at once, in order, without a task of its own
                    await self._handle(peer, message)
        except (ValueError, ConnectionError):  # a line past MAX_LINE, or a reset
            log.warning("worker connection %d broke off", peer.ident)
        finally:
            for task in tasks:
                task.cancel()
            self._forget(peer)
            writer.close()

    def _forget(self, peer: Peer) -> None:
        self._peers.pop(peer.ident, None)
        for vm_uuid, console_id in peer.claims:
            members = self._by_vm.get(vm_uuid)
            if members is not None:
                members.discard((peer.ident, console_id))
                if not members:
                    del self._by_vm[vm_uuid]

    def _request(self, peer: Peer, line: bytes) -> dict[str, Any] | None:
        """The request on ``line``; None (answered with an error) when it is not one."""
        try:
            message = decode(line)
            if message.get("i") is None:
                raise BadRequest("no request id")
            return message
        except (BadRequest, ValueError) as exc:
            log.warning("bad hub request from worker connection %d: %s", peer.ident, exc)
            peer.send({"i": None, "e": BAD_REQUEST})
            return None

    async def _handle(self, peer: Peer, message: dict[str, Any]) -> None:
        request_id = message["i"]
        try:
            result = await self._dispatch(peer, str(message.get("op")), message.get("a") or {})
            answer: dict[str, Any] = {"i": request_id, "r": result}
        except TicketStoreFull:
            answer = {"i": request_id, "e": FULL}
        except (BadRequest, ValueError, TypeError, KeyError) as exc:
            log.warning("bad hub request from worker connection %d: %s", peer.ident, exc)
            answer = {"i": request_id, "e": BAD_REQUEST}
        if request_id != NO_ANSWER:
            peer.send(answer)

    async def _dispatch(self, peer: Peer, op: str, args: dict[str, Any]) -> Any:
        if op == "ticket.put":
            await self.tickets.put(str(args["token"]), Ticket(**args["ticket"]))
            return None
        if op == "ticket.redeem":
            ticket = await self.tickets.redeem(str(args["token"]))
            return None if ticket is None else asdict(ticket)
        if op == "ticket.count_use":
            return await self.tickets.count_use(str(args["id"]), float(args["ttl"]))
        if op == "vm.claim":
            return self.claim(peer, str(args["vm"]), str(args["console"]), int(args["limit"]))
        if op == "vm.release":
            self.release(peer, str(args["vm"]), str(args["console"]))
            return None
        if op == "broadcast":
            return self.broadcast(peer, str(args["kind"]), args.get("body"))
        if op == "ask":
            return await self.ask(peer, str(args["kind"]), args.get("body"))
        if op == "reply":
            self._answer(int(args["q"]), args.get("body"))
            return None
        if op in ("budget.spend", "budget.exhausted"):
            limiter = self._budget(str(args["name"]), float(args["per_minute"]), int(args["burst"]))
            key = str(args["key"])
            return limiter.allow(key) if op == "budget.spend" else limiter.exhausted(key)
        if op == "ping":
            return len(self._peers)
        if op == "ready":
            peer.ready = True
            return None
        raise BadRequest(f"unknown operation {op!r}")

    def _budget(self, name: str, per_minute: float, burst: int) -> RateLimiter:
        """The shared budget ``name``, made on first use with the workers' (equal) settings."""
        limiter = self._budgets.get(name)
        if limiter is None:
            if len(self._budgets) >= MAX_BUDGETS:
                raise BadRequest("too many budgets")
            limiter = self._budgets[name] = RateLimiter(per_minute, burst)
        return limiter

    def claim(self, peer: Peer, vm_uuid: str, console_id: str, limit: int) -> bool:
        members = self._by_vm.setdefault(vm_uuid, set())
        member = (peer.ident, console_id)
        if member not in members:
            if len(members) >= limit:
                if not members:
                    del self._by_vm[vm_uuid]
                return False
            members.add(member)
            peer.claims.add((vm_uuid, console_id))
        return True

    def release(self, peer: Peer, vm_uuid: str, console_id: str) -> None:
        peer.claims.discard((vm_uuid, console_id))
        members = self._by_vm.get(vm_uuid)
        if members is not None:
            members.discard((peer.ident, console_id))
            if not members:
                del self._by_vm[vm_uuid]

    def broadcast(self, sender: Peer, kind: str, body: Any) -> int:
        """Send to every other worker; return how many workers there are (the sender too)."""
        for peer in list(self._peers.values()):
            if peer is not sender:
                peer.send({"ev": kind, "b": body})
        return len(self._peers)

    async def ask(self, sender: Peer, kind: str, body: Any) -> list[Any]:
        """Every other worker's answer to ``kind``, but for those that do not answer in time."""
        loop = asyncio.get_running_loop()
        pending: list[asyncio.Future[Any]] = []
        for peer in list(self._peers.values()):
            if peer is sender:
                continue
            question = next(self._ids)
            future = self._questions[question] = loop.create_future()
            pending.append(future)
            peer.send({"ev": kind, "q": question, "b": body})
        try:
            if pending:
                await asyncio.wait(pending, timeout=ASK_TIMEOUT)
            return [f.result() for f in pending if f.done() and not f.cancelled()]
        finally:
            for future in pending:
                future.cancel()
            for question in [q for q, f in self._questions.items() if f.done()]:
                del self._questions[question]

    def _answer(self, question: int, body: Any) -> None:
        future = self._questions.get(question)
        if future is not None and not future.done():
            future.set_result(body)


def _same_user(writer: asyncio.StreamWriter) -> bool:
    sock: socket.socket | None = writer.get_extra_info("socket")
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return True  # not Linux: the socket file's mode alone keeps others out
    with contextlib.suppress(OSError):
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return bool(uid == os.getuid())
    return False


async def start_hub(path: str, max_tickets: int) -> tuple[Hub, asyncio.Server]:
    """Listen on the Unix socket ``path`` (its directory must be private), readable by us only."""
    hub = Hub(max_tickets)
    old = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(hub.serve, path=path, limit=MAX_LINE)
    finally:
        os.umask(old)
    return hub, server
