"""Start and stop what is measured: the targets, websockify and this proxy, each in its own
process group so that stopping one also stops everything it forked."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import wire

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0

SYSTEMS = {
    "A": "direct TCP",
    "B": "websockify 0.13",
    "C": "this proxy",
    "D": "this proxy, 2 workers",
}
# The scenarios D (``serve --workers 2``) is measured in: what more processes change.
D_SCENARIOS = ("rtt100", "setup", "hold")
WORKERS_READY = b"workers serving"


@dataclass(frozen=True)
class Endpoint:
    """Where a load client connects to reach a named target, and how."""

    system: str  # "A" (direct TCP), "B" (websockify), "C" (this proxy), "D" (2 workers)
    targets: dict[str, int]
    port: int = 0  # the WebSocket server's port (B, C)
    pid: int | None = None  # the server process (B, C)

    @property
    def ws(self) -> bool:
        return self.system != "A"

    def address(self, target: str) -> tuple[str, int]:
        return (HOST, self.port if self.ws else self.targets[target])

    def handshake(self, target: str) -> tuple[bytes, bytes]:
        """The upgrade request for ``target`` (its token) and the expected accept value."""
        return wire.handshake_request(HOST, self.port, f"/websockify?token={target}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, wait, then SIGKILL whatever is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def targets_process() -> Iterator[tuple[dict[str, int], int]]:
    """Start ``bench.targets``; yield (ports by target name, pid)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.targets"],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("bench.targets exited before listening")
        yield json.loads(line), process.pid
    finally:
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        _stop_group(process)


def _wait_listening(
    process: subprocess.Popen[bytes], port: int, log: Path, ready: bytes = b""
) -> None:
    """Until the port takes connections and, when ``ready`` is given, the log says it."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; see {log}")
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0 and (not ready or ready in log.read_bytes()):
                return
        time.sleep(0.05)
    raise RuntimeError(f"server not listening after {STARTUP_TIMEOUT:.0f} s; see {log}")


@contextlib.contextmanager
def _server(
    command: list[str], env: dict[str, str], log: Path, ready: bytes = b""
) -> Iterator[tuple[int, int]]:
    """Run ``command`` (``{port}`` filled in) until it listens; yield (port, pid)."""
    for attempt in range(3):
        port = free_port()
        with log.open("ab") as out:
            process = subprocess.Popen(
                [part.format(port=port) for part in command],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            try:
                _wait_listening(process, port, log, ready)
            except RuntimeError:
                if attempt == 2:
                    raise
                continue  # most likely someone took the port first
            yield port, process.pid
            return
        finally:
            _stop_group(process)


@contextlib.contextmanager
def system(
    name: str,
    targets: dict[str, int],
    token_file: Path,
    log: Path,
    websockify: Path,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Endpoint]:
    """``extra_env``: more CONSOLE_PROXY_* settings for this proxy (e.g. recording on)."""
    if name == "A":
        yield Endpoint("A", targets)
        return
    if name == "B":
        command = [
            str(websockify),
            "--token-plugin",
            "TokenFile",
            "--token-source",
            str(token_file),
            f"{HOST}:{{port}}",
        ]
        env = dict(os.environ)
    else:
        command = [
            sys.executable,  # the venv `make bench` runs in
            "-m",
            "proxy.cli",
            "serve",
            "--listen",
            f"{HOST}:{{port}}",
            "--token-file",
            str(token_file),
        ]
        env = {**os.environ, "CONSOLE_PROXY_TARGETS_ALLOW": "127.0.0.0/8", **proxy_limits()}
        if name == "D":
            env["CONSOLE_PROXY_SERVER_WORKERS"] = "2"
        env.update(extra_env or {})
    ready = WORKERS_READY if name == "D" else b""
    with _server(command, env, log, ready) as (port, pid):
        yield Endpoint(name, targets, port, pid)


# A benchmark measures capacity: every per-client and per-console cap is lifted, if the proxy
# has it (an unknown key would stop the proxy from starting).
LIFTED_LIMITS = {
    "max_connections": "1000000",
    "max_per_vm": "1000000",
    "rate_per_minute": "1000000000",
    "rate_burst": "1000000000",
}


def proxy_limits() -> dict[str, str]:
    """``CONSOLE_PROXY_LIMITS_*`` variables lifting the caps that this proxy version has."""
    try:
        from proxy.config import LimitsConfig
    except ImportError:
        known = {"max_connections"}
    else:
        known = {f.name for f in dataclasses.fields(LimitsConfig)}
    return {
        f"CONSOLE_PROXY_LIMITS_{key.upper()}": value
        for key, value in LIFTED_LIMITS.items()
        if key in known
    }


def write_token_file(path: Path, targets: dict[str, int]) -> None:
    path.write_text("".join(f"{name}: {HOST}:{port}\n" for name, port in targets.items()))
