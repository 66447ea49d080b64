"""The browser's side of SPICE over WebSockets, as spice-html5 0.2.1 speaks it, for tests.

Wire formats are written out here independently of the proxy (spice-protocol ``spice/protocol.h``
and ``spice/enums.h``). All integers are little-endian. Each SPICE channel is one WebSocket:

    browser -> server  SpiceLinkHeader + SpiceLinkMess + capability words
    server -> browser  SpiceLinkHeader + SpiceLinkReply (RSA-1024 public key)
    browser -> server  u32 auth mechanism + 128-byte RSA-OAEP ticket
    server -> browser  u32 link result
    then messages both ways, each behind a SpiceMiniDataHeader (u16 type, u32 size)

:class:`RawSpiceClient` does one channel's link with a dummy ticket (as the console page does:
it holds no password, the proxy puts the real one in) and reads raw bytes or messages after it.
:class:`SpiceChannel` keeps a linked channel alive in the background the way spice-html5 does
(acknowledging message windows, answering pings), counts what arrives, and records how the
WebSocket closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from dataclasses import dataclass, field

import aiohttp
from aiohttp import WSMsgType

# SpiceLinkHeader: magic, major, minor, size; SpiceLinkMess: connection id, channel type,
# channel id, number of common and of channel capability words, offset of the capabilities.
HEADER = struct.Struct("<4sIII")
LINK_MESS = struct.Struct("<IBBIII")
MINI_HEADER = struct.Struct("<HI")

# enum SpiceChannelType
MAIN, DISPLAY, INPUTS, CURSOR = 1, 2, 3, 4
CHANNEL_NAMES = {MAIN: "main", DISPLAY: "display", INPUTS: "inputs", CURSOR: "cursor"}

# Common capability bits (first common word)
CAP_AUTH_SELECTION = 1 << 0
CAP_AUTH_SPICE = 1 << 1
CAP_MINI_HEADER = 1 << 3

# enum SpiceLinkErr (values that tests meet)
LINK_OK = 0
LINK_PERMISSION_DENIED = 7
LINK_BAD_CONNECTION_ID = 8

# Messages every channel shares: server -> client ...
SPICE_MSG_SET_ACK = 3  # u32 generation, u32 window
SPICE_MSG_PING = 4  # u32 id, u64 timestamp, then optional filler
# ... and client -> server
SPICE_MSGC_ACK_SYNC = 1  # u32 generation
SPICE_MSGC_ACK = 2  # no body
SPICE_MSGC_PONG = 3  # u32 id, u64 timestamp

# Channel messages
SPICE_MSG_MAIN_INIT = 103  # starts with the u32 session id the other channels link with
SPICE_MSGC_DISPLAY_INIT = 101
SPICE_MSG_INPUTS_INIT = 101
SPICE_MSG_INPUTS_MOUSE_MOTION_ACK = 111  # the server sends one per 4 motions it took
SPICE_MSGC_INPUTS_KEY_DOWN = 101  # u32 PC/AT scan code
SPICE_MSGC_INPUTS_KEY_UP = 102  # u32 scan code with the break bit (0x80) set
SPICE_MSGC_INPUTS_MOUSE_MOTION = 111  # i32 dx, i32 dy, u32 buttons state
MOTION_ACK_BUNCH = 4  # SPICE_INPUT_MOTION_ACK_BUNCH


def link_mess(
    channel_type: int = MAIN,
    channel_id: int = 0,
    connection_id: int = 0,
    common: tuple[int, ...] = (CAP_AUTH_SELECTION | CAP_MINI_HEADER,),
    channel: tuple[int, ...] = (1,),
) -> bytes:
    """SpiceLinkHeader + SpiceLinkMess as spice-html5's SpiceConn.send_hdr writes it."""
    caps = struct.pack(f"<{len(common) + len(channel)}I", *common, *channel)
    body = LINK_MESS.pack(connection_id, channel_type, channel_id, len(common), len(channel), 18)
    return HEADER.pack(b"REDQ", 2, 2, len(body) + len(caps)) + body + caps


def bare_link_mess() -> bytes:
    """SpiceLinkHeader + SpiceLinkMess for the main channel with no capabilities at all."""
    return link_mess(common=(), channel=())


def ticket(mechanism: int | None = 1) -> bytes:
    """What spice-html5 sends when it has no password: a mechanism and 128 bytes of ciphertext."""
    return (b"" if mechanism is None else struct.pack("<I", mechanism)) + b"\xaa" * 128


def message(kind: int, body: bytes = b"") -> bytes:
    """One client message behind a SpiceMiniDataHeader."""
    return MINI_HEADER.pack(kind, len(body)) + body


def display_init() -> bytes:
    """SpiceMsgcDisplayInit as spice-html5 sends it at once after the display channel links:
    pixmap cache id and size, glz dictionary id and window size. spice-server waits for it and
    drops the channel (QEMU 7.2 may crash) without it."""
    return message(SPICE_MSGC_DISPLAY_INIT, struct.pack("<BqBi", 1, 10 << 20, 0, 0))


def key_down(scancode: int) -> bytes:
    return message(SPICE_MSGC_INPUTS_KEY_DOWN, struct.pack("<I", scancode))


def key_up(scancode: int) -> bytes:
    return message(SPICE_MSGC_INPUTS_KEY_UP, struct.pack("<I", scancode | 0x80))


def mouse_motion(dx: int, dy: int, buttons: int = 0) -> bytes:
    return message(SPICE_MSGC_INPUTS_MOUSE_MOTION, struct.pack("<iiI", dx, dy, buttons))


