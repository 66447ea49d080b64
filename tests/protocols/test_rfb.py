"""The sans-IO RFB handshake (proxy/rfb.py), both roles, against scripted peers.

Every peer script is fed three ways (the ``feed`` fixture): whole, one byte at a time, and whole
with extra bytes after it, which must come out untouched in ``trailing_data``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pytest

from proxy.protocols.rfb.downstream import DownstreamHandshake
from proxy.protocols.rfb.events import (
    MAX_BUFFER,
    MAX_REASON,
    NEED_DATA,
    AuthenticationFailed,
    DownstreamState,
    Event,
    LocalProtocolError,
    PasswordRequired,
    RemoteProtocolError,
    RfbError,
    RfbVersion,
    SecurityComplete,
    SecurityType,
    StartTls,
    TlsRequired,
    UpstreamState,
    VencryptSubtype,
    VersionAgreed,
)
from proxy.protocols.rfb.upstream import UpstreamHandshake
from proxy.protocols.rfb.vncauth import vnc_auth_response

V33, V37, V38 = RfbVersion.V3_3, RfbVersion.V3_7, RfbVersion.V3_8
NONE, VNC_AUTH = SecurityType.NONE, SecurityType.VNC_AUTH
PASSWORD = "secret"
CHALLENGE = bytes(range(16))
RESPONSE = vnc_auth_response(PASSWORD, CHALLENGE)
# What follows the handshake: a ClientInit (shared) and a byte of the next message.
TRAILER = b"\x01\x00"


def u32(value: int) -> bytes:
    return struct.pack("!I", value)


def string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return u32(len(data)) + data


def ok() -> bytes:
    return u32(0)


Handshake = UpstreamHandshake | DownstreamHandshake


@dataclass
class Outcome:
    events: list[Event]
    sent: bytes
    complete: bool


@pytest.fixture(params=["whole", "bytewise", "trailing"])
def feed(request: pytest.FixtureRequest) -> str:
    mode: str = request.param
    return mode


def drive(
    handshake: Handshake,
    incoming: bytes,
    feed: str,
    stop_at: type[Event] = SecurityComplete,
    drain_last: bool = True,
) -> Outcome:
    """Feed ``incoming`` as ``feed`` says until a ``stop_at`` event or the input runs out.

    What the handshake has to send is collected after every event, except after the last one
    when ``drain_last`` is false (so that fail() can still replace it).
    """
    if feed == "trailing":
        incoming += TRAILER
    size = 1 if feed == "bytewise" else max(1, len(incoming))
    chunks = [incoming[i : i + size] for i in range(0, len(incoming), size)]
    events: list[Event] = []
    sent = b""
    while True:
        event = handshake.next_event()
        if event is NEED_DATA:
            sent += handshake.bytes_to_send()
            if not chunks:
                return Outcome(events, sent, complete=False)
            handshake.receive_data(chunks.pop(0))
            continue
        events.append(event)
        if isinstance(event, stop_at):
            if drain_last:
                sent += handshake.bytes_to_send()
            break
        sent += handshake.bytes_to_send()
    if isinstance(event, SecurityComplete):
        assert handshake.trailing_data == (TRAILER if feed == "trailing" else b"")
    return Outcome(events, sent, complete=isinstance(event, SecurityComplete))


def fails(handshake: Handshake, incoming: bytes, feed: str) -> RfbError:
    with pytest.raises(RfbError) as caught:
        drive(handshake, incoming, feed)
    # After an error the handshake is dead; asking again is a misuse.
    with pytest.raises(LocalProtocolError):
        handshake.next_event()
    return caught.value


# --- upstream: the proxy as client of the VNC server ------------------------------------------

UPSTREAM_OK = [
    # (server version, password, server's bytes after its version, proxy's bytes after its own)
    pytest.param(V38, None, b"\x01\x01" + ok(), b"\x01", NONE, id="3.8-none"),
    pytest.param(V38, PASSWORD, b"\x01\x02" + CHALLENGE + ok(), b"\x02" + RESPONSE, VNC_AUTH,
                 id="3.8-vnc-auth"),
    pytest.param(V37, None, b"\x01\x01", b"\x01", NONE, id="3.7-none-no-result"),
    pytest.param(V37, PASSWORD, b"\x01\x02" + CHALLENGE + ok(), b"\x02" + RESPONSE, VNC_AUTH,
                 id="3.7-vnc-auth"),
    pytest.param(V33, None, u32(1), b"", NONE, id="3.3-none-no-result"),
    pytest.param(V33, PASSWORD, u32(2) + CHALLENGE + ok(), RESPONSE, VNC_AUTH,
                 id="3.3-vnc-auth"),
    # A password is used only when the server asks for one; without, None is preferred.
    pytest.param(V38, PASSWORD, b"\x01\x01" + ok(), b"\x01", NONE, id="3.8-only-none-offered"),
    pytest.param(V33, PASSWORD, u32(1), b"", NONE, id="3.3-server-decides-none"),
    pytest.param(V38, None, b"\x02\x02\x01" + ok(), b"\x01", NONE, id="3.8-none-preferred"),
    pytest.param(V38, PASSWORD, b"\x03\x01\x10\x02" + CHALLENGE + ok(), b"\x02" + RESPONSE,
                 VNC_AUTH, id="3.8-vnc-auth-preferred"),
]  # fmt: skip


@pytest.mark.parametrize(("version", "password", "server", "client", "security"), UPSTREAM_OK)
def test_upstream_authenticates(
    feed: str,
    version: RfbVersion,
    password: str | None,
    server: bytes,
    client: bytes,
    security: SecurityType,
) -> None:
    handshake = UpstreamHandshake(password)
    outcome = drive(handshake, version.wire + server, feed)
    assert outcome.events == [
        VersionAgreed(version, str(version)),
        SecurityComplete(version, security),
    ]
    assert outcome.sent == version.wire + client
    assert handshake.state is UpstreamState.DONE


@pytest.mark.parametrize(
    ("server_version", "answer"),
    [
        (b"RFB 003.003\n", V33),
        (b"RFB 003.005\n", V33),  # §7.1.1: 3.5 (and any other 3.x below 3.7) means 3.3
        (b"RFB 003.006\n", V33),
        (b"RFB 003.007\n", V37),
        (b"RFB 003.009\n", V38),
        (b"RFB 003.889\n", V38),  # Apple Remote Desktop
        (b"RFB 004.001\n", V38),  # RealVNC 4+
        (b"RFB 005.000\n", V38),
    ],
)
def test_upstream_answers_with_the_version_it_can_speak(
    feed: str, server_version: bytes, answer: RfbVersion
) -> None:
    offer = u32(1) if answer is V33 else b"\x01\x01"
    outcome = drive(UpstreamHandshake(), server_version + offer, feed, stop_at=VersionAgreed)
    first = outcome.events[0]
    assert isinstance(first, VersionAgreed) and first.version is answer
    assert outcome.sent.startswith(answer.wire)


def test_upstream_max_version_caps_the_answer(feed: str) -> None:
    handshake = UpstreamHandshake(PASSWORD, max_version=V37)
    outcome = drive(handshake, V38.wire + b"\x01\x02" + CHALLENGE + ok(), feed)
    assert outcome.events == [VersionAgreed(V37, "3.8"), SecurityComplete(V37, VNC_AUTH)]
    assert outcome.sent == V37.wire + b"\x02" + RESPONSE


def test_upstream_wrong_password_3_8_carries_the_server_reason(feed: str) -> None:
    server = V38.wire + b"\x01\x02" + CHALLENGE + u32(1) + string("Authentication failed")
    error = fails(UpstreamHandshake(PASSWORD), server, feed)
    assert isinstance(error, AuthenticationFailed)
    assert error.reason == error.server_reason == "Authentication failed"


@pytest.mark.parametrize(
    "server",
    [
        pytest.param(V37.wire + b"\x01\x02" + CHALLENGE + u32(1), id="3.7"),
        pytest.param(V33.wire + u32(2) + CHALLENGE + u32(1), id="3.3"),
    ],
)
def test_upstream_wrong_password_before_3_8_has_no_server_reason(feed: str, server: bytes) -> None:
    error = fails(UpstreamHandshake(PASSWORD), server, feed)
    assert isinstance(error, AuthenticationFailed)
    assert error.server_reason is None
    assert error.reason == "the VNC server rejected the console password"


def test_upstream_3_8_none_can_fail_too(feed: str) -> None:
    error = fails(UpstreamHandshake(), V38.wire + b"\x01\x01" + u32(1) + string(""), feed)
    assert isinstance(error, AuthenticationFailed)
    assert error.reason == "the VNC server refused the authentication"


@pytest.mark.parametrize(
    "server",
    [
        pytest.param(V38.wire + b"\x00" + string("Too many security failures"), id="3.8"),
        pytest.param(V37.wire + b"\x00" + string("Too many security failures"), id="3.7"),
        pytest.param(V33.wire + u32(0) + string("Too many security failures"), id="3.3"),
    ],
)
def test_upstream_refusal_at_security_stage_carries_the_reason(feed: str, server: bytes) -> None:
    error = fails(UpstreamHandshake(PASSWORD), server, feed)
    assert type(error) is RemoteProtocolError
    assert error.reason == "the VNC server refused the connection: Too many security failures"


def test_upstream_reason_is_made_printable(feed: str) -> None:
    server = V38.wire + b"\x00" + string(b"bad\x1b[31m\nthing \xff")
    error = fails(UpstreamHandshake(), server, feed)
    assert error.reason == "the VNC server refused the connection: bad [31m thing \ufffd"


@pytest.mark.parametrize(
    ("password", "server", "reason"),
    [
        pytest.param(PASSWORD, V38.wire + b"\x02\x12\x05",
                     "the VNC server offers no supported security type (offered: 18, 5)",
                     id="3.8-unsupported"),
        pytest.param(PASSWORD, V38.wire + b"\x01\x13",
                     "the VNC server offers no supported security type (offered: 19); it wants "
                     "TLS (VeNCrypt): set [tls] ca_file to let the proxy verify it",
                     id="3.8-vencrypt-without-tls"),
        pytest.param(PASSWORD, V33.wire + u32(19),
                     "the VNC server requires security type 19, which the proxy does not support;"
                     " it wants TLS (VeNCrypt): set [tls] ca_file to let the proxy verify it",
                     id="3.3-vencrypt-without-tls"),
        pytest.param(None, V37.wire + b"\x02\x13\x02",
                     "the VNC server requires a password the proxy does not have",
                     id="3.7-password-needed"),
        pytest.param(None, V38.wire + b"\x01\x02",
                     "the VNC server requires a password the proxy does not have",
                     id="3.8-password-needed"),
        pytest.param(None, V33.wire + u32(2),
                     "the VNC server requires a password the proxy does not have",
                     id="3.3-password-needed"),
        pytest.param(PASSWORD, V33.wire + u32(18),
                     "the VNC server requires security type 18, which the proxy does not support",
                     id="3.3-unsupported"),
    ],
)  # fmt: skip
def test_upstream_refuses_what_it_cannot_do(
    feed: str, password: str | None, server: bytes, reason: str
) -> None:
    handshake = UpstreamHandshake(password)
    error = fails(handshake, server, feed)
    expected = PasswordRequired if "requires a password" in reason else RemoteProtocolError
    assert type(error) is expected
    assert error.reason == reason
    assert handshake.state is UpstreamState.ERROR
    # Nothing was chosen: the proxy sent its version and nothing else.
    assert handshake.bytes_to_send() == b""


@pytest.mark.parametrize(
    ("server", "reason"),
    [
        (
            b"HTTP/1.1 400 Bad Request\r\n",
            "the VNC server does not speak RFB (it sent b'H",
        ),
        (b"RFB 003.00x\n", "the VNC server sent a malformed RFB version b'RFB 003.00x\\n'"),
        (b"RFB 3.8\nxxxxx", "the VNC server sent a malformed RFB version b'RFB 3.8\\nxxxx'"),
        (b"RFB 002.000\n", "the VNC server speaks RFB 2.0, which is not supported"),
    ],
)
def test_upstream_refuses_a_garbage_version(feed: str, server: bytes, reason: str) -> None:
    assert fails(UpstreamHandshake(), server, feed).reason.startswith(reason)


def test_upstream_refuses_a_non_rfb_server_without_waiting_for_twelve_bytes() -> None:
    handshake = UpstreamHandshake()
    handshake.receive_data(b"SSH")
    with pytest.raises(RemoteProtocolError, match="does not speak RFB"):
        handshake.next_event()


@pytest.mark.parametrize(
    "server",
    [
        pytest.param(V38.wire + b"\x00" + u32(MAX_REASON + 1), id="refusal"),
        pytest.param(V33.wire + u32(0) + u32(0xFFFFFFFF), id="3.3-refusal"),
        pytest.param(V38.wire + b"\x01\x02" + CHALLENGE + u32(1) + u32(MAX_REASON + 1),
                     id="security-result"),
    ],
)  # fmt: skip
def test_upstream_refuses_an_oversize_reason(feed: str, server: bytes) -> None:
    error = fails(UpstreamHandshake(PASSWORD), server, feed)
    assert type(error) is RemoteProtocolError
    assert "at most 65536 allowed" in error.reason


def test_a_reason_of_exactly_the_limit_is_read() -> None:
    handshake = UpstreamHandshake()
    handshake.receive_data(V38.wire + b"\x00" + string("x" * MAX_REASON))
    assert handshake.next_event() == VersionAgreed(V38, "3.8")
    with pytest.raises(RemoteProtocolError) as caught:
        handshake.next_event()
    assert caught.value.reason.endswith("x" * MAX_REASON)


def test_upstream_bounds_its_buffer() -> None:
    handshake = UpstreamHandshake()
    handshake.receive_data(b"R" * MAX_BUFFER)
    with pytest.raises(RemoteProtocolError, match="more data than an RFB handshake needs"):
        handshake.receive_data(b"R")
    with pytest.raises(LocalProtocolError, match="already failed"):
        handshake.receive_data(b"R")


@pytest.mark.parametrize("cut", [0, 5, 12, 13, 14])
def test_upstream_server_closing_mid_handshake(cut: int) -> None:
    handshake = UpstreamHandshake(PASSWORD)
    if cut:
        handshake.receive_data((V38.wire + b"\x01\x02" + CHALLENGE)[:cut])
    handshake.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="closed the connection during the RFB"):
        while not isinstance(handshake.next_event(), SecurityComplete):
            pass


def test_upstream_api_misuse() -> None:
    handshake = UpstreamHandshake()
    with pytest.raises(LocalProtocolError):
        _ = handshake.trailing_data
    handshake.receive_data(V37.wire + b"\x01\x01")
    assert isinstance(handshake.next_event(), VersionAgreed)
    with pytest.raises(LocalProtocolError):
        _ = handshake.trailing_data
    assert handshake.next_event() == SecurityComplete(V37, NONE)
    assert handshake.trailing_data == b""
    with pytest.raises(LocalProtocolError, match="handshake is over"):
        handshake.receive_data(b"\x01")
    with pytest.raises(LocalProtocolError, match="handshake is over"):
        handshake.next_event()


def test_errors_carry_a_reason_and_a_useful_repr() -> None:
    error = AuthenticationFailed("Authentication failed", "Authentication failed")
    assert isinstance(error, RemoteProtocolError)
    assert isinstance(error, RfbError)
    assert repr(error) == "AuthenticationFailed('Authentication failed')"
    assert str(error) == "Authentication failed"


# --- upstream VeNCrypt (security type 19, x509 sub-types) -------------------------------------

VENCRYPT = SecurityType.VENCRYPT
X509_NONE, X509_VNC = VencryptSubtype.X509_NONE, VencryptSubtype.X509_VNC


def vencrypt_offer(*subtypes: int, version: bytes = b"\x00\x02") -> bytes:
    """The server's side up to and including its acceptance of the sub-type (before TLS)."""
    return version + b"\x00" + bytes([len(subtypes)]) + b"".join(u32(s) for s in subtypes) + b"\x01"


