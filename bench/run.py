"""Run the benchmark: ``python -m bench [--quick] [--reps N] ...`` (``make bench``).

Measures direct TCP (A), websockify (B) and this proxy (C) against the same loopback targets,
interleaving the three within each repetition, and writes ``bench/results/*.{json,md}``. The
``-rec`` scenarios run this proxy alone with ``[recording] dir`` set (what recording costs).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from bench import load, procstat, report, servers, spread

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
WEBSOCKIFY = BENCH / ".venv-websockify" / "bin" / "websockify"
SCENARIOS = (
    "downstream", "upstream", "rtt1", "rtt100", "setup", "hold", "downstream-rec", "hold-rec",
)  # fmt: skip
# Scenarios measured again on this proxy with every console recorded: the same load as theirs.
RECORDED = {"downstream-rec": "downstream", "hold-rec": "hold"}


@dataclass(frozen=True)
class Settings:
    quick: bool
    reps: int
    warmup: float
    duration: float
    frame_size: int
    setup_window: int
    consoles: int
    websockify_consoles: int
    checkpoint: int
    systems: str
    scenarios: tuple[str, ...]
    websockify: str


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one short repetition")
    parser.add_argument("--reps", type=int, help="repetitions (default 3, quick 1)")
    parser.add_argument("--duration", type=float, help="seconds per window (default 5, quick 1.5)")
    parser.add_argument("--frame-size", type=int, default=64 * 1024, help="upstream frame bytes")
    parser.add_argument("--setup-window", type=int, default=32, help="upgrades in flight")
    parser.add_argument("--consoles", type=int, default=10_000, help="concurrency goal for C")
    parser.add_argument(
        "--websockify-consoles", type=int, default=1_000, help="concurrency goal for B"
    )
    parser.add_argument("--checkpoint", type=int, default=1_000, help="consoles for memory")
    parser.add_argument(
        "--systems",
        default="ABCD",
        help="any of A, B, C, D (D: the proxy with 2 workers; default ABCD)",
    )
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"comma list from {','.join(SCENARIOS)}"
    )
    parser.add_argument("--websockify", default=str(WEBSOCKIFY), help="websockify executable")
    args = parser.parse_args(argv)
    scenarios = tuple(s.strip() for s in args.scenarios.split(",") if s.strip())
    if unknown := (set(scenarios) - set(SCENARIOS)) | (set(args.systems) - set("ABCD")):
        parser.error(f"unknown scenario or system: {', '.join(sorted(unknown))}")
    return Settings(
        quick=args.quick,
        reps=args.reps or (1 if args.quick else 3),
        warmup=0.3 if args.quick else 1.0,
        duration=args.duration or (1.5 if args.quick else 5.0),
        frame_size=args.frame_size,
        setup_window=args.setup_window,
        consoles=args.consoles,
        websockify_consoles=args.websockify_consoles,
        checkpoint=args.checkpoint,
        systems=args.systems,
        scenarios=scenarios,
        websockify=args.websockify,
    )


def raise_nofile(wanted: int) -> int:
    """Raise this process's descriptor limit (inherited by everything it starts)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        with contextlib.suppress(ValueError, OSError):  # needs CAP_SYS_RESOURCE
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
    return max(soft, target)


def machine_info(websockify: str) -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    versions = {p: _version(p) for p in ("aiohttp", "uvloop")}
    theirs = _websockify_versions(websockify)
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "proxy venv": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "websockify venv": theirs,
        "commit": _commit(),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _websockify_versions(websockify: str) -> str:
    python = Path(websockify).parent / "python"
    code = (
        "import importlib.metadata as m, platform; "
        "print(', '.join([f'{p} {m.version(p)}' for p in ('websockify', 'numpy')]"
        " + ['Python ' + platform.python_version()]))"
    )
    try:
        done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=30)
    except OSError:
        return "not installed"
    return done.stdout.strip() or "unknown"


def _commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=BENCH.parent, capture_output=True, text=True, timeout=10
        )
        return done.stdout.strip()

    try:
        dirty = "+dirty" if git("status", "--porcelain") else ""
        return git("rev-parse", "--short", "HEAD") + dirty
    except OSError:
        return "unknown"


def memory_of(pid: int) -> dict[str, int]:
    pss, processes = procstat.pss_tree(pid)
    return {"rss": procstat.rss(pid), "pss": pss, "processes": processes}


def recording_env(directory: Path) -> dict[str, str]:
    """Recording on, into ``directory``; no per-console cap, which would stop a recording part
    way through the window and leave the rest of it unrecorded."""
    return {
        "CONSOLE_PROXY_RECORDING_DIR": str(directory),
        "CONSOLE_PROXY_RECORDING_MAX_BYTES_PER_CONSOLE": str(1 << 50),
    }


def recordings_made(directory: Path) -> dict[str, Any]:
    """What the proxy wrote: how many recordings, how many complete, their bytes, and why any
    stopped (a recording that stops leaves the rest of its console unrecorded)."""
    metas = [json.loads(p.read_text()) for p in directory.glob("*.json")]
    return {
        "count": len(metas),
        "complete": sum(bool(m.get("complete")) for m in metas),
        "bytes": sum(m.get("bytes") or 0 for m in metas),
        "problems": sorted({m["problem"] for m in metas if m.get("problem")}),
    }


