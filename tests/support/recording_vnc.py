"""A small VNC server for tests that records what each client sent: its ClientInit shared flag
and the type of every client message (RFC 6143 section 7.5), parsed by length independently of
the proxy's own scanner.

Security None, a 64x48 true-colour screen in one colour, a Raw update for every request. Like
real servers, a client whose ClientInit says "not shared" disconnects the others (7.3.1).
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field

WIDTH, HEIGHT = 64, 48
PIXEL_FORMAT = bytes([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0])


@dataclass
class Viewer:
    shared: int = -1
    types: list[int] = field(default_factory=list)
    writer: asyncio.StreamWriter | None = None


class RecordingVncServer:
    def __init__(self) -> None:
        self.viewers: list[Viewer] = []
        self.server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> RecordingVncServer:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def types(self) -> list[int]:
        return [t for viewer in self.viewers for t in viewer.types]

    async def close(self) -> None:
        for viewer in self.viewers:
            if viewer.writer is not None:
                viewer.writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        viewer = Viewer(writer=writer)
        try:
            await self._serve(viewer, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _serve(
        self, viewer: Viewer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(b"RFB 003.008\n")
        await reader.readexactly(12)
        writer.write(bytes([1, 1]))
        await reader.readexactly(1)
        writer.write(bytes(4))
        viewer.shared = (await reader.readexactly(1))[0]
        if not viewer.shared:
            for other in self.viewers:
                if other.writer is not None:
                    other.writer.close()
        self.viewers.append(viewer)
        name = b"recorder"
        writer.write(struct.pack("!HH", WIDTH, HEIGHT) + PIXEL_FORMAT)
        writer.write(struct.pack("!I", len(name)) + name)
        while True:
            kind = (await reader.readexactly(1))[0]
            viewer.types.append(kind)
            await self._message(kind, reader, writer)

    async def _message(
        self, kind: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if kind == 0:
            await reader.readexactly(19)
        elif kind == 2:
            count = struct.unpack("!xH", await reader.readexactly(3))[0]
            await reader.readexactly(4 * count)
        elif kind == 3:
            incremental = (await reader.readexactly(9))[0]
            if not incremental:
                self._update(writer)
        elif kind == 4:
            await reader.readexactly(7)
        elif kind == 5:
            head = await reader.readexactly(5)
            if head[0] & 0x80:
                await reader.readexactly(1)
        elif kind == 6:
            length = struct.unpack("!3xi", await reader.readexactly(7))[0]
            await reader.readexactly(abs(length))
        elif kind == 250:
            await reader.readexactly(3)
        elif kind == 255 and (await reader.readexactly(1))[0] == 0:
            await reader.readexactly(10)
        else:
            raise ConnectionError(f"unknown client message type {kind}")

    @staticmethod
    def _update(writer: asyncio.StreamWriter) -> None:
        pixels = bytes([0x30, 0x80, 0xC0, 0]) * (WIDTH * HEIGHT)
        writer.write(struct.pack("!BxHHHHHi", 0, 1, 0, 0, WIDTH, HEIGHT, 0) + pixels)