def drive_tls(handshake: UpstreamHandshake, before: bytes, after: bytes, feed: str) -> Outcome:
    """Feed ``before`` up to StartTls, "do" TLS, then feed ``after`` (what came over TLS).

    Extra bytes before TLS would be plaintext posing as TLS data, so the "trailing" mode adds
    its extra bytes after the TLS part only.
    """
    first = drive(handshake, before, "whole" if feed == "trailing" else feed, stop_at=StartTls)
    assert isinstance(first.events[-1], StartTls)
    assert handshake.state is UpstreamState.AWAIT_TLS
    handshake.tls_established()
    second = drive(handshake, after, feed)
    return Outcome(first.events + second.events, first.sent + second.sent, second.complete)


VENCRYPT_OK = [
    # (server version, password, security types offered, sub-types offered, over TLS: server's
    # bytes, client's bytes, the sub-type chosen)
    pytest.param(V38, None, b"\x01\x13", [260], ok(), b"", X509_NONE, id="3.8-x509none"),
    pytest.param(V38, PASSWORD, b"\x01\x13", [261], CHALLENGE + ok(), RESPONSE, X509_VNC,
                 id="3.8-x509vnc"),
    pytest.param(V37, None, b"\x01\x13", [260], ok(), b"", X509_NONE,
                 id="3.7-x509none-has-a-result"),
    pytest.param(V37, PASSWORD, b"\x01\x13", [261], CHALLENGE + ok(), RESPONSE, X509_VNC,
                 id="3.7-x509vnc"),
    pytest.param(V33, None, u32(19), [260], ok(), b"", X509_NONE, id="3.3-server-decides"),
    # VeNCrypt is preferred over None and VNC auth; X509Vnc over X509None with a password.
    pytest.param(V38, PASSWORD, b"\x03\x01\x02\x13", [260, 261], CHALLENGE + ok(), RESPONSE,
                 X509_VNC, id="preferred-with-password"),
    pytest.param(V38, None, b"\x03\x01\x02\x13", [261, 260], ok(), b"", X509_NONE,
                 id="preferred-without-password"),
    # Anonymous and unsupported sub-types are passed over when an x509 one is offered.
    pytest.param(V38, PASSWORD, b"\x01\x13", [257, 258, 262, 260], ok(), b"", X509_NONE,
                 id="x509-among-others"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("version", "password", "types", "subtypes", "server_tls", "client_tls", "subtype"),
    VENCRYPT_OK,
)
def test_upstream_vencrypt_x509(
    feed: str,
    version: RfbVersion,
    password: str | None,
    types: bytes,
    subtypes: list[int],
    server_tls: bytes,
    client_tls: bytes,
    subtype: VencryptSubtype,
) -> None:
    handshake = UpstreamHandshake(password, tls=True)
    outcome = drive_tls(
        handshake, version.wire + types + vencrypt_offer(*subtypes), server_tls, feed
    )
    assert outcome.events == [
        VersionAgreed(version, str(version)),
        StartTls(subtype),
        SecurityComplete(version, VENCRYPT, subtype),
    ]
    choice = b"" if version is V33 else b"\x13"
    assert outcome.sent == version.wire + choice + b"\x00\x02" + u32(subtype) + client_tls
    assert handshake.state is UpstreamState.DONE


def test_upstream_vencrypt_answers_0_2_to_a_newer_server(feed: str) -> None:
    handshake = UpstreamHandshake(tls=True)
    server = V38.wire + b"\x01\x13" + vencrypt_offer(260, version=b"\x00\x03")
    outcome = drive_tls(handshake, server, ok(), feed)
    assert outcome.sent == V38.wire + b"\x13\x00\x02" + u32(260)


def test_upstream_without_tls_ignores_vencrypt(feed: str) -> None:
    outcome = drive(UpstreamHandshake(PASSWORD), V38.wire + b"\x02\x13\x01" + ok(), feed)
    assert outcome.events[-1] == SecurityComplete(V38, NONE)


@pytest.mark.parametrize(
    ("password", "server", "reason"),
    [
        pytest.param(None, b"\x01\x13" + vencrypt_offer(257, 258),
                     "the VNC server offers only anonymous TLS or unsupported VeNCrypt sub-types "
                     "(TLS_NONE (257), TLS_VNC (258)); anonymous TLS does not prove the server's "
                     "identity, so the proxy refuses it", id="anonymous-tls"),
        pytest.param(PASSWORD, b"\x01\x13" + vencrypt_offer(262, 264, 999),
                     "the VNC server offers no supported VeNCrypt sub-type (X509_PLAIN (262), "
                     "X509_SASL (264), 999)", id="unsupported-subtypes"),
        pytest.param(None, b"\x01\x13" + vencrypt_offer(261),
                     "the VNC server requires a password the proxy does not have",
                     id="x509vnc-without-password"),
        pytest.param(None, b"\x01\x13\x00\x01",
                     "the VNC server speaks VeNCrypt 0.1; the proxy needs 0.2", id="vencrypt-0.1"),
        pytest.param(None, b"\x01\x13\x00\x02\x01",
                     "the VNC server refused VeNCrypt version 0.2", id="version-refused"),
        pytest.param(None, b"\x01\x13\x00\x02\x00\x00",
                     "the VNC server offers no VeNCrypt sub-type", id="no-subtypes"),
        pytest.param(None, b"\x01\x13\x00\x02\x00\x01" + u32(260) + b"\x00",
                     "the VNC server rejected the VeNCrypt sub-type X509_NONE (260)",
                     id="subtype-rejected"),
    ],
)  # fmt: skip
def test_upstream_vencrypt_refuses(
    feed: str, password: str | None, server: bytes, reason: str
) -> None:
    handshake = UpstreamHandshake(password, tls=True)
    error = fails(handshake, V38.wire + server, feed)
    expected = PasswordRequired if "requires a password" in reason else RemoteProtocolError
    assert type(error) is expected
    assert error.reason == reason
    assert handshake.state is UpstreamState.ERROR


def test_upstream_vencrypt_refuses_plaintext_after_the_acceptance() -> None:
    """Bytes after the sub-type acceptance came before TLS, yet would pass as TLS data.

    (When they arrive in a later read, the driver finds them in its stream buffer instead.)
    """
    handshake = UpstreamHandshake(tls=True)
    handshake.receive_data(V38.wire + b"\x01\x13" + vencrypt_offer(260) + b"\x16\x03")
    assert isinstance(handshake.next_event(), VersionAgreed)
    with pytest.raises(RemoteProtocolError, match="unexpected data before the TLS handshake"):
        handshake.next_event()
    assert handshake.state is UpstreamState.ERROR


@pytest.mark.parametrize(
    "server",
    [
        pytest.param(V38.wire + b"\x02\x01\x02", id="3.8"),
        pytest.param(V37.wire + b"\x01\x01", id="3.7"),
        pytest.param(V33.wire + u32(1), id="3.3"),
    ],
)
def test_upstream_require_tls_refuses_a_server_without_vencrypt(feed: str, server: bytes) -> None:
    handshake = UpstreamHandshake(PASSWORD, tls=True, require_tls=True)
    error = fails(handshake, server, feed)
    assert type(error) is TlsRequired
    assert error.reason.startswith(
        "the VNC server does not offer VeNCrypt (TLS), which [tls] vnc_required demands (offered:"
    )
    # Nothing was chosen, so nothing went out in plaintext beyond the version.
    assert handshake.bytes_to_send() == b""


@pytest.mark.parametrize(
    ("version", "result", "reason", "server_reason"),
    [
        pytest.param(V38, u32(1) + string("TLS session refused"), "TLS session refused",
                     "TLS session refused", id="3.8"),
        pytest.param(V37, u32(1), "the VNC server refused the authentication", None, id="3.7"),
    ],
)  # fmt: skip
def test_upstream_vencrypt_failed_result(
    feed: str, version: RfbVersion, result: bytes, reason: str, server_reason: str | None
) -> None:
    handshake = UpstreamHandshake(tls=True)
    with pytest.raises(AuthenticationFailed) as caught:
        drive_tls(handshake, version.wire + b"\x01\x13" + vencrypt_offer(260), result, feed)
    assert caught.value.reason == reason
    assert caught.value.server_reason == server_reason


def test_upstream_vencrypt_wrong_password_before_3_8() -> None:
    handshake = UpstreamHandshake(PASSWORD, tls=True)
    with pytest.raises(AuthenticationFailed, match="rejected the console password"):
        drive_tls(
            handshake, V37.wire + b"\x01\x13" + vencrypt_offer(261), CHALLENGE + u32(1), "whole"
        )


def test_upstream_vencrypt_server_hanging_up_after_tls() -> None:
    handshake = UpstreamHandshake(tls=True)
    handshake.receive_data(V38.wire + b"\x01\x13" + vencrypt_offer(260))
    assert handshake.next_event() == VersionAgreed(V38, "3.8")
    assert handshake.next_event() == StartTls(X509_NONE)
    handshake.tls_established()
    handshake.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="right after the TLS handshake .*client cert"):
        handshake.next_event()


