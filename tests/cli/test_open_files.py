"""At start the proxy raises its soft open-files limit to the hard one and says so."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

from proxy.relay.tuning import raise_open_files_limit
from tests.support.net import free_port
from tests.support.serve_process import ServeProcess


def test_soft_limit_is_raised_to_the_hard_one() -> None:
    script = (
        "import resource\n"
        "from proxy.relay.tuning import raise_open_files_limit\n"
        "print(raise_open_files_limit(), resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, hard)

    def lower_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    result = subprocess.run(
        [sys.executable, "-c", script],
        preexec_fn=lower_soft_limit,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == f"({hard}, {hard}) ({hard}, {hard})"
    assert raise_open_files_limit()[0] == hard


async def test_serve_logs_both_limits(tmp_path: Path) -> None:
    port = free_port()
    async with ServeProcess(port, ["--listen", f"127.0.0.1:{port}"], tmp_path) as proxy:
        pass
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lines = [line for line in proxy.stderr.splitlines() if "open-files limit" in line]
    assert len(lines) == 1 and f"hard limit {hard}" in lines[0]
