"""Sans-IO RFB (VNC) handshake, RFC 6143 §7.1–§7.2, for both sides of the proxy.

The proxy authenticates to the VM's VNC server itself (:class:`UpstreamHandshake`, the proxy as
an RFB client) and offers the browser security type None only (:class:`DownstreamHandshake`, the
proxy as an RFB server), so the console password never reaches the browser. After security the
protocol (ClientInit, ServerInit and beyond, §7.3) is the same in 3.3, 3.7 and 3.8, so the two
sides may settle on different versions and the bridge then pumps bytes untouched, starting with
each side's ``trailing_data``.

No I/O happens here, in the manner of h11: feed what the peer sent to ``receive_data()``, call
``next_event()`` until it returns :data:`NEED_DATA` or the final :class:`SecurityComplete`, and
write ``bytes_to_send()`` to the peer after every event.

Upstream, with ``tls=True``, the proxy also speaks VeNCrypt (security type 19, described in the
community RFB specification, rfbproto "VeNCrypt") with the x509 sub-types only: the server must
prove its identity with a certificate. When :class:`StartTls` comes out, the caller upgrades the
connection to TLS (verifying the certificate), calls ``tls_established()``, and goes on feeding
what arrives over TLS.
"""

from __future__ import annotations

import abc
import enum
import re
import struct
from collections import deque
from dataclasses import dataclass
from typing import TypeAlias

from proxy.protocols.rfb.vncauth import CHALLENGE_SIZE, vnc_auth_response

# Reason strings are human text; anything longer is a broken or hostile peer.
MAX_REASON = 64 * 1024
# The largest handshake message is a refusal: a count or type, a length and a reason.
MAX_BUFFER = MAX_REASON + 1024
VERSION_SIZE = 12

_VERSION = re.compile(rb"RFB (\d{3})\.(\d{3})\n")
_U8 = struct.Struct("!B")
_U32 = struct.Struct("!I")


class RfbError(Exception):
    """Base class; ``reason`` is fit to show a user (no secrets, no raw tracebacks)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r})"


class LocalProtocolError(RfbError):
    """The caller misused the API (e.g. fed data after the handshake ended)."""


class RemoteProtocolError(RfbError):
    """The peer sent bytes that break RFC 6143, refused us, or offered nothing we support."""


class PasswordRequired(RemoteProtocolError):
    """The server offers only VNC Authentication and no password was given."""


class TlsRequired(RemoteProtocolError):
    """TLS is required (``require_tls``) but the server does not offer VeNCrypt."""


class AuthenticationFailed(RemoteProtocolError):
    """SecurityResult said "failed" (§7.1.3); ``server_reason`` is the 3.8 reason string."""

    def __init__(self, reason: str, server_reason: str | None = None) -> None:
        super().__init__(reason)
        self.server_reason = server_reason


class RfbVersion(enum.Enum):
    """The protocol versions RFC 6143 §7.1.1 knows; every other number maps onto one of them."""

    V3_3 = (3, 3)
    V3_7 = (3, 7)
    V3_8 = (3, 8)

    @property
    def wire(self) -> bytes:
        major, minor = self.value
        return b"RFB %03d.%03d\n" % (major, minor)

    def __str__(self) -> str:
        major, minor = self.value
        return f"{major}.{minor}"


class SecurityType(enum.IntEnum):
    """Security types (§7.1.2, §7.2); 0 marks a refusal carrying a reason."""

    INVALID = 0
    NONE = 1
    VNC_AUTH = 2
    VENCRYPT = 19


class VencryptSubtype(enum.IntEnum):
    """VeNCrypt sub-types (rfbproto "VeNCrypt"). TLS* are anonymous TLS (no certificate, so no
    proof of who the server is); X509* verify the server's certificate. The proxy uses X509None
    and X509Vnc only."""

    PLAIN = 256
    TLS_NONE = 257
    TLS_VNC = 258
    TLS_PLAIN = 259
    X509_NONE = 260
    X509_VNC = 261
    X509_PLAIN = 262
    TLS_SASL = 263
    X509_SASL = 264


ANONYMOUS_TLS = frozenset(
    {
        VencryptSubtype.TLS_NONE,
        VencryptSubtype.TLS_VNC,
        VencryptSubtype.TLS_PLAIN,
        VencryptSubtype.TLS_SASL,
    }
)
VENCRYPT_VERSION = (0, 2)


@dataclass(frozen=True)
class VersionAgreed:
    """ProtocolVersion exchanged (§7.1.1); ``peer_version`` is what the peer wrote, e.g. "3.889"."""

    version: RfbVersion
    peer_version: str


@dataclass(frozen=True)
class StartTls:
    """VeNCrypt: the server accepted ``subtype``; upgrade the connection to TLS now, verifying
    the server's certificate, then call ``tls_established()`` and feed what arrives over TLS."""

    subtype: VencryptSubtype


