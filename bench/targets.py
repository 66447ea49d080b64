"""The consoles the benchmark connects to, run as their own process: ``python -m bench.targets``.

- ``source`` sends a VNC-like banner, then streams as fast as its peer reads (host -> browser).
- ``sink`` reads and discards (browser -> host).
- ``echo`` sends back what it receives (round-trip latency).
- ``hello`` sends the banner, then echoes: an idle console that can prove it is still alive.

``source`` and ``sink`` use one blocking thread per connection (the kernel does the work; the
benchmark opens one of each at a time). ``echo`` and ``hello`` serve thousands of connections
on one event loop. Everything listens on 127.0.0.1 with ephemeral ports, printed as one JSON
line on stdout; the process exits when its stdin closes or on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import cast

BANNER = b"RFB 003.008\n"
CHUNK = os.urandom(1 << 20)  # incompressible, like VNC's Tight/ZRLE-encoded rectangles
RECV_SIZE = 1 << 20


def _listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def _serve_threads(listener: socket.socket, handle: Callable[[socket.socket], None]) -> None:
    def run(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            handle(conn)

    def accept() -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=run, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


def _source(conn: socket.socket) -> None:
    conn.sendall(BANNER)
    sendall = conn.sendall
    while True:
        sendall(CHUNK)


def _sink(conn: socket.socket) -> None:
    buf = bytearray(RECV_SIZE)
    recv_into = conn.recv_into
    while recv_into(buf):
        pass


class Echo(asyncio.Protocol):
    greeting = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.greeting:
            self.transport.write(self.greeting)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class Hello(Echo):
    greeting = BANNER


async def serve() -> None:
    loop = asyncio.get_running_loop()
    ports: dict[str, int] = {}
    for name, handle in (("source", _source), ("sink", _sink)):
        listener = _listener()
        ports[name] = listener.getsockname()[1]
        _serve_threads(listener, handle)
    servers = []
    for name, protocol in (("echo", Echo), ("hello", Hello)):
        server = await loop.create_server(protocol, sock=_listener(), backlog=1024)
        ports[name] = server.sockets[0].getsockname()[1]
        servers.append(server)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    def stdin_readable() -> None:
        if not os.read(sys.stdin.fileno(), 64):
            stop.set()  # the benchmark went away

    loop.add_reader(sys.stdin.fileno(), stdin_readable)
    print(json.dumps(ports), flush=True)
    await stop.wait()
    for server in servers:
        server.close()


def main() -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve())
    else:
        uvloop.run(serve())


if __name__ == "__main__":
    main()