def test_upstream_vencrypt_api_misuse() -> None:
    with pytest.raises(LocalProtocolError, match="require_tls needs tls"):
        UpstreamHandshake(require_tls=True)
    handshake = UpstreamHandshake(tls=True)
    with pytest.raises(LocalProtocolError, match="only valid right after StartTls"):
        handshake.tls_established()
    handshake.receive_data(V38.wire + b"\x01\x13" + vencrypt_offer(260))
    assert isinstance(handshake.next_event(), VersionAgreed)
    assert handshake.next_event() == StartTls(X509_NONE)
    # Bytes now would be plaintext; the caller must upgrade first.
    with pytest.raises(LocalProtocolError, match="start TLS"):
        handshake.receive_data(ok())
    with pytest.raises(LocalProtocolError, match="start TLS"):
        handshake.next_event()
    handshake.tls_established()
    with pytest.raises(LocalProtocolError, match="only valid right after StartTls"):
        handshake.tls_established()
    assert handshake.next_event() is NEED_DATA
    handshake.receive_data(ok())
    assert handshake.next_event() == SecurityComplete(V38, VENCRYPT, X509_NONE)


# --- downstream: the proxy as server for the browser ------------------------------------------


def test_downstream_speaks_first_with_3_8() -> None:
    handshake = DownstreamHandshake()
    assert handshake.initial_bytes() == b"RFB 003.008\n"
    assert handshake.bytes_to_send() == b""
    assert handshake.next_event() is NEED_DATA
    with pytest.raises(LocalProtocolError):
        handshake.initial_bytes()


