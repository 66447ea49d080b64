"""The ZStack API client: console addresses and console passwords, asked with the caller's session.

ZStack answers every failed sync call with ``503 {"error": ErrorCode}``, so errors are told apart
by their code, never by the status. Every failure becomes one :class:`ZStackError` whose
``status`` is the HTTP status the proxy should answer with. The caller's session id is sent only
in the ``Authorization`` header and is scrubbed from every text taken from an answer.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from proxy import safejson

log = logging.getLogger(__name__)

PROTOCOLS = frozenset({"vnc", "spice", "vncAndSpice"})
MAX_BODY = 1024 * 1024
MAX_TEXT = 200
MAX_FIELD = 1000
# ZStack wraps errors at several layers; a bound keeps a hostile answer from looping us.
MAX_CAUSE_DEPTH = 8
# A session id that cannot exist: /valid answers {"valid": false} without touching any session.
PROBE_SESSION = "0" * 32
# ZStack creates its admin account with this fixed uuid.
ADMIN_ACCOUNT = ("36c27e8ff05c4780bf6d2fa65700f22e", "admin")

_STATUS_BY_CODE = {"ID.1001": 401, "ID.1002": 403, "SYS.1003": 404, "VM.1010": 409}
_VM_UUID = re.compile(r"[0-9a-fA-F]{32}")
# Printable ASCII without spaces: nothing that could split or inject a header.
_SESSION = re.compile(r"[!-~]{1,256}")
_SESSION_INVALID = "The session is invalid, either wrong session id or the session has been expired"
_BAD_RESPONSE = "The ZStack API sent an answer the proxy does not understand."


class ZStackError(Exception):
    """A ZStack call failed. ``status`` is the HTTP status the proxy answers with.

    ``str()`` and ``repr()`` show only the code and the description; no text here ever holds a
    session id.
    """

    def __init__(self, code: str, description: str, details: str = "", status: int = 502) -> None:
        super().__init__(code, description, details, status)
        self.code = code
        self.description = description
        self.details = details
        self.status = status

    def __str__(self) -> str:
        return f"{self.code}: {self.description}"

    def __repr__(self) -> str:
        return f"ZStackError(code={self.code!r}, description={self.description!r})"


@dataclass(frozen=True)
class VdiPortInfo:
    vnc_port: int | None
    spice_port: int | None
    spice_tls_port: int | None


@dataclass(frozen=True)
class ConsoleAddress:
    host: str
    port: int
    protocol: str
    vdi: VdiPortInfo


@dataclass(frozen=True)
class Account:
    """The ZStack account behind a session (for the audit)."""

    uuid: str
    name: str


class ZStackClient:
    """Calls the ZStack REST API; ``base_url`` includes the context path (``.../zstack``)."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, timeout: float) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._timeout = timeout

    async def get_console_address(self, session_id: str, vm_uuid: str) -> ConsoleAddress:
        body = await self._get(_vm_path(vm_uuid, "console-addresses"), session_id)
        try:
            return _parse_address(body)
        except ValueError as exc:
            raise _bad_response(_scrub(str(exc), session_id)) from None

    async def get_console_password(self, session_id: str, vm_uuid: str) -> str | None:
        """The VM's console password, or None when it has none."""
        body = await self._get(_vm_path(vm_uuid, "console-passwords"), session_id)
        password = body.get("password")
        if password is None or password == "":
            return None
        if not isinstance(password, str):
            raise _bad_response("the password field is not a string")
        return password

    async def get_account(self, session_id: str) -> Account:
        """The account behind ``session_id``, asked with QueryAccount (no effect on the session
        beyond the renewal every call makes). ZStack shows a normal account only itself and
        shows the admin account only to admin: two answers mean the caller is admin."""
        body = await self._get("accounts?limit=2", session_id)
        accounts = body.get("inventories")
        if not isinstance(accounts, list) or not 1 <= len(accounts) <= 2:
            raise _bad_response("the QueryAccount answer has no 'inventories' list")
        if len(accounts) == 2:
            return Account(*ADMIN_ACCOUNT)
        found = accounts[0]
        uuid, name = (found.get("uuid"), found.get("name")) if isinstance(found, dict) else (0, 0)
        if not isinstance(uuid, str) or not _VM_UUID.fullmatch(uuid) or not isinstance(name, str):
            raise _bad_response("the QueryAccount answer has no account uuid and name")
        return Account(uuid.lower(), _clip(name, MAX_FIELD))

    async def check_reachable(self) -> None:
        """Raise ZStackError unless the API answers a session check sensibly (for /readyz)."""
        body = await self._get(f"accounts/sessions/{PROBE_SESSION}/valid", None)
        if not isinstance(body.get("valid"), bool):
            raise _bad_response("the session check answer has no boolean 'valid' field")

    async def _get(self, path: str, session_id: str | None) -> dict[str, Any]:
        headers = {}
        if session_id is not None:
            _check_session(session_id)
            headers["Authorization"] = f"OAuth {session_id}"
        started = time.monotonic()
        status, body = await self._fetch(f"{self._base}/v1/{path}", headers)
        log.debug("ZStack GET %s answered %s in %.3f s", path, status, time.monotonic() - started)
        return _interpret(status, body, session_id or "")

    async def _fetch(self, url: str, headers: dict[str, str]) -> tuple[int, bytes]:
        # No redirects: following one would hand the caller's session to another address.
        try:
            async with self._http.get(
                url,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                allow_redirects=False,
                raise_for_status=False,
            ) as resp:
                return resp.status, await _read_body(resp)
        except TimeoutError:
            log.warning("ZStack did not answer within %s s", self._timeout)
            raise ZStackError(
                "ZSTACK.TIMEOUT",
                "The ZStack API did not answer in time.",
                f"no answer within {self._timeout:g} s",
                504,
            ) from None
        except aiohttp.ClientError as exc:
            # `from None`: aiohttp errors may carry the request headers, session included.
            log.warning("ZStack is unreachable: %s", type(exc).__name__)
            raise ZStackError(
                "ZSTACK.UNREACHABLE",
                "The ZStack API could not be reached.",
                _clip(str(exc) or type(exc).__name__, MAX_TEXT),
                502,
            ) from None


