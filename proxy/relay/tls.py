"""TLS from the proxy to the hypervisors: SPICE's TLS port and VNC's VeNCrypt.

One client context is built per app from ``[tls]`` (:func:`client_context`); it verifies the
hypervisor's certificate against ``ca_file``. Hypervisors are dialled by IP, and the IP is what
the proxy passes as ``server_hostname``, so with ``check_hostname`` the certificate needs an IP
SAN for that address. A TLS failure is final: the proxy never retries in plaintext.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from proxy.closecodes import Close
from proxy.config import ConfigError, TlsConfig
from proxy.errors import ReasonError
from proxy.relay import READ_SIZE

log = logging.getLogger(__name__)

MIN_VERSION = ssl.TLSVersion.TLSv1_2

# OpenSSL's short reasons that have a clearer meaning in this setting.
_HINTS = {
    "WRONG_VERSION_NUMBER": "the port does not speak TLS",
    "RECORD_LAYER_FAILURE": "the port does not speak TLS",
    "PACKET_LENGTH_TOO_LONG": "the port does not speak TLS",
    "TLSV1_ALERT_UNKNOWN_CA": "the hypervisor does not trust the proxy's client certificate",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the hypervisor rejected the proxy's client certificate",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the hypervisor requires a client certificate "
    "([tls] cert_file and key_file)",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "no TLS version or cipher in common",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version in common (the proxy needs TLS 1.2+)",
}


class TlsFailure(ReasonError):
    """TLS with a hypervisor failed. ``reason`` names the real cause (for the log, no secrets);
    ``close`` is what the browser is told."""

    def __init__(self, reason: str, close: Close) -> None:
        super().__init__(reason)
        self.close = close

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, {self.close.name})"


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    return b""


def client_context(tls: TlsConfig) -> ssl.SSLContext | None:
    """The context for dialling hypervisors, or None when ``[tls] ca_file`` is empty.

    Raises :class:`~proxy.config.ConfigError` naming the key whose file cannot be loaded.
    """
    if not tls.ca_file:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = MIN_VERSION
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = tls.check_hostname
    try:
        context.load_verify_locations(cafile=tls.ca_file)
    except (OSError, ValueError) as exc:
        raise ConfigError("tls.ca_file", f"cannot load {tls.ca_file}: {_text(exc)}") from exc
    if tls.cert_file:
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file or None, password=_no_password)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                "tls.cert_file",
                f"cannot load {tls.cert_file} with {tls.key_file} "
                f"(an encrypted key is not supported): {_text(exc)}",
            ) from exc
    return context


def _text(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def tls_failure(exc: BaseException) -> TlsFailure:
    """Map an error raised during (or right after) a TLS handshake to a clear TlsFailure."""
    if isinstance(exc, TlsFailure):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or _text(exc)
        return TlsFailure(f"certificate verification failed: {detail}", Close.TLS_UNVERIFIED)
    if isinstance(exc, ssl.SSLError):
        code = str(exc.reason or "")
        hint = _HINTS.get(code)
        detail = f"{hint} ({code})" if hint else _text(exc)
        return TlsFailure(f"TLS handshake failed: {detail}", Close.TLS_FAILED)
    if isinstance(exc, ConnectionError | asyncio.IncompleteReadError | EOFError):
        return TlsFailure(
            "the hypervisor closed the connection during the TLS handshake", Close.TLS_FAILED
        )
    return TlsFailure(f"TLS handshake failed: {_text(exc)}", Close.TLS_FAILED)


async def open_tls_connection(
    host: str,
    port: int,
    context: ssl.SSLContext,
    timeout: float,
    limit: int = READ_SIZE,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a TLS connection to ``host`` (an IP, also checked against the certificate).

    Raises :class:`TlsFailure` when TLS fails, ``TimeoutError`` when connecting and the
    handshake together take longer than ``timeout``, ``OSError`` when the host is unreachable.
    """
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port, limit=limit)
        try:
            await writer.start_tls(context, server_hostname=host)
        except BaseException as exc:
            writer.close()
            if isinstance(exc, ssl.SSLError | ConnectionError):
                raise tls_failure(exc) from exc
            raise
    return reader, writer