DOWNSTREAM_OK = [
    # (client's version, client's bytes after it, proxy's bytes after the client's version)
    pytest.param(b"RFB 003.008\n", "3.8", V38, b"\x01", b"\x01\x01" + ok(), id="3.8"),
    pytest.param(b"RFB 003.007\n", "3.7", V37, b"\x01", b"\x01\x01", id="3.7-no-result"),
    pytest.param(b"RFB 003.003\n", "3.3", V33, b"", u32(1), id="3.3-server-decides"),
    pytest.param(b"RFB 003.005\n", "3.5", V33, b"", u32(1), id="3.5-means-3.3"),
]


@pytest.mark.parametrize(("client_version", "peer", "version", "client", "server"), DOWNSTREAM_OK)
def test_downstream_offers_none(
    feed: str, client_version: bytes, peer: str, version: RfbVersion, client: bytes, server: bytes
) -> None:
    handshake = DownstreamHandshake()
    outcome = drive(handshake, client_version + client, feed)
    assert outcome.events == [VersionAgreed(version, peer), SecurityComplete(version, NONE)]
    assert outcome.sent == V38.wire + server
    assert handshake.state is DownstreamState.DONE


@pytest.mark.parametrize(
    ("client", "reason"),
    [
        (b"RFB 003.008\n\x02", "the browser chose security type 2, which the proxy did not offer"),
        (b"RFB 003.007\n\x00", "the browser chose security type 0, which the proxy did not offer"),
        (b"RFB 003.889\n", "the browser asked for RFB 3.889; the proxy offered 3.8"),
        (b"RFB 004.000\n", "the browser asked for RFB 4.0; the proxy offered 3.8"),
        (b"RFB 002.002\n", "the browser asked for RFB 2.2; the proxy offered 3.8"),
        (b"GET / HTTP/1.1\r\n", "the browser does not speak RFB (it sent b'G"),
    ],
)
def test_downstream_refuses_a_bad_client(feed: str, client: bytes, reason: str) -> None:
    handshake = DownstreamHandshake()
    error = fails(handshake, client, feed)
    assert type(error) is RemoteProtocolError
    assert error.reason.startswith(reason)
    assert handshake.state is DownstreamState.ERROR


