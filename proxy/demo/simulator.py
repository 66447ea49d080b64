"""A ZStack API simulator: the few REST calls the console proxy makes, answered as ZStack does.

It follows the facts in ``reference/ZSTACK_API.md``: sync calls answer ``200`` with the reply
fields at the top level or ``503 {"error": ErrorCode}``; framework errors (a missing or foreign
``Authorization`` header, an unknown path) are plain text. Accounts and VMs come from an
:class:`Inventory`; the account named ``admin`` sees every VM, any other only its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import re
import time
import tomllib
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

ADMIN = "admin"
# ZStack creates its admin account with this fixed uuid.
ADMIN_UUID = "36c27e8ff05c4780bf6d2fa65700f22e"
PROTOCOLS = ("vnc", "spice", "vncAndSpice")
RUNNABLE_STATES = ("Running", "Crashed")
DEFAULT_SESSION_TIMEOUT = 7200.0

_UUID = re.compile(r"[0-9a-f]{32}")
_ACCOUNT_NAMESPACE = uuid.UUID("6f1e6a4e-3c1b-4d0e-9a57-2f6b1f0c9d11")
_GET_ADDRESS_MSG = "org.zstack.header.vm.APIGetVmConsoleAddressMsg"
_DESCRIPTIONS = {
    "ID.1000": "Unable to authenticate a user",
    "ID.1001": "The session is invalid, either wrong session id or the session has been expired",
    "ID.1002": "The user doesn't have permission to perform the operation",
    "SYS.1003": "A resource can not be found",
    "SYS.1006": "An operation failed",
    "SYS.1007": "One or more API argument is invalid",
    "VM.1010": "VM is not in state that allows required operation",
}


class InventoryError(ValueError):
    """The inventory file or mapping is malformed; the message names the field."""


@dataclass(frozen=True)
class Account:
    name: str
    password: str
    uuid: str


@dataclass(frozen=True)
class Vm:
    uuid: str
    name: str
    state: str
    host_ip: str
    protocol: str
    owner: str
    vnc_port: int | None = None
    spice_port: int | None = None
    spice_tls_port: int | None = None
    console_password: str | None = None
    broken: bool = False


@dataclass(frozen=True)
class Inventory:
    accounts: tuple[Account, ...]
    vms: tuple[Vm, ...]
    session_timeout: float = DEFAULT_SESSION_TIMEOUT
    # The manual shows ports as 5900.0; False answers plain integers.
    ports_as_float: bool = True
    # False imitates ZStack before 3.7.0, which had no vdiPortInfo.
    vdi_port_info: bool = True

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Inventory:
        return _parse_inventory(data)

    def vm(self, key: str) -> Vm:
        """The VM with this uuid or name."""
        for vm in self.vms:
            if key in (vm.uuid, vm.name):
                return vm
        raise KeyError(key)

    def with_ports(self, ports: Mapping[str, int]) -> Inventory:
        """A copy with the VNC port of each VM (named by uuid or name) replaced."""
        chosen = {self.vm(key).uuid: port for key, port in ports.items()}
        vms = tuple(
            replace(vm, vnc_port=chosen[vm.uuid]) if vm.uuid in chosen else vm for vm in self.vms
        )
        return replace(self, vms=vms)


@dataclass
class SimulatorControl:
    """Knobs for tests: make the simulated ZStack slow or make its next answer fail."""

    delay: float = 0.0
    fail_next: int | None = None
    fail_text: str = "simulated ZStack failure"


@dataclass
class _Session:
    account: Account
    expires_at: float


@dataclass
class _State:
    inventory: Inventory
    sessions: dict[str, _Session] = field(default_factory=dict)


SIMULATOR_CONTROL = web.AppKey("simulator_control", SimulatorControl)
_STATE = web.AppKey("simulator_state", _State)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_simulator_app(inventory: Inventory) -> web.Application:
    app = web.Application(middlewares=[_control_middleware])
    app[SIMULATOR_CONTROL] = SimulatorControl()
    app[_STATE] = _State(inventory)
    app.router.add_put("/zstack/v1/accounts/login", _login)
    app.router.add_get("/zstack/v1/accounts/sessions/{uuid}/valid", _session_valid)
    app.router.add_delete("/zstack/v1/accounts/sessions/{uuid}", _logout)
    app.router.add_get("/zstack/v1/accounts", _query_accounts)
    app.router.add_get("/zstack/v1/vm-instances/{uuid}/console-addresses", _console_address)
    app.router.add_get("/zstack/v1/vm-instances/{uuid}/console-passwords", _console_password)
    # Last, so it catches unknown paths and known paths with another method, as ZStack does.
    app.router.add_route("*", "/{tail:.*}", _no_mapping)
    return app


@web.middleware
async def _control_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    control = request.app[SIMULATOR_CONTROL]
    if control.delay > 0:
        await asyncio.sleep(control.delay)
    if control.fail_next is not None:
        status, control.fail_next = control.fail_next, None
        return web.Response(status=status, text=control.fail_text)
    return await handler(request)


# --- handlers ---------------------------------------------------------------------------------


async def _login(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    try:
        fields = (await request.json())["logInByAccount"]
        name, password = fields["accountName"], fields["password"]
    except (ValueError, KeyError, TypeError):
        return _error("SYS.1007", 'the body must be {"logInByAccount": {accountName, password}}')
    account = _find_account(state.inventory, name, password)
    if account is None:
        return _error("ID.1000", "wrong account name or password")
    session_uuid = uuid.uuid4().hex
    created = datetime.now(UTC)
    timeout = state.inventory.session_timeout
    state.sessions[session_uuid] = _Session(account, time.monotonic() + timeout)
    inventory = {
        "uuid": session_uuid,
        "accountUuid": account.uuid,
        "userUuid": account.uuid,
        "expiredDate": zstack_date(created + timedelta(seconds=timeout)),
        "createDate": zstack_date(created),
    }
    return _json({"inventory": inventory})


async def _session_valid(request: web.Request) -> web.Response:
    # No auth and no renewal: ZStack answers this for any caller.
    session = _live_session(request.app[_STATE], request.match_info["uuid"])
    return _json({"valid": session is not None})


async def _logout(request: web.Request) -> web.Response:
    request.app[_STATE].sessions.pop(request.match_info["uuid"], None)
    return _json({})


async def _query_accounts(request: web.Request) -> web.Response:
    """QueryAccount: an admin session sees every account, any other session only its own.

    Supports ``limit`` and ``q=uuid=...`` / ``q=name=...``; other conditions are ignored.
    """
    session = _caller(request)
    if isinstance(session, web.Response):
        return session
    accounts = [
        a
        for a in request.app[_STATE].inventory.accounts
        if session.account.name == ADMIN or a.uuid == session.account.uuid
    ]
    for condition in request.query.getall("q", []):
        field_name, _, value = condition.partition("=")
        if field_name in ("uuid", "name"):
            accounts = [a for a in accounts if getattr(a, field_name) == value]
    limit = request.query.get("limit", "")
    if limit.isdigit():
        accounts = accounts[: int(limit)]
    return _json({"inventories": [_account_inventory(a) for a in accounts]})


def _account_inventory(account: Account) -> dict[str, Any]:
    kind = "SystemAdmin" if account.uuid == ADMIN_UUID else "Normal"
    return {"uuid": account.uuid, "name": account.name, "type": kind}


async def _console_address(request: web.Request) -> web.Response:
    vm_or_error = _authorized_vm(request)
    if isinstance(vm_or_error, web.Response):
        return vm_or_error
    vm = vm_or_error
    if vm.state not in RUNNABLE_STATES:
        return _not_runnable(vm)
    if vm.broken:
        detail = f"operation error, because:libvirt failed to get console port for VM {vm.uuid}"
        return _error("SYS.1006", detail)
    return _json(_address_body(vm, request.app[_STATE].inventory))


async def _console_password(request: web.Request) -> web.Response:
    vm_or_error = _authorized_vm(request)
    if isinstance(vm_or_error, web.Response):
        return vm_or_error
    password = vm_or_error.console_password
    return _json({} if password is None else {"password": password})


async def _no_mapping(request: web.Request) -> web.Response:
    return web.Response(status=404, text=f"no api mapping to {request.path}")


# --- helpers ----------------------------------------------------------------------------------


def _authorized_vm(request: web.Request) -> Vm | web.Response:
    """The VM named in the path if the caller's session may see it, else the error answer."""
    session = _caller(request)
    if isinstance(session, web.Response):
        return session
    state = request.app[_STATE]
    vm_uuid = request.match_info["uuid"]
    vm = next((vm for vm in state.inventory.vms if vm.uuid == vm_uuid), None)
    if vm is None:
        detail = f"invalid field[uuid], resource[uuid:{vm_uuid}, type:VmInstanceVO] not found"
        return _error("SYS.1003", detail)
    if session.account.name not in (ADMIN, vm.owner):
        return _error("ID.1002", f"the account cannot access the VM[uuid:{vm.uuid}]")
    return vm


