"""A small pure-Python VNC server (RFB 3.8, RFC 6143) for the demo and the tests.

It serves one shared, moving picture: a tiled background, the VM name, a clock, a sweeping bar,
the last keys typed and a trail where the pointer went. Only Raw encoding is sent, which every
client supports. The framebuffer is kept in one native pixel format and only the regions that
changed are converted and sent, and only when a client has asked (the RFB pull model).

    async with DemoVncServer(password="secret") as server:
        print(server.port)
"""

from __future__ import annotations

import argparse
import array
import asyncio
import logging
import os
import struct
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import reduce
from types import TracebackType
from typing import Any, Literal

from proxy.protocols.rfb.vncauth import verify_vnc_auth

logger = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 30.0  # a client that has not finished ClientInit by then is dropped
MESSAGE_TIMEOUT = 30.0  # the rest of a message, once its first byte arrived
IDLE_TIMEOUT = 600.0  # clients poll for updates, so a silent one is gone
WRITE_TIMEOUT = 30.0  # a client that stops reading is dropped instead of buffered for
TICK = 0.2  # seconds between animation steps
MAX_CUT_TEXT = 1 << 20
MAX_ENCODINGS = 1024
MAX_DIRTY_RECTS = 16
MAX_SIZE = 4096

SECURITY_NONE = 1
SECURITY_VNC_AUTH = 2
ENCODING_RAW = 0
KEYSYM_BACKSPACE = 0xFF08


class RfbError(Exception):
    """The client broke the protocol or asked for something this server does not do."""


# --- geometry ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rect:
    x: int
    y: int
    w: int
    h: int

    @property
    def empty(self) -> bool:
        return self.w <= 0 or self.h <= 0

    def intersect(self, other: Rect) -> Rect:
        x, y = max(self.x, other.x), max(self.y, other.y)
        right = min(self.x + self.w, other.x + other.w)
        bottom = min(self.y + self.h, other.y + other.h)
        return Rect(x, y, max(0, right - x), max(0, bottom - y))

    def union(self, other: Rect) -> Rect:
        if other.empty:
            return self
        if self.empty:
            return other
        x, y = min(self.x, other.x), min(self.y, other.y)
        right = max(self.x + self.w, other.x + other.w)
        bottom = max(self.y + self.h, other.y + other.h)
        return Rect(x, y, right - x, bottom - y)

    def contains(self, other: Rect) -> bool:
        return other.empty or self.intersect(other) == other


# --- pixels ------------------------------------------------------------------------------

_PIXEL_FORMAT = struct.Struct(">BBBBHHHBBB3x")


@dataclass(frozen=True, slots=True)
class PixelFormat:
    """RFC 6143 §7.4 PIXEL_FORMAT."""

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
    def unpack(cls, data: bytes) -> PixelFormat:
        bpp, depth, big, true, *rest = _PIXEL_FORMAT.unpack(data)
        return cls(bpp, depth, bool(big), bool(true), *rest)

    def pack(self) -> bytes:
        return _PIXEL_FORMAT.pack(
            self.bits_per_pixel, self.depth, self.big_endian, self.true_colour,
            self.red_max, self.green_max, self.blue_max,
            self.red_shift, self.green_shift, self.blue_shift,
        )  # fmt: skip

    def channels(self) -> tuple[tuple[int, int], ...]:
        return (
            (self.red_max, self.red_shift),
            (self.green_max, self.green_shift),
            (self.blue_max, self.blue_shift),
        )

    def problem(self) -> str | None:
        """Why this server cannot send this format, or None if it can."""
        if not self.true_colour:
            return "colour-map formats are not supported"
        if self.bits_per_pixel not in (8, 16, 32):
            return f"{self.bits_per_pixel} bits per pixel"
        for maximum, shift in self.channels():
            if maximum == 0 or maximum & (maximum + 1):  # must be 2**n - 1 (§7.4)
                return f"channel max {maximum} shift {shift}"
            if maximum << shift >= 1 << self.bits_per_pixel:
                return f"channel max {maximum} shift {shift} overflows the pixel"
        return None