@dataclass(frozen=True)
class SecurityComplete:
    """Security settled (§7.1.2–§7.1.3); what follows is ClientInit (§7.3.1), in trailing_data.

    ``subtype`` is the VeNCrypt sub-type when ``security_type`` is VENCRYPT (the stream is TLS).
    """

    version: RfbVersion
    security_type: SecurityType
    subtype: VencryptSubtype | None = None


Event: TypeAlias = VersionAgreed | StartTls | SecurityComplete


class NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA = NeedData.NEED_DATA
"""Returned by ``next_event()`` when the peer must send more before anything can happen."""


class UpstreamState(enum.Enum):
    """The proxy as RFB client, towards the VM's VNC server."""

    AWAIT_VERSION = enum.auto()
    AWAIT_SECURITY_TYPE = enum.auto()  # 3.3: the server decides
    AWAIT_SECURITY_TYPES = enum.auto()  # 3.7+: the server offers a list
    AWAIT_VENCRYPT_VERSION = enum.auto()
    AWAIT_VENCRYPT_ACK = enum.auto()
    AWAIT_SUBTYPES = enum.auto()
    AWAIT_SUBTYPE_ACK = enum.auto()
    AWAIT_TLS = enum.auto()  # StartTls is out; the caller calls tls_established()
    AWAIT_CHALLENGE = enum.auto()
    AWAIT_RESULT = enum.auto()
    DONE = enum.auto()
    ERROR = enum.auto()


class DownstreamState(enum.Enum):
    """The proxy as RFB server, towards the browser."""

    AWAIT_VERSION = enum.auto()
    AWAIT_CHOICE = enum.auto()
    DONE = enum.auto()
    FAILED = enum.auto()  # fail() was called
    ERROR = enum.auto()


_Up = UpstreamState
_Down = DownstreamState

# Every transition either role may make. ERROR is reachable from every state (a bad or refusing
# peer), and FAILED from every downstream state (fail()); neither is left again.
UPSTREAM_TRANSITIONS: dict[UpstreamState, frozenset[UpstreamState]] = {
    # §7.1.1: the server's version picks the §7.1.2 variant: 3.3 decides, 3.7+ offers a list.
    _Up.AWAIT_VERSION: frozenset({_Up.AWAIT_SECURITY_TYPE, _Up.AWAIT_SECURITY_TYPES}),
    # §7.1.2 (3.3, Appendix A): None has no SecurityResult in 3.3; VNC auth is §7.2.2.
    _Up.AWAIT_SECURITY_TYPE: frozenset({_Up.DONE, _Up.AWAIT_CHALLENGE, _Up.AWAIT_VENCRYPT_VERSION}),
    # §7.1.2 (3.7+): None has a SecurityResult in 3.8 only (§7.2.1); VNC auth is §7.2.2.
    _Up.AWAIT_SECURITY_TYPES: frozenset(
        {_Up.DONE, _Up.AWAIT_RESULT, _Up.AWAIT_CHALLENGE, _Up.AWAIT_VENCRYPT_VERSION}
    ),
    # VeNCrypt: the server's version (U8 major, U8 minor); the client answers 0.2 ...
    _Up.AWAIT_VENCRYPT_VERSION: frozenset({_Up.AWAIT_VENCRYPT_ACK}),
    # ... the server acknowledges with U8 0 ...
    _Up.AWAIT_VENCRYPT_ACK: frozenset({_Up.AWAIT_SUBTYPES}),
    # ... offers U8 count, count x U32 sub-types; the client picks one (U32) ...
    _Up.AWAIT_SUBTYPES: frozenset({_Up.AWAIT_SUBTYPE_ACK}),
    # ... the server accepts it with U8 1, and the TLS handshake starts (the client speaks).
    _Up.AWAIT_SUBTYPE_ACK: frozenset({_Up.AWAIT_TLS}),
    # Inside TLS: X509Vnc is VNC auth (§7.2.2); X509None goes straight to the SecurityResult,
    # which VeNCrypt servers send in every RFB version.
    _Up.AWAIT_TLS: frozenset({_Up.AWAIT_CHALLENGE, _Up.AWAIT_RESULT}),
    # §7.2.2: challenge answered, the SecurityResult follows in every version.
    _Up.AWAIT_CHALLENGE: frozenset({_Up.AWAIT_RESULT}),
    # §7.1.3: OK ends the handshake; the server now waits for ClientInit (§7.3.1).
    _Up.AWAIT_RESULT: frozenset({_Up.DONE}),
    _Up.DONE: frozenset(),
}
DOWNSTREAM_TRANSITIONS: dict[DownstreamState, frozenset[DownstreamState]] = {
    # §7.1.1 then §7.1.2: a 3.3 client is told "None" and is done; 3.7+ gets the list [None].
    _Down.AWAIT_VERSION: frozenset({_Down.DONE, _Down.AWAIT_CHOICE}),
    # §7.1.2, §7.2.1: the client picks None; a SecurityResult OK follows in 3.8 only.
    _Down.AWAIT_CHOICE: frozenset({_Down.DONE}),
    _Down.DONE: frozenset(),
}


