"""Profile this proxy under one benchmark scenario with py-spy: ``make profile SCENARIO=setup``.

Runs ``python -m bench`` for system C only under ``py-spy record --subprocesses`` and keeps the
samples of the proxy's process: the raw stacks (flamegraph.pl input) and the functions with the
most time, in ``bench/results/profile-<scenario>.{raw,txt}``.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PROXY_PROCESS = "proxy.cli serve"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenario", default="setup", help="one of the bench scenarios")
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    RESULTS.mkdir(exist_ok=True)
    raw = RESULTS / f"profile-{args.scenario}.raw"
    bench = [sys.executable, "-m", "bench", "--systems", "C", "--reps", "1"]
    bench += ["--scenarios", args.scenario, "--duration", str(args.duration)]
    record = [py_spy, "record", "--subprocesses", "--rate", "500", "--format", "raw"]
    # py-spy may exit 1 ("No child process") after writing its samples when the run ends.
    subprocess.run([*record, "-o", str(raw), "--", *bench], check=False)
    if not raw.exists():
        print("py-spy wrote no samples", file=sys.stderr)
        return 1
    lines = [line for line in raw.read_text().splitlines() if PROXY_PROCESS in line]
    summary = top_functions(lines)
    (RESULTS / f"profile-{args.scenario}.txt").write_text(summary)
    print(summary)
    return 0


def top_functions(lines: list[str], count: int = 40) -> str:
    """Inclusive share of samples per function, the proxy process only, idle threads left out."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in lines:
        stack, _, samples = line.rpartition(" ")
        frames = [
            re.sub(r":\d+\)", ")", frame)
            for frame in stack.split(";")
            if not frame.startswith(("process ", "thread "))
        ]
        if not frames or "_worker (concurrent/futures/thread.py)" in frames[-1]:
            continue
        total += int(samples)
        for frame in set(frames):
            inclusive[frame] += int(samples)
    rows = [f"{n / total * 100:5.1f} %  {frame}" for frame, n in inclusive.most_common(count)]
    return f"{total} samples of the proxy process\n" + "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.exit(main())
