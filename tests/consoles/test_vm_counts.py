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