def test_downstream_bad_choice_can_still_be_told_to_a_3_8_client(feed: str) -> None:
    handshake = DownstreamHandshake()
    with pytest.raises(RemoteProtocolError):
        drive(handshake, b"RFB 003.008\n\x02", feed)
    assert handshake.fail("unsupported security type") == u32(1) + string(
        "unsupported security type"
    )


@pytest.mark.parametrize(
    ("client_version", "refusal"),
    [
        pytest.param(V38.wire, b"\x00", id="3.8"),
        pytest.param(V37.wire, b"\x00", id="3.7"),
        pytest.param(V33.wire, u32(0), id="3.3"),
    ],
)
def test_downstream_fail_before_the_choice_refuses_the_connection(
    feed: str, client_version: bytes, refusal: bytes
) -> None:
    handshake = DownstreamHandshake()
    assert handshake.initial_bytes() == V38.wire
    outcome = drive(handshake, client_version, feed, stop_at=VersionAgreed, drain_last=False)
    # The security offer is not handed out yet: fail() replaces it.
    assert outcome.sent == b""
    assert handshake.fail("VM is not running") == refusal + string("VM is not running")
    assert handshake.state is DownstreamState.FAILED
    assert handshake.bytes_to_send() == b""
    with pytest.raises(LocalProtocolError):
        handshake.next_event()
    with pytest.raises(LocalProtocolError):
        handshake.fail("again")


