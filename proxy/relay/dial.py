"""Opening the connection to a console: plain TCP, or TLS to SPICE's TLS port.

Every failure becomes the close code the browser is told, with one log line that names the
cause; a TLS failure is final (never retried in plaintext).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import ssl

from proxy.closecodes import Close
from proxy.relay import READ_SIZE
from proxy.relay.hostlink import HostLink
from proxy.relay.tls import TlsFailure, open_tls_connection

log = logging.getLogger(__name__)

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def dial(
    host: str, port: int, timeout: float, tls: ssl.SSLContext | None = None
) -> Streams | Close:
    """Connect to the console at ``host:port`` (with TLS when ``tls`` is given) or say why not."""
    try:
        if tls is None:
            async with asyncio.timeout(timeout):
                return await asyncio.open_connection(host, port, limit=READ_SIZE)
        return await open_tls_connection(host, port, tls, timeout, READ_SIZE)
    except (TlsFailure, OSError) as exc:
        return _failure(host, port, timeout, exc)


async def dial_link(host: str, port: int, timeout: float) -> HostLink | Close:
    """Connect straight into a :class:`HostLink`, for consoles with no handshake of ours: no
    streams to make and drop (a StreamReader, its protocol and writer: ~2 KiB per console)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            _, link = await loop.create_connection(HostLink, host, port)
    except OSError as exc:
        return _failure(host, port, timeout, exc)
    return link


def _failure(host: str, port: int, timeout: float, exc: Exception) -> Close:
    if isinstance(exc, TlsFailure):
        log.warning("TLS to console host %s:%s failed: %s", host, port, exc.reason)
        return exc.close
    if isinstance(exc, TimeoutError):
        log.info("console host %s:%s: no connection within %g s", host, port, timeout)
        return Close.HOST_TIMEOUT
    if isinstance(exc, OSError):
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            # Our limit, not the host's: say so rather than blame the hypervisor.
            log.error("out of file descriptors; raise the proxy's open-files limit")
            return Close.TOO_MANY
        log.info("console host %s:%s unreachable: %s", host, port, exc.strerror or exc)
    return Close.HOST_UNREACHABLE
