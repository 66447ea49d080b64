"""SPICE link rewriting: the proxy puts the console password into each channel's link itself.

SPICE opens one connection per channel (main, display, inputs, cursor, ...), and each starts
with a link exchange; wire formats from spice-protocol ``spice/protocol.h`` and
``spice/enums.h``, as spice-html5 0.2.1 writes them (``src/spiceconn.js``, ``src/spicemsg.js``,
``src/enums.js``) and spice-server checks them (``server/reds.c``). All integers little-endian::

    browser -> host  SpiceLinkHeader + SpiceLinkMess + capability words     forwarded as is
    host -> browser  SpiceLinkHeader + SpiceLinkReply (RSA-1024 public key)  forwarded as is
    browser -> host  [u32 auth mechanism] + 128-byte RSA-OAEP ticket         ticket replaced
    host -> browser  u32 link result                                         forwarded as is

Everything after that passes raw. The browser encrypts whatever password it has (an empty one)
under the server's key; the proxy drops those 128 bytes and sends the real password, encrypted
under the same key, so the browser never holds it.

The core :class:`SpiceLinkProxy` does no I/O (h11 style): feed each side's bytes with
``receive_from_browser``/``receive_from_host``, call ``next_event()`` until it returns
:data:`NEED_DATA` (then read from ``waiting_for``) and forward each event's ``data``.
:mod:`proxy.protocols.spice.driver` drives it over the browser's WebSocket and asyncio streams.
"""

from __future__ import annotations

import enum
import logging
import struct
from dataclasses import dataclass, field
from typing import TypeAlias

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from proxy.errors import ReasonError

log = logging.getLogger(__name__)

# Channel types, enum SpiceChannelType in spice/enums.h (spice-html5 src/enums.js).
MAIN = 1
DISPLAY = 2
INPUTS = 3
CURSOR = 4
PLAYBACK = 5
RECORD = 6
TUNNEL = 7
SMARTCARD = 8
USBREDIR = 9
PORT = 10
WEBDAV = 11
CHANNEL_NAMES = {
    MAIN: "main", DISPLAY: "display", INPUTS: "inputs", CURSOR: "cursor", PLAYBACK: "playback",
    RECORD: "record", TUNNEL: "tunnel", SMARTCARD: "smartcard", USBREDIR: "usbredir",
    PORT: "port", WEBDAV: "webdav",
}  # fmt: skip

# enum SpiceLinkErr in spice/enums.h; the link reply's ``error`` and the final link result.
LINK_ERRORS = (
    "OK", "ERROR", "INVALID_MAGIC", "INVALID_DATA", "VERSION_MISMATCH", "NEED_SECURED",
    "NEED_UNSECURED", "PERMISSION_DENIED", "BAD_CONNECTION_ID", "CHANNEL_NOT_AVAILABLE",
)  # fmt: skip
LINK_OK = 0
LINK_PERMISSION_DENIED = 7

MAGIC = b"REDQ"  # SPICE_MAGIC
# Common capability bits (SPICE_COMMON_CAP_*), bit n of the first common capability word.
CAP_AUTH_SELECTION = 0
AUTH_SPICE = 1  # SpiceLinkAuthMechanism.auth_mechanism = SPICE_COMMON_CAP_AUTH_SPICE
AUTH_SASL = 2
# SPICE_TICKET_KEY_PAIR_LENGTH = 1024: a 128-byte ticket under a 162-byte DER public key.
TICKET_SIZE = 1024 // 8
PUBKEY_SIZE = TICKET_SIZE + 34  # SPICE_TICKET_PUBKEY_BYTES
# RSA-OAEP with SHA-1 encrypts at most 128 - 2 * 20 - 2 bytes: the password and its NUL.
MAX_TICKET_PLAINTEXT = TICKET_SIZE - 2 * 20 - 2
# Link messages carry a few capability words; spice-server sets no limit, we do.
MAX_LINK_SIZE = 4096

