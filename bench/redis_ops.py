"""How many mints and redemptions one Redis primary sustains with the proxy's Lua scripts.

    .venv/bin/python -m bench.redis_ops [--quick] [--workers N] [--concurrency C]

Two measurements, each against a fresh redis-server on a loopback port:

- **proxy path**: ``--workers`` processes, each with ``--concurrency`` tasks doing what an
  instance does per console through :class:`proxy.tickets.redis_store.RedisTicketStore`: mint
  (``SET ... PX``, the password AES-GCM encrypted) then redeem (``TAKE_SCRIPT``); once without
  and once with ``WAIT 1`` (a replica attached). Python is the bottleneck here, so beside the
  rate it reports Redis's own CPU and what that rate would be with Redis's one core busy.
- **redis-benchmark** (Redis's C client, 50 connections, no pipelining): the same commands
  sent as fast as Redis answers them: mints, takes of a SPICE ticket (the script's dearest
  path: decode, re-encode, ``SET``) and per-VM count claims (``CLAIM_SCRIPT``).

Results are printed as Markdown and written to ``bench/results/redis-ops-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.procstat import tree_usage
from proxy.consoles.cluster import CLAIM_SCRIPT
from proxy.tickets.redis_client import redis_client_from_url
from proxy.tickets.redis_store import DEFAULT_PREFIX, TAKE_SCRIPT, RedisTicketStore
from proxy.tickets.store import Ticket, new_token

RESULTS = Path(__file__).resolve().parent / "results"
ENCRYPT_KEY = bytes(range(32))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server(replica_of: int | None = None) -> Iterator[tuple[int, int]]:
    """A throw-away redis-server (no persistence); its port and pid."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found: apt-get install redis-server")
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", directory, "--repl-diskless-sync-delay", "0"]
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: cli(port, "PING") == "PONG", f"redis-server on {port}")
            yield port, process.pid
        finally:
            process.terminate()
            process.wait(timeout=10)


def cli(port: int, *command: str) -> str:
    result = subprocess.run(
        ["redis-cli", "-p", str(port), *command], capture_output=True, text=True, check=False
    )
    return result.stdout.strip()


def wait_for(condition: Any, what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"waited {within} s for {what}")
        time.sleep(0.05)


# --- the proxy path ------------------------------------------------------------------------


def ticket() -> Ticket:
    return Ticket(
        "0123456789abcdef0123456789abcdef",
        "10.0.0.12",
        5901,
        "vnc",
        time.time() + 30,
        password="console-pw",
        account_uuid="36c27e8ff05c4780bf6d2fa65700f22e",
        account_name="admin",
    )


async def worker_loop(port: int, concurrency: int, window: tuple[float, float], wait: int) -> int:
    """Mint-then-redeem pairs within the ``window`` (wall clock); how many pairs completed."""
    client = redis_client_from_url(f"redis://127.0.0.1:{port}/0", 2.0)
    store = RedisTicketStore(
        client, encrypt_key=ENCRYPT_KEY, wait_replicas=wait, wait_timeout=0.5, timeout=2.0
    )
    await asyncio.sleep(max(0.0, window[0] - time.time()))
    deadline = time.monotonic() + window[1] - window[0]
    done = 0

    async def one() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            token = new_token()
            await store.put(token, ticket())
            assert await store.redeem(token) is not None
            done += 1

    await asyncio.gather(*(one() for _ in range(concurrency)))
    await store.close()
    return done


def worker(port: int, concurrency: int, window: tuple[float, float], wait: int, out: Any) -> None:
    out.put(asyncio.run(worker_loop(port, concurrency, window, wait)))


