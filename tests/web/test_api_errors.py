"""README error answers not covered elsewhere, through the running app: protocol choice (409
CONSOLE.PROTOCOL_UNAVAILABLE, vncAndSpice defaults to VNC), 503 TICKETS.FULL, the
403 ORIGIN.FORBIDDEN body of a cross-origin upgrade and 502 ZSTACK.BAD_RESPONSE."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from proxy.demo.simulator import SIMULATOR_CONTROL
from tests.support.net import TcpTarget, rfb_echo
from tests.support.rfb_client import greet_as_browser
from tests.support.stack import VM, AiohttpServer, Stack, start_stack, vm_entry

BOTH = "0123456789abcdef0123456789abcd02"
SPICE_ONLY = "0123456789abcdef0123456789abcd03"

StartStack = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def stack(aiohttp_server: AiohttpServer) -> AsyncIterator[StartStack]:
    made: list[Stack] = []

    async def start(vms: list[dict[str, Any]], **sections: dict[str, Any]) -> Stack:
        made.append(await start_stack(aiohttp_server, vms, **sections))
        return made[-1]

    yield start
    for s in made:
        await s.close()


# --- a. protocol choice --------------------------------------------------------------------


async def test_spice_on_a_vnc_only_vm_is_409_protocol_unavailable(
    stack: StartStack, tcp_target: Callable[..., Awaitable[TcpTarget]]
) -> None:
    vnc = await tcp_target(rfb_echo)
    s = await stack([vm_entry(VM, protocol="vnc", vncPort=vnc.port)])
    status, body = await s.mint(VM, "spice")
    assert status == 409, body
    assert body["error"]["code"] == "CONSOLE.PROTOCOL_UNAVAILABLE"
    assert "spice" in body["error"]["description"]
    # The same VM with its own protocol mints: the refusal was about the protocol only.
    status, body = await s.mint(VM, "vnc")
    assert status == 201 and body["protocol"] == "vnc"
    assert vnc.connections == 0


async def test_vnc_on_a_spice_only_vm_is_409_protocol_unavailable(
    stack: StartStack, tcp_target: Callable[..., Awaitable[TcpTarget]]
) -> None:
    spice = await tcp_target(rfb_echo)
    s = await stack([vm_entry(SPICE_ONLY, protocol="spice", spicePort=spice.port)])
    status, body = await s.mint(SPICE_ONLY, "vnc")
    assert status == 409 and body["error"]["code"] == "CONSOLE.PROTOCOL_UNAVAILABLE", body


async def test_vnc_and_spice_vm_defaults_to_vnc_and_dials_the_vnc_port(
    stack: StartStack, tcp_target: Callable[..., Awaitable[TcpTarget]]
) -> None:
    vnc = await tcp_target(rfb_echo)
    spice = await tcp_target(rfb_echo)
    s = await stack(
        [vm_entry(BOTH, protocol="vncAndSpice", vncPort=vnc.port, spicePort=spice.port)]
    )
    status, body = await s.mint(BOTH)
    assert status == 201, body
    assert body["protocol"] == "vnc"
    assert body["consoleUrl"].startswith(s.url("/console/vnc#token="))
    ws = await s.open(body["token"])
    stream = await greet_as_browser(ws)  # the proxy's RFB handshake: it is a VNC console
    await stream.write(b"ping")
    assert await stream.read_exactly(4, 5) == b"ping"
    await ws.close()
    assert (vnc.connections, spice.connections) == (1, 0)

    # Asking for SPICE on the same VM gives SPICE and its page.
    status, body = await s.mint(BOTH, "spice")
    assert status == 201 and body["protocol"] == "spice", body
    assert body["consoleUrl"].startswith(s.url("/console/spice#token="))


# --- b. TICKETS.FULL -----------------------------------------------------------------------


async def test_minting_beyond_max_tickets_is_503_tickets_full(
    stack: StartStack, tcp_target: Callable[..., Awaitable[TcpTarget]]
) -> None:
    target = await tcp_target(rfb_echo)
    s = await stack([vm_entry(VM, vncPort=target.port)], tickets={"max_tickets": 2})
    first = await s.token()
    await s.token()
    status, body = await s.mint()
    assert status == 503, body
    assert body["error"]["code"] == "TICKETS.FULL"
    assert body["error"]["description"]
    # Redeeming one frees room for another.
    ws = await s.open(first)
    await greet_as_browser(ws)
    await ws.close()
    status, body = await s.mint()
    assert status == 201, body


# --- c. ORIGIN.FORBIDDEN -------------------------------------------------------------------


def upgrade_headers(origin: str) -> dict[str, str]:
    return {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Protocol": "binary",
        "Origin": origin,
    }


async def test_cross_origin_upgrade_gets_403_origin_forbidden_json_and_keeps_the_ticket(
    stack: StartStack, tcp_target: Callable[..., Awaitable[TcpTarget]]
) -> None:
    target = await tcp_target(rfb_echo)
    s = await stack(
        [vm_entry(VM, vncPort=target.port)],
        server={"allowed_origins": ["https://portal.example.com"]},
    )
    token = await s.token()
    url = s.url(f"/websockify?token={token}")
    async with s.http.get(url, headers=upgrade_headers("https://evil.example.com")) as answer:
        assert answer.status == 403
        assert answer.content_type == "application/json"
        body = await answer.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == "ORIGIN.FORBIDDEN"
    assert body["error"]["description"]
    assert "details" in body["error"]
    assert token not in str(body)
    assert target.connections == 0
    # Refused before the ticket was looked at: an allowed origin can still use it, once.
    ws = await s.open(token, origin="https://portal.example.com")
    await greet_as_browser(ws)
    await ws.close()
    assert target.connections == 1


async def test_own_origin_is_allowed_without_configuration(
    stack: StartStack, tcp_target: Callable[..., Awaitable[TcpTarget]]
) -> None:
    target = await tcp_target(rfb_echo)
    s = await stack([vm_entry(VM, vncPort=target.port)])
    own = f"http://{s.proxy.host}:{s.proxy.port}"
    ws = await s.open(await s.token(), origin=own)
    await greet_as_browser(ws)
    await ws.close()
    async with s.http.get(
        s.url(f"/websockify?token={await s.token()}"),
        headers=upgrade_headers(f"http://{s.proxy.host}:{int(s.proxy.port or 0) + 1}"),
    ) as answer:
        assert answer.status == 403
        assert (await answer.json())["error"]["code"] == "ORIGIN.FORBIDDEN"


# --- d. ZSTACK.BAD_RESPONSE ----------------------------------------------------------------


async def test_zstack_answering_non_json_is_502_bad_response(
    stack: StartStack, tcp_target: Callable[..., Awaitable[TcpTarget]]
) -> None:
    target = await tcp_target(rfb_echo)
    s = await stack([vm_entry(VM, vncPort=target.port)])
    session = await s.login()
    assert s.simulator is not None
    control = s.simulator.app[SIMULATOR_CONTROL]
    control.fail_next, control.fail_text = 200, "<html>garbage, not JSON</html>"
    status, body = await s.mint(session=session)
    assert status == 502, body
    assert body["error"]["code"] == "ZSTACK.BAD_RESPONSE"
    assert body["error"]["description"]
    assert session not in str(body)
    assert target.connections == 0


FAKE_ANSWERS: dict[str, Any] = {
    "an address that is not an IP": {"hostIp": "hypervisor-1", "port": 5900, "protocol": "vnc"},
    "an unknown protocol": {"hostIp": "127.0.0.1", "port": 5900, "protocol": "rdp"},
    "no port": {"hostIp": "127.0.0.1", "protocol": "vnc"},
    "a fractional port": {"hostIp": "127.0.0.1", "port": 5900.5, "protocol": "vnc"},
    "a JSON list": [1, 2, 3],
    "a 503 without an error code": {"error": {"description": "no code"}},
}


@pytest.mark.parametrize("case", FAKE_ANSWERS)
async def test_garbled_console_address_is_502_bad_response(
    aiohttp_server: AiohttpServer, case: str
) -> None:
    """A tiny fake ZStack answering the console-address call with nonsense."""
    answer = FAKE_ANSWERS[case]
    status = 503 if case.startswith("a 503") else 200

    async def console_address(request: web.Request) -> web.Response:
        return web.json_response(answer, status=status)

    fake = web.Application()
    fake.router.add_get("/zstack/v1/vm-instances/{uuid}/console-addresses", console_address)
    zstack = await aiohttp_server(fake, access_log=None)
    s = await start_stack(aiohttp_server, [], zstack={"url": str(zstack.make_url("/zstack"))})
    try:
        got, body = await s.mint(session="0123456789abcdef0123456789abcdef")
    finally:
        await s.close()
    assert got == 502, body
    assert body["error"]["code"] == "ZSTACK.BAD_RESPONSE", body
