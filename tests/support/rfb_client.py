"""A minimal RFB 3.8 client (RFC 6143) for tests, over a WebSocket or plain asyncio streams.

It does exactly what tests need: the version exchange, the security handshake (None or VNC
Authentication), ClientInit/ServerInit, and one FramebufferUpdate in Raw encoding. WebSocket
frames may split or merge RFB messages anywhere, so reads come from a buffer. Every read has a
timeout; a closed connection raises :class:`RfbClosed` with the close code and reason.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

import aiohttp

from proxy.protocols.rfb.vncauth import vnc_auth_response

VERSION_3_8 = b"RFB 003.008\n"
SECURITY_INVALID = 0
SECURITY_NONE = 1
SECURITY_VNC_AUTH = 2
ENCODING_RAW = 0
MAX_STRING = 1 << 20
DEFAULT_TIMEOUT = 5.0


class RfbError(Exception):
    """The server said no (with its reason) or sent something this client cannot read."""


class RfbClosed(RfbError):
    """The connection ended; ``code`` and ``reason`` are the WebSocket close frame's, if any."""

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(f"connection closed (code={code}, reason={reason!r})")
        self.code = code
        self.reason = reason


class ByteStream:
    """Reads exact byte counts with a timeout and writes bytes; subclasses supply transport."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    async def read_exactly(self, count: int, timeout: float) -> bytes:
        async with asyncio.timeout(timeout):
            while len(self._buffer) < count:
                self._buffer += await self._receive()
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    async def _receive(self) -> bytes:
        raise NotImplementedError

    async def write(self, data: bytes) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class WebSocketStream(ByteStream):
    """RFB over a client WebSocket carrying binary frames (what noVNC does)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        super().__init__()
        self.ws = ws

    async def _receive(self) -> bytes:
        msg = await self.ws.receive()
        if msg.type is aiohttp.WSMsgType.BINARY:
            data: bytes = msg.data
            return data
        if msg.type is aiohttp.WSMsgType.CLOSE:
            raise RfbClosed(msg.data, msg.extra or "")
        if msg.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            raise RfbClosed(self.ws.close_code)
        raise RfbError(f"unexpected WebSocket message: {msg.type.name}")

    async def write(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def close(self) -> None:
        await self.ws.close()


class TcpStream(ByteStream):
    """RFB straight over TCP, e.g. to QEMU without the proxy."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__()
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host: str, port: int, timeout: float = DEFAULT_TIMEOUT) -> TcpStream:
        async with asyncio.timeout(timeout):
            return cls(*await asyncio.open_connection(host, port))

    async def _receive(self) -> bytes:
        data = await self.reader.read(65536)
        if not data:
            raise RfbClosed()
        return data

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)
        except (OSError, TimeoutError):
            pass


@dataclass(frozen=True)
class PixelFormat:
    bits_per_pixel: int
    depth: int
    big_endian: bool
    true_colour: bool
    red_max: int
    green_max: int
    blue_max: int
    red_shift: int
    green_shift: int
    blue_shift: int

    @classmethod
    def parse(cls, data: bytes) -> PixelFormat:
        bpp, depth, big, true, rmax, gmax, bmax, rsh, gsh, bsh = struct.unpack(
            "!BBBBHHHBBB3x", data
        )
        return cls(bpp, depth, bool(big), bool(true), rmax, gmax, bmax, rsh, gsh, bsh)

    @property
    def bytes_per_pixel(self) -> int:
        return self.bits_per_pixel // 8


@dataclass(frozen=True)
class ServerInit:
    width: int
    height: int
    pixel_format: PixelFormat
    name: str


@dataclass(frozen=True)
class Rectangle:
    x: int
    y: int
    width: int
    height: int
    encoding: int
    pixels: bytes  # Raw pixels, row by row, in the server's pixel format

    def colours(self, bytes_per_pixel: int) -> set[bytes]:
        """The distinct pixel values in this rectangle."""
        step = bytes_per_pixel
        return {self.pixels[i : i + step] for i in range(0, len(self.pixels), step)}


class RfbClient:
    """Drives the client side of an RFB 3.8 session over a :class:`ByteStream`."""

    def __init__(self, stream: ByteStream, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.stream = stream
        self.timeout = timeout
        self.server_version = b""
        self.security_types: list[int] = []
        self.server_init: ServerInit | None = None

    @classmethod
    def over_websocket(
        cls, ws: aiohttp.ClientWebSocketResponse, timeout: float = DEFAULT_TIMEOUT
    ) -> RfbClient:
        return cls(WebSocketStream(ws), timeout)

    async def _read(self, count: int) -> bytes:
        return await self.stream.read_exactly(count, self.timeout)

    async def _read_string(self) -> str:
        (length,) = struct.unpack("!I", await self._read(4))
        if length > MAX_STRING:
            raise RfbError(f"string of {length} bytes is too long")
        return (await self._read(length)).decode("utf-8", errors="replace")

    # --- handshake (RFC 6143 §7.1) ----------------------------------------------------------

    async def exchange_versions(self) -> bytes:
        """Read the server's ProtocolVersion and answer 3.8 (§7.1.1)."""
        self.server_version = await self._read(12)
        if not self.server_version.startswith(b"RFB "):
            raise RfbError(f"not an RFB server: {self.server_version!r}")
        await self.stream.write(VERSION_3_8)
        return self.server_version

    async def read_security_types(self) -> list[int]:
        """The security types offered (§7.1.2); a refusal raises RfbError with its reason."""
        (count,) = await self._read(1)
        if count == 0:
            raise RfbError(f"server refused the connection: {await self._read_string()}")
        self.security_types = list(await self._read(count))
        return self.security_types

    async def choose_security(self, security_type: int) -> None:
        await self.stream.write(bytes([security_type]))

    async def answer_vnc_challenge(self, password: str) -> None:
        """VNC Authentication (§7.2.2): read the 16-byte challenge, send the DES response."""
        challenge = await self._read(16)
        await self.stream.write(vnc_auth_response(password, challenge))

    async def read_security_result(self) -> tuple[bool, str]:
        """SecurityResult (§7.1.3): (ok, reason); the reason is empty on success."""
        (status,) = struct.unpack("!I", await self._read(4))
        if status == 0:
            return True, ""
        return False, await self._read_string()

    async def client_init(self, shared: bool = True) -> ServerInit:
        """Send ClientInit and parse ServerInit (§7.3)."""
        await self.stream.write(bytes([1 if shared else 0]))
        width, height = struct.unpack("!HH", await self._read(4))
        pixel_format = PixelFormat.parse(await self._read(16))
        name = await self._read_string()
        self.server_init = ServerInit(width, height, pixel_format, name)
        return self.server_init

    async def authenticate(self, password: str | None = None) -> None:
        """After the offer: choose None (no password) or VNC Authentication, check the result."""
        wanted = SECURITY_NONE if password is None else SECURITY_VNC_AUTH
        if wanted not in self.security_types:
            raise RfbError(f"security type {wanted} not offered (offered {self.security_types})")
        await self.choose_security(wanted)
        if password is not None:
            await self.answer_vnc_challenge(password)
        ok, reason = await self.read_security_result()
        if not ok:
            raise RfbError(f"security handshake failed: {reason}")

    async def handshake(self, password: str | None = None, shared: bool = True) -> ServerInit:
        """The whole handshake to ServerInit, with None security or VNC Authentication."""
        await self.exchange_versions()
        await self.read_security_types()
        await self.authenticate(password)
        return await self.client_init(shared)

    # --- normal protocol (RFC 6143 §7.5, §7.6) --------------------------------------------

    async def set_encodings(self, encodings: tuple[int, ...] = (ENCODING_RAW,)) -> None:
        await self.stream.write(
            struct.pack(f"!BxH{len(encodings)}i", 2, len(encodings), *encodings)
        )

    async def request_update(
        self,
        incremental: bool = False,
        x: int = 0,
        y: int = 0,
        width: int | None = None,
        height: int | None = None,
    ) -> None:
        init = self._init()
        width = init.width if width is None else width
        height = init.height if height is None else height
        await self.stream.write(struct.pack("!BBHHHH", 3, incremental, x, y, width, height))

    async def read_framebuffer_update(self) -> list[Rectangle]:
        """The next FramebufferUpdate (Raw only); Bell, cut text and colour maps are skipped."""
        while True:
            (kind,) = await self._read(1)
            if kind == 0:
                return await self._read_rectangles()
            if kind == 1:  # SetColourMapEntries
                _, _, count = struct.unpack("!BHH", await self._read(5))
                await self._read(6 * count)
            elif kind == 2:  # Bell
                continue
            elif kind == 3:  # ServerCutText
                await self._read(3)
                await self._read_string()
            else:
                raise RfbError(f"unknown server message type {kind}")

    async def _read_rectangles(self) -> list[Rectangle]:
        bpp = self._init().pixel_format.bytes_per_pixel
        _, count = struct.unpack("!BH", await self._read(3))
        rectangles = []
        for _ in range(count):
            x, y, width, height, encoding = struct.unpack("!HHHHi", await self._read(12))
            if encoding != ENCODING_RAW:
                raise RfbError(f"encoding {encoding} is not supported by this test client")
            pixels = await self._read(width * height * bpp)
            rectangles.append(Rectangle(x, y, width, height, encoding, pixels))
        return rectangles

    def _init(self) -> ServerInit:
        if self.server_init is None:
            raise RfbError("no ServerInit yet: call handshake() first")
        return self.server_init

    async def close(self) -> None:
        await self.stream.close()


async def greet_as_browser(ws: aiohttp.ClientWebSocketResponse) -> WebSocketStream:
    """Do the browser's side of the proxy's RFB handshake; return the stream for what follows."""
    stream = WebSocketStream(ws)
    client = RfbClient(stream)
    await client.exchange_versions()
    assert await client.read_security_types() == [1]
    await client.authenticate(None)
    return stream
