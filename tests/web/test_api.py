"""POST /api/v1/consoles against the ZStack simulator, and the ticket's life through the bridge."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from datetime import datetime
from typing import Any

import pytest
from aiohttp import WSMsgType

from proxy.closecodes import Close
from proxy.demo.simulator import SIMULATOR_CONTROL
from proxy.web.keys import REGISTRY
from tests.support.net import free_port
from tests.support.rfb_client import greet_as_browser
from tests.support.stack import FAR_VM, STOPPED, VM, request_console
from tests.support.waiting import wait_until


async def test_mint_returns_a_ticket_that_opens_the_console_once(stack: Any) -> None:
    s = await stack()
    status, body = await s.request_console(await s.login(), {"vmUuid": VM})
    assert status == 201, body
    assert set(body) == {"token", "consoleUrl", "protocol", "expiresAt"}
    assert len(base64.urlsafe_b64decode(body["token"] + "=")) * 8 >= 128
    assert body["protocol"] == "vnc"
    assert body["consoleUrl"] == f"{s.proxy.make_url('/console/vnc')}#token={body['token']}"
    expires = datetime.fromisoformat(body["expiresAt"].replace("Z", "+00:00")).timestamp()
    assert 25 <= expires - time.time() <= 31
    ws = await s.open(body["token"])
    stream = await greet_as_browser(ws)
    await stream.write(b"RFB")
    assert await stream.read_exactly(3, 5) == b"RFB"
    await ws.close()
    replay = await s.open(body["token"])
    msg = await replay.receive(timeout=5)
    assert msg.type is WSMsgType.CLOSE and msg.data == 4401
    await replay.close()
    assert s.target.connections == 1


async def test_tokens_are_distinct(stack: Any) -> None:
    s = await stack()
    session = await s.login()
    tokens = {(await s.request_console(session, {"vmUuid": VM}))[1]["token"] for _ in range(20)}
    assert len(tokens) == 20


async def test_expired_ticket_is_refused(stack: Any) -> None:
    s = await stack(tickets={"ttl": 0.3})
    _, body = await s.request_console(await s.login(), {"vmUuid": VM})
    await asyncio.sleep(0.5)
    ws = await s.open(body["token"])
    msg = await ws.receive(timeout=5)
    assert msg.data == 4401
    await ws.close()
    assert s.target.connections == 0


async def test_dashed_uppercase_uuid_is_accepted(stack: Any) -> None:
    s = await stack()
    dashed = f"{VM[:8]}-{VM[8:12]}-{VM[12:16]}-{VM[16:20]}-{VM[20:]}".upper()
    status, _ = await s.request_console(await s.login(), {"vmUuid": dashed})
    assert status == 201


@pytest.mark.parametrize(
    ("session", "vm", "status", "code"),
    [
        ("0" * 32, VM, 401, "ID.1001"),
        ("alice", VM, 403, "ID.1002"),
        ("admin", "f" * 32, 404, "SYS.1003"),
        ("admin", STOPPED, 409, "VM.1010"),
        ("admin", FAR_VM, 403, "TARGET.FORBIDDEN"),
    ],
)
async def test_zstack_answers_map_to_statuses(
    stack: Any, session: str, vm: str, status: int, code: str
) -> None:
    s = await stack()
    if session == "admin":
        session = await s.login()
    elif session == "alice":
        session = await s.login("alice", "alice-pw")
    got, body = await s.request_console(session, {"vmUuid": vm})
    assert (got, body["error"]["code"]) == (status, code), body
    assert body["error"]["description"]
    assert s.target.connections == 0


async def test_target_outside_policy_is_never_dialled(stack: Any) -> None:
    s = await stack(targets={"allow": ["10.0.0.0/8:5900-5999"]})
    status, body = await s.request_console(await s.login(), {"vmUuid": VM})
    assert status == 403 and body["error"]["code"] == "TARGET.FORBIDDEN"
    assert s.target.connections == 0


@pytest.mark.parametrize(
    ("headers", "data", "status", "code"),
    [
        ({}, b'{"vmUuid": "%s"}' % VM.encode(), 401, "AUTH.MISSING_SESSION"),
        ({"Authorization": "Bearer x"}, b"{}", 401, "AUTH.MISSING_SESSION"),
        ({"Authorization": "OAuth s"}, b"not json", 400, "REQUEST.INVALID_JSON"),
        ({"Authorization": "OAuth s"}, b"[1, 2]", 400, "REQUEST.INVALID_JSON"),
        ({"Authorization": "OAuth s"}, b"{}", 400, "REQUEST.INVALID_VM_UUID"),
        ({"Authorization": "OAuth s"}, b'{"vmUuid": "../etc"}', 400, "REQUEST.INVALID_VM_UUID"),
        ({"Authorization": "OAuth s"}, b'{"vmUuid": 12}', 400, "REQUEST.INVALID_VM_UUID"),
        (
            {"Authorization": "OAuth s"},
            b'{"vmUuid": "%s", "protocol": "rdp"}' % VM.encode(),
            400,
            "REQUEST.INVALID_PROTOCOL",
        ),
        ({"Authorization": "OAuth s"}, b"x" * 70000, 413, "HTTP.413"),
    ],
)
async def test_bad_requests_get_clear_errors(
    stack: Any, headers: dict[str, str], data: bytes, status: int, code: str
) -> None:
    s = await stack()
    url = s.proxy.make_url("/api/v1/consoles")
    async with s.http.post(url, data=data, headers=headers) as response:
        body = await response.json()
    assert (response.status, body["error"]["code"]) == (status, code), body
    assert s.target.connections == 0


async def test_wrong_method_is_405_json(stack: Any) -> None:
    s = await stack()
    async with s.http.get(s.proxy.make_url("/api/v1/consoles")) as response:
        assert response.status == 405
        assert (await response.json())["error"]["code"] == "HTTP.405"


async def test_zstack_down_is_502(stack: Any) -> None:
    s = await stack(zstack={"url": f"http://127.0.0.1:{free_port()}/zstack"})
    status, body = await s.request_console("0" * 32, {"vmUuid": VM})
    assert status == 502 and body["error"]["code"] == "ZSTACK.UNREACHABLE"


async def test_zstack_slower_than_timeout_is_504_in_time(stack: Any) -> None:
    s = await stack(zstack={"timeout": 0.5})
    session = await s.login()
    s.simulator.app[SIMULATOR_CONTROL].delay = 3.0
    started = time.monotonic()
    status, body = await s.request_console(session, {"vmUuid": VM})
    assert status == 504 and body["error"]["code"] == "ZSTACK.TIMEOUT"
    assert time.monotonic() - started < 2.5  # before ZStack's answer; room for a loaded machine


async def test_zstack_plain_text_500_is_502(stack: Any) -> None:
    s = await stack()
    session = await s.login()
    s.simulator.app[SIMULATOR_CONTROL].fail_next = 500
    status, body = await s.request_console(session, {"vmUuid": VM})
    assert status == 502 and body["error"]["code"] == "ZSTACK.HTTP_500"


async def test_session_never_logged(stack: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    s = await stack()
    session = await s.login()
    _, body = await s.request_console(session, {"vmUuid": VM})
    await s.request_console(session, {"vmUuid": STOPPED})
    ws = await s.open(body["token"])
    stream = await greet_as_browser(ws)
    await stream.write(b"x")
    await stream.read_exactly(1, 5)
    await ws.close()
    # The access line is written when the server side has finished: the access log did run.
    await wait_until(lambda: "/websockify" in caplog.text)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert session not in text and body["token"] not in text


async def test_health_and_readiness(stack: Any) -> None:
    s = await stack()
    async with s.http.get(s.proxy.make_url("/healthz")) as r:
        assert r.status == 200
    async with s.http.get(s.proxy.make_url("/readyz")) as r:
        assert r.status == 200 and (await r.json())["zstack"] == "ok"
    await s.simulator.close()
    # ZStack down: still ready (static tokens need no ZStack), and the body says why mints fail.
    async with s.http.get(s.proxy.make_url("/readyz")) as r:
        body = await r.json()
        assert r.status == 200 and body == {
            "status": "ready",
            "zstack": "ZSTACK.UNREACHABLE",
            "store": "ok",
        }


async def test_readiness_can_require_zstack_and_fails_while_draining(stack: Any) -> None:
    s = await stack(server={"ready_requires_zstack": True})
    async with s.http.get(s.proxy.make_url("/readyz")) as r:
        assert r.status == 200
    await s.simulator.close()
    async with s.http.get(s.proxy.make_url("/readyz")) as r:
        assert r.status == 503 and (await r.json())["zstack"] == "ZSTACK.UNREACHABLE"
    s2 = await stack()
    await s2.proxy.app[REGISTRY].drain(0, Close.GOING_AWAY)
    async with s2.http.get(s2.proxy.make_url("/readyz")) as r:
        assert r.status == 503 and (await r.json())["status"] == "draining"


async def test_console_page_carries_csp_with_frame_ancestors(stack: Any) -> None:
    s = await stack(server={"frame_ancestors": ["'self'", "https://portal.example.com"]})
    async with s.http.get(s.proxy.make_url("/console/vnc")) as r:
        assert r.status == 200
        csp = r.headers["Content-Security-Policy"]
    assert "frame-ancestors 'self' https://portal.example.com" in csp
    assert "script-src 'self'" in csp


async def test_everything_under_base_path(stack: Any) -> None:
    s = await stack(server={"base_path": "/console-proxy"})
    unprefixed = str(s.proxy.make_url("/api/v1/consoles"))
    status, body = await request_console(s.http, unprefixed, await s.login(), {"vmUuid": VM})
    assert status == 404  # the API moved under the prefix
    headers = {"Authorization": f"OAuth {await s.login()}"}
    url = s.proxy.make_url("/console-proxy/api/v1/consoles")
    async with s.http.post(url, json={"vmUuid": VM}, headers=headers) as r:
        body = await r.json()
    assert body["consoleUrl"].startswith(str(s.proxy.make_url("/console-proxy/console/vnc#")))
    ws = await s.http.ws_connect(
        s.proxy.make_url(f"/console-proxy/websockify?token={body['token']}")
    )
    stream = await greet_as_browser(ws)
    await stream.write(b"p")
    assert await stream.read_exactly(1, 5) == b"p"
    await ws.close()