class _Message(enum.Enum):
    """What an outgoing message is, so fail() knows what the peer has already been sent."""

    VERSION = enum.auto()
    SECURITY = enum.auto()
    RESPONSE = enum.auto()
    RESULT = enum.auto()


def _clean(raw: bytes) -> str:
    """A peer's reason as one printable line (the text encoding is undefined, UTF-8 is usual)."""
    text = raw.decode("utf-8", errors="replace")
    return "".join(ch if ch.isprintable() else " " for ch in text).strip()


def _string(reason: str) -> bytes:
    """A reason as the wire's U32 length plus bytes (§7.1.2), cut to MAX_REASON."""
    data = reason.encode("utf-8")[:MAX_REASON]
    return _U32.pack(len(data)) + data


def _dotted(numbers: tuple[int, int]) -> str:
    return f"{numbers[0]}.{numbers[1]}"


def _negotiate(major: int, minor: int) -> RfbVersion | None:
    """§7.1.1: 3.7 and 3.8 are themselves, 3.8+ (Apple's 3.889, RealVNC's 4.x) speak 3.8, other
    3.x versions (3.4, 3.5, 3.6, ...) do not know the 3.7 handshake and mean 3.3."""
    if major < 3:
        return None
    if (major, minor) >= (3, 8):
        return RfbVersion.V3_8
    return RfbVersion.V3_7 if minor == 7 else RfbVersion.V3_3


class _Handshake(abc.ABC):
    """Buffering, events and output shared by both roles; subclasses parse one state at a time."""

    _peer = "the peer"

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._eof = False
        self._events: deque[Event] = deque()
        self._outgoing: list[tuple[_Message, bytes]] = []
        self._emitted: set[_Message] = set()
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

    def _send(self, kind: _Message, data: bytes) -> None:
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
        if len(self._buffer) < _U32.size:
            return None
        value: int = _U32.unpack_from(self._buffer)[0]
        return value

    def _take_string(self, offset: int) -> str | None:
        """Consume ``offset`` bytes plus the U32-length string after them; None if incomplete."""
        if len(self._buffer) < offset + _U32.size:
            return None
        (length,) = _U32.unpack_from(self._buffer, offset)
        if length > MAX_REASON:
            raise RemoteProtocolError(
                f"{self._peer} sent a reason of {length} bytes (at most {MAX_REASON} allowed)"
            )
        raw = self._take(offset + _U32.size + length)
        return None if raw is None else _clean(raw[offset + _U32.size :])

    def _take_version(self) -> tuple[int, int] | None:
        """§7.1.1: ``RFB xxx.yyy\\n``; a wrong first byte fails at once instead of waiting."""
        head = bytes(self._buffer[:VERSION_SIZE])
        if not (head.startswith(b"RFB ") or b"RFB ".startswith(head)):
            raise RemoteProtocolError(f"{self._peer} does not speak RFB (it sent {head!r})")
        data = self._take(VERSION_SIZE)
        if data is None:
            return None
        match = _VERSION.fullmatch(data)
        if match is None:
            raise RemoteProtocolError(f"{self._peer} sent a malformed RFB version {data!r}")
        return int(match[1]), int(match[2])


