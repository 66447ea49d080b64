"""Runs the sans-IO :class:`proxy.protocols.rfb.upstream.UpstreamHandshake` over asyncio streams."""

from __future__ import annotations

import asyncio
import ssl

from proxy.protocols import HANDSHAKE_READ
from proxy.protocols.rfb.events import (
    NEED_DATA,
    LocalProtocolError,
    RemoteProtocolError,
    RfbVersion,
    SecurityComplete,
    StartTls,
)
from proxy.protocols.rfb.upstream import UpstreamHandshake
from proxy.relay.tls import tls_failure


class HandshakeTimeout(RemoteProtocolError):
    """The VNC server did not finish the handshake in time."""


async def authenticate_upstream(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    password: str | None,
    timeout: float,
    *,
    max_version: RfbVersion = RfbVersion.V3_8,
    tls: ssl.SSLContext | None = None,
    require_tls: bool = False,
    server_hostname: str | None = None,
) -> tuple[SecurityComplete, bytes]:
    """Authenticate to a VNC server, stopping before ClientInit.

    Returns the final event (version, security type) and the bytes the server sent after it
    (normally none), which belong to the console stream. Raises :class:`RemoteProtocolError`
    (:class:`AuthenticationFailed`, :class:`HandshakeTimeout`, :class:`TlsRequired`, ...) with a
    reason fit to show a user; ``OSError`` from the streams passes through.

    With ``tls``, VeNCrypt is used when the server offers it: the connection is upgraded in
    place (``reader`` and ``writer`` then carry TLS, and the caller goes on using them), with
    ``server_hostname`` (default: the peer's IP) checked against the certificate when the
    context checks hostnames. A failed TLS handshake raises :class:`~proxy.relay.tls.TlsFailure`;
    nothing more is sent in plaintext. ``require_tls`` refuses servers without VeNCrypt.
    """
    if require_tls and tls is None:
        raise LocalProtocolError("require_tls needs a TLS context")
    handshake = UpstreamHandshake(
        password, max_version=max_version, tls=tls is not None, require_tls=require_tls
    )
    try:
        async with asyncio.timeout(timeout):
            while True:
                event = handshake.next_event()
                if outgoing := handshake.bytes_to_send():
                    writer.write(outgoing)
                    await writer.drain()
                if event is NEED_DATA:
                    handshake.receive_data(await reader.read(HANDSHAKE_READ))
                elif isinstance(event, StartTls):
                    assert tls is not None
                    await _start_tls(reader, writer, tls, server_hostname)
                    handshake.tls_established()
                elif isinstance(event, SecurityComplete):
                    return event, handshake.trailing_data
    except TimeoutError:
        raise HandshakeTimeout(
            f"the VNC server did not finish the RFB handshake within {timeout:g} s"
        ) from None
    except ssl.SSLError as exc:
        # Also after the handshake: a TLS 1.3 server refuses a client certificate on first read.
        raise tls_failure(exc) from exc


async def _start_tls(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    context: ssl.SSLContext,
    server_hostname: str | None,
) -> None:
    # Anything buffered now arrived in plaintext, yet would be read as if it came over TLS
    # (the STARTTLS injection flaw). Nothing yields between this check and the switch of
    # protocol inside start_tls, so nothing can slip in after it.
    if _buffered(reader):
        raise RemoteProtocolError("the VNC server sent unexpected data before the TLS handshake")
    if server_hostname is None:
        peer = writer.get_extra_info("peername")
        server_hostname = str(peer[0]) if peer else None
    try:
        await writer.start_tls(context, server_hostname=server_hostname)
    except (ssl.SSLError, ConnectionError) as exc:
        raise tls_failure(exc) from exc


def _buffered(reader: asyncio.StreamReader) -> int:
    # StreamReader has no public way to ask how much it holds; _buffer has been there since 3.4.
    buffer: bytearray = reader._buffer  # type: ignore[attr-defined]
    return len(buffer)