def test_downstream_fail_3_3_after_handshake_but_before_sending_replaces_the_type(
    feed: str,
) -> None:
    handshake = DownstreamHandshake()
    handshake.initial_bytes()
    handshake.receive_data(V33.wire)
    assert handshake.next_event() == VersionAgreed(V33, "3.3")
    assert handshake.next_event() == SecurityComplete(V33, NONE)
    assert handshake.fail("no") == u32(0) + string("no")


def test_downstream_fail_3_8_after_the_choice_sends_a_failed_result(feed: str) -> None:
    handshake = DownstreamHandshake()
    outcome = drive(handshake, V38.wire, feed, stop_at=VersionAgreed, drain_last=False)
    assert outcome.sent == V38.wire
    assert handshake.bytes_to_send() == b"\x01\x01"
    # The SecurityResult is due but not handed out: the VNC server may still say no.
    handshake.receive_data(b"\x01")
    assert handshake.next_event() == SecurityComplete(V38, NONE)
    assert handshake.fail("wrong password") == u32(1) + string("wrong password")


def test_downstream_fail_3_8_with_the_offer_out_sends_a_failed_result() -> None:
    handshake = DownstreamHandshake()
    handshake.initial_bytes()
    handshake.receive_data(V38.wire)
    assert handshake.next_event() == VersionAgreed(V38, "3.8")
    assert handshake.bytes_to_send() == b"\x01\x01"
    assert handshake.next_event() is NEED_DATA
    # The client reads this as the SecurityResult after it has made its choice.
    assert handshake.fail("gone") == u32(1) + string("gone")


