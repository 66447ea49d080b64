"""Loopback networking for tests: free ports and real TCP targets standing in for console ports.

The ``tcp_target`` fixture (registered in tests/conftest.py) starts :class:`TcpTarget` servers
that are closed after the test.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.support.fake_servers import ServerFailures


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


StartTcpTarget = Callable[..., Any]


@pytest.fixture
async def tcp_target(server_failures: ServerFailures) -> AsyncIterator[StartTcpTarget]:
    """``await tcp_target(handler)``: a started :class:`TcpTarget`, closed after the test."""
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


async def rfb_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A VNC server with security None that echoes everything after the handshake."""
    writer.write(b"RFB 003.008\n")
    await reader.readexactly(12)
    writer.write(bytes([1, 1]))
    await reader.readexactly(1)
    writer.write(bytes(4))
    await echo(reader, writer)


def raw_upgrade(
    port: int, token: str = "vm", rcvbuf: int = 64 * 1024, timeout: float = 10.0
) -> socket.socket:
    """A blocking WebSocket client that has done the upgrade and reads nothing else (the worst
    browser: one that stops reading), with a small receive buffer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /websockify?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock
