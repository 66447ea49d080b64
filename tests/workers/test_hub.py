"""The workers' hub over its real Unix socket: tickets redeem once across workers, per-VM counts
are exact and freed when a worker goes, broadcasts and questions reach the other workers, and
bad, silent or vanished peers get clear errors within the deadlines."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from proxy.consoles.cluster import ClusterUnavailable
from proxy.tickets.store import Ticket, TicketStoreFull, TicketStoreUnavailable
from proxy.workers import client as client_module
from proxy.workers.client import HubClient
from proxy.workers.hub import Hub, start_hub
from proxy.workers.shared import HubBudget, HubCounts, HubTicketStore
from proxy.workers.wire import ASK_TIMEOUT, MAX_LINE

Connect = Callable[[], Awaitable[HubClient]]


def ticket(**fields: Any) -> Ticket:
    base: dict[str, Any] = {
        "vm_uuid": "vm-1",
        "host": "127.0.0.1",
        "port": 5900,
        "protocol": "vnc",
        "expires_at": time.time() + 30,
        "password": "secret",
    }
    return Ticket(**{**base, **fields})


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[tuple[Hub, str]]:
    path = str(tmp_path / "hub.sock")
    hub, server = await start_hub(path, max_tickets=3)
    yield hub, path
    server.close()
    await server.wait_closed()


@pytest.fixture
async def connect(hub: tuple[Hub, str]) -> AsyncIterator[Connect]:
    clients: list[HubClient] = []

    async def open_one() -> HubClient:
        client = await HubClient.connect(hub[1])
        clients.append(client)
        return client

    yield open_one
    for client in clients:
        await client.close()


async def test_the_socket_is_for_its_owner_only(hub: tuple[Hub, str]) -> None:
    assert stat.S_IMODE(os.stat(hub[1]).st_mode) == 0o600


async def test_a_ticket_put_by_one_worker_redeems_once_on_any(connect: Connect) -> None:
    first, second = HubTicketStore(await connect()), HubTicketStore(await connect())
    await first.put("token-a", ticket())
    redeemed = await second.redeem("token-a")
    assert redeemed == ticket(expires_at=redeemed.expires_at if redeemed else 0)
    assert redeemed is not None and redeemed.password == "secret"
    assert await first.redeem("token-a") is None
    assert await second.redeem("token-a") is None


async def test_a_spice_ticket_admits_its_uses_across_workers(connect: Connect) -> None:
    first, second = HubTicketStore(await connect()), HubTicketStore(await connect())
    await first.put("spice", ticket(protocol="spice", uses=3, window=10.0))
    found = [await store.redeem("spice") for store in (second, first, second, first)]
    assert [t is not None for t in found] == [True, True, True, False]


async def test_expired_tickets_do_not_redeem(connect: Connect) -> None:
    store = HubTicketStore(await connect())
    await store.put("old", ticket(expires_at=time.time() - 1))
    assert await store.redeem("old") is None


async def test_a_full_hub_refuses_new_tickets(connect: Connect) -> None:
    store = HubTicketStore(await connect())
    for n in range(3):
        await store.put(f"t{n}", ticket())
    with pytest.raises(TicketStoreFull):
        await store.put("one-too-many", ticket())


async def test_signed_ticket_uses_are_counted_across_workers(connect: Connect) -> None:
    first, second = HubTicketStore(await connect()), HubTicketStore(await connect())
    assert [await s.count_use("sig", 30) for s in (first, second, first)] == [1, 2, 3]


async def test_per_vm_counts_are_exact_and_a_vanished_worker_frees_its_slots(
    connect: Connect,
) -> None:
    first_client = await connect()
    first, second = HubCounts(first_client, "w1"), HubCounts(await connect(), "w2")
    assert await first.claim("vm", "c1", limit=1)
    assert not await second.claim("vm", "c2", limit=1)
    assert await first.claim("vm", "c1", limit=1)  # a console counted already only renews
    assert await second.claim("other-vm", "c3", limit=1)
    await first.release("vm", "c1")  # not answered: the hub takes first's messages in order
    assert await first.claim("vm", "c1b", limit=1)  # so this one sees it released
    await first.release("vm", "c1b")
    await first_client.call("ping", {})  # and once first's later call is answered, all see it
    assert await second.claim("vm", "c2", limit=1)
    # A worker that goes away (crash, kill) takes its counts with it at once.
    third_client = await connect()
    third = HubCounts(third_client, "w3")
    assert await third.claim("vm-3", "c4", limit=1)
    assert not await second.claim("vm-3", "c5", limit=1)
    await third_client.close()

    async def freed() -> bool:
        return await second.claim("vm-3", "c5", limit=1)

    for _ in range(50):
        if await freed():
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the closed worker's count was not released")


async def test_a_broadcast_reaches_every_other_worker_and_counts_them(connect: Connect) -> None:
    sender, *others = [await connect() for _ in range(3)]
    seen: dict[int, list[str]] = {0: [], 1: [], 2: []}

    def recorder(n: int) -> Callable[[Any], Awaitable[None]]:
        async def record(body: Any) -> None:
            seen[n].append(body)

        return record

    for n, client in enumerate([sender, *others]):
        client.on("revoke", recorder(n))
    counts = HubCounts(sender, "w0")
    assert await counts.publish_revoke("vm-9") == 3
    for _ in range(100):
        if seen[1] and seen[2]:
            break
        await asyncio.sleep(0.01)
    assert seen == {0: [], 1: ["vm-9"], 2: ["vm-9"]}


async def test_a_question_gathers_the_other_workers_answers(connect: Connect) -> None:
    asker, first, second, mute = [await connect() for _ in range(4)]

    async def answer_one(body: Any) -> list[str]:
        return ["first", body]

    async def answer_two(body: Any) -> list[str]:
        return ["second", body]

    first.on("consoles", answer_one)
    second.on("consoles", answer_two)
    # ``mute`` has no handler: it answers None at once rather than making the asker wait.
    started = time.monotonic()
    answers = await asker.call("ask", {"kind": "consoles", "body": "q"})
    assert sorted(a for a in answers if a) == [["first", "q"], ["second", "q"]]
    assert None in answers and len(answers) == 3
    assert time.monotonic() - started < ASK_TIMEOUT
    del mute


async def test_a_worker_that_does_not_answer_is_left_out_after_the_deadline(
    connect: Connect, hub: tuple[Hub, str]
) -> None:
    asker = await connect()
    # A peer that never reads: the question stays unanswered.
    _reader, writer = await asyncio.open_unix_connection(hub[1])
    started = time.monotonic()
    assert await asker.call("ask", {"kind": "consoles"}) == []
    assert ASK_TIMEOUT * 0.9 <= time.monotonic() - started < ASK_TIMEOUT + 1.0
    writer.close()


async def test_a_bad_request_is_answered_with_an_error_and_the_connection_lives_on(
    connect: Connect, hub: tuple[Hub, str]
) -> None:
    client = await connect()
    with pytest.raises(ClusterUnavailable, match="refused no.such"):
        await client.call("no.such", {})
    with pytest.raises(TicketStoreUnavailable):
        await client.call(
            "ticket.put", {"token": "x", "ticket": {"bogus": 1}}, TicketStoreUnavailable
        )
    reader, writer = await asyncio.open_unix_connection(hub[1])
    writer.write(b"not json\n[1, 2]\n")
    assert b'"e":"bad_request"' in await asyncio.wait_for(reader.readline(), 2)
    assert b'"e":"bad_request"' in await asyncio.wait_for(reader.readline(), 2)
    assert await client.call("ping", {}) == 2
    writer.close()


async def test_a_line_past_the_limit_ends_that_connection_only(
    connect: Connect, hub: tuple[Hub, str]
) -> None:
    client = await connect()
    reader, writer = await asyncio.open_unix_connection(hub[1])
    writer.write(b"x" * (MAX_LINE + 1))
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert await client.call("ping", {}) == 1
    writer.close()


async def test_a_gone_hub_is_unavailable_and_says_so(
    hub: tuple[Hub, str], connect: Connect, tmp_path: Path
) -> None:
    path = str(tmp_path / "short-lived.sock")
    _short_hub, server = await start_hub(path, 10)
    client = await HubClient.connect(path)
    server.close()
    await server.wait_closed()
    for writer in list(_short_hub._peers.values()):
        writer.writer.close()
    await asyncio.wait_for(client.lost.wait(), 5)
    with pytest.raises(TicketStoreUnavailable, match="hub is gone"):
        await HubTicketStore(client).redeem("t")
    await client.close()


async def test_a_hub_that_does_not_answer_is_unavailable_after_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    monkeypatch.setattr(client_module, "CALL_TIMEOUT", 0.3)
    path = str(tmp_path / "silent.sock")
    server = await asyncio.start_unix_server(silent, path=path)
    client = await HubClient.connect(path)
    started = time.monotonic()
    with pytest.raises(ClusterUnavailable, match="did not answer within 0.3 s"):
        await HubCounts(client, "w").claim("vm", "c", 1)
    assert time.monotonic() - started < 1.5
    await client.close()
    server.close()
    await server.wait_closed()


async def test_a_budget_is_the_machines_not_each_workers(connect: Connect) -> None:
    first = HubBudget(await connect(), "mint", per_minute=1, burst=3)
    second = HubBudget(await connect(), "mint", per_minute=1, burst=3)
    spent = [await b.spend("192.0.2.7") for b in (first, second, first, second)]
    assert spent == [True, True, True, False]
    assert await first.exhausted("192.0.2.7") and await second.exhausted("192.0.2.7")
    # Another address, and another budget, have buckets of their own.
    assert await second.spend("192.0.2.8")
    other = HubBudget(await connect(), "redemption_failures", per_minute=1, burst=3)
    assert await other.spend("192.0.2.7")


async def test_an_address_that_never_spent_here_is_not_checked_with_the_hub(
    connect: Connect,
) -> None:
    first = HubBudget(await connect(), "failures", per_minute=1, burst=1)
    second = HubBudget(await connect(), "failures", per_minute=1, burst=1)
    assert await first.spend("192.0.2.9")
    assert await first.exhausted("192.0.2.9")
    # No round trip for an address this worker has not seen spend: its first failure here
    # asks the hub, which knows it is spent.
    assert not await second.exhausted("192.0.2.9")
    assert not await second.spend("192.0.2.9")
    assert await second.exhausted("192.0.2.9")


async def test_without_the_hub_a_budget_falls_back_to_the_workers_own(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "gone.sock")
    hub, server = await start_hub(path, 10)
    client = await HubClient.connect(path)
    budget = HubBudget(client, "mint", per_minute=1, burst=2)
    server.close()
    for peer in list(hub._peers.values()):
        peer.writer.close()
    await asyncio.wait_for(client.lost.wait(), 5)
    assert [await budget.spend("192.0.2.10") for _ in range(3)] == [True, True, False]
    assert "falls back to this worker's" in caplog.text
    await client.close()
