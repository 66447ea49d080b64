"""What recording costs (`python -m bench.recording`): this proxy with ``[recording] dir`` set
and without, on the same targets. Downstream MB/s over one console (recording must keep at
least 70 % of it) and memory per idle console (at most 8 KiB more with recording).

The recordings go to a temporary directory on the same disk as everything else; the files of
the downstream run grow at the console's rate (keep ``--duration`` short).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import load, procstat, servers
from bench.run import RESULTS, memory_of, raise_nofile


def measure(
    recording_dir: str, targets: tuple[dict[str, int], int], token_file: Path, args: Any
) -> dict[str, Any]:
    env = {"CONSOLE_PROXY_RECORDING_DIR": recording_dir} if recording_dir else {}
    # Each console's file may hold the whole run: no per-console cap in the way.
    env["CONSOLE_PROXY_RECORDING_MAX_BYTES_PER_CONSOLE"] = str(1 << 40)
    log = RESULTS / "logs" / f"recording-{'on' if recording_dir else 'off'}.log"
    result: dict[str, Any] = {}
    speeds = []
    for _ in range(args.reps):
        with servers.system("C", targets[0], token_file, log, Path(), env) as ep:
            probe = procstat.Probe(ep.pid, targets[1])
            speeds.append(load.downstream(ep, probe, args.warmup, args.duration)["MBps"])
    result["downstream_MBps"] = statistics.median(speeds)
    with servers.system("C", targets[0], token_file, log, Path(), env) as ep:
        assert ep.pid is not None
        pid = ep.pid
        held = load.hold(ep, args.consoles, args.consoles, 64, lambda: memory_of(pid), 100)
    before = held["memory_before"]["rss"]
    after = held[f"at_{args.consoles}"]["memory"]["rss"]
    result["idle_consoles"] = held["held"]
    result["rss_per_idle_console_bytes"] = round((after - before) / max(1, held["held"]))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recording", description=__doc__)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--consoles", type=int, default=1000)
    args = parser.parse_args(argv)
    raise_nofile(3 * args.consoles + 4096)
    (RESULTS / "logs").mkdir(parents=True, exist_ok=True)
    with servers.targets_process() as targets, tempfile.TemporaryDirectory() as tmp:
        token_file = Path(tmp) / "tokens"
        servers.write_token_file(token_file, targets[0])
        off = measure("", targets, token_file, args)
        on = measure(str(Path(tmp) / "recordings"), targets, token_file, args)
    ratio = on["downstream_MBps"] / off["downstream_MBps"]
    extra = on["rss_per_idle_console_bytes"] - off["rss_per_idle_console_bytes"]
    summary = {
        "off": off,
        "on": on,
        "downstream_ratio": round(ratio, 2),
        "extra_bytes_per_idle_console": extra,
        "ok": ratio >= 0.7 and extra <= 8 * 1024,
    }
    print(json.dumps(summary, indent=2))
    (RESULTS / "recording-latest.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
