"""The ZStack client against the simulator and against hand-made bad answers."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.demo.simulator import (
    SIMULATOR_CONTROL,
    Inventory,
    SimulatorControl,
    create_simulator_app,
)
from proxy.zstack.client import ConsoleAddress, VdiPortInfo, ZStackClient, ZStackError
from tests.support.canned_zstack import CANNED, Canned, canned_answer
from tests.support.fake_servers import ServerFailures
from tests.support.stack import zstack_login

MakeServer = Callable[..., Awaitable[TestServer]]

RUNNING = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa01"
ADMINS = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa02"
STOPPED = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa03"
BROKEN = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa04"
SPICE = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa05"
BOTH = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa06"
MISSING = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
# A session id no test text could contain by accident.
SECRET = "5ec2e75e55105ec2e75e55105ec2e75e"


def vm(uuid: str, **extra: Any) -> dict[str, Any]:
    base = {"uuid": uuid, "name": uuid[-2:], "state": "Running", "hostIp": "10.0.0.5"}
    return base | {"protocol": "vnc", "vncPort": 5900, "owner": "alice"} | extra


def inventory(**top: Any) -> Inventory:
    return Inventory.from_dict(
        {
            "accounts": [
                {"name": "admin", "password": "password"},
                {"name": "alice", "password": "alice-password"},
            ],
            "vms": [
                vm(RUNNING, consolePassword="s3cret"),
                vm(ADMINS, owner="admin"),
                vm(STOPPED, state="Stopped"),
                vm(BROKEN, broken=True),
                vm(SPICE, protocol="spice", vncPort=None, spicePort=5901, spiceTlsPort=5902),
                vm(BOTH, protocol="vncAndSpice", hostIp="fd00::5", spicePort=5901),
            ],
            **top,
        }
    )


@dataclass
class Sim:
    server: TestServer
    control: SimulatorControl
    base_url: str


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def start_simulator(aiohttp_server: MakeServer, **top: Any) -> Sim:
    app = create_simulator_app(inventory(**top))
    server = await aiohttp_server(app)
    return Sim(server, app[SIMULATOR_CONTROL], str(server.make_url("/zstack")))


@pytest.fixture
async def sim(aiohttp_server: MakeServer) -> Sim:
    return await start_simulator(aiohttp_server)


async def login(http: aiohttp.ClientSession, sim: Sim) -> str:
    return await zstack_login(http, sim.base_url, "alice", "alice-password")


@pytest.fixture(autouse=True)
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield


def assert_secret_free(exc: ZStackError, session: str, caplog: pytest.LogCaptureFixture) -> None:
    texts = [str(exc), repr(exc), exc.code, exc.description, exc.details, repr(exc.args)]
    texts += [record.getMessage() for record in caplog.records]
    assert not [text for text in texts if session in text]


# --- success paths against the simulator ------------------------------------------------------


async def test_console_address_with_float_ports(http: aiohttp.ClientSession, sim: Sim) -> None:
    client = ZStackClient(http, sim.base_url, 5)
    address = await client.get_console_address(await login(http, sim), RUNNING)
    assert address == ConsoleAddress("10.0.0.5", 5900, "vnc", VdiPortInfo(5900, None, None))
    assert type(address.port) is int and type(address.vdi.vnc_port) is int


async def test_console_address_with_int_ports(
    http: aiohttp.ClientSession, aiohttp_server: MakeServer
) -> None:
    sim = await start_simulator(aiohttp_server, portsAsFloat=False)
    client = ZStackClient(http, sim.base_url, 5)
    address = await client.get_console_address(await login(http, sim), RUNNING)
    assert (address.port, address.vdi) == (5900, VdiPortInfo(5900, None, None))


async def test_console_address_without_vdi_port_info(
    http: aiohttp.ClientSession, aiohttp_server: MakeServer
) -> None:
    sim = await start_simulator(aiohttp_server, vdiPortInfo=False)
    client = ZStackClient(http, sim.base_url, 5)
    address = await client.get_console_address(await login(http, sim), SPICE)
    assert (address.port, address.vdi) == (5901, VdiPortInfo(None, None, None))


@pytest.mark.parametrize(
    ("uuid", "expected"),
    [
        (SPICE, ConsoleAddress("10.0.0.5", 5901, "spice", VdiPortInfo(None, 5901, 5902))),
        (BOTH, ConsoleAddress("fd00::5", 5900, "vncAndSpice", VdiPortInfo(5900, 5901, None))),
    ],
)
async def test_console_address_spice(
    http: aiohttp.ClientSession, sim: Sim, uuid: str, expected: ConsoleAddress
) -> None:
    client = ZStackClient(http, sim.base_url, 5)
    assert await client.get_console_address(await login(http, sim), uuid) == expected


@pytest.mark.parametrize(("uuid", "expected"), [(RUNNING, "s3cret"), (BOTH, None)])
async def test_console_password(
    http: aiohttp.ClientSession, sim: Sim, uuid: str, expected: str | None
) -> None:
    client = ZStackClient(http, sim.base_url, 5)
    assert await client.get_console_password(await login(http, sim), uuid) == expected


async def test_check_reachable(http: aiohttp.ClientSession, sim: Sim) -> None:
    await ZStackClient(http, sim.base_url + "/", 5).check_reachable()


# --- ZStack's own errors ----------------------------------------------------------------------


async def test_expired_session_is_401(
    http: aiohttp.ClientSession, sim: Sim, caplog: pytest.LogCaptureFixture
) -> None:
    client = ZStackClient(http, sim.base_url, 5)
    with pytest.raises(ZStackError) as info:
        await client.get_console_address(SECRET, RUNNING)
    assert (info.value.status, info.value.code, info.value.details) == (
        401,
        "ID.1001",
        "Session expired",
    )
    assert info.value.description.startswith("The session is invalid")
    assert_secret_free(info.value, SECRET, caplog)


@pytest.mark.parametrize(
    ("uuid", "status", "code", "details"),
    [
        (ADMINS, 403, "ID.1002", ""),
        (MISSING, 404, "SYS.1003", f"resource[uuid:{MISSING}, type:VmInstanceVO] not found"),
        (STOPPED, 409, "VM.1010", "current vm instance state[Stopped] doesn't allow"),
        (BROKEN, 502, "SYS.1006", "libvirt failed to get console port"),
    ],
)
async def test_zstack_error_codes_map_to_statuses(
    http: aiohttp.ClientSession,
    sim: Sim,
    caplog: pytest.LogCaptureFixture,
    uuid: str,
    status: int,
    code: str,
    details: str,
) -> None:
    client = ZStackClient(http, sim.base_url, 5)
    session = await login(http, sim)
    with pytest.raises(ZStackError) as info:
        await client.get_console_address(session, uuid)
    assert (info.value.status, info.value.code) == (status, code)
    assert details in info.value.details
    assert info.value.description.endswith(("operation", "found", "failed"))
    assert_secret_free(info.value, session, caplog)


async def test_password_of_unknown_vm_is_404(http: aiohttp.ClientSession, sim: Sim) -> None:
    client = ZStackClient(http, sim.base_url, 5)
    with pytest.raises(ZStackError) as info:
        await client.get_console_password(await login(http, sim), MISSING)
    assert (info.value.status, info.value.code) == (404, "SYS.1003")


# --- plain-text framework errors, transport failures ------------------------------------------


@pytest.mark.parametrize("status", [400, 404, 500])
async def test_plain_text_errors_are_502(
    http: aiohttp.ClientSession, sim: Sim, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    sim.control.fail_next = status
    sim.control.fail_text = f"something broke for OAuth {SECRET} " + "x" * 500
    client = ZStackClient(http, sim.base_url, 5)
    with pytest.raises(ZStackError) as info:
        await client.get_console_address(SECRET, RUNNING)
    assert (info.value.status, info.value.code) == (502, f"ZSTACK.HTTP_{status}")
    assert info.value.details.startswith("something broke for OAuth <session>")
    assert len(info.value.details) <= 200
    assert_secret_free(info.value, SECRET, caplog)


async def test_wrong_context_path_is_http_404(http: aiohttp.ClientSession, sim: Sim) -> None:
    base = str(sim.server.make_url("/wrong"))
    with pytest.raises(ZStackError) as info:
        await ZStackClient(http, base, 5).get_console_address(SECRET, RUNNING)
    assert (info.value.status, info.value.code) == (502, "ZSTACK.HTTP_404")
    path = f"/wrong/v1/vm-instances/{RUNNING}/console-addresses"
    assert info.value.details == f"no api mapping to {path}"


@pytest.fixture
def closed_port() -> Iterator[int]:
    # Bound but not listening: connecting is refused, and no other test can take the port.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_connection_refused_is_unreachable(
    http: aiohttp.ClientSession, closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    client = ZStackClient(http, f"http://127.0.0.1:{closed_port}/zstack", 5)
    for call in (client.get_console_address(SECRET, RUNNING), client.check_reachable()):
        with pytest.raises(ZStackError) as info:
            await call
        assert (info.value.status, info.value.code) == (502, "ZSTACK.UNREACHABLE")
        assert_secret_free(info.value, SECRET, caplog)


async def test_slow_zstack_times_out(
    http: aiohttp.ClientSession, sim: Sim, caplog: pytest.LogCaptureFixture
) -> None:
    session = await login(http, sim)
    sim.control.delay = 3.0
    client = ZStackClient(http, sim.base_url, 0.3)
    started = time.monotonic()
    with pytest.raises(ZStackError) as info:
        await client.get_console_address(session, RUNNING)
    assert time.monotonic() - started < 2.5  # before ZStack's answer; room for a loaded machine
    assert (info.value.status, info.value.code) == (504, "ZSTACK.TIMEOUT")
    assert_secret_free(info.value, session, caplog)


async def test_check_reachable_reports_plain_failures(
    http: aiohttp.ClientSession, sim: Sim
) -> None:
    sim.control.fail_next = 500
    with pytest.raises(ZStackError) as info:
        await ZStackClient(http, sim.base_url, 5).check_reachable()
    assert info.value.code == "ZSTACK.HTTP_500"


# --- hand-made answers ------------------------------------------------------------------------


@pytest.fixture
async def canned(
    aiohttp_server: MakeServer, http: aiohttp.ClientSession, server_failures: ServerFailures
) -> tuple[Canned, ZStackClient]:
    app = web.Application(middlewares=[server_failures.middleware])
    app[CANNED] = Canned()
    app.router.add_route("*", "/{tail:.*}", canned_answer)
    server = await aiohttp_server(app)
    return app[CANNED], ZStackClient(http, str(server.make_url("/zstack")), 5)


def address_body(**changes: Any) -> str:
    body = {"hostIp": "10.0.0.5", "port": 5900.0, "protocol": "vnc", "success": True}
    body["vdiPortInfo"] = {"vncPort": 5900.0}
    return json.dumps({key: value for key, value in (body | changes).items() if value != "-"})


async def test_requests_carry_the_session(canned: tuple[Canned, ZStackClient]) -> None:
    answer, client = canned
    answer.body = address_body()
    await client.get_console_address(SECRET, RUNNING)
    answer.body = '{"valid": false}'
    await client.check_reachable()
    assert answer.seen == [
        (f"/zstack/v1/vm-instances/{RUNNING}/console-addresses", f"OAuth {SECRET}"),
        ("/zstack/v1/accounts/sessions/00000000000000000000000000000000/valid", None),
    ]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"port": 5901}, (5901, VdiPortInfo(5900, None, None))),
        ({"vdiPortInfo": None}, (5900, VdiPortInfo(None, None, None))),
        ({"vdiPortInfo": "-"}, (5900, VdiPortInfo(None, None, None))),
        # KVM hosts send no path; an unknown field is ignored, whatever its type.
        ({"path": "/ws"}, (5900, VdiPortInfo(5900, None, None))),
        ({"path": 3}, (5900, VdiPortInfo(5900, None, None))),
        ({"vdiPortInfo": {"spiceTlsPort": 5902.0}}, (5900, VdiPortInfo(None, None, 5902))),
    ],
)
async def test_address_shapes_accepted(
    canned: tuple[Canned, ZStackClient], changes: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    answer, client = canned
    answer.body = address_body(**changes)
    address = await client.get_console_address(SECRET, RUNNING)
    assert (address.port, address.vdi) == expected


@pytest.mark.parametrize(
    "changes",
    [
        {"port": 5900.5},
        {"port": 0},
        {"port": 65536},
        {"port": True},
        {"port": "5900"},
        {"port": "-"},
        {"hostIp": "zstack-host.example"},
        {"hostIp": 10},
        {"protocol": "rdp"},
        {"protocol": "-"},
        {"vdiPortInfo": "5900"},
        {"vdiPortInfo": {"vncPort": 5900.5}},
    ],
)
async def test_address_shapes_rejected(
    canned: tuple[Canned, ZStackClient], caplog: pytest.LogCaptureFixture, changes: dict[str, Any]
) -> None:
    answer, client = canned
    answer.body = address_body(**changes)
    with pytest.raises(ZStackError) as info:
        await client.get_console_address(SECRET, RUNNING)
    assert (info.value.status, info.value.code) == (502, "ZSTACK.BAD_RESPONSE")
    assert info.value.details
    assert_secret_free(info.value, SECRET, caplog)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, "not json"),
        (200, "[1, 2]"),
        (200, ""),
        (503, "Service Unavailable"),
        (503, '{"foo": 1}'),
        (503, '{"error": "broken"}'),
        (503, '{"error": {"description": "no code"}}'),
    ],
)
async def test_invalid_json_is_bad_response(
    canned: tuple[Canned, ZStackClient], status: int, body: str
) -> None:
    answer, client = canned
    answer.status, answer.body = status, body
    with pytest.raises(ZStackError) as info:
        await client.get_console_address(SECRET, RUNNING)
    assert (info.value.status, info.value.code) == (502, "ZSTACK.BAD_RESPONSE")


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (503, {"code": "VM.1010", "details": "d"}, (409, "VM.1010", "d")),
        (
            503,
            {"code": "SYS.1006", "cause": {"code": "SYS.1006", "cause": {"code": "VM.1010"}}},
            (409, "VM.1010", ""),
        ),
        (503, {"code": "SYS.1000", "details": "boom"}, (502, "SYS.1000", "boom")),
        (503, {"code": "SYS.1006", "cause": {"code": "HOST.1001"}}, (502, "SYS.1006", "")),
        (200, {"code": "ID.1001"}, (401, "ID.1001", "")),
        (
            503,
            {"code": "ID.1001", "details": f"session[{SECRET}] expired"},
            (401, "ID.1001", "session[<session>] expired"),
        ),
    ],
)
async def test_error_bodies(
    canned: tuple[Canned, ZStackClient],
    caplog: pytest.LogCaptureFixture,
    status: int,
    error: dict[str, Any],
    expected: tuple[int, str, str],
) -> None:
    answer, client = canned
    answer.status, answer.body = status, json.dumps({"error": error})
    with pytest.raises(ZStackError) as info:
        await client.get_console_address(SECRET, RUNNING)
    assert (info.value.status, info.value.code, info.value.details) == expected
    assert info.value.description  # ZStack's, or a sentence of ours when it sent none
    assert_secret_free(info.value, SECRET, caplog)


async def test_redirects_are_not_followed(canned: tuple[Canned, ZStackClient]) -> None:
    answer, client = canned
    answer.status = 302
    with pytest.raises(ZStackError) as info:
        await client.get_console_address(SECRET, RUNNING)
    assert (info.value.status, info.value.code) == (502, "ZSTACK.HTTP_302")
    assert len(answer.seen) == 1


@pytest.mark.parametrize(("body", "expected"), [('{"password": ""}', None), ("{}", None)])
async def test_password_shapes(
    canned: tuple[Canned, ZStackClient], body: str, expected: str | None
) -> None:
    answer, client = canned
    answer.body = body
    assert await client.get_console_password(SECRET, RUNNING) == expected


async def test_password_of_wrong_type(canned: tuple[Canned, ZStackClient]) -> None:
    answer, client = canned
    answer.body = '{"password": 1234}'
    with pytest.raises(ZStackError) as info:
        await client.get_console_password(SECRET, RUNNING)
    assert info.value.code == "ZSTACK.BAD_RESPONSE"


@pytest.mark.parametrize("body", ["{}", '{"valid": "yes"}', "nope"])
async def test_check_reachable_wants_a_valid_field(
    canned: tuple[Canned, ZStackClient], body: str
) -> None:
    answer, client = canned
    answer.body = body
    with pytest.raises(ZStackError) as info:
        await client.check_reachable()
    assert info.value.code == "ZSTACK.BAD_RESPONSE"


async def test_huge_answers_are_refused(canned: tuple[Canned, ZStackClient]) -> None:
    answer, client = canned
    answer.body = '{"pad": "' + "x" * (2 * 1024 * 1024) + '"}'
    with pytest.raises(ZStackError) as info:
        await client.get_console_address(SECRET, RUNNING)
    assert info.value.code == "ZSTACK.BAD_RESPONSE"


# --- bad arguments never reach ZStack ---------------------------------------------------------


@pytest.mark.parametrize("vm_uuid", ["../accounts/login", "", RUNNING + "0", "g" * 32])
async def test_malformed_vm_uuid(canned: tuple[Canned, ZStackClient], vm_uuid: str) -> None:
    answer, client = canned
    with pytest.raises(ZStackError) as info:
        await client.get_console_address(SECRET, vm_uuid)
    assert (info.value.status, info.value.code) == (400, "SYS.1007")
    assert answer.seen == []


@pytest.mark.parametrize("session", ["", "two words", "line\r\nX-Injected: 1", "é" * 4])
async def test_malformed_session(canned: tuple[Canned, ZStackClient], session: str) -> None:
    answer, client = canned
    with pytest.raises(ZStackError) as info:
        await client.get_console_password(session, RUNNING)
    assert (info.value.status, info.value.code) == (401, "ID.1001")
    assert answer.seen == []


def test_error_text_shows_code_and_description_only() -> None:
    error = ZStackError("ID.1001", "The session is invalid.", f"details {SECRET}", 401)
    assert str(error) == "ID.1001: The session is invalid."
    assert repr(error) == "ZStackError(code='ID.1001', description='The session is invalid.')"
    assert SECRET not in str(error) and SECRET not in repr(error)