async def _read_body(resp: aiohttp.ClientResponse) -> bytes:
    body = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > MAX_BODY:
            raise _bad_response(f"the answer is larger than {MAX_BODY} bytes")
    return bytes(body)


def _interpret(status: int, body: bytes, session_id: str) -> dict[str, Any]:
    if status not in (200, 503):
        text = _scrub(body.decode("utf-8", errors="replace"), session_id)
        raise ZStackError(
            f"ZSTACK.HTTP_{status}",
            f"The ZStack API answered with the unexpected HTTP status {status}.",
            _clip(text.strip(), MAX_TEXT),
            502,
        )
    payload = _json_object(body)
    if payload is None:
        raise _bad_response(f"the HTTP {status} answer is not a JSON object")
    # A sync reply may also carry its error inside a 200 (the manual's `error` field).
    if status == 503 or payload.get("error") is not None:
        raise _error_from_body(payload, session_id)
    return payload


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        payload = safejson.loads(body)
    except ValueError:  # malformed, not UTF-8, or nested deeper than any ZStack answer
        return None
    return payload if isinstance(payload, dict) else None


def _error_from_body(payload: Mapping[str, Any], session_id: str) -> ZStackError:
    error = payload.get("error")
    if not isinstance(error, Mapping) or not isinstance(error.get("code"), str):
        raise _bad_response("the error answer has no error object with a code")
    chain = _cause_chain(error)
    code = error["code"]
    source: Mapping[str, Any] = error
    not_running = [cause for cause in chain if cause.get("code") == "VM.1010"]
    if code in ("VM.1010", "SYS.1006") and not_running:
        code, source = "VM.1010", not_running[0]
    description = _field(source, "description", session_id) or _field(
        error, "description", session_id
    )
    details = _field(source, "details", session_id) or _field(error, "details", session_id)
    code = _clip(_scrub(code, session_id), MAX_TEXT)
    if not description:
        description = f"ZStack refused the request with error {code}."
    return ZStackError(code, description, details, _STATUS_BY_CODE.get(code, 502))


def _cause_chain(error: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    chain = [error]
    while len(chain) < MAX_CAUSE_DEPTH:
        cause = chain[-1].get("cause")
        if not isinstance(cause, Mapping):
            break
        chain.append(cause)
    return chain


def _field(error: Mapping[str, Any], key: str, session_id: str) -> str:
    value = error.get(key)
    return _clip(_scrub(value, session_id), MAX_FIELD) if isinstance(value, str) else ""


def _parse_address(body: Mapping[str, Any]) -> ConsoleAddress:
    host = body.get("hostIp")
    if not isinstance(host, str) or not _is_ip(host):
        raise ValueError("hostIp is not an IP address")
    protocol = body.get("protocol")
    if protocol not in PROTOCOLS:
        raise ValueError("protocol is not one of vnc, spice, vncAndSpice")
    port = _port(body.get("port"), "port")
    if port is None:
        raise ValueError("port is missing")
    return ConsoleAddress(host, port, str(protocol), _parse_vdi(body.get("vdiPortInfo")))


def _parse_vdi(info: object) -> VdiPortInfo:
    # vdiPortInfo arrived in ZStack 3.7.0; older versions leave it out.
    if info is None:
        return VdiPortInfo(None, None, None)
    if not isinstance(info, Mapping):
        raise ValueError("vdiPortInfo is not an object")
    return VdiPortInfo(
        _port(info.get("vncPort"), "vdiPortInfo.vncPort"),
        _port(info.get("spicePort"), "vdiPortInfo.spicePort"),
        _port(info.get("spiceTlsPort"), "vdiPortInfo.spiceTlsPort"),
    )


def _port(value: object, name: str) -> int | None:
    """A TCP port; ZStack's manual shows ports as floats (5900.0), so integral floats pass."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} is not a number")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{name} is not a whole number")
    if not 1 <= value <= 65535:
        raise ValueError(f"{name} is outside 1..65535")
    return int(value)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _bad_response(details: str) -> ZStackError:
    log.warning("ZStack sent an answer the proxy does not understand: %s", details)
    return ZStackError("ZSTACK.BAD_RESPONSE", _BAD_RESPONSE, _clip(details, MAX_TEXT), 502)


def _vm_path(vm_uuid: str, what: str) -> str:
    # The uuid goes into the URL path: anything but 32 hex digits could reach another API.
    if not _VM_UUID.fullmatch(vm_uuid):
        raise ZStackError(
            "SYS.1007",
            "One or more API argument is invalid",
            "the VM uuid must be 32 hexadecimal digits",
            400,
        )
    return f"vm-instances/{vm_uuid}/{what}"


def _check_session(session_id: str) -> None:
    if not _SESSION.fullmatch(session_id):
        raise ZStackError("ID.1001", _SESSION_INVALID, "the session id is malformed", 401)


def _scrub(text: str, session_id: str) -> str:
    return text.replace(session_id, "<session>") if session_id else text


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
