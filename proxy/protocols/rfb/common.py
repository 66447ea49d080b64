"""What both handshake roles share: the input buffer, the event queue, the output, and the
parsing of versions and reason strings."""

from __future__ import annotations

import abc
import enum
from collections import deque

from proxy.protocols.rfb.events import (
    MAX_BUFFER,
    MAX_REASON,
    NEED_DATA,
    U32,
    VERSION_PATTERN,
    VERSION_SIZE,
    Event,
    LocalProtocolError,
    NeedData,
    RemoteProtocolError,
    RfbVersion,
)


class Message(enum.Enum):
    """What an outgoing message is, so fail() knows what the peer has already been sent."""

    VERSION = enum.auto()
    SECURITY = enum.auto()
    RESPONSE = enum.auto()
    RESULT = enum.auto()


def clean(raw: bytes) -> str:
    """A peer's reason as one printable line (the text encoding is undefined, UTF-8 is usual)."""
    text = raw.decode("utf-8", errors="replace")
    return "".join(ch if ch.isprintable() else " " for ch in text).strip()


def wire_string(reason: str) -> bytes:
    """A reason as the wire's U32 length plus bytes (§7.1.2), cut to MAX_REASON."""
    data = reason.encode("utf-8")[:MAX_REASON]
    return U32.pack(len(data)) + data


def dotted(numbers: tuple[int, int]) -> str:
    return f"{numbers[0]}.{numbers[1]}"


def negotiate(major: int, minor: int) -> RfbVersion | None:
    """§7.1.1: 3.7 and 3.8 are themselves, 3.8+ (Apple's 3.889, RealVNC's 4.x) speak 3.8, other
    3.x versions (3.4, 3.5, 3.6, ...) do not know the 3.7 handshake and mean 3.3."""
    if major < 3:
        return None
    if (major, minor) >= (3, 8):
        return RfbVersion.V3_8
    return RfbVersion.V3_7 if minor == 7 else RfbVersion.V3_3


class Handshake(abc.ABC):
    """Buffering, events and output shared by both roles; subclasses parse one state at a time."""

    _peer = "the peer"

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._eof = False
        self._events: deque[Event] = deque()
        self._outgoing: list[tuple[Message, bytes]] = []
        self._emitted: set[Message] = set()
        self.version: RfbVersion | None = None

    # --- the public surface --------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; ``b""`` means the peer closed the connection."""
        if self._finished():
            raise LocalProtocolError("the handshake is over: pump further bytes directly")
        if self._errored():
            raise LocalProtocolError("the handshake has already failed")
        if self._eof:
            raise LocalProtocolError("data after the end of the stream")
        if not data:
            self._eof = True
            return
        if len(self._buffer) + len(data) > MAX_BUFFER:
            self._error()
            raise RemoteProtocolError(f"{self._peer} sent more data than an RFB handshake needs")
        self._buffer += data

    def next_event(self) -> Event | NeedData:
        """The next event, or NEED_DATA; raises RemoteProtocolError when the peer is at fault."""
        if self._events:
            return self._events.popleft()
        if self._errored():
            raise LocalProtocolError("the handshake has already failed")
        if self._finished():
            raise LocalProtocolError("the handshake is over")
        try:
            while not self._events:
                if not self._parse():
                    if self._eof:
                        raise RemoteProtocolError(self._eof_reason())
                    return NEED_DATA
        except RemoteProtocolError:
            self._error()
            raise
        return self._events.popleft()

    def bytes_to_send(self) -> bytes:
        """Everything due to the peer so far (possibly ``b""``); write it after every event."""
        data = b"".join(message for _, message in self._outgoing)
        self._emitted.update(kind for kind, _ in self._outgoing)
        self._outgoing.clear()
        return data

    @property
    def trailing_data(self) -> bytes:
        """Bytes the peer sent after the handshake, to be forwarded untouched."""
        if not self._finished() or self._events:
            raise LocalProtocolError("trailing_data exists only after SecurityComplete")
        return bytes(self._buffer)

    # --- for subclasses ------------------------------------------------------------------

    @abc.abstractmethod
    def _parse(self) -> bool:
        """Try to act on the buffer in the current state; False when more bytes are needed."""

    def _eof_reason(self) -> str:
        return f"{self._peer} closed the connection during the RFB handshake"

    @abc.abstractmethod
    def _finished(self) -> bool: ...

    @abc.abstractmethod
    def _errored(self) -> bool: ...

    @abc.abstractmethod
    def _error(self) -> None: ...

    def _send(self, kind: Message, data: bytes) -> None:
        self._outgoing.append((kind, data))

    def _take(self, count: int) -> bytes | None:
        if len(self._buffer) < count:
            return None
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def _peek_u8(self) -> int | None:
        return self._buffer[0] if self._buffer else None

    def _peek_u32(self) -> int | None:
        if len(self._buffer) < U32.size:
            return None
        value: int = U32.unpack_from(self._buffer)[0]
        return value

    def _take_string(self, offset: int) -> str | None:
        """Consume ``offset`` bytes plus the U32-length string after them; None if incomplete."""
        if len(self._buffer) < offset + U32.size:
            return None
        (length,) = U32.unpack_from(self._buffer, offset)
        if length > MAX_REASON:
            raise RemoteProtocolError(
                f"{self._peer} sent a reason of {length} bytes (at most {MAX_REASON} allowed)"
            )
        raw = self._take(offset + U32.size + length)
        return None if raw is None else clean(raw[offset + U32.size :])

    def _take_version(self) -> tuple[int, int] | None:
        """§7.1.1: ``RFB xxx.yyy\\n``; a wrong first byte fails at once instead of waiting."""
        head = bytes(self._buffer[:VERSION_SIZE])
        if not (head.startswith(b"RFB ") or b"RFB ".startswith(head)):
            raise RemoteProtocolError(f"{self._peer} does not speak RFB (it sent {head!r})")
        data = self._take(VERSION_SIZE)
        if data is None:
            return None
        match = VERSION_PATTERN.fullmatch(data)
        if match is None:
            raise RemoteProtocolError(f"{self._peer} sent a malformed RFB version {data!r}")
        return int(match[1]), int(match[2])