class UpstreamHandshake(_Handshake):
    """The proxy as RFB client: authenticate to the VNC server, stop before ClientInit.

    With a ``password``, VNC Authentication is chosen when offered, else None; without one,
    only None. With ``tls`` (the caller can verify the server's certificate), VeNCrypt is
    preferred over both when offered, with X509Vnc or X509None inside; ``require_tls`` refuses
    servers that do not offer it. ``max_version`` caps the version the proxy answers (for
    quirky servers, tests).
    """

    _peer = "the VNC server"

    def __init__(
        self,
        password: str | None = None,
        *,
        max_version: RfbVersion = RfbVersion.V3_8,
        tls: bool = False,
        require_tls: bool = False,
    ) -> None:
        super().__init__()
        if require_tls and not tls:
            raise LocalProtocolError("require_tls needs tls")
        self._password = password
        self._max_version = max_version
        self._tls = tls
        self._require_tls = require_tls
        self._security = SecurityType.INVALID
        self._subtype: VencryptSubtype | None = None
        self._answered_challenge = False
        self.state = UpstreamState.AWAIT_VERSION

    def tls_established(self) -> None:
        """Say that the connection is now TLS with a verified server; continue the handshake."""
        if self.state is not UpstreamState.AWAIT_TLS or self._events:
            raise LocalProtocolError("tls_established() is only valid right after StartTls")
        if self._subtype is VencryptSubtype.X509_VNC:
            self._goto(UpstreamState.AWAIT_CHALLENGE)
        else:
            self._goto(UpstreamState.AWAIT_RESULT)

    def receive_data(self, data: bytes) -> None:
        if self.state is UpstreamState.AWAIT_TLS:
            # Bytes here would be plaintext posing as TLS data: the caller must not feed them.
            raise LocalProtocolError("start TLS and call tls_established() before feeding data")
        super().receive_data(data)

    def _eof_reason(self) -> str:
        if self._subtype is not None and self.state is not UpstreamState.AWAIT_SUBTYPE_ACK:
            # QEMU checks the client's certificate after the TLS handshake and just hangs up.
            return (
                "the VNC server closed the connection right after the TLS handshake (does it "
                "require a client certificate, [tls] cert_file, or reject the proxy's?)"
            )
        return super()._eof_reason()

    def _goto(self, state: UpstreamState) -> None:
        if state not in UPSTREAM_TRANSITIONS[self.state]:
            raise LocalProtocolError(f"internal error: {self.state.name} -> {state.name}")
        self.state = state

    def _finished(self) -> bool:
        return self.state is UpstreamState.DONE

    def _errored(self) -> bool:
        return self.state is UpstreamState.ERROR

    def _error(self) -> None:
        self.state = UpstreamState.ERROR

    def _complete(self, security_type: SecurityType) -> None:
        assert self.version is not None
        self._goto(UpstreamState.DONE)
        self._events.append(SecurityComplete(self.version, security_type, self._subtype))

    def _parse(self) -> bool:
        handler = {
            _Up.AWAIT_VERSION: self._on_version,
            _Up.AWAIT_SECURITY_TYPE: self._on_security_type,
            _Up.AWAIT_SECURITY_TYPES: self._on_security_types,
            _Up.AWAIT_VENCRYPT_VERSION: self._on_vencrypt_version,
            _Up.AWAIT_VENCRYPT_ACK: self._on_vencrypt_ack,
            _Up.AWAIT_SUBTYPES: self._on_subtypes,
            _Up.AWAIT_SUBTYPE_ACK: self._on_subtype_ack,
            _Up.AWAIT_TLS: self._on_tls,
            _Up.AWAIT_CHALLENGE: self._on_challenge,
            _Up.AWAIT_RESULT: self._on_result,
        }[self.state]
        return handler()

    def _on_version(self) -> bool:
        """§7.1.1: answer min(server version, max_version)."""
        numbers = self._take_version()
        if numbers is None:
            return False
        server = _negotiate(*numbers)
        if server is None:
            raise RemoteProtocolError(
                f"the VNC server speaks RFB {_dotted(numbers)}, which is not supported"
            )
        self.version = min(server, self._max_version, key=lambda version: version.value)
        self._send(_Message.VERSION, self.version.wire)
        self._events.append(VersionAgreed(self.version, _dotted(numbers)))
        if self.version is RfbVersion.V3_3:
            self._goto(UpstreamState.AWAIT_SECURITY_TYPE)
        else:
            self._goto(UpstreamState.AWAIT_SECURITY_TYPES)
        return True

    def _refused(self, offset: int) -> bool:
        """§7.1.2: an invalid type (0) or empty list carries the server's reason."""
        reason = self._take_string(offset)
        if reason is None:
            return False
        raise RemoteProtocolError(f"the VNC server refused the connection: {reason or '-'}")

    def _on_security_type(self) -> bool:
        """§7.1.2 for 3.3 (RFC 6143 Appendix A): the server decides with a U32."""
        chosen = self._peek_u32()
        if chosen is None:
            return False
        if chosen == SecurityType.INVALID:
            return self._refused(_U32.size)
        if chosen == SecurityType.VENCRYPT and self._tls:
            self._take(_U32.size)
            self._security = SecurityType.VENCRYPT
            self._goto(UpstreamState.AWAIT_VENCRYPT_VERSION)
            return True
        self._check_tls_optional([chosen])
        if chosen == SecurityType.VNC_AUTH and self._password is None:
            raise PasswordRequired("the VNC server requires a password the proxy does not have")
        if chosen not in (SecurityType.NONE, SecurityType.VNC_AUTH):
            raise RemoteProtocolError(
                f"the VNC server requires security type {chosen}, which the proxy does not support"
                + _tls_hint([chosen])
            )
        self._take(_U32.size)
        self._security = SecurityType(chosen)
        if chosen == SecurityType.NONE:
            self._complete(SecurityType.NONE)
        else:
            self._goto(UpstreamState.AWAIT_CHALLENGE)
        return True

    def _on_security_types(self) -> bool:
        """§7.1.2 for 3.7+: a U8 count and that many U8 types; the client answers with one."""
        count = self._peek_u8()
        if count is None:
            return False
        if count == 0:
            return self._refused(_U8.size)
        data = self._take(_U8.size + count)
        if data is None:
            return False
        chosen = self._security = self._choose(list(data[1:]))
        self._send(_Message.SECURITY, _U8.pack(chosen))
        if chosen == SecurityType.VENCRYPT:
            self._goto(UpstreamState.AWAIT_VENCRYPT_VERSION)
        elif chosen == SecurityType.VNC_AUTH:
            self._goto(UpstreamState.AWAIT_CHALLENGE)
        elif self.version is RfbVersion.V3_8:
            self._goto(UpstreamState.AWAIT_RESULT)
        else:
            self._complete(SecurityType.NONE)
        return True

    def _check_tls_optional(self, offered: list[int]) -> None:
        if self._require_tls:
            raise TlsRequired(
                "the VNC server does not offer VeNCrypt (TLS), which [tls] vnc_required "
                f"demands (offered: {_listed(offered)})"
            )

    def _choose(self, offered: list[int]) -> SecurityType:
        if self._tls and SecurityType.VENCRYPT in offered:
            return SecurityType.VENCRYPT
        self._check_tls_optional(offered)
        if self._password is not None and SecurityType.VNC_AUTH in offered:
            return SecurityType.VNC_AUTH
        if SecurityType.NONE in offered:
            return SecurityType.NONE
        if SecurityType.VNC_AUTH in offered:
            raise PasswordRequired("the VNC server requires a password the proxy does not have")
        raise RemoteProtocolError(
            f"the VNC server offers no supported security type (offered: {_listed(offered)})"
            + _tls_hint(offered)
        )

    def _on_vencrypt_version(self) -> bool:
        """VeNCrypt: the server's highest version; 0.2 is the one with U32 sub-types."""
        data = self._take(2)
        if data is None:
            return False
        if (data[0], data[1]) < VENCRYPT_VERSION:
            raise RemoteProtocolError(
                f"the VNC server speaks VeNCrypt {data[0]}.{data[1]}; the proxy needs 0.2"
            )
        self._send(_Message.SECURITY, bytes(VENCRYPT_VERSION))
        self._goto(UpstreamState.AWAIT_VENCRYPT_ACK)
        return True

    def _on_vencrypt_ack(self) -> bool:
        data = self._take(_U8.size)
        if data is None:
            return False
        if data[0] != 0:
            raise RemoteProtocolError("the VNC server refused VeNCrypt version 0.2")
        self._goto(UpstreamState.AWAIT_SUBTYPES)
        return True

    def _on_subtypes(self) -> bool:
        count = self._peek_u8()
        if count is None:
            return False
        if count == 0:
            raise RemoteProtocolError("the VNC server offers no VeNCrypt sub-type")
        data = self._take(_U8.size + count * _U32.size)
        if data is None:
            return False
        offered = [value for (value,) in _U32.iter_unpack(data[_U8.size :])]
        self._subtype = self._choose_subtype(offered)
        self._send(_Message.SECURITY, _U32.pack(self._subtype))
        self._goto(UpstreamState.AWAIT_SUBTYPE_ACK)
        return True

    def _choose_subtype(self, offered: list[int]) -> VencryptSubtype:
        if self._password is not None and VencryptSubtype.X509_VNC in offered:
            return VencryptSubtype.X509_VNC
        if VencryptSubtype.X509_NONE in offered:
            return VencryptSubtype.X509_NONE
        if VencryptSubtype.X509_VNC in offered:
            raise PasswordRequired("the VNC server requires a password the proxy does not have")
        listed = ", ".join(_subtype_name(value) for value in offered)
        if any(value in ANONYMOUS_TLS for value in offered):
            raise RemoteProtocolError(
                "the VNC server offers only anonymous TLS or unsupported VeNCrypt sub-types "
                f"({listed}); anonymous TLS does not prove the server's identity, so the proxy "
                "refuses it"
            )
        raise RemoteProtocolError(
            f"the VNC server offers no supported VeNCrypt sub-type ({listed})"
        )

    def _on_subtype_ack(self) -> bool:
        data = self._take(_U8.size)
        if data is None:
            return False
        assert self._subtype is not None
        if data[0] != 1:
            raise RemoteProtocolError(
                f"the VNC server rejected the VeNCrypt sub-type {_subtype_name(self._subtype)}"
            )
        if self._buffer:
            # The client speaks first in TLS; anything here is plaintext that is not to be trusted.
            raise RemoteProtocolError(
                "the VNC server sent unexpected data before the TLS handshake"
            )
        self._goto(UpstreamState.AWAIT_TLS)
        self._events.append(StartTls(self._subtype))
        return True

    def _on_tls(self) -> bool:
        raise LocalProtocolError("start TLS and call tls_established() first")

    def _on_challenge(self) -> bool:
        """§7.2.2: DES-encrypt the 16-byte challenge with the password."""
        challenge = self._take(CHALLENGE_SIZE)
        if challenge is None:
            return False
        assert self._password is not None
        self._send(_Message.RESPONSE, vnc_auth_response(self._password, challenge))
        self._answered_challenge = True
        self._goto(UpstreamState.AWAIT_RESULT)
        return True

    def _on_result(self) -> bool:
        """§7.1.3: U32 0 is OK; a failure carries a reason string from 3.8 on."""
        result = self._peek_u32()
        if result is None:
            return False
        if result == 0:
            self._take(_U32.size)
            self._complete(self._security)
            return True
        if self.version is not RfbVersion.V3_8:
            if self._answered_challenge:
                raise AuthenticationFailed("the VNC server rejected the console password")
            raise AuthenticationFailed("the VNC server refused the authentication")
        reason = self._take_string(_U32.size)
        if reason is None:
            return False
        raise AuthenticationFailed(reason or "the VNC server refused the authentication", reason)