def _caller(request: web.Request) -> _Session | web.Response:
    """The caller's live session (renewed, as every authenticated call renews it), or the error."""
    header = request.headers.get("Authorization")
    if header is None:
        return web.Response(status=400, text="missing header 'Authorization'")
    kind, _, session_uuid = header.partition(" ")
    if kind != "OAuth":
        return web.Response(status=400, text="Authorization type must be 'OAuth'")
    state = request.app[_STATE]
    session = _live_session(state, session_uuid)
    if session is None:
        return _error("ID.1001", "Session expired")
    session.expires_at = time.monotonic() + state.inventory.session_timeout
    return session


def _live_session(state: _State, session_uuid: str) -> _Session | None:
    session = state.sessions.get(session_uuid)
    if session is not None and session.expires_at <= time.monotonic():
        del state.sessions[session_uuid]
        return None
    return session


def _find_account(inventory: Inventory, name: object, password: object) -> Account | None:
    for account in inventory.accounts:
        if account.name == name and sha512_hex(account.password) == password:
            return account
    return None


def _not_runnable(vm: Vm) -> web.Response:
    detail = (
        f"current vm instance state[{vm.state}] doesn't allow to proceed message"
        f"[{_GET_ADDRESS_MSG}], allowed states are [{', '.join(RUNNABLE_STATES)}]"
    )
    cause = _error_code("VM.1010", detail)
    return _error("SYS.1006", detail, cause)