# Native: 32 bpp little-endian, red at bit 16, so a pixel is the bytes B, G, R, 0.
NATIVE_FORMAT = PixelFormat(32, 24, False, True, 255, 255, 255, 16, 8, 0)
_NATIVE_LANES = {16: 2, 8: 1, 0: 0}  # shift of a native channel -> its byte in the pixel

Converter = Callable[[bytes], bytes]


def make_converter(fmt: PixelFormat) -> Converter:
    """A function turning native pixel bytes into ``fmt`` pixel bytes."""
    if fmt.bits_per_pixel == 32 and all(m == 255 and s % 8 == 0 for m, s in fmt.channels()):
        native_shifts = (16, 8, 0)
        lanes = [
            ((s // 8 if not fmt.big_endian else 3 - s // 8), _NATIVE_LANES[n])
            for (_, s), n in zip(fmt.channels(), native_shifts, strict=True)
        ]
        if all(dst == src for dst, src in lanes):
            return bytes
        return _ByteShuffle(lanes)
    return _ColourTable(fmt)


class _ByteShuffle:
    """32 bpp with whole-byte channels: move byte lanes with slice copies (C speed)."""

    def __init__(self, lanes: list[tuple[int, int]]) -> None:
        self._lanes = lanes

    def __call__(self, src: bytes) -> bytes:
        out = bytearray(len(src))
        for dst, lane in self._lanes:
            out[dst::4] = src[lane::4]
        return bytes(out)


class _ColourTable(dict[int, bytes]):
    """Any other true-colour format: one dict lookup per pixel, filled as colours appear."""

    _LIMIT = 1 << 16

    def __init__(self, fmt: PixelFormat) -> None:
        super().__init__()
        self._fmt = fmt
        self._size = fmt.bits_per_pixel // 8
        self._order: Literal["big", "little"] = "big" if fmt.big_endian else "little"

    def __missing__(self, pixel: int) -> bytes:
        if len(self) >= self._LIMIT:  # the picture has few colours; this is only a bound
            self.clear()
        red, green, blue = (pixel >> 16) & 255, (pixel >> 8) & 255, pixel & 255
        value = 0
        for level, (maximum, shift) in zip((red, green, blue), self._fmt.channels(), strict=True):
            value |= (level * maximum + 127) // 255 << shift
        packed = value.to_bytes(self._size, self._order)
        self[pixel] = packed
        return packed

    def __call__(self, src: bytes) -> bytes:
        pixels = array.array("I", src)
        if sys.byteorder == "big":
            pixels.byteswap()
        return b"".join(map(self.__getitem__, pixels))


def rgb(red: int, green: int, blue: int) -> bytes:
    return bytes((blue, green, red, 0))


# --- font: 5x8 cells, rows top to bottom, one base-32 digit per row, bit 4 = left column -----

_FONT_DATA = (
    "0000000044444040AAA00000AAVAVAA04FKE5U40OP248J30CIK8LID044800000248884208422248004LEL400"
    "044V440000000C48000V000000000CC001248G00EHJLPHE04C4444E0EH1248V0U11E11U026AIV220VGU11HE0"
    "68GUHHE0V1248880EHHEHHE0EHHF12C00CC0CC000CC0C480248G842000V0V00084212480EH124040EHNLNGF0"
    "EHHVHHH0UHHUHHU0EHGGGHE0SIHHHIS0VGGUGGV0VGGUGGG0EHGNHHF0HHHVHHH0E44444E072222IC0HIKOKIH0"
    "GGGGGGV0HRLLHHH0HHPLJHH0EHHHHHE0UHHUGGG0EHHHLID0UHHUKIH0FGGE11U0V4444440HHHHHHE0HHHHHA40"
    "HHHLLLA0HHA4AHH0HHA44440V1248GV0E88888E00G842100E22222E04AH000000000000V8420000000E1FHF0"
    "GGMPHHU000EGGHE011DJHHF000EHVGE0698S888000FHHF1EGGMPHHH040C444E0206222ICGGIKOKI0C44444E0"
    "00QLLLH000MPHHH000EHHHE000UHHUGG00FHHF1100MPGGG000FGE1U088S8896000HHHJD000HHHA4000HHLLA0"
    "00HA4AH000HHHF1E00V248V03448443044444440O44244O0008L2000"
)
_FONT = [
    tuple(int(digit, 32) for digit in _FONT_DATA[i : i + 8]) for i in range(0, len(_FONT_DATA), 8)
]
GLYPH_W, GLYPH_H = 5, 8


def _runs(bits: int) -> tuple[tuple[int, int], ...]:
    """The (column, length) runs of set pixels in a glyph row."""
    runs: list[tuple[int, int]] = []
    for col in range(GLYPH_W):
        if bits >> (GLYPH_W - 1 - col) & 1:
            if runs and runs[-1][0] + runs[-1][1] == col:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((col, 1))
    return tuple(runs)


_ROW_RUNS = [_runs(bits) for bits in range(1 << GLYPH_W)]


def glyph(char: str) -> tuple[int, ...]:
    code = ord(char)
    return _FONT[code - 32 if 32 <= code < 127 else ord("?") - 32]


def printable(text: str) -> str:
    return "".join(c for c in text if 32 <= ord(c) < 127)


# --- the picture ---------------------------------------------------------------------------

PANEL = rgb(14, 18, 34)
TRAIL_COLOURS = {0: rgb(255, 255, 255), 1: rgb(255, 60, 60), 2: rgb(60, 220, 90)}
TYPED_KEEP = 40
TRAIL_KEEP = 48
BAR_PERIOD = 4.0


class Scene:
    """The shared framebuffer and what is drawn on it; every change returns the dirty rects."""

    def __init__(self, width: int, height: int, name: str, now: float) -> None:
        self.width, self.height, self.name = width, height, name
        self.screen = Rect(0, 0, width, height)
        self._background = _background(width, height)
        self.pixels = bytearray(self._background)
        self._start = now
        self._clock = ""
        self._typed = ""
        self._pointer = (0, 0, 0)
        self._clients = 0
        self._trail: deque[tuple[int, int, int]] = deque()
        self._layout(width)
        self._block = self._block_at(now)
        self._compose(self.screen)

    def _layout(self, width: int) -> None:
        inner = max(0, width - 32)
        self.title_box = Rect(16, 16, inner, 48)
        self.clock_box = Rect(16, 72, inner, 32)
        self.bar_box = Rect(16, 112, inner, 20)
        self.keys_box = Rect(16, 140, inner, 24)
        self.info_box = Rect(16, 172, inner, 24)

    def read(self, rect: Rect) -> bytes:
        """The native pixels of ``rect``, row after row."""
        stride, start, size = self.width * 4, rect.x * 4, rect.w * 4
        rows = range(rect.y * stride + start, (rect.y + rect.h) * stride, stride)
        return b"".join([self.pixels[offset : offset + size] for offset in rows])

    # changes

    def tick(self, wall: float, now: float) -> list[Rect]:
        dirty: list[Rect] = []
        clock = time.strftime("%H:%M:%S", time.localtime(wall)) + f"  up {int(now - self._start)}s"
        if clock != self._clock:
            self._clock = clock
            dirty.append(self.clock_box)
        block = self._block_at(now)
        if block != self._block:
            dirty.append(block.union(self._block))
            self._block = block
        return self._redraw(dirty)

    def key(self, keysym: int) -> list[Rect]:
        if keysym == KEYSYM_BACKSPACE:
            self._typed = self._typed[:-1]
        elif 0x20 <= keysym < 0x7F:  # Latin-1 keysyms are their character codes
            self._typed = (self._typed + chr(keysym))[-TYPED_KEEP:]
        else:
            return []
        return self._redraw([self.keys_box])

    def paste(self, text: str) -> list[Rect]:
        self._typed = (self._typed + printable(text))[-TYPED_KEEP:]
        return self._redraw([self.keys_box])

    def pointer(self, x: int, y: int, buttons: int) -> list[Rect]:
        point = (min(x, self.width - 1), min(y, self.height - 1), buttons)
        if point == self._pointer:
            return []
        self._pointer = point
        self._trail.append(point)
        dirty = [self.info_box, _dot(point)]
        if len(self._trail) > TRAIL_KEEP:
            dirty.append(_dot(self._trail.popleft()))
        return self._redraw(dirty)

    def set_clients(self, count: int) -> list[Rect]:
        self._clients = count
        return self._redraw([self.info_box])

    def _redraw(self, rects: list[Rect]) -> list[Rect]:
        clipped = [r.intersect(self.screen) for r in rects]
        clipped = [r for r in clipped if not r.empty]
        for rect in clipped:
            self._compose(rect)
        return clipped

    # drawing: every change repaints its rects from the background up, so layers stay right

    def _compose(self, clip: Rect) -> None:
        self._blit(self._background, clip)
        x, y, buttons = self._pointer
        self._panel(self.title_box, self.name, 4, rgb(255, 255, 255), clip)
        self._panel(self.clock_box, self._clock, 3, rgb(255, 214, 64), clip)
        self._fill(self.bar_box, PANEL, clip)
        self._fill(self._block, rgb(255, 140, 0), clip)
        self._panel(self.keys_box, f"keys: {self._typed}_", 2, rgb(120, 255, 150), clip)
        info = f"pointer {x},{y} buttons {buttons}  clients {self._clients}"
        self._panel(self.info_box, info, 2, rgb(200, 200, 210), clip)
        for point in self._trail:
            self._fill(_dot(point), TRAIL_COLOURS.get(point[2], rgb(255, 230, 0)), clip)

    def _panel(self, box: Rect, text: str, scale: int, colour: bytes, clip: Rect) -> None:
        self._fill(box, PANEL, clip)
        margin = (box.h - GLYPH_H * scale) // 2
        self._text(box.x + 8, box.y + margin, text, scale, colour, clip.intersect(box))

    def _text(self, x: int, y: int, text: str, scale: int, colour: bytes, clip: Rect) -> None:
        advance = (GLYPH_W + 1) * scale
        for i, char in enumerate(text):
            left = x + i * advance
            if left >= clip.x + clip.w:
                break
            if clip.intersect(Rect(left, y, GLYPH_W * scale, GLYPH_H * scale)).empty:
                continue
            for row, bits in enumerate(glyph(char)):
                for col, length in _ROW_RUNS[bits]:
                    run = Rect(left + col * scale, y + row * scale, length * scale, scale)
                    self._fill(run, colour, clip)

    def _fill(self, rect: Rect, colour: bytes, clip: Rect) -> None:
        area = rect.intersect(clip)
        if area.empty:
            return
        run, stride = colour * area.w, self.width * 4
        first = area.y * stride + area.x * 4
        for offset in range(first, first + area.h * stride, stride):
            self.pixels[offset : offset + len(run)] = run

    def _blit(self, source: bytes, clip: Rect) -> None:
        stride, size = self.width * 4, clip.w * 4
        for offset in range(clip.y * stride + clip.x * 4, (clip.y + clip.h) * stride, stride):
            self.pixels[offset : offset + size] = source[offset : offset + size]

    def _block_at(self, now: float) -> Rect:
        track, width = self.bar_box, min(96, self.bar_box.w)
        phase = (now - self._start) % BAR_PERIOD / BAR_PERIOD
        swing = 2 * phase if phase < 0.5 else 2 - 2 * phase  # there and back again
        return Rect(track.x + int(swing * (track.w - width)), track.y + 3, width, track.h - 6)


def _dot(point: tuple[int, int, int]) -> Rect:
    x, y, buttons = point
    size = 10 if buttons else 4
    return Rect(x - size // 2, y - size // 2, size, size)


def _background(width: int, height: int) -> bytes:
    """Gradient tiles in a checker pattern, with test-card colour bars along the bottom."""
    tile = 16
    rows: list[bytes] = []
    for y in range(height):
        ty = y // tile
        if y % tile == 0:
            tiles = [_tile_colour(tx, ty, width, height, tile) for tx in range(width // tile + 1)]
            row = b"".join(colour * tile for colour in tiles)[: width * 4]
        rows.append(row)
    bars = [rgb(*c) for c in ((255, 255, 255), (255, 255, 0), (0, 255, 255), (0, 255, 0),
                              (255, 0, 255), (255, 0, 0), (0, 0, 255), (0, 0, 0))]  # fmt: skip
    bar_row = b"".join(bars[x * len(bars) // width] for x in range(width))
    for y in range(max(0, height - 24), height):
        rows[y] = bar_row
    return b"".join(rows)


def _tile_colour(tx: int, ty: int, width: int, height: int, tile: int) -> bytes:
    fx, fy = tx * tile / max(1, width), ty * tile / max(1, height)
    shade = 12 if (tx + ty) % 2 else 0
    return rgb(int(40 + 90 * fx) + shade, int(60 + 80 * fy) + shade, int(150 - 60 * fx) + shade)


# --- one client connection -----------------------------------------------------------------


class _Client:
    def __init__(
        self, server: DemoVncServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._server, self._reader, self._writer = server, reader, writer
        self.peer = writer.get_extra_info("peername")
        self._convert: Converter = bytes
        self.encodings: tuple[int, ...] = ()
        self._dirty: list[Rect] = []
        self._requested: Rect | None = None
        self._full = False
        self._wake = asyncio.Event()
        self._handlers: dict[int, Callable[[], Awaitable[None]]] = {
            0: self._on_set_pixel_format,
            2: self._on_set_encodings,
            3: self._on_update_request,
            4: self._on_key,
            5: self._on_pointer,
            6: self._on_cut_text,
        }

    async def run(self) -> None:
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                await self._handshake()
            self._server._attach(self)
            await self._serve()
        except (RfbError, TimeoutError, ConnectionError, asyncio.IncompleteReadError) as exc:
            logger.info("VNC client %s disconnected: %s", self.peer, _describe(exc))
        finally:
            await self._close()

    def abort(self) -> None:
        self._writer.transport.abort()

    def mark(self, rect: Rect) -> None:
        if any(d.contains(rect) for d in self._dirty):
            return
        self._dirty = [d for d in self._dirty if not rect.contains(d)] + [rect]
        if len(self._dirty) > MAX_DIRTY_RECTS:  # many small rects: one bounding box is cheaper
            self._dirty = [reduce(Rect.union, self._dirty)]
        self._wake.set()

    # handshake, RFC 6143 §7.1 and §7.3

    async def _handshake(self) -> None:
        self._writer.write(b"RFB 003.008\n")
        minor = _client_minor(await self._read(12))
        await self._security(minor)
        await self._read(1)  # ClientInit: shared or not, every client shares this screen
        scene = self._server.scene
        name = scene.name.encode()
        header = struct.pack(">HH", scene.width, scene.height) + NATIVE_FORMAT.pack()
        self._writer.write(header + struct.pack(">I", len(name)) + name)
        await self._drain()

    async def _security(self, minor: int) -> None:
        password = self._server.password
        kind = SECURITY_NONE if password is None else SECURITY_VNC_AUTH
        if minor == 3:  # 3.3: the server decides (§7.5 of the 3.3 spec)
            self._writer.write(struct.pack(">I", kind))
        else:
            self._writer.write(bytes((1, kind)))
            chosen = (await self._read(1))[0]
            if chosen != kind:
                await self._refuse(minor, f"security type {chosen} was not offered")
        if password is not None:
            await self._vnc_auth(minor, password)
        elif minor == 8:  # only 3.8 sends a SecurityResult after None
            self._writer.write(struct.pack(">I", 0))

    async def _vnc_auth(self, minor: int, password: str) -> None:
        challenge = os.urandom(16)
        self._writer.write(challenge)
        response = await self._read(16)
        if not verify_vnc_auth(password, challenge, response):
            await self._refuse(minor, "Authentication failed")
        self._writer.write(struct.pack(">I", 0))

    async def _refuse(self, minor: int, reason: str) -> None:
        failure = struct.pack(">I", 1)
        if minor == 8:  # only 3.8 carries a reason (§7.1.3)
            failure += struct.pack(">I", len(reason)) + reason.encode()
        self._writer.write(failure)
        await self._drain()
        raise RfbError(reason)

    # normal operation, RFC 6143 §7.5

    async def _serve(self) -> None:
        flusher = asyncio.create_task(self._flush_forever())
        try:
            while True:
                kind = (await self._read(1, IDLE_TIMEOUT))[0]
                handler = self._handlers.get(kind)
                if handler is None:
                    raise RfbError(f"unknown message type {kind}")
                await handler()
        finally:
            flusher.cancel()
            await asyncio.wait([flusher])

    async def _on_set_pixel_format(self) -> None:
        fmt = PixelFormat.unpack((await self._read(19))[3:])
        problem = fmt.problem()
        if problem is not None:
            raise RfbError(f"unsupported pixel format: {problem}")
        self._convert = make_converter(fmt)
        logger.debug("VNC client %s uses %s", self.peer, fmt)

    async def _on_set_encodings(self) -> None:
        (count,) = struct.unpack(">xH", await self._read(3))
        if count > MAX_ENCODINGS:
            raise RfbError(f"{count} encodings is too many")
        self.encodings = struct.unpack(f">{count}i", await self._read(4 * count))

    async def _on_update_request(self) -> None:
        incremental, *area = struct.unpack(">BHHHH", await self._read(9))
        rect = Rect(*area).intersect(self._server.scene.screen)
        self._requested = rect if self._requested is None else self._requested.union(rect)
        self._full = self._full or not incremental
        self._wake.set()

    async def _on_key(self) -> None:
        down, keysym = struct.unpack(">BxxI", await self._read(7))
        if down:
            self._server._publish(self._server.scene.key(keysym))

    async def _on_pointer(self) -> None:
        buttons, x, y = struct.unpack(">BHH", await self._read(5))
        self._server._publish(self._server.scene.pointer(x, y, buttons))

    async def _on_cut_text(self) -> None:
        (length,) = struct.unpack(">3xI", await self._read(7))
        if length > MAX_CUT_TEXT:
            raise RfbError(f"cut text of {length} bytes is too long")
        text = (await self._read(length)).decode("latin-1")  # RFC 6143 §7.5.6: ISO 8859-1
        self._server._publish(self._server.scene.paste(text))

    # sending updates

    async def _flush_forever(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                update = self._take_update()
                if update is not None:
                    self._writer.write(update)
                    await self._drain()
        except (TimeoutError, ConnectionError) as exc:
            logger.info("VNC client %s: sending failed: %s", self.peer, _describe(exc))
            self.abort()  # wakes the reader, which ends the connection

    def _take_update(self) -> bytes | None:
        region = self._requested
        if region is None:
            return None
        if self._full:
            rects = [] if region.empty else [region]
        else:
            rects = [r for r in (d.intersect(region) for d in self._dirty) if not r.empty]
            if not rects:
                return None  # an incremental request waits until something changes
        self._dirty = [d for d in self._dirty if not region.contains(d)]
        self._requested, self._full = None, False
        return self._encode(rects)

    def _encode(self, rects: list[Rect]) -> bytes:
        parts = [struct.pack(">BxH", 0, len(rects))]
        for rect in rects:
            parts.append(struct.pack(">HHHHi", rect.x, rect.y, rect.w, rect.h, ENCODING_RAW))
            parts.append(self._convert(self._server.scene.read(rect)))
        return b"".join(parts)

    # I/O helpers

    async def _read(self, size: int, timeout: float = MESSAGE_TIMEOUT) -> bytes:
        return await asyncio.wait_for(self._reader.readexactly(size), timeout)

    async def _drain(self) -> None:
        await asyncio.wait_for(self._writer.drain(), WRITE_TIMEOUT)

    async def _close(self) -> None:
        self._writer.close()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), 5)
        except (TimeoutError, ConnectionError):
            self.abort()


def _client_minor(version: bytes) -> int:
    """The RFB minor version to speak, from the client's ProtocolVersion (§7.1.1)."""
    if len(version) != 12 or version[:4] != b"RFB " or version[7:8] != b"." or version[11] != 10:
        raise RfbError(f"bad protocol version {version[:12]!r}")
    major, minor = version[4:7], version[8:11]
    if major != b"003" or not minor.isdigit():
        raise RfbError(f"unsupported protocol version {version[:11]!r}")
    number = int(minor)
    # 3.7 and 3.8 as such; later ones (Apple's 3.889) speak 3.8, anything else 3.3.
    return 8 if number >= 8 else 7 if number == 7 else 3


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


# --- the server ----------------------------------------------------------------------------


class DemoVncServer:
    """A VNC server showing a live demo picture; see the module docstring."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        password: str | None = None,
        name: str = "ZStack demo VM",
        width: int = 800,
        height: int = 480,
    ) -> None:
        if not (1 <= width <= MAX_SIZE and 1 <= height <= MAX_SIZE):
            raise ValueError(f"screen size {width}x{height} is not within 1..{MAX_SIZE}")
        self.host, self.password = host, password
        self._requested_port = port
        self.scene = Scene(width, height, name, time.monotonic())
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._connections: dict[asyncio.Task[Any], _Client] = {}
        self._clients: set[_Client] = set()

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("DemoVncServer is already started")
        self._server = await asyncio.start_server(self._accept, self.host, self._requested_port)
        self._port = int(self._server.sockets[0].getsockname()[1])
        self._ticker = asyncio.create_task(self._tick_forever())
        logger.info("demo VNC server listening on %s:%s", self.host, self._port)

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("DemoVncServer is not started")
        return self._port

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.wait([self._ticker])
        for client in self._connections.values():
            client.abort()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=10)
        await server.wait_closed()

    async def __aenter__(self) -> DemoVncServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        client = _Client(self, reader, writer)
        self._connections[task] = client
        logger.info("VNC client %s connected", client.peer)
        try:
            await client.run()
        except Exception:  # a bug must cost one connection, not the server
            logger.exception("VNC client %s failed", client.peer)
        finally:
            del self._connections[task]
            if client in self._clients:
                self._clients.discard(client)
                self._publish(self.scene.set_clients(len(self._clients)))

    def _attach(self, client: _Client) -> None:
        self._clients.add(client)
        self._publish(self.scene.set_clients(len(self._clients)))
        self._publish(self.scene.tick(time.time(), time.monotonic()))

    def _publish(self, rects: list[Rect]) -> None:
        for client in self._clients:
            for rect in rects:
                client.mark(rect)

    async def _tick_forever(self) -> None:
        while True:
            if self._clients:  # nobody watching: nothing to animate
                self._publish(self.scene.tick(time.time(), time.monotonic()))
            await asyncio.sleep(TICK)


async def _main() -> None:
    parser = argparse.ArgumentParser(description="Run the demo VNC server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5900)
    parser.add_argument("--password", default=os.environ.get("DEMO_VNC_PASSWORD"))
    args = parser.parse_args()
    async with DemoVncServer(host=args.host, port=args.port, password=args.password):
        await asyncio.Event().wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_main())