def measure(scenario: str, ep: servers.Endpoint, probe: procstat.Probe, s: Settings) -> Any:
    if scenario == "hold-rec":
        # Memory per idle console is read at the checkpoint: no need to go further.
        assert ep.pid is not None
        pid = ep.pid
        result = load.hold(ep, s.checkpoint, s.checkpoint, 64, lambda: memory_of(pid), 1_000)
        return {**result, "goal": s.checkpoint, "server_nofile": procstat.nofile(pid)}
    scenario = RECORDED.get(scenario, scenario)
    if scenario == "downstream":
        return load.downstream(ep, probe, s.warmup, s.duration)
    if scenario == "upstream":
        return load.upstream(ep, probe, s.warmup, s.duration, s.frame_size)
    if scenario == "rtt1":
        return load.rtt(ep, probe, 1, s.warmup, s.duration)
    if scenario == "rtt100":
        return load.rtt(ep, probe, 100, s.warmup, s.duration)
    if scenario == "setup":
        return load.setup_rate(ep, probe, s.warmup, s.duration, s.setup_window)
    assert ep.pid is not None
    pid = ep.pid
    if ep.system == "D":  # twice C's goal, over two client and two target processes
        goal = 2 * s.consoles
        found = spread.hold_spread(
            ep, ["hello", "hello2"], goal, 64, lambda: memory_of(pid), max_failures=1_000
        )
        return {**found, "goal": goal, "server_nofile": procstat.nofile(pid)}
    goal = s.consoles if ep.system == "C" else s.websockify_consoles
    result = load.hold(ep, goal, s.checkpoint, 64, lambda: memory_of(pid), max_failures=1_000)
    return {**result, "goal": goal, "server_nofile": procstat.nofile(pid)}


def run_one(
    name: str,
    scenario: str,
    rep: int,
    targets: tuple[dict[str, int], int],
    token_file: Path,
    s: Settings,
) -> dict[str, Any]:
    record: dict[str, Any] = {"system": name, "scenario": scenario, "rep": rep}
    log = RESULTS / "logs" / f"{name}-{scenario}-r{rep}.log"
    started = time.monotonic()
    recordings = token_file.parent / f"recordings-{scenario}-r{rep}"
    env = recording_env(recordings) if scenario in RECORDED else None
    try:
        with servers.system(name, targets[0], token_file, log, Path(s.websockify), env) as ep:
            probe = procstat.Probe(ep.pid, targets[1])
            record["result"] = measure(scenario, ep, probe, s)
            record["usage"] = probe.result
        if env is not None:
            record["recordings"] = recordings_made(recordings)
    except Exception as exc:  # one failed measurement must not lose the others
        record["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        shutil.rmtree(recordings, ignore_errors=True)  # a downstream window writes gigabytes
    record["seconds"] = round(time.monotonic() - started, 1)
    return record


def _progress(record: dict[str, Any]) -> str:
    found = report.metrics_of(record)
    text = record.get("error") or ", ".join(f"{k}={v:g}" for k, v in found.items())
    server = record.get("usage", {}).get("server", {})
    client = record.get("usage", {}).get("client", {})
    if client:
        text += f"  [client {client['cpu_pct']:.0f}% cpu"
        text += f", server {server['cpu_pct']:.0f}% cpu]" if server else "]"
    return f"rep {record['rep'] + 1} {record['scenario']:<10} {record['system']}: {text}"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    s = parse_args(argv)
    if "B" in s.systems and not Path(s.websockify).exists():
        print(f"bench: {s.websockify} not found (run `make bench`)", file=sys.stderr)
        return 2
    nofile = raise_nofile(3 * s.consoles + 4096)
    if "C" in s.systems and nofile < 2 * s.consoles + 100:
        print(
            f"bench: RLIMIT_NOFILE is {nofile} and cannot be raised here (needs root with "
            f"CAP_SYS_RESOURCE); the proxy cannot hold {s.consoles:,} consoles",
            file=sys.stderr,
        )
    signal.signal(signal.SIGTERM, _interrupt)
    shutil.rmtree(RESULTS / "logs", ignore_errors=True)
    (RESULTS / "logs").mkdir(parents=True)
    machine = machine_info(s.websockify)
    machine["RLIMIT_NOFILE"] = str(nofile)
    machine["proxy env"] = " ".join(f"{k}={v}" for k, v in servers.proxy_limits().items())
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs: list[dict[str, Any]] = []
    with (
        servers.targets_process() as targets,
        servers.targets_process() as more_targets,
        tempfile.TemporaryDirectory() as tmp,
    ):
        # D's hold needs a second process of targets: one may not open 20,000 sockets here.
        token_file = Path(tmp) / "tokens"
        servers.write_token_file(token_file, {**targets[0], "hello2": more_targets[0]["hello"]})
        for rep in range(s.reps):
            order = s.systems[rep % len(s.systems) :] + s.systems[: rep % len(s.systems)]
            for scenario in s.scenarios:
                for name in order:
                    if scenario == "hold" and name == "A":
                        continue  # no proxy process to hold anything
                    if scenario in RECORDED and name != "C":
                        continue  # recording is this proxy's
                    if name == "D" and scenario not in servers.D_SCENARIOS:
                        continue  # one console uses one worker: D would measure C again
                    runs.append(run_one(name, scenario, rep, targets, token_file, s))
                    print(_progress(runs[-1]), flush=True)
    machine["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    result = {
        "started": stamp,
        "machine": machine,
        "settings": asdict(s),
        "runs": runs,
        "summary": report.summarize(runs),
    }
    text = report.markdown(result)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"bench-{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"bench-{stamp}.md").write_text(text)
    shutil.copyfile(RESULTS / f"bench-{stamp}.md", RESULTS / "latest.md")
    shutil.copyfile(RESULTS / f"bench-{stamp}.json", RESULTS / "latest.json")
    print()
    print(text)
    print(f"written to {RESULTS}/bench-{stamp}.{{json,md}}")
    return 0