# SpiceLinkHeader: magic, major_version, minor_version, size (of what follows).
_HEADER = struct.Struct("<4sIII")
# SpiceLinkMess: connection_id, channel_type, channel_id, num_common_caps, num_channel_caps,
# caps_offset (from the start of SpiceLinkMess).
_LINK_MESS = struct.Struct("<IBBIII")
# SpiceLinkReply: error, pub_key[162], num_common_caps, num_channel_caps, caps_offset.
_LINK_REPLY = struct.Struct(f"<I{PUBKEY_SIZE}sIII")
_U32 = struct.Struct("<I")
_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)


class Side(enum.Enum):
    BROWSER = "browser"
    HOST = "host"


class SpiceError(ReasonError):
    """Base class; ``reason`` is fit to show a user (no secrets)."""


class LocalProtocolError(SpiceError):
    """The caller misused the API (fed data after the link, or an unusable password)."""


class RemoteProtocolError(SpiceError):
    """``side`` sent bytes that are not a SPICE link we can rewrite."""

    def __init__(self, reason: str, side: Side) -> None:
        super().__init__(reason)
        self.side = side

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, {self.side.value})"


class State(enum.Enum):
    CLIENT_LINK = "waiting for the browser's link message"
    SERVER_LINK = "waiting for the server's link reply"
    CLIENT_AUTH = "waiting for the browser's ticket"
    SERVER_RESULT = "waiting for the server's link result"
    DONE = "link over"


# The one table of transitions: what each state waits for, from whom, and what comes next.
# A link reply with an error, or any link result, ends the exchange (DONE).
TRANSITIONS: dict[State, tuple[Side, State]] = {
    State.CLIENT_LINK: (Side.BROWSER, State.SERVER_LINK),
    State.SERVER_LINK: (Side.HOST, State.CLIENT_AUTH),
    State.CLIENT_AUTH: (Side.BROWSER, State.SERVER_RESULT),
    State.SERVER_RESULT: (Side.HOST, State.DONE),
}


@dataclass(frozen=True)
class ClientLink:
    """The browser's link message; send ``data`` to the host unchanged."""

    connection_id: int
    channel_type: int
    channel_id: int
    data: bytes


@dataclass(frozen=True)
class ServerLink:
    """The server's link reply; send ``data`` to the browser. ``error`` != 0 ends the link."""

    error: int
    data: bytes


@dataclass(frozen=True)
class TicketRewritten:
    """The browser's ticket with the real password in it; send ``data`` to the host."""

    data: bytes = field(repr=False)


@dataclass(frozen=True)
class LinkResult:
    """The server's verdict (``LINK_OK`` or a link error); send ``data`` to the browser."""

    code: int
    data: bytes


Event: TypeAlias = ClientLink | ServerLink | TicketRewritten | LinkResult


class NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA = NeedData.NEED_DATA
"""``next_event()``: the side in ``waiting_for`` must send more first."""


def link_error_name(code: int) -> str:
    return LINK_ERRORS[code] if 0 <= code < len(LINK_ERRORS) else f"unknown error {code}"