async def read_exactly(
    ws: aiohttp.ClientWebSocketResponse, count: int, buffer: bytearray, timeout: float = 5.0
) -> bytes:
    """``count`` bytes from binary messages, keeping the rest in ``buffer``."""
    while len(buffer) < count:
        msg = await ws.receive(timeout=timeout)
        if msg.type is not WSMsgType.BINARY:
            raise AssertionError(f"expected binary data, got {msg.type} {msg.data!r} {msg.extra!r}")
        buffer += msg.data
    data = bytes(buffer[:count])
    del buffer[:count]
    return data


class RawSpiceClient:
    """The browser's side of one channel's link, as spice-html5 does it, minus the real RSA."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.buffer = bytearray()

    async def link(self, channel_type: int = MAIN, connection_id: int = 0) -> int:
        """Send the link message and a dummy ticket; return the server's link error or result.

        A linked display channel is sent its SpiceMsgcDisplayInit at once, as spice-html5 does.
        """
        await self.ws.send_bytes(link_mess(channel_type, connection_id=connection_id))
        _, major, _, size = HEADER.unpack(await self.read(16))
        assert major == 2
        reply = await self.read(size)
        error = struct.unpack_from("<I", reply)[0]
        if error:
            return int(error)
        await self.ws.send_bytes(ticket())  # no password: the page has none
        result = int(struct.unpack("<I", await self.read(4))[0])
        if result == LINK_OK and channel_type == DISPLAY:
            await self.ws.send_bytes(display_init())
        return result

    async def read(self, count: int, timeout: float = 5.0) -> bytes:
        return await read_exactly(self.ws, count, self.buffer, timeout)

    async def read_message(self, timeout: float = 5.0) -> tuple[int, bytes]:
        kind, size = MINI_HEADER.unpack(await self.read(MINI_HEADER.size, timeout))
        return kind, await self.read(size, timeout)

    async def read_until(self, wanted: int, limit: int = 50) -> bytes:
        """Read messages up to one of type ``wanted``; return its body."""
        for _ in range(limit):
            kind, body = await self.read_message()
            if kind == wanted:
                return body
        raise AssertionError(f"no message of type {wanted} in the first {limit}")


@dataclass
class Closed:
    code: int | None
    reason: str
    at: float  # time.monotonic()


@dataclass
class SpiceChannel:
    """A linked channel kept alive in the background like spice-html5 keeps it.

    It acknowledges the server's message window (SET_ACK, then an ACK every ``window``
    messages) and answers pings, unless ``silent``: then it sends nothing at all (an inputs
    channel nobody types into). It counts the bytes and message types that arrive after the
    link and records the close.
    """

    client: RawSpiceClient
    channel_type: int
    silent: bool = False
    received: int = 0
    last_received: float = 0.0
    kinds: dict[int, int] = field(default_factory=dict)
    closed: Closed | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return CHANNEL_NAMES.get(self.channel_type, str(self.channel_type))

    def start(self) -> SpiceChannel:
        self._task = asyncio.create_task(self._run(), name=f"spice-{self.name}")
        return self

    @property
    def open(self) -> bool:
        return self.closed is None

    async def send(self, data: bytes) -> None:
        await self.client.ws.send_bytes(data)

    async def wait_closed(self, timeout: float) -> Closed:
        assert self._task is not None
        await asyncio.wait_for(asyncio.shield(self._task), timeout)
        assert self.closed is not None
        return self.closed

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.ws.close()

    async def _run(self) -> None:
        ws, buffer = self.client.ws, self.client.buffer
        window = until_ack = 0
        while True:
            while len(buffer) >= MINI_HEADER.size:
                kind, size = MINI_HEADER.unpack_from(buffer)
                if len(buffer) < MINI_HEADER.size + size:
                    break
                body = bytes(buffer[MINI_HEADER.size : MINI_HEADER.size + size])
                del buffer[: MINI_HEADER.size + size]
                self.kinds[kind] = self.kinds.get(kind, 0) + 1
                if self.silent:
                    continue
                if kind == SPICE_MSG_SET_ACK:
                    generation, window = struct.unpack_from("<II", body)
                    until_ack = window
                    await ws.send_bytes(message(SPICE_MSGC_ACK_SYNC, struct.pack("<I", generation)))
                elif kind == SPICE_MSG_PING:
                    await ws.send_bytes(message(SPICE_MSGC_PONG, body[:12]))
                if window:
                    until_ack -= 1
                    if until_ack <= 0:
                        until_ack = window
                        await ws.send_bytes(message(SPICE_MSGC_ACK))
            msg = await ws.receive()
            if msg.type is WSMsgType.BINARY:
                self.received += len(msg.data)
                self.last_received = time.monotonic()
                buffer += msg.data
                continue
            now = time.monotonic()
            if msg.type is WSMsgType.CLOSE:
                self.closed = Closed(msg.data, msg.extra or "", now)
            else:  # CLOSED or ERROR: ended without a close frame from the proxy
                self.closed = Closed(ws.close_code, f"{msg.type.name} {msg.data!r}", now)
            return


def message_kinds(stream: bytes) -> list[int]:
    """The types of the messages a channel's byte stream after its link holds, in order; the
    stream must end on a message boundary."""
    kinds, at = [], 0
    while at < len(stream):
        kind, size = MINI_HEADER.unpack_from(stream, at)
        at += MINI_HEADER.size + size
        kinds.append(kind)
    if at != len(stream):
        raise AssertionError(f"the stream ends {at - len(stream)} bytes inside a message")
    return kinds
