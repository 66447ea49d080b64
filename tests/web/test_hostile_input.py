"""Hostile input gets a clear error, never an unhandled exception: deep JSON in a mint body, a
forged signed ticket with a deep payload, a deep ZStack answer, a SPICE server with a broken RSA
key, a full ticket store when a signed ticket is counted, and a last-resort JSON 500."""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from cryptography.hazmat.primitives import serialization

from proxy import safejson
from proxy.app import create_app
from proxy.protocols.spice.link import RemoteProtocolError, Side, SpiceLinkProxy
from proxy.tickets.memory import MemoryTicketStore
from proxy.tickets.signed import PREFIX, TicketSigner
from proxy.tickets.store import Ticket, TicketStoreUnavailable
from proxy.zstack.client import ZStackClient, ZStackError
from tests.support.canned_zstack import CANNED, Canned, canned_answer
from tests.support.configs import make_config
from tests.support.net import rfb_echo
from tests.support.spice_client import link_mess, ticket
from tests.support.spice_server import link_reply, server_key

KEY = os.urandom(32)
KEY_B64 = base64.b64encode(KEY).decode()
VM = "0123456789abcdef0123456789abcdef"
SECURITY_HEADERS = ("Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy")


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def test_bounded_json() -> None:
    assert safejson.loads(b'{"a": [1, {"b": "[[[[[["}]}') == {"a": [1, {"b": "[[[[[["}]}
    assert safejson.loads(deep(32)) is not None
    for hostile in (deep(33), b"[" * 30_000, b'{"a":' * 5000, deep(100_000)):
        with pytest.raises(ValueError):
            safejson.loads(hostile)


# --- the mint endpoint ---------------------------------------------------------------------


@pytest.fixture
async def app_client(aiohttp_client: Any) -> Any:
    async def start(app: web.Application | None = None, **sections: Any) -> Any:
        return await aiohttp_client(app or create_app(make_config(**sections)))

    return start


async def test_deep_json_body_is_400_with_security_headers(app_client: Any) -> None:
    client = await app_client()
    for body in (deep(30_000), b"[" * 30_000, b'{"vmUuid": ' + deep(5000) + b"}"):
        response = await client.post(
            "/api/v1/consoles",
            data=body,
            headers={"Authorization": "OAuth s", "Content-Type": "application/json"},
        )
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "REQUEST.INVALID_JSON"
        for header in SECURITY_HEADERS:
            assert header in response.headers


async def test_unexpected_failure_is_a_json_500_with_headers_and_one_log_line(
    app_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "tok-" + "S" * 40

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError(f"went wrong with {secret} and {await request.text()}")

    app = create_app(make_config())
    app.router.add_post("/broken", broken)
    client = await app_client(app)
    with caplog.at_level(logging.INFO):
        response = await client.post(f"/broken?token={secret}", data=f"body {secret}")
    assert response.status == 500
    assert (await response.json())["error"]["code"] == "INTERNAL"
    for header in SECURITY_HEADERS:
        assert header in response.headers
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) == 1 and "RuntimeError" in lines[0] and "/broken" in lines[0]
    assert all(secret not in r.getMessage() and not r.exc_info for r in caplog.records)


# --- signed tickets ----------------------------------------------------------------------


def forged_deep_token() -> str:
    payload = base64.urlsafe_b64encode(b"[" * 1200).decode().rstrip("=")
    return f"{PREFIX}{payload}.AAAA"


def test_forged_token_is_refused_before_its_payload_is_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsed: list[Any] = []
    monkeypatch.setattr(json, "loads", lambda *a, **k: parsed.append(a))
    monkeypatch.setattr(safejson, "loads", lambda *a, **k: parsed.append(a))
    signer = TicketSigner([KEY])
    assert signer.verify(forged_deep_token()) is None
    assert signer.verify(PREFIX + "e30.AAAA") is None
    assert parsed == []


def test_genuine_token_with_a_deep_payload_is_refused() -> None:
    body = PREFIX + base64.urlsafe_b64encode(deep(1200)).decode().rstrip("=")
    mac = TicketSigner._mac(KEY, body)
    token = f"{body}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"
    assert TicketSigner([KEY]).verify(token) is None


async def test_forged_deep_signed_ticket_closes_4401(app_client: Any) -> None:
    client = await app_client(tickets={"signing_keys": [KEY_B64]})
    ws = await client.ws_connect(f"/websockify?token={forged_deep_token()}")
    msg = await ws.receive(timeout=10)
    assert msg.type is WSMsgType.CLOSE and msg.data == 4401, msg


async def test_full_use_counter_closes_4503_not_1006(app_client: Any, tcp_target: Any) -> None:
    target = await tcp_target(rfb_echo)
    client = await app_client(tickets={"signing_keys": [KEY_B64], "max_tickets": 1})
    signer = TicketSigner([KEY])

    def token() -> str:
        return signer.sign(Ticket(VM, "127.0.0.1", target.port, "raw", time.time() + 30))

    first = await client.ws_connect(f"/websockify?token={token()}")
    second = await client.ws_connect(f"/websockify?token={token()}")
    msg = await second.receive(timeout=10)
    assert msg.type is WSMsgType.CLOSE and msg.data == 4503, msg
    await first.close()


async def test_full_use_counter_raises_store_unavailable() -> None:
    from proxy.consoles.service import ConsoleService, TicketPolicy
    from proxy.consoles.targets import TargetPolicy

    signer = TicketSigner([KEY])
    service = ConsoleService(
        None,  # type: ignore[arg-type]
        MemoryTicketStore(max_tickets=1),
        TargetPolicy.parse(["127.0.0.0/8"]),
        TicketPolicy(30.0),
        signer=signer,
    )
    ticket_ = Ticket(VM, "127.0.0.1", 5900, "vnc", time.time() + 30)
    assert await service.redeem(signer.sign(ticket_)) is not None
    with pytest.raises(TicketStoreUnavailable):
        await service.redeem(signer.sign(ticket_))


# --- ZStack answers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, deep(30_000)),
        (200, b"[" * 30_000),
        (503, b'{"error": {"code": "SYS.1000", "cause": ' + b'{"cause": ' * 5000 + b"}"),
    ],
    ids=["deep", "unclosed", "deep-error-cause"],
)
async def test_deep_zstack_answer_is_bad_response(
    aiohttp_server: Any, status: int, body: bytes
) -> None:
    app = web.Application()
    app[CANNED] = Canned(status=status, body=body.decode())
    app.router.add_route("*", "/{tail:.*}", canned_answer)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as http:
        client = ZStackClient(http, str(server.make_url("/zstack")), 5)
        with pytest.raises(ZStackError) as raised:
            await client.get_console_address("session", VM)
    assert (raised.value.status, raised.value.code) == (502, "ZSTACK.BAD_RESPONSE")


# --- SPICE ---------------------------------------------------------------------------------


def even_modulus_der() -> bytes:
    public = server_key().public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    modulus = public.public_numbers().n
    return der.replace(modulus.to_bytes(128, "big"), (modulus & ~1).to_bytes(128, "big"))


def test_spice_key_with_an_even_modulus_is_a_remote_protocol_error() -> None:
    link = SpiceLinkProxy("pw")
    link.receive_from_browser(link_mess() + ticket())
    link.receive_from_host(link_reply(even_modulus_der()))
    link.next_event()
    with pytest.raises(RemoteProtocolError) as raised:
        while True:
            link.next_event()
    assert raised.value.side is Side.HOST
