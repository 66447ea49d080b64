"""Per-VM console counts: the sockets of one SPICE console count once, here and across
instances (Redis), and the count is released with the console's last socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from proxy.consoles.cluster import ClusterState
from proxy.consoles.registry import ConsoleRegistry, LiveConsole
from proxy.tickets.redis_client import redis_client_from_url
from tests.support.binaries import require_binary
from tests.support.services import RedisServer


class Socket:
    """Stands in for a browser's WebSocket: the registry only closes it."""

    closed = False

    async def close(self, **_: Any) -> bool:
        self.closed = True
        return True


def console(group: str = "") -> LiveConsole:
    return LiveConsole(Socket(), client_ip="192.0.2.1", group=group)  # type: ignore[arg-type]


def test_sockets_of_one_console_count_once_here() -> None:
    registry = ConsoleRegistry()
    channels = [console("spice-1") for _ in range(4)]
    for channel in channels:
        registry.add(channel)
        assert registry.assign_vm(channel, "vm") == 1
    other = console()
    registry.add(other)
    assert registry.assign_vm(other, "vm") == 2
    assert registry.counts(channels[0])  # three more channels still count for it
    for channel in channels[1:]:
        registry.remove(channel)
    assert not registry.counts(channels[0])
    assert registry.assigned() == sorted({("vm", "spice-1"), ("vm", other.console_id)})


def test_counts_stay_right_across_many_consoles_of_one_vm() -> None:
    # The counts are kept per VM, not recomputed from every socket of the VM.
    registry = ConsoleRegistry()
    singles = [console() for _ in range(2000)]
    spice = [console("spice-2") for _ in range(3)]
    for n, one in enumerate(singles + spice, start=1):
        registry.add(one)
        assert registry.assign_vm(one, "vm") == min(n, 2001)
    assert registry.assign_vm(singles[0], "vm") == 2001  # assigning again counts nothing twice
    assert not registry.counts(singles[5]) and registry.counts(spice[0])
    for one in singles[:1000] + spice[:2]:
        registry.remove(one)
    assert not registry.counts(spice[2])
    late = console()
    registry.add(late)
    assert registry.assign_vm(late, "vm") == 1002
    assert len(registry.assigned()) == 1002
    for one in list(registry._all):
        registry.remove(one)
    assert registry.assigned() == [] and not registry._counted


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[ClusterState]:
    server = RedisServer(require_binary("redis-server", "redis-server"), tmp_path)
    server.start()
    redis = redis_client_from_url(server.url, 2.0)
    try:
        yield ClusterState(redis, "test:")
    finally:
        await redis.aclose()
        server.stop()


async def test_a_counted_console_claims_again_at_the_limit(cluster: ClusterState) -> None:
    assert await cluster.claim("vm", "spice-1", limit=1)
    # Another channel socket of the same console: already counted, so it is let in.
    assert await cluster.claim("vm", "spice-1", limit=1)
    # A different console of the VM is one too many.
    assert not await cluster.claim("vm", "spice-2", limit=1)
    await cluster.release("vm", "spice-1")
    assert await cluster.claim("vm", "spice-2", limit=1)