def _address_body(vm: Vm, inventory: Inventory) -> dict[str, Any]:
    def port(value: int | None) -> float | int | None:
        return float(value) if inventory.ports_as_float and value is not None else value

    main = vm.vnc_port if vm.protocol != "spice" else _first(vm.spice_port, vm.spice_tls_port)
    body: dict[str, Any] = {"hostIp": vm.host_ip, "port": port(main), "protocol": vm.protocol}
    if inventory.vdi_port_info:
        vdi = {
            "vncPort": port(vm.vnc_port),
            "spicePort": port(vm.spice_port),
            "spiceTlsPort": port(vm.spice_tls_port),
        }
        body["vdiPortInfo"] = _without_nulls(vdi)
    body["success"] = True
    return _without_nulls(body)


def _first(*values: int | None) -> int | None:
    return next((value for value in values if value is not None), None)


def _error_code(code: str, details: str, cause: dict[str, Any] | None = None) -> dict[str, Any]:
    return _without_nulls(
        {"code": code, "description": _DESCRIPTIONS[code], "details": details, "cause": cause}
    )


def _error(code: str, details: str, cause: dict[str, Any] | None = None) -> web.Response:
    return _json({"error": _error_code(code, details, cause)}, status=503)


def _json(body: Mapping[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


def _without_nulls(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if value is not None}


def sha512_hex(password: str) -> str:
    """ZStack's login takes the SHA-512 hex digest of the password, never the password."""
    return hashlib.sha512(password.encode()).hexdigest()


def zstack_date(moment: datetime) -> str:
    """ZStack's JSON date format, e.g. ``Jan 1, 2017 11:31:06 AM`` (locale-free)."""
    hour = moment.hour % 12 or 12
    half = "AM" if moment.hour < 12 else "PM"
    return f"{moment:%b} {moment.day}, {moment.year} {hour}:{moment:%M:%S} {half}"


# --- inventory loading ------------------------------------------------------------------------


def load_inventory(path: str | Path) -> Inventory:
    """Read an inventory from a ``.json`` or ``.toml`` file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InventoryError(f"cannot read inventory {path}: {exc.strerror}") from exc
    if path.suffix not in (".json", ".toml"):
        raise InventoryError(f"inventory {path}: the name must end in .json or .toml")
    try:
        data = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw.decode())
    except ValueError as exc:  # JSON, TOML and UTF-8 errors are all ValueErrors
        raise InventoryError(f"inventory {path} cannot be parsed: {exc}") from exc
    if not isinstance(data, dict):
        raise InventoryError(f"inventory {path}: the top level must be an object")
    return Inventory.from_dict(data)


_TOP_KEYS = {"accounts", "vms", "sessionTimeout", "portsAsFloat", "vdiPortInfo"}
_ACCOUNT_KEYS = {"name", "password", "uuid"}
_VM_KEYS = {
    "uuid", "name", "state", "hostIp", "protocol", "vncPort", "spicePort", "spiceTlsPort",
    "owner", "consolePassword", "broken",
}  # fmt: skip


def _parse_inventory(data: Mapping[str, Any]) -> Inventory:
    _known_keys("inventory", data, _TOP_KEYS)
    accounts = tuple(
        _parse_account(f"accounts[{i}]", item) for i, item in enumerate(_list(data, "accounts"))
    )
    _unique("accounts", [account.name for account in accounts], "name")
    owners = {account.name for account in accounts}
    vms = tuple(_parse_vm(f"vms[{i}]", item, owners) for i, item in enumerate(_list(data, "vms")))
    _unique("vms", [vm.uuid for vm in vms], "uuid")
    timeout = data.get("sessionTimeout", DEFAULT_SESSION_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise InventoryError("sessionTimeout: must be a positive number of seconds")
    return Inventory(
        accounts,
        vms,
        float(timeout),
        _bool(data, "portsAsFloat", "inventory", True),
        _bool(data, "vdiPortInfo", "inventory", True),
    )


def _parse_account(where: str, item: object) -> Account:
    entry = _mapping(where, item, _ACCOUNT_KEYS)
    name = _str(entry, "name", where)
    default = ADMIN_UUID if name == ADMIN else uuid.uuid5(_ACCOUNT_NAMESPACE, name).hex
    account_uuid = entry.get("uuid", default)
    if not isinstance(account_uuid, str) or not _UUID.fullmatch(account_uuid):
        raise InventoryError(f"{where}.uuid: must be 32 lowercase hexadecimal digits")
    return Account(name, _str(entry, "password", where, allow_empty=True), account_uuid)


def _parse_vm(where: str, item: object, owners: set[str]) -> Vm:
    entry = _mapping(where, item, _VM_KEYS)
    vm_uuid = _str(entry, "uuid", where)
    if not _UUID.fullmatch(vm_uuid):
        raise InventoryError(f"{where}.uuid: must be 32 lowercase hexadecimal digits")
    host_ip = _str(entry, "hostIp", where)
    try:
        ipaddress.ip_address(host_ip)
    except ValueError:
        raise InventoryError(f"{where}.hostIp: {host_ip!r} is not an IP address") from None
    protocol = _str(entry, "protocol", where)
    if protocol not in PROTOCOLS:
        raise InventoryError(f"{where}.protocol: must be one of {', '.join(PROTOCOLS)}")
    owner = _str(entry, "owner", where)
    if owner not in owners:
        raise InventoryError(f"{where}.owner: no account is named {owner!r}")
    password = entry.get("consolePassword")
    if password is not None and not isinstance(password, str):
        raise InventoryError(f"{where}.consolePassword: must be a string")
    vm = Vm(
        uuid=vm_uuid,
        name=_str(entry, "name", where),
        state=_str(entry, "state", where),
        host_ip=host_ip,
        protocol=protocol,
        owner=owner,
        vnc_port=_port(entry, "vncPort", where),
        spice_port=_port(entry, "spicePort", where),
        spice_tls_port=_port(entry, "spiceTlsPort", where),
        console_password=password,
        broken=_bool(entry, "broken", where, False),
    )
    _check_display(where, vm)
    return vm


def _check_display(where: str, vm: Vm) -> None:
    has_vnc = vm.vnc_port is not None
    has_spice = vm.spice_port is not None or vm.spice_tls_port is not None
    if vm.protocol != "spice" and not has_vnc:
        raise InventoryError(f"{where}: protocol {vm.protocol} needs vncPort")
    if vm.protocol != "vnc" and not has_spice:
        raise InventoryError(f"{where}: protocol {vm.protocol} needs spicePort or spiceTlsPort")


def _known_keys(where: str, entry: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(entry) - known)
    if unknown:
        raise InventoryError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _mapping(where: str, item: object, known: set[str]) -> Mapping[str, Any]:
    if not isinstance(item, Mapping):
        raise InventoryError(f"{where}: must be an object")
    _known_keys(where, item, known)
    return item


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise InventoryError(f"{key}: must be a list")
    return value


def _unique(where: str, values: list[str], key: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise InventoryError(f"{where}: two entries have the {key} {value!r}")
        seen.add(value)


def _str(entry: Mapping[str, Any], key: str, where: str, allow_empty: bool = False) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not (value or allow_empty):
        kind = "a string" if allow_empty else "a non-empty string"
        raise InventoryError(f"{where}.{key}: must be {kind}")
    return value


def _bool(entry: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = entry.get(key, default)
    if not isinstance(value, bool):
        raise InventoryError(f"{where}.{key}: must be true or false")
    return value


def _port(entry: Mapping[str, Any], key: str, where: str) -> int | None:
    # 0 is allowed: a placeholder the demo replaces with a real port once its server listens.
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise InventoryError(f"{where}.{key}: must be an integer port in 0..65535")
    return value
