from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator

import pytest

from proxy.demo import vncserver
from proxy.demo.vncserver import (
    NATIVE_FORMAT,
    DemoVncServer,
    PixelFormat,
    Rect,
    make_converter,
    rgb,
)
from proxy.protocols.rfb.vncauth import vnc_auth_response

TIMEOUT = 10.0
WIDTH, HEIGHT = 640, 240
NOVNC_FORMAT = PixelFormat(32, 24, False, True, 255, 255, 255, 0, 8, 16)
RGB565_BE = PixelFormat(16, 16, True, True, 31, 63, 31, 11, 5, 0)


class RfbClient:
    """Just enough of an RFB client to drive the server, keeping a copy of the screen."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.width = self.height = 0
        self.name = ""
        self.bytes_per_pixel = 4
        self.screen = bytearray()

    @classmethod
    async def open(cls, port: int) -> RfbClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    @classmethod
    async def connect(
        cls, port: int, password: str | None = None, version: bytes = b"RFB 003.008\n"
    ) -> RfbClient:
        """Handshake up to and including ServerInit."""
        client = await cls.open(port)
        assert await client.read(12) == b"RFB 003.008\n"
        client.writer.write(version)
        if version == b"RFB 003.003\n":
            (kind,) = struct.unpack(">I", await client.read(4))
        else:
            types = await client.read((await client.read(1))[0])
            assert len(types) == 1
            kind = types[0]
            client.writer.write(bytes([kind]))
        if kind == 2:
            assert password is not None
            client.writer.write(vnc_auth_response(password, await client.read(16)))
        if kind == 2 or int(version[8:11]) >= 8:  # 3.3 and 3.7 skip the result for None
            assert await client.read(4) == bytes(4)
        await client.server_init()
        return client

    async def server_init(self) -> None:
        self.writer.write(b"\x01")
        self.width, self.height = struct.unpack(">HH", await self.read(4))
        assert PixelFormat.unpack(await self.read(16)) == NATIVE_FORMAT
        (length,) = struct.unpack(">I", await self.read(4))
        self.name = (await self.read(length)).decode()
        self.screen = bytearray(self.width * self.height * 4)

    async def read(self, size: int) -> bytes:
        return await asyncio.wait_for(self.reader.readexactly(size), TIMEOUT)

    def request(self, incremental: bool, rect: Rect | None = None) -> None:
        rect = rect or Rect(0, 0, self.width, self.height)
        self.writer.write(struct.pack(">BBHHHH", 3, incremental, rect.x, rect.y, rect.w, rect.h))

    def set_pixel_format(self, fmt: PixelFormat) -> None:
        self.writer.write(b"\x00\x00\x00\x00" + fmt.pack())
        self.bytes_per_pixel = fmt.bits_per_pixel // 8

    def key(self, keysym: int) -> None:
        for down in (1, 0):
            self.writer.write(struct.pack(">BBxxI", 4, down, keysym))

    def pointer(self, x: int, y: int, buttons: int = 0) -> None:
        self.writer.write(struct.pack(">BBHH", 5, buttons, x, y))

    async def update(self, timeout: float = TIMEOUT) -> list[tuple[Rect, bytes]]:
        """Read one FramebufferUpdate (Raw rectangles only) and apply it to ``screen``."""
        header = await asyncio.wait_for(self.reader.readexactly(4), timeout)
        kind, count = struct.unpack(">BxH", header)
        assert kind == 0
        rects = []
        for _ in range(count):
            x, y, w, h, encoding = struct.unpack(">HHHHi", await self.read(12))
            assert encoding == 0
            rect = Rect(x, y, w, h)
            rects.append((rect, await self.read(w * h * self.bytes_per_pixel)))
            self._apply(*rects[-1])
        return rects

    def _apply(self, rect: Rect, pixels: bytes) -> None:
        if self.bytes_per_pixel != 4:
            return
        for row in range(rect.h):
            offset = ((rect.y + row) * self.width + rect.x) * 4
            self.screen[offset : offset + rect.w * 4] = pixels[row * rect.w * 4 :][: rect.w * 4]

    def region(self, rect: Rect) -> bytes:
        return b"".join(
            self.screen[((y * self.width) + rect.x) * 4 :][: rect.w * 4]
            for y in range(rect.y, rect.y + rect.h)
        )

    async def wait_for_change(self, rect: Rect) -> None:
        before = self.region(rect)
        async with asyncio.timeout(TIMEOUT):
            while self.region(rect) == before:
                self.request(True)
                await self.update()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


async def closed_by_server(client: RfbClient) -> bool:
    """Whether the server ends the connection (EOF or reset) soon; data before that is ignored."""
    try:
        async with asyncio.timeout(TIMEOUT):
            while await client.reader.read(65536):
                pass
    except ConnectionError:
        pass
    except TimeoutError:
        return False
    return True


def pixels(data: bytes, size: int = 4) -> set[bytes]:
    return {data[i : i + size] for i in range(0, len(data), size)}


@pytest.fixture
async def server() -> AsyncIterator[DemoVncServer]:
    async with DemoVncServer(width=WIDTH, height=HEIGHT, name="vm-1 démo") as server:
        yield server


@pytest.fixture
async def client(server: DemoVncServer) -> AsyncIterator[RfbClient]:
    client = await RfbClient.connect(server.port)
    yield client
    await client.close()


# --- handshake ---------------------------------------------------------------------------------


async def test_security_none_reaches_server_init(client: RfbClient) -> None:
    assert (client.width, client.height, client.name) == (WIDTH, HEIGHT, "vm-1 démo")


async def test_port_is_ephemeral_and_known_only_after_start() -> None:
    server = DemoVncServer()
    with pytest.raises(RuntimeError):
        _ = server.port
    await server.start()
    try:
        assert server.port > 0
    finally:
        await server.close()


@pytest.mark.parametrize("version", [b"RFB 003.003\n", b"RFB 003.007\n", b"RFB 003.889\n"])
async def test_older_and_newer_clients(server: DemoVncServer, version: bytes) -> None:
    client = await RfbClient.connect(server.port, version=version)
    try:
        assert (client.width, client.height) == (WIDTH, HEIGHT)
    finally:
        await client.close()


@pytest.mark.parametrize("version", [b"RFB 003.003\n", b"RFB 003.007\n", b"RFB 003.008\n"])
async def test_correct_password(version: bytes) -> None:
    async with DemoVncServer(password="s3cret", width=64, height=48) as server:
        client = await RfbClient.connect(server.port, password="s3cret", version=version)
        assert (client.width, client.height) == (64, 48)
        client.request(False)
        assert len((await client.update())[0][1]) == 64 * 48 * 4
        await client.close()


async def test_wrong_password_gets_the_reason() -> None:
    async with DemoVncServer(password="s3cret") as server:
        client = await RfbClient.open(server.port)
        await client.read(12)
        client.writer.write(b"RFB 003.008\n")
        assert await client.read(2) == b"\x01\x02"  # only VNC Authentication is offered
        client.writer.write(b"\x02")
        client.writer.write(vnc_auth_response("guess", await client.read(16)))
        reason = b"Authentication failed"
        assert await client.read(8) == struct.pack(">II", 1, len(reason))
        assert await client.read(len(reason)) == reason
        assert await closed_by_server(client)
        await client.close()


async def test_security_type_not_offered_is_refused(server: DemoVncServer) -> None:
    client = await RfbClient.open(server.port)
    await client.read(12)
    client.writer.write(b"RFB 003.008\n")
    assert await client.read(2) == b"\x01\x01"
    client.writer.write(b"\x02")
    assert struct.unpack(">I", await client.read(4)) == (1,)
    assert await closed_by_server(client)
    await client.close()


async def test_stalled_handshake_is_dropped(
    server: DemoVncServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vncserver, "HANDSHAKE_TIMEOUT", 0.3)
    client = await RfbClient.open(server.port)
    client.writer.write(b"RFB 003.0")
    # Within TIMEOUT (room for a loaded machine), so not after the default 30 s.
    assert await closed_by_server(client)
    await client.close()


# --- updates -----------------------------------------------------------------------------------


async def test_full_update_is_raw_and_not_uniform(client: RfbClient) -> None:
    client.request(False)
    [(rect, data)] = await client.update()
    assert rect == Rect(0, 0, WIDTH, HEIGHT)
    assert len(data) == WIDTH * HEIGHT * 4
    assert len(pixels(data)) > 50


async def test_updates_only_when_asked_and_then_what_changed(client: RfbClient) -> None:
    client.request(False)
    await client.update()
    with pytest.raises(TimeoutError):  # the picture moves, but nobody asked
        await client.update(timeout=1.2)
    clock = client.region(Rect(0, 72, WIDTH, 32))
    client.request(True)
    rects = await client.update()
    assert rects and all(rect.w * rect.h < WIDTH * HEIGHT for rect, _ in rects)
    assert client.region(Rect(0, 72, WIDTH, 32)) != clock  # a second passed: the clock moved


async def test_partial_request_is_clipped_to_it(client: RfbClient) -> None:
    client.request(False, Rect(600, 200, 100, 100))
    [(rect, data)] = await client.update()
    assert rect == Rect(600, 200, 40, 40)
    assert len(data) == 40 * 40 * 4


async def test_keys_change_the_picture(server: DemoVncServer, client: RfbClient) -> None:
    client.request(False)
    await client.update()
    before = client.region(server.scene.keys_box)
    for char in "Hi!":
        client.key(ord(char))
    await client.wait_for_change(server.scene.keys_box)
    assert client.region(server.scene.keys_box) != before
    client.key(0xFF08)  # BackSpace
    await client.wait_for_change(server.scene.keys_box)


async def test_pointer_leaves_a_trail(client: RfbClient) -> None:
    client.request(False)
    await client.update()
    spot = Rect(300, 210, 2, 2)
    client.pointer(301, 211, buttons=1)
    await client.wait_for_change(spot)
    assert pixels(client.region(spot)) == {rgb(255, 60, 60)}


async def test_other_clients_see_the_changes(server: DemoVncServer, client: RfbClient) -> None:
    other = await RfbClient.connect(server.port)
    try:
        other.request(False)
        await other.update()
        client.key(ord("x"))
        await other.wait_for_change(server.scene.keys_box)
    finally:
        await other.close()


async def test_novnc_pixel_format(client: RfbClient) -> None:
    client.set_pixel_format(NOVNC_FORMAT)
    client.request(False, Rect(0, HEIGHT - 1, WIDTH, 1))
    [(_, data)] = await client.update()
    # the colour bars along the bottom: white, yellow, cyan, green, magenta, red, blue, black
    bar = WIDTH // 8
    colours = [data[(i * bar + bar // 2) * 4 :][:4] for i in range(8)]
    assert colours[0] == b"\xff\xff\xff\x00"
    assert colours[5] == b"\xff\x00\x00\x00"
    assert colours[6] == b"\x00\x00\xff\x00"


async def test_16_bit_pixel_format(client: RfbClient) -> None:
    client.set_pixel_format(RGB565_BE)
    client.request(False, Rect(0, HEIGHT - 1, WIDTH, 1))
    [(_, data)] = await client.update()
    bar = WIDTH // 8
    colours = [data[(i * bar + bar // 2) * 2 :][:2] for i in range(8)]
    assert colours == [b"\xff\xff", b"\xff\xe0", b"\x07\xff", b"\x07\xe0",
                       b"\xf8\x1f", b"\xf8\x00", b"\x00\x1f", b"\x00\x00"]  # fmt: skip


def test_converters() -> None:
    native = rgb(255, 128, 1) + rgb(0, 0, 0)
    assert make_converter(NATIVE_FORMAT)(native) == native
    assert make_converter(NOVNC_FORMAT)(native) == b"\xff\x80\x01\x00" + bytes(4)
    big = PixelFormat(32, 24, True, True, 255, 255, 255, 16, 8, 0)
    assert make_converter(big)(native) == b"\x00\xff\x80\x01" + bytes(4)
    bgr233 = PixelFormat(8, 8, False, True, 7, 7, 3, 0, 3, 6)
    assert make_converter(bgr233)(native) == bytes([0b00_100_111, 0])
    odd = PixelFormat(32, 30, False, True, 1023, 1023, 1023, 20, 10, 0)
    assert make_converter(odd)(rgb(255, 0, 255)) == struct.pack("<I", 1023 << 20 | 1023)


@pytest.mark.parametrize(
    "fmt",
    [
        PixelFormat(8, 8, False, False, 0, 0, 0, 0, 0, 0),  # colour map
        PixelFormat(24, 24, False, True, 255, 255, 255, 16, 8, 0),
        PixelFormat(16, 16, False, True, 255, 255, 255, 16, 8, 0),  # does not fit
        PixelFormat(32, 24, False, True, 200, 255, 255, 16, 8, 0),  # max not 2**n - 1
    ],
)
async def test_unsupported_pixel_format_disconnects(client: RfbClient, fmt: PixelFormat) -> None:
    client.set_pixel_format(fmt)
    assert await closed_by_server(client)


# --- bad input and shutdown --------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff",  # unknown message type
        struct.pack(">BxH", 2, 1025),  # too many encodings
        struct.pack(">B3xI", 6, 2 << 20),  # 2 MiB of cut text
        struct.pack(">B3xI", 6, 0xFFFFFFFF),  # extended clipboard, which was never offered
    ],
)
async def test_bad_messages_disconnect_only_their_client(
    server: DemoVncServer, client: RfbClient, garbage: bytes
) -> None:
    bad = await RfbClient.connect(server.port)
    bad.writer.write(garbage)
    assert await closed_by_server(bad)
    await bad.close()
    client.request(False)
    assert (await client.update())[0][0] == Rect(0, 0, WIDTH, HEIGHT)


async def test_garbage_instead_of_a_handshake(server: DemoVncServer, client: RfbClient) -> None:
    bad = await RfbClient.open(server.port)
    bad.writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await closed_by_server(bad)
    await bad.close()
    client.request(False)
    assert len(await client.update()) == 1


async def test_set_encodings_and_clipboard_are_taken_and_updates_go_on(
    server: DemoVncServer, client: RfbClient
) -> None:
    client.writer.write(struct.pack(">BxHiii", 2, 3, 0, 7, -223))  # SetEncodings
    text = b"pasted"
    client.writer.write(struct.pack(">B3xI", 6, len(text)) + text)  # ClientCutText
    client.request(False)
    await client.update()
    assert server.scene.read(server.scene.keys_box) == client.region(server.scene.keys_box)


async def test_close_closes_every_client() -> None:
    server = DemoVncServer()
    await server.start()
    ready = await RfbClient.connect(server.port)
    handshaking = await RfbClient.open(server.port)
    await handshaking.read(12)
    await server.close()
    assert await closed_by_server(ready)
    assert await closed_by_server(handshaking)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", server.port)
    await ready.close()
    await handshaking.close()


async def test_an_idle_client_costs_little_cpu(client: RfbClient) -> None:
    client.request(False)
    await client.update()
    shares = []
    # The quietest of three seconds: a busy loop or a needless full update costs CPU in every
    # one, a garbage collection or a busy neighbour on a loaded machine only in some.
    for _ in range(3):
        started_cpu, started = time.process_time(), time.monotonic()
        while time.monotonic() - started < 1:  # a viewer asks again after every update
            client.request(True)
            await client.update()
        shares.append((time.process_time() - started_cpu) / (time.monotonic() - started))
    assert min(shares) < 0.05, shares  # the test client's own work is counted too