@pytest.mark.parametrize(
    ("client", "version"),
    [pytest.param(V37.wire + b"\x01", V37, id="3.7"), pytest.param(V33.wire, V33, id="3.3")],
)
def test_downstream_fail_when_rfb_cannot_carry_a_reason(client: bytes, version: RfbVersion) -> None:
    handshake = DownstreamHandshake()
    handshake.initial_bytes()
    handshake.receive_data(client)
    assert handshake.next_event() == VersionAgreed(version, str(version))
    handshake.bytes_to_send()
    assert handshake.next_event() == SecurityComplete(version, NONE)
    assert handshake.fail("too late") == b""


def test_downstream_fail_before_the_client_version() -> None:
    handshake = DownstreamHandshake()
    # RFB has no way to say why yet; whatever is pending (the version) still goes out.
    assert handshake.fail("no") == V38.wire
    handshake = DownstreamHandshake()
    handshake.initial_bytes()
    handshake.receive_data(b"RFB 003")
    assert handshake.next_event() is NEED_DATA
    assert handshake.fail("no") == b""


def test_downstream_fail_truncates_a_huge_reason() -> None:
    handshake = DownstreamHandshake()
    handshake.initial_bytes()
    handshake.receive_data(V38.wire)
    handshake.next_event()
    assert handshake.fail("x" * (MAX_REASON + 10)) == b"\x00" + string("x" * MAX_REASON)