def proxy_path(
    port: int, pid: int, workers: int, concurrency: int, duration: float, wait: int
) -> dict[str, Any]:
    spawn = multiprocessing.get_context("spawn")
    results: Any = spawn.Queue()
    # The workers start (imports, connections) before the window opens, all at once.
    start = time.time() + 3.0
    window = (start, start + duration)
    processes = [
        spawn.Process(target=worker, args=(port, concurrency, window, wait, results))
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    time.sleep(max(0.0, start - time.time()))
    before = tree_usage(pid)
    time.sleep(duration)
    after = tree_usage(pid)
    pairs = sum(results.get(timeout=60) for _ in processes)
    for process in processes:
        process.join()
    rate = pairs / duration
    redis_cpu = after.rates(before)["cpu_pct"]
    return {
        "scenario": "proxy path" + (f", WAIT {wait}" if wait else ""),
        "mints_per_s": round(rate),
        "redemptions_per_s": round(rate),
        "redis_cpu_pct": redis_cpu,
        # Redis runs commands on one thread: the rate it would reach with that core busy.
        "at_one_redis_core_per_s": round(rate * 100 / redis_cpu) if redis_cpu else None,
    }


# --- redis-benchmark -------------------------------------------------------------------------


def redis_benchmark(port: int, requests: int, *command: str) -> float:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise SystemExit("redis-benchmark not found: apt-get install redis-tools")
    args = [binary, "-p", str(port), "-c", "50", "-n", str(requests), "-r", "100000", "-q"]
    result = subprocess.run([*args, *command], capture_output=True, text=True, check=True)
    found = re.search(r"([\d.]+) requests per second", result.stdout)
    if found is None:
        raise RuntimeError(f"redis-benchmark said: {result.stdout} {result.stderr}")
    return float(found.group(1))


def spice_ticket_json(uses: int) -> str:
    value = json.loads(json.dumps(ticket().__dict__))
    value.update(protocol="spice", uses=uses, window=0, expires_at=time.time() + 3600)
    return json.dumps(value, separators=(",", ":"))


def server_side(port: int, requests: int) -> dict[str, Any]:
    mint = json.dumps(ticket().__dict__, separators=(",", ":"))
    take = cli(port, "SCRIPT", "LOAD", TAKE_SCRIPT)
    claim = cli(port, "SCRIPT", "LOAD", CLAIM_SCRIPT)
    # Every take key exists and holds many uses: each take decodes, re-encodes and SETs.
    keys = 100_000
    with tempfile.NamedTemporaryFile("w", suffix=".redis") as commands:
        value = spice_ticket_json(uses=1_000_000)
        for number in range(keys):
            commands.write(f"SET {DEFAULT_PREFIX}{number:012d} '{value}'\n")
        commands.flush()
        with open(commands.name) as source:
            subprocess.run(
                ["redis-cli", "-p", str(port), "--pipe"], stdin=source, capture_output=True
            )
    now = str(int(time.time() * 1000))
    key = f"{DEFAULT_PREFIX}__rand_int__"
    return {
        "scenario": "redis-benchmark (C client, 50 connections)",
        "mints_per_s": round(redis_benchmark(port, requests, "SET", key, mint, "PX", "30000")),
        "redemptions_per_s": round(redis_benchmark(port, requests, "EVALSHA", take, "1", key, now)),
        "claims_per_s": round(
            redis_benchmark(
                port,
                requests,
                "EVALSHA",
                claim,
                "1",
                "console-proxy:vm:__rand_int__",
                str(time.time()),
                "8",
                "60",
                "instance:__rand_int__",
            )  # fmt: skip
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--concurrency", type=int, default=32, help="tasks per worker")
    options = parser.parse_args()
    duration, requests = (2.0, 100_000) if options.quick else (8.0, 500_000)
    rows = []
    with redis_server() as (port, pid):
        rows.append(proxy_path(port, pid, options.workers, options.concurrency, duration, 0))
        with redis_server(replica_of=port) as (replica, _):
            wait_for(lambda: "master_link_status:up" in cli(replica, "INFO", "replication"), "sync")
            rows.append(proxy_path(port, pid, options.workers, options.concurrency, duration, 1))
    with redis_server() as (port, _):
        rows.append(server_side(port, requests))
    report = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "workers": options.workers,
        "concurrency": options.concurrency,
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"redis-ops-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(markdown(report))
    print(f"\n(written to {path})")


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| scenario | mints/s | redemptions/s | claims/s | Redis CPU % | at one Redis core/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        cells = [
            row["scenario"],
            f"{row['mints_per_s']:,}",
            f"{row['redemptions_per_s']:,}",
            f"{row['claims_per_s']:,}" if "claims_per_s" in row else "–",
            str(row.get("redis_cpu_pct", "–")),
            f"{row['at_one_redis_core_per_s']:,}" if row.get("at_one_redis_core_per_s") else "–",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
