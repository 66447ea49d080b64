"""``serve --workers N``: reserve the port, run the hub, start N workers and look after them.

The port is reserved by a socket bound with SO_REUSEPORT that never listens (so it takes no
connections); each worker binds its own listening socket to the same port, and the kernel
spreads new connections over the listening ones. Reserving first also gives the workers a
concrete port when the configured one is 0. The supervisor says the port is served once every
worker listens; a worker that exits before (a bad certificate, a busy port) stops everything.

Workers are fresh interpreters (``python -m proxy.cli`` with the supervisor's own arguments plus
``--worker-of``), not forks: the supervisor runs an event loop, and a fork of a running loop
shares its epoll descriptor. A worker that dies later is started again, at most
:data:`RESTARTS_PER_MINUTE` times a minute (past that, something is wrong that restarts will not
mend, and everything stops). SIGTERM and SIGINT
go to every worker (each drains its consoles), SIGHUP too (each reloads its certificate).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence

from proxy.config import Config, ConfigError, parse_listen
from proxy.workers.hub import Hub, start_hub

log = logging.getLogger(__name__)

START_TIMEOUT = 60.0
RESTARTS_PER_MINUTE = 5
# Beyond the drain, how long a worker gets to finish before it is killed.
STOP_MARGIN = 15.0


def reserve_port(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        where = listen_arg(host, port)
        raise ConfigError("server.listen", f"cannot listen on {where}: {exc.strerror}") from None
    return sock


def listen_arg(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def worker_environment(config: Config) -> dict[str, str]:
    """The workers' environment: one operator cookie key for all (a random one per process
    would sign an operator out whenever a request lands on another worker)."""
    env = dict(os.environ)
    if not config.operator.cookie_key:
        env["CONSOLE_PROXY_OPERATOR_COOKIE_KEY"] = base64.b64encode(os.urandom(32)).decode()
    return env


class Supervisor:
    def __init__(self, config: Config, argv: Sequence[str], workers: int) -> None:
        self.config = config
        self.argv = list(argv)
        self.workers = workers
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._restarts: list[float] = []
        self._stop = asyncio.Event()

    async def run(self) -> int:
        host, port = parse_listen(self.config.server.listen)
        reservation = reserve_port(host, port)
        port = reservation.getsockname()[1]
        rundir = tempfile.mkdtemp(prefix="console-proxy-")  # mode 0700
        hub_path = os.path.join(rundir, "hub.sock")
        hub, server = await start_hub(hub_path, self.config.tickets.max_tickets)
        command = [sys.executable, "-m", "proxy.cli", *self.argv]
        command += ["--listen", listen_arg(host, port), "--worker-of", hub_path]
        env = worker_environment(self.config)
        self._handle_signals()
        try:
            for slot in range(self.workers):
                await self._start(slot, command, env)
            if not await self._all_listening(hub):
                return 1
            log.info(
                "%d workers serving %s (pids %s)",
                self.workers,
                listen_arg(host, port),
                ", ".join(str(p.pid) for p in self._procs.values()),
            )
            return await self._watch(command, env)
        finally:
            await self._stop_all()
            server.close()
            reservation.close()
            shutil.rmtree(rundir, ignore_errors=True)

    def _handle_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)

    def _forward(self, signum: int) -> None:
        for proc in self._procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)

    async def _start(self, slot: int, command: list[str], env: dict[str, str]) -> None:
        self._procs[slot] = await asyncio.create_subprocess_exec(*command, env=env)

    async def _all_listening(self, hub: Hub) -> bool:
        """Wait until every worker listens; False if one exits first or none do in time."""
        deadline = time.monotonic() + START_TIMEOUT
        while hub.ready() < self.workers:
            exited = [p for p in self._procs.values() if p.returncode is not None]
            if exited or time.monotonic() > deadline or self._stop.is_set():
                if exited:
                    log.error("a worker exited with %s while starting", exited[0].returncode)
                elif not self._stop.is_set():
                    log.error("the workers did not start within %g s", START_TIMEOUT)
                return False
            await asyncio.sleep(0.05)
        return True

    async def _watch(self, command: list[str], env: dict[str, str]) -> int:
        """Until told to stop (0), or a worker that cannot start (1)."""
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            while not self._stop.is_set():
                exits = {asyncio.ensure_future(p.wait()): s for s, p in self._procs.items()}
                done, _ = await asyncio.wait(
                    [stopping, *exits], return_when=asyncio.FIRST_COMPLETED
                )
                for waiter in exits:
                    waiter.cancel()
                for waiter, slot in exits.items():
                    if waiter in done and not self._stop.is_set():
                        if not await self._replace(slot, command, env):
                            return 1
            return 0
        finally:
            stopping.cancel()

    async def _replace(self, slot: int, command: list[str], env: dict[str, str]) -> bool:
        proc = self._procs[slot]
        now = time.monotonic()
        log.error("worker %d (pid %d) exited with %s", slot, proc.pid, proc.returncode)
        self._restarts = [t for t in self._restarts if now - t < 60.0] + [now]
        if len(self._restarts) > RESTARTS_PER_MINUTE:
            log.error("workers cannot start or keep failing; stopping")
            return False
        await self._start(slot, command, env)
        return True

    async def _stop_all(self) -> None:
        self._forward(signal.SIGTERM)
        running = [p for p in self._procs.values() if p.returncode is None]
        if not running:
            return
        deadline = self.config.server.drain_timeout + STOP_MARGIN
        _, late = await asyncio.wait(
            [asyncio.ensure_future(p.wait()) for p in running], timeout=deadline
        )
        for proc in running:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if late:
            log.error("killed %d worker(s) that did not stop in %g s", len(late), deadline)


def resolve_workers(value: str) -> int:
    """``auto``: the cores this process may run on; else the number itself."""
    if value == "auto":
        return (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        )
    return int(value)
