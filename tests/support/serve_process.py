"""A real ``console-proxy serve`` process, for tests of the command line, signals, the default
audit sink (stderr), and of what only a real process shows (memory, open files, slow clients).

:class:`ServeProcess` takes the whole argument list (``--listen`` is not added: a test of
``--config`` gives the address in the file), starts from an environment without
``CONSOLE_PROXY_*`` variables unless told, keeps stdout and stderr in files when given a
directory, and never blocks the event loop (the test's loop may be serving the simulated ZStack
the process talks to). :func:`listening_process` is the short form for tests that only need a
proxy on a free port.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import aiohttp

from tests.support.net import free_port
from tests.support.waiting import wait_until

PYTHON_CLI = (sys.executable, "-m", "proxy.cli")


def environment_without_proxy_settings() -> dict[str, str]:
    """This process's environment minus every ``CONSOLE_PROXY_*`` setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CONSOLE_PROXY_")}


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class ServeProcess:
    """``console-proxy [--log-level LEVEL] serve ARGS`` on ``port``; ``async with`` starts it and
    waits until ``/healthz`` answers, and stops it on exit.

    ``directory``: where stdout and stderr are kept (``stderr`` reads them back); without one
    they go to the test's own output. ``base_env`` replaces the environment ``env`` is added to;
    ``program`` replaces ``python -m proxy.cli`` (e.g. an installed ``console-proxy``), run in
    ``cwd``; ``log_level=None`` leaves ``--log-level`` out.
    """

    def __init__(
        self,
        port: int,
        args: Sequence[str],
        directory: Path | None = None,
        env: Mapping[str, str] | None = None,
        log_level: str | None = "INFO",
        scheme: str = "http",
        *,
        base_env: Mapping[str, str] | None = None,
        program: Sequence[str] = PYTHON_CLI,
        cwd: Path | None = None,
        start_timeout: float = 20.0,
        stop_timeout: float = 15.0,
    ) -> None:
        self.port = port
        self.scheme = scheme
        self.args = list(args)
        base = environment_without_proxy_settings() if base_env is None else base_env
        self.env = {**base, **(env or {})}
        self.directory = directory
        self.log_level = log_level
        self.program = list(program)
        self.cwd = cwd
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def stdout_path(self) -> Path:
        assert self.directory is not None, "output is kept only when given a directory"
        return self.directory / f"serve-{self.port}.stdout"

    @property
    def stderr_path(self) -> Path:
        assert self.directory is not None, "output is kept only when given a directory"
        return self.directory / f"serve-{self.port}.stderr"

    @property
    def stderr(self) -> str:
        if self.directory is None:
            return "(stderr not kept)"
        return self.stderr_path.read_text(errors="replace")

    @property
    def output(self) -> str:
        """stdout and stderr as kept so far (for a failure message)."""
        if self.directory is None:
            return "(output not kept)"
        out = self.stdout_path.read_text(errors="replace")
        return f"{out}{self.stderr}"

    def start(self) -> None:
        level = ["--log-level", self.log_level] if self.log_level is not None else []
        command = [*self.program, *level, "serve", *self.args]
        if self.directory is None:
            self.process = subprocess.Popen(command, env=self.env, cwd=self.cwd)
            return
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                command, env=self.env, cwd=self.cwd, stdout=out, stderr=err
            )

    async def wait_healthy(self, timeout: float | None = None) -> None:
        process = self.process
        assert process is not None
        async with aiohttp.ClientSession() as http:

            async def healthy() -> bool:
                if process.poll() is not None:
                    raise AssertionError(
                        f"console-proxy exited with {process.returncode}: {self.output}"
                    )
                try:
                    # Only "is it up": the HTTPS tests check the certificate themselves.
                    async with http.get(f"{self.url}/healthz", ssl=False) as answer:
                        return answer.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await wait_until(
                healthy,
                timeout=timeout or self.start_timeout,
                interval=0.1,
                message=lambda: f"console-proxy not healthy: {self.output}",
            )

    async def __aenter__(self) -> ServeProcess:
        self.start()
        try:
            await self.wait_healthy()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def send(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def wait_exit(self, timeout: float) -> int | None:
        """The exit status, or None if the process still runs after ``timeout`` seconds."""
        assert self.process is not None
        try:
            return await asyncio.to_thread(self.process.wait, timeout)
        except subprocess.TimeoutExpired:
            return None

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``stop_timeout``; one that already exited is only reaped."""
        if self.process is None or self.process.poll() is not None:
            return
        self.send(signal.SIGTERM)
        if await self.wait_exit(self.stop_timeout) is None:
            self.process.kill()
            await asyncio.to_thread(self.process.wait)


def listening_process(*args: str, env: Mapping[str, str] | None = None) -> ServeProcess:
    """``console-proxy serve --listen 127.0.0.1:PORT ARGS`` on a free port at log level WARNING,
    in this process's environment plus loopback targets allowed and ``env``; output not kept."""
    port = free_port()
    return ServeProcess(
        port,
        ["--listen", f"127.0.0.1:{port}", *args],
        env={"CONSOLE_PROXY_TARGETS_ALLOW": "127.0.0.0/8", **(env or {})},
        log_level="WARNING",
        base_env=os.environ,
        stop_timeout=10.0,
    )
