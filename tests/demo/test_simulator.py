"""The ZStack simulator answers as reference/ZSTACK_API.md says ZStack does, case by case."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from proxy.demo.simulator import (
    SIMULATOR_CONTROL,
    Inventory,
    InventoryError,
    create_simulator_app,
    load_inventory,
    sha512_hex,
    zstack_date,
)
from tests.support.waiting import wait_until

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]

RUNNING = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa01"
ADMINS = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa02"
STOPPED = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa03"
CRASHED = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa04"
BROKEN = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa05"
SPICE = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa06"
BOTH = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa07"
MISSING = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
DATE = re.compile(r"[A-Z][a-z]{2} \d{1,2}, \d{4} \d{1,2}:\d{2}:\d{2} [AP]M")
STOPPED_DETAILS = (
    "current vm instance state[Stopped] doesn't allow to proceed message"
    "[org.zstack.header.vm.APIGetVmConsoleAddressMsg], allowed states are [Running, Crashed]"
)
SESSION_INVALID = "The session is invalid, either wrong session id or the session has been expired"
DEMO_INVENTORY = Path(__file__).parents[2] / "proxy" / "demo" / "inventory.toml"


def vm(uuid: str, name: str, **extra: Any) -> dict[str, Any]:
    base = {"uuid": uuid, "name": name, "state": "Running", "hostIp": "10.0.0.5"}
    return base | {"protocol": "vnc", "vncPort": 5900, "owner": "alice"} | extra


def inventory_data(**top: Any) -> dict[str, Any]:
    return {
        "accounts": [
            {"name": "admin", "password": "password"},
            {"name": "alice", "password": "alice-password"},
        ],
        "vms": [
            vm(RUNNING, "running"),
            vm(ADMINS, "admins", owner="admin", consolePassword="s3cret"),
            vm(STOPPED, "stopped", state="Stopped"),
            vm(CRASHED, "crashed", state="Crashed"),
            vm(BROKEN, "broken", broken=True),
            vm(SPICE, "spice", protocol="spice", vncPort=None, spicePort=5901, spiceTlsPort=5902),
            vm(BOTH, "both", protocol="vncAndSpice", spicePort=5901),
        ],
        **top,
    }


async def simulator(aiohttp_client: MakeClient, **top: Any) -> Client:
    return await aiohttp_client(create_simulator_app(Inventory.from_dict(inventory_data(**top))))


async def login(client: Client, name: str = "alice", password: str = "alice-password") -> str:
    body = {"logInByAccount": {"accountName": name, "password": sha512_hex(password)}}
    resp = await client.put("/zstack/v1/accounts/login", json=body)
    assert resp.status == 200
    session: str = (await resp.json())["inventory"]["uuid"]
    return session


def oauth(session: str) -> dict[str, str]:
    return {"Authorization": f"OAuth {session}"}


async def address(client: Client, session: str, uuid: str) -> tuple[int, Any]:
    resp = await client.get(
        f"/zstack/v1/vm-instances/{uuid}/console-addresses", headers=oauth(session)
    )
    return resp.status, await resp.json()


async def assert_error(resp: Any, code: str, description: str, details: str) -> dict[str, Any]:
    assert resp.status == 503
    assert resp.content_type == "application/json"
    error: dict[str, Any] = (await resp.json())["error"]
    assert (error["code"], error["description"], error["details"]) == (code, description, details)
    assert None not in error.values()
    return error


async def assert_plain(resp: Any, status: int, text: str) -> None:
    assert resp.status == status
    assert resp.content_type == "text/plain"
    assert await resp.text() == text


# --- login, sessions, logout ------------------------------------------------------------------


async def test_login_answers_a_session_inventory(aiohttp_client: MakeClient) -> None:
    client = await simulator(aiohttp_client)
    body = {"logInByAccount": {"accountName": "admin", "password": sha512_hex("password")}}
    resp = await client.put("/zstack/v1/accounts/login", json=body)
    assert resp.status == 200
    assert resp.content_type == "application/json"
    inventory = (await resp.json())["inventory"]
    assert set(inventory) == {"uuid", "accountUuid", "userUuid", "expiredDate", "createDate"}
    assert re.fullmatch(r"[0-9a-f]{32}", inventory["uuid"])
    assert inventory["userUuid"] == inventory["accountUuid"]
    assert DATE.fullmatch(inventory["createDate"]) and DATE.fullmatch(inventory["expiredDate"])
    created, expires = (
        datetime.strptime(inventory[key], "%b %d, %Y %I:%M:%S %p")
        for key in ("createDate", "expiredDate")
    )
    assert abs((expires - created).total_seconds() - 7200) <= 1


@pytest.mark.parametrize(
    ("name", "password"),
    [("admin", sha512_hex("wrong")), ("admin", "password"), ("nobody", sha512_hex("password"))],
)
async def test_login_refuses_wrong_credentials(
    aiohttp_client: MakeClient, name: str, password: str
) -> None:
    client = await simulator(aiohttp_client)
    body = {"logInByAccount": {"accountName": name, "password": password}}
    resp = await client.put("/zstack/v1/accounts/login", json=body)
    await assert_error(
        resp, "ID.1000", "Unable to authenticate a user", "wrong account name or password"
    )


@pytest.mark.parametrize("body", [b"not json", b'{"logIn": {}}', b'{"logInByAccount": []}'])
async def test_login_with_a_malformed_body_is_an_argument_error(
    aiohttp_client: MakeClient, body: bytes
) -> None:
    client = await simulator(aiohttp_client)
    resp = await client.put("/zstack/v1/accounts/login", data=body)
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "SYS.1007"


def test_zstack_date_format() -> None:
    assert zstack_date(datetime(2017, 1, 1, 11, 31, 6)) == "Jan 1, 2017 11:31:06 AM"
    assert zstack_date(datetime(2017, 1, 1, 0, 5, 0)) == "Jan 1, 2017 12:05:00 AM"
    assert zstack_date(datetime(2024, 12, 31, 13, 0, 59)) == "Dec 31, 2024 1:00:59 PM"


async def test_session_valid_needs_no_auth(aiohttp_client: MakeClient) -> None:
    client = await simulator(aiohttp_client)
    session = await login(client)
    for uuid, valid in ((session, True), ("0" * 32, False)):
        resp = await client.get(f"/zstack/v1/accounts/sessions/{uuid}/valid")
        assert resp.status == 200
        assert await resp.json() == {"valid": valid}


async def test_logout_ends_the_session(aiohttp_client: MakeClient) -> None:
    client = await simulator(aiohttp_client)
    session = await login(client)
    resp = await client.delete(f"/zstack/v1/accounts/sessions/{session}")
    assert resp.status == 200
    assert await resp.json() == {}
    resp = await client.get(f"/zstack/v1/accounts/sessions/{session}/valid")
    assert await resp.json() == {"valid": False}
    resp = await client.get(
        f"/zstack/v1/vm-instances/{RUNNING}/console-addresses", headers=oauth(session)
    )
    await assert_error(resp, "ID.1001", SESSION_INVALID, "Session expired")


async def test_sessions_expire_and_calls_renew_them(aiohttp_client: MakeClient) -> None:
    timeout = 0.5
    client = await simulator(aiohttp_client, sessionTimeout=timeout)

    async def used_past_its_timeout() -> str | None:
        """A session called often until it has lived twice its timeout: each call renews it.
        None when the machine stalled between two calls for a whole timeout (no conclusion)."""
        first = previous = time.monotonic()  # the session is younger than this
        session = await login(client)
        while time.monotonic() - first < 2 * timeout:
            await asyncio.sleep(timeout / 8)
            sent = time.monotonic()
            status, body = await address(client, session, RUNNING)
            if time.monotonic() - previous >= timeout:
                return None
            # Renewed by the previous call less than a timeout before this one was answered.
            assert status == 200, body
            previous = sent
        return session

    session = await wait_until(
        used_past_its_timeout, timeout=60, message="the machine was too busy for the check"
    )
    await asyncio.sleep(timeout * 1.5)
    resp = await client.get(f"/zstack/v1/accounts/sessions/{session}/valid")
    assert await resp.json() == {"valid": False}
    resp = await client.get(
        f"/zstack/v1/vm-instances/{RUNNING}/console-addresses", headers=oauth(session)
    )
    await assert_error(resp, "ID.1001", SESSION_INVALID, "Session expired")


async def test_session_check_does_not_renew(aiohttp_client: MakeClient) -> None:
    client = await simulator(aiohttp_client, sessionTimeout=0.3)
    session = await login(client)
    for _ in range(4):
        await asyncio.sleep(0.1)
        await client.get(f"/zstack/v1/accounts/sessions/{session}/valid")
    resp = await client.get(f"/zstack/v1/accounts/sessions/{session}/valid")
    assert await resp.json() == {"valid": False}


# --- framework errors -------------------------------------------------------------------------


@pytest.mark.parametrize("what", ["console-addresses", "console-passwords"])
async def test_missing_authorization_is_plain_400(aiohttp_client: MakeClient, what: str) -> None:
    client = await simulator(aiohttp_client)
    resp = await client.get(f"/zstack/v1/vm-instances/{RUNNING}/{what}")
    await assert_plain(resp, 400, "missing header 'Authorization'")


@pytest.mark.parametrize("header", ["Bearer abc", "oauth abc", "ZStack key:signature"])
async def test_foreign_authorization_type_is_plain_400(
    aiohttp_client: MakeClient, header: str
) -> None:
    client = await simulator(aiohttp_client)
    resp = await client.get(
        f"/zstack/v1/vm-instances/{RUNNING}/console-addresses", headers={"Authorization": header}
    )
    await assert_plain(resp, 400, "Authorization type must be 'OAuth'")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/zstack/v1/nothing"),
        ("GET", "/other/v1/vm-instances"),
        ("POST", f"/zstack/v1/vm-instances/{RUNNING}/console-addresses"),
    ],
)
async def test_unknown_path_is_plain_404(
    aiohttp_client: MakeClient, method: str, path: str
) -> None:
    client = await simulator(aiohttp_client)
    resp = await client.request(method, path)
    await assert_plain(resp, 404, f"no api mapping to {path}")


async def test_unknown_session_is_id_1001(aiohttp_client: MakeClient) -> None:
    client = await simulator(aiohttp_client)
    resp = await client.get(
        f"/zstack/v1/vm-instances/{RUNNING}/console-addresses", headers=oauth("f" * 32)
    )
    error = await assert_error(resp, "ID.1001", SESSION_INVALID, "Session expired")
    assert "cause" not in error


# --- console addresses ------------------------------------------------------------------------


async def test_console_address_matches_the_manual(aiohttp_client: MakeClient) -> None:
    client = await simulator(aiohttp_client)
    session = await login(client)
    resp = await client.get(
        f"/zstack/v1/vm-instances/{RUNNING}/console-addresses", headers=oauth(session)
    )
    assert resp.status == 200
    assert resp.content_type == "application/json"
    text = await resp.text()
    assert '"port": 5900.0' in text
    assert json.loads(text) == {
        "hostIp": "10.0.0.5",
        "port": 5900.0,
        "protocol": "vnc",
        "vdiPortInfo": {"vncPort": 5900.0},
        "success": True,
    }


async def test_ports_can_be_integers(aiohttp_client: MakeClient) -> None:
    client = await simulator(aiohttp_client, portsAsFloat=False)
    session = await login(client)
    resp = await client.get(
        f"/zstack/v1/vm-instances/{RUNNING}/console-addresses", headers=oauth(session)
    )
    text = await resp.text()
    assert '"port": 5900,' in text
    assert isinstance(json.loads(text)["port"], int)


async def test_old_versions_have_no_vdi_port_info(aiohttp_client: MakeClient) -> None:
    client = await simulator(aiohttp_client, vdiPortInfo=False)
    status, body = await address(client, await login(client), RUNNING)
    assert status == 200
    assert "vdiPortInfo" not in body


@pytest.mark.parametrize(
    ("uuid", "port", "protocol", "vdi"),
    [
        (SPICE, 5901.0, "spice", {"spicePort": 5901.0, "spiceTlsPort": 5902.0}),
        (BOTH, 5900.0, "vncAndSpice", {"vncPort": 5900.0, "spicePort": 5901.0}),
        (CRASHED, 5900.0, "vnc", {"vncPort": 5900.0}),
    ],
)
async def test_console_address_per_protocol(
    aiohttp_client: MakeClient, uuid: str, port: float, protocol: str, vdi: dict[str, float]
) -> None:
    client = await simulator(aiohttp_client)
    status, body = await address(client, await login(client), uuid)
    assert status == 200
    assert (body["port"], body["protocol"], body["vdiPortInfo"]) == (port, protocol, vdi)


async def test_stopped_vm_is_sys_1006_caused_by_vm_1010(aiohttp_client: MakeClient) -> None:
    client = await simulator(aiohttp_client)
    resp = await client.get(
        f"/zstack/v1/vm-instances/{STOPPED}/console-addresses", headers=oauth(await login(client))
    )
    error = await assert_error(resp, "SYS.1006", "An operation failed", STOPPED_DETAILS)
    assert error["cause"] == {
        "code": "VM.1010",
        "description": "VM is not in state that allows required operation",
        "details": STOPPED_DETAILS,
    }


async def test_broken_host_agent_is_sys_1006(aiohttp_client: MakeClient) -> None:
    client = await simulator(aiohttp_client)
    resp = await client.get(
        f"/zstack/v1/vm-instances/{BROKEN}/console-addresses", headers=oauth(await login(client))
    )
    details = f"operation error, because:libvirt failed to get console port for VM {BROKEN}"
    error = await assert_error(resp, "SYS.1006", "An operation failed", details)
    assert "cause" not in error


@pytest.mark.parametrize("what", ["console-addresses", "console-passwords"])
async def test_unknown_vm_is_sys_1003(aiohttp_client: MakeClient, what: str) -> None:
    client = await simulator(aiohttp_client)
    resp = await client.get(
        f"/zstack/v1/vm-instances/{MISSING}/{what}", headers=oauth(await login(client))
    )
    details = f"invalid field[uuid], resource[uuid:{MISSING}, type:VmInstanceVO] not found"
    await assert_error(resp, "SYS.1003", "A resource can not be found", details)


@pytest.mark.parametrize("what", ["console-addresses", "console-passwords"])
async def test_other_accounts_vm_is_id_1002(aiohttp_client: MakeClient, what: str) -> None:
    client = await simulator(aiohttp_client)
    resp = await client.get(
        f"/zstack/v1/vm-instances/{ADMINS}/{what}", headers=oauth(await login(client))
    )
    assert resp.status == 503
    error = (await resp.json())["error"]
    assert error["code"] == "ID.1002"
    assert error["description"] == "The user doesn't have permission to perform the operation"


async def test_admin_sees_every_vm(aiohttp_client: MakeClient) -> None:
    client = await simulator(aiohttp_client)
    session = await login(client, "admin", "password")
    assert (await address(client, session, RUNNING))[0] == 200
    assert (await address(client, session, ADMINS))[0] == 200


async def test_unknown_query_parameters_are_ignored(aiohttp_client: MakeClient) -> None:
    client = await simulator(aiohttp_client)
    resp = await client.get(
        f"/zstack/v1/vm-instances/{RUNNING}/console-addresses?systemTags=a&whatever=1",
        headers=oauth(await login(client)),
    )
    assert resp.status == 200


# --- console passwords ------------------------------------------------------------------------


@pytest.mark.parametrize(("uuid", "expected"), [(ADMINS, {"password": "s3cret"}), (RUNNING, {})])
async def test_console_password(
    aiohttp_client: MakeClient, uuid: str, expected: dict[str, str]
) -> None:
    client = await simulator(aiohttp_client)
    resp = await client.get(
        f"/zstack/v1/vm-instances/{uuid}/console-passwords",
        headers=oauth(await login(client, "admin", "password")),
    )
    assert resp.status == 200
    assert await resp.json() == expected


# --- test control -----------------------------------------------------------------------------


async def test_control_delays_every_answer(aiohttp_client: MakeClient) -> None:
    client = await simulator(aiohttp_client)
    client.app[SIMULATOR_CONTROL].delay = 0.2
    started = time.monotonic()
    await client.get("/zstack/v1/accounts/sessions/x/valid")
    assert time.monotonic() - started >= 0.2


async def test_control_fails_the_next_answer_once(aiohttp_client: MakeClient) -> None:
    client = await simulator(aiohttp_client)
    client.app[SIMULATOR_CONTROL].fail_next = 500
    resp = await client.get("/zstack/v1/accounts/sessions/x/valid")
    await assert_plain(resp, 500, "simulated ZStack failure")
    resp = await client.get("/zstack/v1/accounts/sessions/x/valid")
    assert resp.status == 200


# --- inventory --------------------------------------------------------------------------------


def test_demo_inventory_loads_and_takes_ports() -> None:
    inventory = load_inventory(DEMO_INVENTORY)
    assert {account.name for account in inventory.accounts} == {"admin", "alice"}
    assert inventory.vm("demo-vnc").console_password is None
    assert inventory.vm("demo-vnc-password").console_password == "s3cret"
    assert any(vm.state == "Stopped" for vm in inventory.vms)
    uuid = inventory.vm("demo-vnc-password").uuid
    ported = inventory.with_ports({"demo-vnc": 5901, uuid: 5902})
    assert (ported.vm("demo-vnc").vnc_port, ported.vm(uuid).vnc_port) == (5901, 5902)
    assert inventory.vm("demo-vnc").vnc_port == 0
    with pytest.raises(KeyError):
        inventory.with_ports({"no-such-vm": 1})


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_inventory_file_formats(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"inventory{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(inventory_data(sessionTimeout=60)))
    else:
        path.write_text(DEMO_INVENTORY.read_text().replace("7200", "60"))
    assert load_inventory(path).session_timeout == 60


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"uuid": "not-a-uuid"}, r"vms\[0\]\.uuid"),
        ({"uuid": "A" * 32}, r"vms\[0\]\.uuid"),
        ({"hostIp": "host.example"}, r"vms\[0\]\.hostIp: 'host.example' is not an IP"),
        ({"protocol": "rdp"}, r"vms\[0\]\.protocol: must be one of"),
        ({"owner": "mallory"}, r"vms\[0\]\.owner: no account is named 'mallory'"),
        ({"vncPort": 70000}, r"vms\[0\]\.vncPort"),
        ({"vncPort": True}, r"vms\[0\]\.vncPort"),
        ({"vncPort": None}, r"vms\[0\]: protocol vnc needs vncPort"),
        ({"broken": "yes"}, r"vms\[0\]\.broken: must be true or false"),
        ({"colour": "red"}, r"vms\[0\]: unknown key\(s\) colour"),
        ({"name": ""}, r"vms\[0\]\.name: must be a non-empty string"),
    ],
)
def test_inventory_rejects_bad_vms(change: dict[str, Any], message: str) -> None:
    data = inventory_data()
    data["vms"] = [vm(RUNNING, "one") | change]
    with pytest.raises(InventoryError, match=message):
        Inventory.from_dict(data)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"vms": [vm(RUNNING, "a"), vm(RUNNING, "b")]}, "vms: two entries have the uuid"),
        ({"accounts": [{"name": "x", "password": "p"}] * 2}, "accounts: two entries"),
        ({"accounts": [{"name": "x"}]}, r"accounts\[0\]\.password: must be a string"),
        ({"vms": {}}, "vms: must be a list"),
        ({"sessionTimeout": 0}, "sessionTimeout: must be a positive"),
        ({"portsAsFloat": 1}, "inventory.portsAsFloat: must be true or false"),
        ({"extra": 1}, r"inventory: unknown key\(s\) extra"),
    ],
)
def test_inventory_rejects_bad_shapes(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InventoryError, match=message):
        Inventory.from_dict(inventory_data() | change)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("inventory.yaml", "", "must end in .json or .toml"),
        ("inventory.toml", "[[vms]\n", "cannot be parsed"),
        ("inventory.json", "{", "cannot be parsed"),
        ("inventory.json", "[]", "top level must be an object"),
    ],
)
def test_inventory_file_errors(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InventoryError, match=message):
        load_inventory(path)


def test_missing_inventory_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="cannot read inventory"):
        load_inventory(tmp_path / "absent.toml")
