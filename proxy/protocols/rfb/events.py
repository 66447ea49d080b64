"""RFB handshake vocabulary shared by both roles: errors, versions, security types, events,
states and the one table of transitions (RFC 6143 §7.1–§7.2; VeNCrypt from the community
rfbproto specification). No I/O, no asyncio.
"""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass
from typing import TypeAlias

from proxy.errors import ReasonError

# Reason strings are human text; anything longer is a broken or hostile peer.
MAX_REASON = 64 * 1024
# The largest handshake message is a refusal: a count or type, a length and a reason.
MAX_BUFFER = MAX_REASON + 1024
VERSION_SIZE = 12

VERSION_PATTERN = re.compile(rb"RFB (\d{3})\.(\d{3})\n")
U8 = struct.Struct("!B")
U32 = struct.Struct("!I")


class RfbError(ReasonError):
    """Base class; ``reason`` is fit to show a user (no secrets, no raw tracebacks)."""


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
