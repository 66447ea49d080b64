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
    except TlsFailure as exc:
        log.warning("TLS to console host %s:%s failed: %s", host, port, exc.reason)
        return exc.close
    except TimeoutError:
        log.info("console host %s:%s: no connection within %g s", host, port, timeout)
        return Close.HOST_TIMEOUT
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            # Our limit, not the host's: say so rather than blame the hypervisor.
            log.error("out of file descriptors; raise the proxy's open-files limit")
            return Close.TOO_MANY
        log.info("console host %s:%s unreachable: %s", host, port, exc.strerror or exc)
        return Close.HOST_UNREACHABLE