class SpiceLinkProxy:
    """One channel's link exchange, seen from the middle; see the module docstring."""

    def __init__(self, password: str | None) -> None:
        # spice-html5 (and spice-gtk) send the password with its terminating NUL.
        self._plaintext = (password or "").encode() + b"\0"
        if len(self._plaintext) > MAX_TICKET_PLAINTEXT:
            raise LocalProtocolError("the console password is too long for a SPICE ticket")
        self.state = State.CLIENT_LINK
        self._buffers = {Side.BROWSER: bytearray(), Side.HOST: bytearray()}
        self._client_auth_selection = False
        self._auth_selection = False
        self._public_key: rsa.RSAPublicKey | None = None
        self.channel_type: int | None = None
        self._parsers = {
            State.CLIENT_LINK: self._client_link,
            State.SERVER_LINK: self._server_link,
            State.CLIENT_AUTH: self._client_auth,
            State.SERVER_RESULT: self._server_result,
        }

    @property
    def waiting_for(self) -> Side | None:
        """Whose bytes the link needs next; None once it is over."""
        step = TRANSITIONS.get(self.state)
        return step[0] if step else None

    @property
    def trailing_data(self) -> tuple[bytes, bytes]:
        """(bytes for the host, bytes for the browser) received past the link; after DONE."""
        if self.state is not State.DONE:
            raise LocalProtocolError("the link is not over yet")
        return bytes(self._buffers[Side.BROWSER]), bytes(self._buffers[Side.HOST])

    def receive_from_browser(self, data: bytes) -> None:
        self._receive(Side.BROWSER, data)

    def receive_from_host(self, data: bytes) -> None:
        self._receive(Side.HOST, data)

    def _receive(self, side: Side, data: bytes) -> None:
        if self.state is State.DONE:
            raise LocalProtocolError("the link is over: pump further bytes raw")
        self._buffers[side] += data

    def next_event(self) -> Event | NeedData:
        if self.state is State.DONE:
            raise LocalProtocolError("the link is over")
        side, after = TRANSITIONS[self.state]
        buffer = self._buffers[side]
        found = self._parsers[self.state](buffer)
        if found is NEED_DATA:
            return NEED_DATA
        event, used = found
        del buffer[:used]
        refused = isinstance(event, ServerLink) and event.error != LINK_OK
        self.state = State.DONE if refused else after
        return event

    # --- one parser per state: (event, bytes used) or NEED_DATA; they do not consume -------

    def _client_link(self, buffer: bytearray) -> tuple[Event, int] | NeedData:
        # SpiceLinkHeader + SpiceLinkMess (spice-html5 SpiceConn.send_hdr).
        message = _link_message(buffer, Side.BROWSER, _LINK_MESS.size)
        if message is NEED_DATA:
            return NEED_DATA
        fields = _LINK_MESS.unpack_from(message)
        connection_id, channel_type, channel_id, num_common, num_channel, offset = fields
        caps = _caps(message, num_common, num_channel, offset, _LINK_MESS.size, Side.BROWSER)
        self._client_auth_selection = _has_cap(caps, CAP_AUTH_SELECTION)
        self.channel_type = channel_type
        data = bytes(buffer[: _HEADER.size + len(message)])
        return ClientLink(connection_id, channel_type, channel_id, data), len(data)

    def _server_link(self, buffer: bytearray) -> tuple[Event, int] | NeedData:
        # SpiceLinkHeader + SpiceLinkReply; a refusal carries only ``error`` (reds.c,
        # reds_send_link_error), so it is read before the rest is required.
        message = _link_message(buffer, Side.HOST, _U32.size)
        if message is NEED_DATA:
            return NEED_DATA
        data = bytes(buffer[: _HEADER.size + len(message)])
        (error,) = _U32.unpack_from(message)
        if error != LINK_OK:
            return ServerLink(error, data), len(data)
        if len(message) < _LINK_REPLY.size:
            raise RemoteProtocolError("the SPICE link reply is too short", Side.HOST)
        _, pub_key, num_common, num_channel, offset = _LINK_REPLY.unpack_from(message)
        caps = _caps(message, num_common, num_channel, offset, _LINK_REPLY.size, Side.HOST)
        # Both ends must know auth selection for the mechanism word to be sent (spice-server
        # reads it when the client offered the cap; spice-gtk sends it when the server did).
        self._auth_selection = self._client_auth_selection and _has_cap(caps, CAP_AUTH_SELECTION)
        self._public_key = _load_public_key(pub_key)
        return ServerLink(error, data), len(data)

    def _client_auth(self, buffer: bytearray) -> tuple[Event, int] | NeedData:
        # SpiceLinkAuthMechanism (with auth selection) + SpiceLinkEncryptedTicket.
        prefix = _U32.size if self._auth_selection else 0
        if len(buffer) < prefix + TICKET_SIZE:
            return NEED_DATA
        if prefix:
            (mechanism,) = _U32.unpack_from(buffer)
            if mechanism != AUTH_SPICE:
                raise RemoteProtocolError(
                    f"the browser chose SPICE auth mechanism {mechanism}; only tickets (1) work",
                    Side.BROWSER,
                )
        assert self._public_key is not None
        try:
            ticket = self._public_key.encrypt(self._plaintext, _OAEP)
        except ValueError:
            raise RemoteProtocolError(
                "the SPICE server's public key cannot encrypt a ticket", Side.HOST
            ) from None
        return TicketRewritten(bytes(buffer[:prefix]) + ticket), prefix + TICKET_SIZE

    def _server_result(self, buffer: bytearray) -> tuple[Event, int] | NeedData:
        # A u32 SpiceLinkErr (reds_send_link_result); spice-server answers an auth mechanism it
        # dislikes with a whole link reply instead (reds_handle_auth_mechanism).
        if len(buffer) < _U32.size:
            return NEED_DATA
        if buffer.startswith(MAGIC):
            message = _link_message(buffer, Side.HOST, _U32.size)
            if message is NEED_DATA:
                return NEED_DATA
            size = _HEADER.size + len(message)
            return LinkResult(_U32.unpack_from(message)[0] or 1, bytes(buffer[:size])), size
        (code,) = _U32.unpack_from(buffer)
        return LinkResult(code, bytes(buffer[: _U32.size])), _U32.size


