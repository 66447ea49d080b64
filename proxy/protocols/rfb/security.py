"""The VNC security proxy: the proxy authenticates to the VM and offers the browser None.

The console password stays in the proxy: it answers the server's VNC Authentication challenge
itself, then tells the browser that no security is needed. After both handshakes the streams
are identical across RFB 3.3/3.7/3.8 (ClientInit onwards), so the bridge pumps them raw.

With a TLS context the proxy takes VeNCrypt (x509) when the VM offers it, and the streams it
was given carry TLS from then on; the browser side is unchanged (its own WebSocket's TLS).
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from proxy.closecodes import Close
from proxy.protocols.rfb.downstream import DownstreamHandshake
from proxy.protocols.rfb.driver import HandshakeTimeout, authenticate_upstream
from proxy.protocols.rfb.events import (
    NEED_DATA,
    AuthenticationFailed,
    PasswordRequired,
    RemoteProtocolError,
    TlsRequired,
)
from proxy.protocols.rfb.events import SecurityComplete as Done
from proxy.relay.browser import BrowserSocket, receive_binary
from proxy.relay.tls import TlsFailure

log = logging.getLogger(__name__)


async def secure_vnc(
    ws: BrowserSocket,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    password: str | None,
    timeout: float,
    *,
    tls: ssl.SSLContext | None = None,
    require_tls: bool = False,
    server_hostname: str | None = None,
) -> tuple[bytes, bytes] | Close:
    """Run both handshakes; return (bytes for the host, bytes for the browser) or why not.

    ``tls``, ``require_tls`` and ``server_hostname`` are passed to :func:`authenticate_upstream`
    (VeNCrypt); ``reader`` and ``writer`` may be upgraded to TLS in place, so the bridge keeps
    using them.
    """
    if require_tls and tls is None:
        log.error("TLS is required for VNC consoles but the proxy has no TLS context")
        return Close.TLS_REQUIRED
    try:
        _, from_host = await authenticate_upstream(
            reader,
            writer,
            password,
            timeout,
            tls=tls,
            require_tls=require_tls,
            server_hostname=server_hostname,
        )
    except TlsFailure as exc:
        log.warning("TLS (VeNCrypt) with the VNC server failed: %s", exc.reason)
        return exc.close
    except TlsRequired as exc:
        log.warning("%s", exc.reason)
        return Close.TLS_REQUIRED
    except AuthenticationFailed as exc:
        log.warning("VNC server refused the console password: %s", exc.reason)
        return Close.AUTH_FAILED
    except PasswordRequired:
        log.warning("VNC server wants a password and ZStack gave none for this VM")
        return Close.PASSWORD_UNKNOWN
    except HandshakeTimeout:
        return Close.HANDSHAKE_TIMEOUT
    except RemoteProtocolError as exc:
        log.warning("VNC handshake with the host failed: %s", exc.reason)
        return Close.HOST_PROTOCOL
    except OSError:
        return Close.HOST_CLOSED
    return await _greet_browser(ws, from_host, timeout)


async def _greet_browser(
    ws: BrowserSocket, from_host: bytes, timeout: float
) -> tuple[bytes, bytes] | Close:
    handshake = DownstreamHandshake()
    try:
        async with asyncio.timeout(timeout):
            await ws.send_bytes(handshake.initial_bytes())
            while True:
                event = handshake.next_event()
                if outgoing := handshake.bytes_to_send():
                    await ws.send_bytes(outgoing)
                if isinstance(event, Done):
                    return handshake.trailing_data, from_host
                if event is NEED_DATA:
                    data = await receive_binary(ws)
                    if isinstance(data, Close):
                        return data
                    handshake.receive_data(data)
    except TimeoutError:
        return Close.PROTOCOL_ERROR
    except RemoteProtocolError as exc:
        log.info("browser RFB handshake failed: %s", exc.reason)
        return Close.PROTOCOL_ERROR
    except ConnectionError:
        return Close.BROWSER_CLOSED