def _listed(offered: list[int]) -> str:
    return ", ".join(str(kind) for kind in offered)


def _tls_hint(offered: list[int]) -> str:
    if SecurityType.VENCRYPT in offered:
        return "; it wants TLS (VeNCrypt): set [tls] ca_file to let the proxy verify it"
    return ""


def _subtype_name(value: int) -> str:
    try:
        return f"{VencryptSubtype(value).name} ({value})"
    except ValueError:
        return str(value)


class DownstreamHandshake(_Handshake):
    """The proxy as RFB server towards the browser, offering security type None only.

    Write ``initial_bytes()`` (ProtocolVersion 3.8) first, then after every event write
    ``bytes_to_send()``. The client may answer 3.3, 3.7 or 3.8; ``trailing_data`` then holds its
    ClientInit. ``fail(reason)`` ends the handshake with a refusal the browser can show.
    """

    _peer = "the browser"

    def __init__(self) -> None:
        super().__init__()
        self.state = DownstreamState.AWAIT_VERSION
        self._send(_Message.VERSION, RfbVersion.V3_8.wire)  # §7.1.1: the server speaks first

    def initial_bytes(self) -> bytes:
        """The ProtocolVersion to write as soon as the connection is up."""
        if _Message.VERSION in self._emitted:
            raise LocalProtocolError("initial_bytes() was already called")
        return self.bytes_to_send()

    def fail(self, reason: str) -> bytes:
        """End the handshake; return what to write before closing so the client shows ``reason``.

        Before the security message has been handed out (``bytes_to_send()``), it is replaced by
        a refusal with ``reason`` (§7.1.2); after it, a 3.8 client gets SecurityResult failed
        with ``reason`` (§7.1.3). Otherwise (no client version yet, or a 3.3/3.7 client already
        told "None") RFB has no way to carry a reason and the result holds only pending bytes.
        """
        if self.state is DownstreamState.FAILED:
            raise LocalProtocolError("fail() was already called")
        self.state = DownstreamState.FAILED
        self._events.clear()
        # Drop the undelivered security answer: the refusal below takes its place.
        self._outgoing = [item for item in self._outgoing if item[0] is _Message.VERSION]
        if self.version is None:
            return self.bytes_to_send()
        if _Message.SECURITY not in self._emitted:
            invalid = _U32 if self.version is RfbVersion.V3_3 else _U8
            self._send(_Message.SECURITY, invalid.pack(0) + _string(reason))
        elif self.version is RfbVersion.V3_8 and _Message.RESULT not in self._emitted:
            self._send(_Message.RESULT, _U32.pack(1) + _string(reason))
        return self.bytes_to_send()

    def _goto(self, state: DownstreamState) -> None:
        if state not in DOWNSTREAM_TRANSITIONS[self.state]:
            raise LocalProtocolError(f"internal error: {self.state.name} -> {state.name}")
        self.state = state

    def _finished(self) -> bool:
        return self.state is DownstreamState.DONE

    def _errored(self) -> bool:
        return self.state in (DownstreamState.ERROR, DownstreamState.FAILED)

    def _error(self) -> None:
        self.state = DownstreamState.ERROR

    def _complete(self) -> None:
        assert self.version is not None
        self._goto(DownstreamState.DONE)
        self._events.append(SecurityComplete(self.version, SecurityType.NONE))

    def _parse(self) -> bool:
        if self.state is DownstreamState.AWAIT_VERSION:
            return self._on_version()
        return self._on_choice()

    def _on_version(self) -> bool:
        """§7.1.1: the client answers with a version no higher than ours (3.8)."""
        numbers = self._take_version()
        if numbers is None:
            return False
        version = _negotiate(*numbers)
        if version is None or numbers > (3, 8):
            raise RemoteProtocolError(
                f"the browser asked for RFB {_dotted(numbers)}; the proxy offered 3.8"
            )
        self.version = version
        self._events.append(VersionAgreed(version, _dotted(numbers)))
        if version is RfbVersion.V3_3:
            # §7.1.2 for 3.3 (Appendix A): the server decides; None has no SecurityResult.
            self._send(_Message.SECURITY, _U32.pack(SecurityType.NONE))
            self._complete()
        else:
            self._send(_Message.SECURITY, bytes([1, SecurityType.NONE]))
            self._goto(DownstreamState.AWAIT_CHOICE)
        return True

    def _on_choice(self) -> bool:
        """§7.1.2: the client's U8 choice; §7.2.1: None gets SecurityResult OK in 3.8 only."""
        data = self._take(_U8.size)
        if data is None:
            return False
        if data[0] != SecurityType.NONE:
            raise RemoteProtocolError(
                f"the browser chose security type {data[0]}, which the proxy did not offer"
            )
        if self.version is RfbVersion.V3_8:
            self._send(_Message.RESULT, _U32.pack(0))
        self._complete()
        return True