def _link_message(buffer: bytearray, side: Side, minimum: int) -> bytes | NeedData:
    """The body after a SpiceLinkHeader, once all of it is there."""
    if len(buffer) < len(MAGIC):
        return NEED_DATA
    if not buffer.startswith(MAGIC):
        who = "the browser is not a SPICE client" if side is Side.BROWSER else "not a SPICE server"
        raise RemoteProtocolError(f"{who} (no REDQ link header)", side)
    if len(buffer) < _HEADER.size:
        return NEED_DATA
    _, _, _, size = _HEADER.unpack_from(buffer)
    if not minimum <= size <= MAX_LINK_SIZE:
        raise RemoteProtocolError(f"SPICE link message of {size} bytes", side)
    if len(buffer) < _HEADER.size + size:
        return NEED_DATA
    return bytes(buffer[_HEADER.size : _HEADER.size + size])


def _caps(
    message: bytes, num_common: int, num_channel: int, offset: int, fixed: int, side: Side
) -> tuple[int, ...]:
    """The common capability words, checked as spice-server checks them (reds.c)."""
    count = num_common + num_channel
    if count and (offset < fixed or offset + 4 * count > len(message)):
        raise RemoteProtocolError("SPICE link capabilities out of bounds", side)
    return struct.unpack_from(f"<{num_common}I", message, offset) if num_common else ()


def _has_cap(words: tuple[int, ...], bit: int) -> bool:
    index, shift = divmod(bit, 32)
    return index < len(words) and bool(words[index] >> shift & 1)


def _load_public_key(der: bytes) -> rsa.RSAPublicKey:
    """SpiceLinkReply.pub_key: a DER SubjectPublicKeyInfo of an RSA-1024 key."""
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        raise RemoteProtocolError(
            "the SPICE server's public key is unreadable", Side.HOST
        ) from None
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size != TICKET_SIZE * 8:
        raise RemoteProtocolError("the SPICE server's key is not RSA-1024", Side.HOST)
    # OpenSSL loads any integers, but encrypting under an even modulus or exponent fails.
    numbers = key.public_numbers()
    if numbers.n % 2 == 0 or numbers.e % 2 == 0 or numbers.e < 3:
        raise RemoteProtocolError("the SPICE server's public key is not a valid RSA key", Side.HOST)
    return key
