"""What a worker process is told by its supervisor, and the limits it keeps as its share."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from proxy.config import Config


@dataclass(frozen=True)
class WorkerRole:
    hub_path: str
    workers: int


def share_limits(config: Config, workers: int) -> Config:
    """One worker's share of ``max_connections``: the machine as a whole keeps the configured
    number. The kernel spreads new connections evenly over the workers (SO_REUSEPORT hashes
    each connection's addresses and ports), and each worker has its own descriptors to protect.

    Per-VM limits and the per-address budgets are the hub's (see proxy.workers.shared).
    """
    if workers <= 1:
        return config
    limits = config.limits
    shared = replace(limits, max_connections=math.ceil(limits.max_connections / workers))
    return replace(config, limits=shared)
