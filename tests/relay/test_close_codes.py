"""README close codes 4512, 4516 and 4517, provoked through the running app by fake console
hosts: a host speaking something other than RFB or SPICE, a TLS handshake that fails, and a
VNC server without VeNCrypt when ``[tls] vnc_required`` is set."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from proxy.closecodes import Close
from tests.support.certs import Pki
from tests.support.net import TcpTarget, rfb_echo
from tests.support.rfb_client import greet_as_browser
from tests.support.spice_client import bare_link_mess
from tests.support.stack import VM, AiohttpServer, Stack, start_stack, vm_entry

StartStack = Callable[..., Awaitable[Stack]]
StartTarget = Callable[..., Awaitable[TcpTarget]]
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def stack(aiohttp_server: AiohttpServer) -> AsyncIterator[StartStack]:
    made: list[Stack] = []

    async def start(vm: dict[str, Any], **sections: dict[str, Any]) -> Stack:
        made.append(await start_stack(aiohttp_server, [vm_entry(VM, **vm)], **sections))
        return made[-1]

    yield start
    for s in made:
        await s.close()


async def linger(reader: asyncio.StreamReader) -> None:
    """Keep the connection open until the proxy hangs up (or 10 s)."""
    try:
        async with asyncio.timeout(10):
            while await reader.read(4096):
                pass
    except TimeoutError:
        pass


# --- 4512: the VM's console spoke an unexpected protocol ------------------------------------


async def http_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()
    await linger(reader)


async def rfb_with_unknown_security(reader: asyncio.StreamReader, writer: Any) -> None:
    writer.write(b"RFB 003.008\n")
    await reader.readexactly(12)
    writer.write(bytes([2, 99, 100]))  # two security types the proxy does not know
    await writer.drain()
    await linger(reader)


async def rfb_garbled_version(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"RFB 0x3.00z\n")
    await writer.drain()
    await linger(reader)


@pytest.mark.parametrize(
    "host", [http_server, rfb_with_unknown_security, rfb_garbled_version], ids=lambda f: f.__name__
)
async def test_vnc_host_speaking_an_unexpected_protocol_closes_4512(
    stack: StartStack, tcp_target: StartTarget, host: Callable[..., Any]
) -> None:
    target = await tcp_target(host)
    s = await stack({"protocol": "vnc", "vncPort": target.port})
    code, reason = await s.refusal(await s.token())
    assert (code, reason) == Close.HOST_PROTOCOL.value
    assert code == 4512
    assert target.connections == 1


async def test_spice_host_speaking_an_unexpected_protocol_closes_4512(
    stack: StartStack, tcp_target: StartTarget
) -> None:
    async def not_spice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(16)  # the link header the proxy forwards
        writer.write(b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n" + bytes(64))
        await writer.drain()
        await linger(reader)

    target = await tcp_target(not_spice)
    s = await stack({"protocol": "spice", "spicePort": target.port})
    ws = await s.open(await s.token(protocol="spice"))
    await ws.send_bytes(bare_link_mess())
    message = await ws.receive(timeout=10)
    await ws.close()
    assert (message.data, message.extra) == Close.HOST_PROTOCOL.value


# --- 4516: the TLS handshake with the VM's console failed -----------------------------------


async def vencrypt_then_not_tls(reader: asyncio.StreamReader, writer: Any) -> None:
    """A VNC server offering VeNCrypt X509None that then answers the ClientHello with junk."""
    writer.write(b"RFB 003.008\n")
    await reader.readexactly(12)
    writer.write(bytes([1, 19]))  # VeNCrypt only
    assert await reader.readexactly(1) == bytes([19])
    writer.write(bytes([0, 2]))  # VeNCrypt 0.2
    assert await reader.readexactly(2) == bytes([0, 2])
    writer.write(bytes([0]) + bytes([1]) + struct.pack("!I", 260))  # ack, one sub-type: X509None
    assert await reader.readexactly(4) == struct.pack("!I", 260)
    writer.write(bytes([1]))  # sub-type accepted: TLS starts now
    await writer.drain()
    await reader.read(1)  # the start of the proxy's ClientHello
    writer.write(b"this is not a TLS record at all\r\n" * 4)
    await writer.drain()


async def test_failed_vencrypt_tls_handshake_closes_4516(
    stack: StartStack, tcp_target: StartTarget, pki: Pki
) -> None:
    target = await tcp_target(vencrypt_then_not_tls)
    s = await stack({"protocol": "vnc", "vncPort": target.port}, tls={"ca_file": str(pki.ca_cert)})
    code, reason = await s.refusal(await s.token())
    assert (code, reason) == Close.TLS_FAILED.value
    assert code == 4516


async def test_spice_tls_port_that_speaks_plaintext_closes_4516(
    stack: StartStack, tcp_target: StartTarget, pki: Pki
) -> None:
    async def plaintext(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.write(b"REDQ" + bytes(60))
        await writer.drain()
        await linger(reader)

    target = await tcp_target(plaintext)
    s = await stack(
        {"protocol": "spice", "spicePort": 1, "spiceTlsPort": target.port},
        tls={"ca_file": str(pki.ca_cert)},
    )
    ws = await s.open(await s.token(protocol="spice"))
    message = await ws.receive(timeout=10)
    await ws.close()
    assert (message.data, message.extra) == Close.TLS_FAILED.value
    assert target.connections == 1


# --- 4517: TLS required but not offered ------------------------------------------------------


async def test_vnc_server_without_vencrypt_closes_4517_when_vnc_required(
    stack: StartStack, tcp_target: StartTarget, pki: Pki
) -> None:
    target = await tcp_target(rfb_echo)  # security None only
    s = await stack(
        {"protocol": "vnc", "vncPort": target.port},
        tls={"ca_file": str(pki.ca_cert), "vnc_required": True},
    )
    code, reason = await s.refusal(await s.token())
    assert (code, reason) == Close.TLS_REQUIRED.value
    assert code == 4517


async def test_same_server_is_used_in_plaintext_when_tls_is_not_required(
    stack: StartStack, tcp_target: StartTarget, pki: Pki
) -> None:
    """The control for the 4517 test: only vnc_required makes the difference."""
    target = await tcp_target(rfb_echo)
    s = await stack({"protocol": "vnc", "vncPort": target.port}, tls={"ca_file": str(pki.ca_cert)})
    ws = await s.open(await s.token())
    stream = await greet_as_browser(ws)
    await stream.write(b"x")
    assert await stream.read_exactly(1, 5) == b"x"
    await ws.close()


# --- 4504 with its own reason: a host that answers, then stalls mid-handshake ----------------


async def test_a_host_that_stalls_mid_handshake_closes_4504_handshake_timeout(
    stack: StartStack, tcp_target: StartTarget
) -> None:
    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"RFB 003.008\n")  # connected fine, then never offers security types
        await writer.drain()
        await linger(reader)

    target = await tcp_target(stalls)
    s = await stack({"protocol": "vnc", "vncPort": target.port}, limits={"handshake_timeout": 1})
    assert await s.refusal(await s.token()) == Close.HANDSHAKE_TIMEOUT.value


async def test_a_spice_password_too_long_for_a_ticket_is_refused_at_mint(
    stack: StartStack, tcp_target: StartTarget
) -> None:
    target = await tcp_target(rfb_echo)
    vm = {"protocol": "spice", "spicePort": target.port, "consolePassword": "p" * 86}
    s = await stack(vm)
    status, body = await s.mint()
    assert status == 409 and body["error"]["code"] == "CONSOLE.PASSWORD_TOO_LONG"
    assert "p" * 86 not in str(body)
    assert target.connections == 0
