"""The proxy as RFB client (RFC 6143 §7.1–§7.2): authenticate to the VM's VNC server with the
console password, optionally through VeNCrypt (x509 sub-types only), and stop before ClientInit.
"""

from __future__ import annotations

from proxy.protocols.rfb.common import Handshake, Message, dotted, negotiate
from proxy.protocols.rfb.events import (
    ANONYMOUS_TLS,
    U8,
    U32,
    UPSTREAM_TRANSITIONS,
    VENCRYPT_VERSION,
    AuthenticationFailed,
    LocalProtocolError,
    PasswordRequired,
    RemoteProtocolError,
    RfbVersion,
    SecurityComplete,
    SecurityType,
    StartTls,
    TlsRequired,
    UpstreamState,
    VencryptSubtype,
    VersionAgreed,
)
from proxy.protocols.rfb.vncauth import CHALLENGE_SIZE, vnc_auth_response

_Up = UpstreamState


class UpstreamHandshake(Handshake):
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
        server = negotiate(*numbers)
        if server is None:
            raise RemoteProtocolError(
                f"the VNC server speaks RFB {dotted(numbers)}, which is not supported"
            )
        self.version = min(server, self._max_version, key=lambda version: version.value)
        self._send(Message.VERSION, self.version.wire)
        self._events.append(VersionAgreed(self.version, dotted(numbers)))
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
            return self._refused(U32.size)
        if chosen == SecurityType.VENCRYPT and self._tls:
            self._take(U32.size)
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
        self._take(U32.size)
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
            return self._refused(U8.size)
        data = self._take(U8.size + count)
        if data is None:
            return False
        chosen = self._security = self._choose(list(data[1:]))
        self._send(Message.SECURITY, U8.pack(chosen))
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
        self._send(Message.SECURITY, bytes(VENCRYPT_VERSION))
        self._goto(UpstreamState.AWAIT_VENCRYPT_ACK)
        return True

    def _on_vencrypt_ack(self) -> bool:
        data = self._take(U8.size)
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
        data = self._take(U8.size + count * U32.size)
        if data is None:
            return False
        offered = [value for (value,) in U32.iter_unpack(data[U8.size :])]
        self._subtype = self._choose_subtype(offered)
        self._send(Message.SECURITY, U32.pack(self._subtype))
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
        data = self._take(U8.size)
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
        self._send(Message.RESPONSE, vnc_auth_response(self._password, challenge))
        self._answered_challenge = True
        self._goto(UpstreamState.AWAIT_RESULT)
        return True

    def _on_result(self) -> bool:
        """§7.1.3: U32 0 is OK; a failure carries a reason string from 3.8 on."""
        result = self._peek_u32()
        if result is None:
            return False
        if result == 0:
            self._take(U32.size)
            self._complete(self._security)
            return True
        if self.version is not RfbVersion.V3_8:
            if self._answered_challenge:
                raise AuthenticationFailed("the VNC server rejected the console password")
            raise AuthenticationFailed("the VNC server refused the authentication")
        reason = self._take_string(U32.size)
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
