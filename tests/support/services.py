"""Real services for tests, started on loopback ephemeral ports and stopped afterwards:
redis-server (stoppable and restartable on its port), HAProxy, and a cluster of
``console-proxy serve`` processes behind HAProxy."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import aiohttp
import pytest

from tests.support.binaries import require_binary
from tests.support.metrics import sample_value
from tests.support.net import free_port
from tests.support.serve_process import listening_process


def wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until something accepts on ``port``; fails the test with ``log`` if the process exits."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"exited with {process.returncode}: {log.read_text(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"nothing listening on {port}: {log.read_text(errors='replace')}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s; a process that already exited is only reaped."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class RedisServer:
    """A throw-away redis-server on a loopback port that can be stopped and started again."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            [self.binary, *args, "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self._answers_ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # in case a test left it paused
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class HAProxy:
    """``haproxy -db -f config`` in the foreground, its output in ``haproxy.log`` beside it."""

    def __init__(self, binary: str, config: Path, port: int) -> None:
        self.binary = binary
        self.config = config
        self.port = port
        self.log = config.with_name("haproxy.log")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [self.binary, "-db", "-f", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                # The shipped config drops privileges unless this is set (see compose.yaml).
                env={"HAPROXY_CONTAINER": "1"},
            )
        wait_listening(self.port, self.process, self.log)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None


def round_robin_config(port: int, backends: Sequence[int], health_uri: str = "") -> str:
    """A small HAProxy config: round robin over loopback ``backends``, WebSocket-friendly
    timeouts, and with ``health_uri`` a fast HTTP health check (down after two misses)."""
    checks = ""
    if health_uri:
        checks = (
            "    option httpchk\n"
            f"    http-check send meth GET uri {health_uri} ver HTTP/1.1 hdr Host console-proxy\n"
            "    http-check expect status 200\n"
            "    default-server check inter 200ms fastinter 100ms downinter 200ms fall 2 rise 2\n"
        )
    servers = "".join(f"    server p{i} 127.0.0.1:{p}\n" for i, p in enumerate(backends, 1))
    return (
        "global\n"
        "    maxconn 512\n"
        "defaults\n"
        "    mode http\n"
        "    timeout connect 2s\n"
        "    timeout client 30s\n"
        "    timeout server 30s\n"
        "    timeout http-request 5s\n"
        "    # Once upgraded a console WebSocket is a tunnel: only this timeout applies.\n"
        "    timeout tunnel 1h\n"
        "    timeout client-fin 5s\n"
        "frontend consoles\n"
        f"    bind 127.0.0.1:{port}\n"
        "    default_backend proxies\n"
        "backend proxies\n"
        "    balance roundrobin\n"
        f"{checks}{servers}"
    )


def start_round_robin(directory: Path, backends: Sequence[int], health_uri: str = "") -> HAProxy:
    """Write a :func:`round_robin_config` into ``directory`` and start HAProxy on it."""
    binary = require_binary("haproxy", "haproxy")
    port = free_port()
    config = directory / "haproxy.cfg"
    config.write_text(round_robin_config(port, backends, health_uri))
    balancer = HAProxy(binary, config, port)
    balancer.start()
    return balancer


async def wait_settled(url: str, in_a_row: int = 8, timeout: float = 15.0) -> None:
    """Until ``in_a_row`` GETs of ``url`` succeed in a row: no unready server is in rotation."""
    deadline, good = time.monotonic() + timeout, 0
    connector = aiohttp.TCPConnector(force_close=True)  # one connection per request
    async with aiohttp.ClientSession(connector=connector) as http:
        while good < in_a_row:
            assert time.monotonic() < deadline, (
                f"{url} never answered 200 {in_a_row} times in a row"
            )
            try:
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as answer:
                    good = good + 1 if answer.status == 200 else 0
            except (aiohttp.ClientError, TimeoutError):
                good = 0
            if not good:
                await asyncio.sleep(0.1)


# --- console-proxy processes behind HAProxy --------------------------------------------------


async def read_metric(base_url: str, sample: str, **labels: str) -> float:
    """One sample from a proxy's ``/metrics`` (0 when it has not been recorded yet)."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base_url}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as answer,
    ):
        assert answer.status == 200, answer.status
        text = await answer.text()
    return sample_value(text, sample, **labels)


class ProcessCluster:
    """``size`` real ``console-proxy serve`` processes (configured by ``env``, e.g. the same
    Redis and ZStack) behind HAProxy, which health-checks each one's ``/readyz`` every 200 ms.

    Instances can be SIGKILLed; the rest, and HAProxy, stop on exit.
    """

    def __init__(self, size: int, env: dict[str, str], directory: Path) -> None:
        self.processes = [listening_process(env=env) for _ in range(size)]
        self.directory = directory
        self.killed: set[int] = set()
        self._balancer: HAProxy | None = None
        self._exit = contextlib.AsyncExitStack()

    @property
    def balancer(self) -> HAProxy:
        assert self._balancer is not None, "the cluster is not running"
        return self._balancer

    @property
    def urls(self) -> list[str]:
        return [process.url for process in self.processes]

    async def __aenter__(self) -> ProcessCluster:
        async with contextlib.AsyncExitStack() as starting:
            for process in self.processes:
                await starting.enter_async_context(process)
            ports = [process.port for process in self.processes]
            self._balancer = await asyncio.to_thread(
                start_round_robin, self.directory, ports, "/readyz"
            )
            starting.callback(self._balancer.stop)
            await wait_settled(f"{self.balancer.url}/readyz")
            self._exit = starting.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._exit.aclose()

    def kill(self, index: int) -> None:
        """SIGKILL one instance: no drain, no goodbye to its browsers or to Redis."""
        process = self.processes[index].process
        assert process is not None
        process.kill()
        process.wait()
        self.killed.add(index)

    async def active_consoles(self) -> dict[int, float]:
        """Open consoles per live instance, from each one's /metrics."""
        return {
            index: await read_metric(process.url, "console_proxy_consoles_active")
            for index, process in enumerate(self.processes)
            if index not in self.killed
        }


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A started :class:`RedisServer`, stopped after the test (registered in tests/conftest.py)."""
    server = RedisServer(require_binary("redis-server", "redis-server"), tmp_path)
    server.start()
    yield server
    server.stop()
