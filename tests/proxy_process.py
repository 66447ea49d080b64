"""Run the proxy as a real process (``console-proxy serve``) for tests that measure it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.support.net import free_port


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class ProxyProcess:
    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.args = args
        self.env = {**os.environ, "CONSOLE_PROXY_TARGETS_ALLOW": "127.0.0.0/8", **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def __aenter__(self) -> ProxyProcess:
        command = [sys.executable, "-m", "proxy.cli", "--log-level", "WARNING", "serve"]
        self.process = subprocess.Popen(
            [*command, "--listen", f"127.0.0.1:{self.port}", *self.args], env=self.env
        )
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return self
                except aiohttp.ClientConnectionError:
                    pass
                if self.process.poll() is not None:
                    raise RuntimeError(f"proxy exited with {self.process.returncode}")
                await asyncio.sleep(0.1)
        raise RuntimeError("proxy did not become healthy in 10 s")

    async def __aexit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
