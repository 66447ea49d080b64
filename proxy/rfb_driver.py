"""Runs the sans-IO :class:`proxy.rfb.UpstreamHandshake` over asyncio streams."""

from __future__ import annotations

import asyncio

from proxy.rfb import (
    NEED_DATA,
    RemoteProtocolError,
    RfbVersion,
    SecurityComplete,
    UpstreamHandshake,
)

READ_SIZE = 4096


class HandshakeTimeout(RemoteProtocolError):
    """The VNC server did not finish the handshake in time."""


async def authenticate_upstream(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    password: str | None,
    timeout: float,
    *,
    max_version: RfbVersion = RfbVersion.V3_8,
) -> tuple[SecurityComplete, bytes]:
    """Authenticate to a VNC server, stopping before ClientInit.

    Returns the final event (version, security type) and the bytes the server sent after it
    (normally none), which belong to the console stream. Raises :class:`RemoteProtocolError`
    (:class:`~proxy.rfb.AuthenticationFailed`, :class:`HandshakeTimeout`, ...) with a reason
    fit to show a user; ``OSError`` from the streams passes through.
    """
    handshake = UpstreamHandshake(password, max_version=max_version)
    try:
        async with asyncio.timeout(timeout):
            while True:
                event = handshake.next_event()
                if outgoing := handshake.bytes_to_send():
                    writer.write(outgoing)
                    await writer.drain()
                if event is NEED_DATA:
                    handshake.receive_data(await reader.read(READ_SIZE))
                elif isinstance(event, SecurityComplete):
                    return event, handshake.trailing_data
    except TimeoutError:
        raise HandshakeTimeout(
            f"the VNC server did not finish the RFB handshake within {timeout:g} s"
        ) from None
