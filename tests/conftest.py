"""Shared fixtures: real TCP targets on loopback, config building, system binaries."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.config import Config, load_config
from tests.support.fake_servers import ServerFailures

# Shared fixtures that live with their helpers in tests/support/.
pytest_plugins = ["tests.support.stack"]

IN_CI = bool(os.environ.get("CI"))


def require_binary(name: str, package: str, *, how: str = "") -> str:
    """The binary's path; locally a missing one skips with advice, in CI it fails the test.

    ``how`` tells how to install it when that is not ``apt-get install package``.
    """
    path = shutil.which(name)
    if path is None:
        advice = how or f"install it with 'apt-get install {package}'"
        message = f"{name} not found: {advice}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_config(**sections: dict[str, Any]) -> Config:
    """A config for tests: loopback targets allowed, short timeouts, overrides per section."""
    overrides: dict[str, Any] = {"targets.allow": ["127.0.0.0/8"], "zstack.timeout": 2.0}
    for section, values in sections.items():
        for key, value in values.items():
            overrides[f"{section}.{key}"] = value
    return load_config(env={}, overrides=overrides)


class TcpTarget:
    """A loopback TCP server standing in for a console port; counts who dialled it.

    A handler's exception other than the peer going away fails the test at once, with the
    handler's own message (see tests/support/fake_servers.py).
    """

    def __init__(
        self,
        handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
        backlog: int = 4096,
        failures: ServerFailures | None = None,
    ):
        self._handler = (failures or ServerFailures()).guard(handler)
        # asyncio's default backlog of 100 overflows when hundreds of consoles dial at once:
        # the kernel drops the SYNs it can't queue and the proxy sees the host as gone.
        self._backlog = backlog
        self.connections = 0
        self.server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> TcpTarget:
        self.server = await asyncio.start_server(
            self._accept, "127.0.0.1", 0, backlog=self._backlog
        )
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await self._handler(reader, writer)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


SERVER_FAILURES = pytest.StashKey[ServerFailures]()


@pytest.fixture
def server_failures(request: pytest.FixtureRequest) -> Iterator[ServerFailures]:
    """What this test's fake servers raised; the first one stops the test and is raised."""
    failures = ServerFailures(request.function)
    request.node.stash[SERVER_FAILURES] = failures
    yield failures
    failures.raise_first()  # one that came after the test's call, e.g. during teardown


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """A fake server's failure replaces the cancellation (or anything else) it caused."""
    try:
        return (yield)
    finally:
        if (failures := item.stash.get(SERVER_FAILURES, None)) is not None:
            failures.raise_first()


@pytest.fixture
async def tcp_target(server_failures: ServerFailures) -> AsyncIterator[Callable[..., Any]]:
    started: list[TcpTarget] = []

    async def start(handler: Callable[..., Any]) -> TcpTarget:
        target = await TcpTarget(handler, failures=server_failures).start()
        started.append(target)
        return target

    yield start
    for target in started:
        await target.close()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


def write_token_file(path: Path, entries: dict[str, tuple[str, int]]) -> Path:
    path.write_text("".join(f"{name}: {host}:{port}\n" for name, (host, port) in entries.items()))
    return path


async def rfb_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A VNC server with security None that echoes everything after the handshake."""
    writer.write(b"RFB 003.008\n")
    await reader.readexactly(12)
    writer.write(bytes([1, 1]))
    await reader.readexactly(1)
    writer.write(bytes(4))
    await echo(reader, writer)


async def greet_as_browser(ws: Any) -> Any:
    """Do the browser's side of the proxy's RFB handshake; return the stream for what follows."""
    from tests.support.rfb_client import RfbClient, WebSocketStream

    stream = WebSocketStream(ws)
    client = RfbClient(stream)
    await client.exchange_versions()
    assert await client.read_security_types() == [1]
    await client.authenticate(None)
    return stream


def pytest_asyncio_loop_factories(config: Any, item: Any) -> dict[str, Any]:
    """Tests run on uvloop, as `console-proxy serve` does in production."""
    import uvloop

    return {"uvloop": uvloop.new_event_loop}
