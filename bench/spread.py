"""Holding more consoles than one process has descriptors for: the "hold" scenario of D.

Every process here may open at most 20,000 files, and a held console takes a socket in the load
client and one in the target as well as two in the proxy. So for 20,000 consoles through two
workers, the load is split over client processes (each holding its share and answering pings),
each dialling its own ``hello`` target process. The parent samples the proxy's memory (PSS
summed over the supervisor and its workers) once all are open, then has every client check its
consoles still echo.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from bench import load
from bench.servers import Endpoint

# How long the clients may take to open their share (tens of thousands of upgrades).
OPEN_TIMEOUT = 900.0


def hold_spread(
    ep: Endpoint,
    targets: list[str],
    goal: int,
    window: int,
    memory: Callable[[], dict[str, int]],
    max_failures: int,
) -> dict[str, Any]:
    """``goal`` consoles in all, split evenly over one client process per target name."""
    context = multiprocessing.get_context("spawn")
    result: dict[str, Any] = {"memory_before": memory()}
    share = -(-goal // len(targets))
    links: list[Connection] = []
    clients = []
    for target in targets:
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_client, args=(ep, target, share, window, max_failures, theirs), daemon=True
        )
        process.start()
        links.append(ours)
        clients.append(process)
    try:
        started = time.monotonic()
        opened = [_receive(link, OPEN_TIMEOUT) for link in links]
        opening = time.monotonic() - started
        time.sleep(1.0)
        total_open = sum(o["open"] for o in opened)
        result[f"at_{goal}"] = {"open": total_open, "memory": memory()}
        result["attempted"] = sum(o["attempted"] for o in opened)
        result["opened"] = sum(o["opened"] for o in opened)
        result["open_rate_per_s"] = round(result["opened"] / opening) if opening else 0
        for link in links:
            link.send("verify")
        result["held"] = sum(_receive(link, 4 * load.IO_TIMEOUT)["held"] for link in links)
        result["failures"] = {}
        for o in opened:
            for reason, count in o["failures"].items():
                result["failures"][reason] = result["failures"].get(reason, 0) + count
        result["clients"] = len(clients)
    finally:
        for link in links:
            link.close()
        for process in clients:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    return result


def _receive(link: Connection, timeout: float) -> dict[str, Any]:
    if not link.poll(timeout):
        raise TimeoutError(f"a load client did not report within {timeout:.0f} s")
    answer: dict[str, Any] = link.recv()
    if "error" in answer:
        raise RuntimeError(answer["error"])
    return answer


def _client(
    ep: Endpoint, target: str, count: int, window: int, max_failures: int, link: Connection
) -> None:
    """One client process: open ``count`` consoles, report, hold them until asked to verify."""
    consoles = load.Consoles(ep, target)
    try:
        attempted = load.open_consoles(consoles, count, window, max_failures)
        consoles.drain(load.IO_TIMEOUT)
        consoles.run_for(0.5)
        link.send(
            {
                "open": consoles.open,
                "opened": consoles.opened,
                "attempted": attempted,
                "failures": dict(consoles.failures.most_common(5)),
            }
        )
        while not link.poll():
            consoles.run_for(0.2)  # answer the proxy's pings meanwhile
        link.recv()
        link.send({"held": load.verify_consoles(consoles)})
    except Exception as exc:  # reported to the parent, which fails the measurement
        link.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        consoles.close_all()