def test_downstream_browser_closing_mid_handshake() -> None:
    handshake = DownstreamHandshake()
    handshake.initial_bytes()
    handshake.receive_data(V38.wire)
    handshake.receive_data(b"")
    assert handshake.next_event() == VersionAgreed(V38, "3.8")
    with pytest.raises(RemoteProtocolError, match="the browser closed the connection"):
        handshake.next_event()
    with pytest.raises(LocalProtocolError):
        handshake.receive_data(b"\x01")


# --- both together: what the bridge does ------------------------------------------------------


@pytest.mark.parametrize("browser_version", [V33, V37, V38])
@pytest.mark.parametrize("server_version", [V33, V37, V38])
def test_versions_may_differ_across_the_proxy(
    server_version: RfbVersion, browser_version: RfbVersion
) -> None:
    """After security both sides speak the same ClientInit/ServerInit, whatever the version."""
    upstream = UpstreamHandshake(PASSWORD)
    if server_version is V33:
        offer = u32(2)
    else:
        offer = b"\x01\x02"
    upstream.receive_data(server_version.wire + offer + CHALLENGE + ok())
    events = [upstream.next_event(), upstream.next_event()]
    assert events[-1] == SecurityComplete(server_version, VNC_AUTH)

    downstream = DownstreamHandshake()
    downstream.initial_bytes()
    choice = b"" if browser_version is V33 else b"\x01"
    downstream.receive_data(browser_version.wire + choice + b"\x01")  # ... + ClientInit
    assert downstream.next_event() == VersionAgreed(browser_version, str(browser_version))
    assert downstream.next_event() == SecurityComplete(browser_version, NONE)
    assert downstream.trailing_data == b"\x01"
    assert upstream.trailing_data == b""
