"""A real ``console-proxy serve`` process whose stdout and stderr are kept, for tests of the
command line, the default audit sink (stderr) and signal handling.

Unlike ``tests.proxy_process.ProxyProcess`` it takes the whole argument list (``--listen`` is
not added: a test of ``--config`` gives the address in the file), starts from an environment
without ``CONSOLE_PROXY_*`` variables unless told, and never blocks the event loop (the test's
loop may be serving the simulated ZStack the process talks to).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp


class ServeProcess:
    def __init__(
        self,
        port: int,
        args: list[str],
        directory: Path,
        env: dict[str, str] | None = None,
        log_level: str = "INFO",
        scheme: str = "http",
    ) -> None:
        self.port = port
        self.scheme = scheme
        self.args = args
        base = {k: v for k, v in os.environ.items() if not k.startswith("CONSOLE_PROXY_")}
        self.env = {**base, **(env or {})}
        self.stdout_path = directory / f"serve-{port}.stdout"
        self.stderr_path = directory / f"serve-{port}.stderr"
        self.log_level = log_level
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def start(self) -> None:
        command = [sys.executable, "-m", "proxy.cli", "--log-level", self.log_level, "serve"]
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [*command, *self.args], env=self.env, stdout=out, stderr=err
            )

    async def wait_healthy(self, timeout: float = 20.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"console-proxy exited with {self.process.returncode}: {self.stderr}"
                    )
                try:
                    # Only "is it up": the HTTPS tests check the certificate themselves.
                    async with http.get(f"{self.url}/healthz", ssl=False) as answer:
                        if answer.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"console-proxy not healthy within {timeout} s: {self.stderr}")

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
        """SIGTERM, then SIGKILL after 15 s; a process that already exited is only reaped."""
        if self.process is None or self.process.poll() is not None:
            return
        self.send(signal.SIGTERM)
        if await self.wait_exit(15) is None:
            self.process.kill()
            await asyncio.to_thread(self.process.wait)
