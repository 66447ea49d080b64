"""The background work that keeps this instance in the cluster-wide console listing: publish
every half second, close consoles other instances were asked to close, leave on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from proxy.closecodes import Close
from proxy.consoles.background import running
from proxy.consoles.cluster import ClusterUnavailable
from proxy.consoles.live import PUBLISH_EVERY, LiveDirectory, summarize, targets
from proxy.consoles.registry import ConsoleRegistry

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def live_tasks(
    live: LiveDirectory, registry: ConsoleRegistry, instance: str
) -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()

    async def publish() -> None:
        failing = False
        while True:
            try:
                await live.publish(summarize(registry, instance, loop.time()), targets(registry))
                failing = False
            except ClusterUnavailable as exc:
                if not failing:
                    log.warning("cannot publish the live consoles: %s", exc.reason)
                failing = True
            await asyncio.sleep(PUBLISH_EVERY)

    async def close(console_id: str) -> int:
        return await registry.close_console(console_id, Close.REVOKED)

    try:
        async with running(publish(), live.listen_for_closes(close)):
            yield
    finally:
        await live.withdraw()
