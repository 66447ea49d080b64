"""authenticate_upstream over real loopback streams, against scripted VNC servers."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

import pytest

from proxy.protocols.rfb.driver import HandshakeTimeout, authenticate_upstream
from proxy.protocols.rfb.events import (
    AuthenticationFailed,
    RemoteProtocolError,
    RfbVersion,
    SecurityComplete,
)
from proxy.protocols.rfb.events import SecurityType as Sec
from proxy.protocols.rfb.vncauth import vnc_auth_response

CHALLENGE = bytes(range(16))


async def run(target: Any, password: str | None, timeout: float = 10.0) -> Any:
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
    try:
        return await authenticate_upstream(reader, writer, password, timeout)
    finally:
        writer.close()


async def test_vnc_auth_and_trailing_bytes(tcp_target: Callable[..., Any]) -> None:
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"RFB 003.008\n\x01\x02")
        assert await reader.readexactly(13) == b"RFB 003.008\n\x02"
        writer.write(CHALLENGE)
        assert await reader.readexactly(16) == vnc_auth_response("pw", CHALLENGE)
        writer.write(struct.pack("!I", 0) + b"early")
        await writer.drain()
        await reader.read()

    target = await tcp_target(server)
    event, trailing = await run(target, "pw")
    assert event == SecurityComplete(RfbVersion.V3_8, Sec.VNC_AUTH)
    assert trailing == b"early"


async def test_wrong_password(tcp_target: Callable[..., Any]) -> None:
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"RFB 003.008\n\x01\x02" + CHALLENGE)
        await reader.readexactly(13 + 16)
        writer.write(struct.pack("!II", 1, 4) + b"nope")
        await writer.drain()

    target = await tcp_target(server)
    with pytest.raises(AuthenticationFailed, match="nope"):
        await run(target, "pw")


async def test_silent_server_times_out(tcp_target: Callable[..., Any]) -> None:
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    target = await tcp_target(server)
    with pytest.raises(HandshakeTimeout, match="within 0.2 s"):
        await run(target, None, timeout=0.2)


async def test_server_closing_early(tcp_target: Callable[..., Any]) -> None:
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"RFB 003.008\n")
        await writer.drain()

    target = await tcp_target(server)
    with pytest.raises(RemoteProtocolError, match="closed the connection during the RFB"):
        await run(target, None)
