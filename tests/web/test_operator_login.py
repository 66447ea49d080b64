"""Operator sign-in: the form, ZStack's check of the password, the sealed session cookie, the
failure limit, sign-out, and what is refused (wrong password, unlisted account, expired or
forged cookie, a cross-site POST). ZStack is the simulator; the proxy is the real app."""

from __future__ import annotations

import base64
import json
import os
import time
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy.app import create_app
from proxy.demo.simulator import Inventory, create_simulator_app
from proxy.web.operator_cookie import CookieSealer
from proxy.web.operator_session import COOKIE
from tests.support.configs import make_config

VM = "0123456789abcdef0123456789abcdef"
COOKIE_KEY = base64.b64encode(os.urandom(32)).decode()
ADMIN_TOKEN = "operator-tests-admin-token"


class Operators:
    """The proxy and the simulator; ``http`` sends no cookies by itself (loopback IPs)."""

    def __init__(self, proxy: TestServer, simulator: TestServer, audit: Path) -> None:
        self.proxy = proxy
        self.simulator = simulator
        self.audit_file = audit
        self.http = aiohttp.ClientSession()

    @property
    def origin(self) -> str:
        return str(self.proxy.make_url("/").origin())

    def url(self, path: str) -> str:
        return str(self.proxy.make_url(path))

    async def sign_in(
        self, account: str = "admin", password: str = "pw", **headers: str
    ) -> tuple[int, str, str]:
        """(status, page text, the session cookie's value or "")."""
        headers.setdefault("Origin", self.origin)
        async with self.http.post(
            self.url("/operator/login"),
            data={"account": account, "password": password},
            headers=headers,
            allow_redirects=False,
        ) as r:
            cookie = SimpleCookie(r.headers.get("Set-Cookie", ""))
            value = cookie[COOKIE].value if COOKIE in cookie else ""
            return r.status, await r.text(), value

    async def home(self, cookie: str) -> str:
        async with self.http.get(self.url("/operator/"), headers=cookies(cookie)) as r:
            assert r.status == 200
            return await r.text()

    def zstack_sessions(self) -> int:
        from proxy.demo.simulator import _STATE

        return len(self.simulator.app[_STATE].sessions)

    def audit(self) -> list[dict[str, Any]]:
        lines = self.audit_file.read_text().splitlines() if self.audit_file.exists() else []
        return [e for e in map(json.loads, lines) if e["event"].startswith("operator.")]


def cookies(value: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={value}"}


@pytest.fixture
async def operators(aiohttp_server: Any, tmp_path: Path) -> Any:
    made: list[Operators] = []

    async def start(**sections: Any) -> Operators:
        inventory = Inventory.from_dict(
            {
                "accounts": [
                    {"name": "admin", "password": "pw"},
                    {"name": "alice", "password": "alice-pw"},
                ],
                "vms": [
                    {
                        "uuid": VM,
                        "name": "vm",
                        "state": "Running",
                        "hostIp": "127.0.0.1",
                        "protocol": "vnc",
                        "vncPort": 5999,
                        "owner": "admin",
                    }
                ],
            }
        )
        simulator = await aiohttp_server(create_simulator_app(inventory), access_log=None)
        audit = tmp_path / "audit.jsonl"
        sections.setdefault("operator", {}).setdefault("cookie_key", COOKIE_KEY)
        config = make_config(
            zstack={"url": str(simulator.make_url("/zstack"))},
            audit={"sink": f"file:{audit}"},
            **sections,
        )
        made.append(Operators(await aiohttp_server(create_app(config)), simulator, audit))
        return made[-1]

    yield start
    for o in made:
        await o.http.close()


async def test_the_form_signs_an_operator_in_and_out(operators: Any) -> None:
    o = await operators()
    async with o.http.get(o.url("/operator/")) as r:
        page = await r.text()
        assert r.status == 200 and 'action="login"' in page and "Live consoles" not in page
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    async with o.http.post(
        o.url("/operator/login"),
        data={"account": "admin", "password": "pw"},
        headers={"Origin": o.origin},
        allow_redirects=False,
    ) as r:
        assert r.status == 303 and r.headers["Location"] == "./"
        set_cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/" in set_cookie
    assert "Secure" not in set_cookie  # plain HTTP here
    value = SimpleCookie(set_cookie)[COOKIE].value
    assert "admin" not in base64.urlsafe_b64decode(value + "==").decode("latin-1")  # sealed
    assert o.zstack_sessions() == 0  # the proxy logged out of ZStack at once
    page = await o.home(value)
    assert "Live consoles" in page and 'id="operator-account">admin<' in page
    async with o.http.post(
        o.url("/operator/logout"),
        headers={"Origin": o.origin, **cookies(value)},
        allow_redirects=False,
    ) as r:
        assert r.status == 303 and r.headers["Location"] == "./"
        assert f"{COOKIE}=" in r.headers["Set-Cookie"] and "Max-Age=0" in r.headers["Set-Cookie"]
    events = [(e["event"], e["operator"], e["client"]) for e in o.audit()]
    assert events == [
        ("operator.login", "admin", "127.0.0.1"),
        ("operator.logout", "admin", "127.0.0.1"),
    ]


async def test_a_wrong_password_or_an_unlisted_account_gets_the_form_again(operators: Any) -> None:
    o = await operators()
    status, page, cookie = await o.sign_in("admin", "not-the-password")
    assert (status, cookie) == (401, "") and "Wrong account name or password." in page
    # alice's password is right, but she is not in [operator] accounts.
    status, page, cookie = await o.sign_in("alice", "alice-pw")
    assert (status, cookie) == (403, "") and "may not sign in here" in page
    assert o.zstack_sessions() == 0
    status, page, cookie = await o.sign_in("nobody", "x")
    assert (status, cookie) == (401, "")
    reasons = [(e["event"], e["operator"], e.get("reason")) for e in o.audit()]
    assert reasons == [
        ("operator.login_failed", "admin", "wrong_credentials"),
        ("operator.login_failed", "alice", "not_operator"),
        ("operator.login_failed", "nobody", "wrong_credentials"),
    ]
    assert "not-the-password" not in o.audit_file.read_text()


async def test_listed_accounts_come_from_the_config(operators: Any) -> None:
    o = await operators(operator={"accounts": ["alice"]})
    assert (await o.sign_in("alice", "alice-pw"))[0] == 303
    assert (await o.sign_in("admin", "pw"))[0] == 403


async def test_more_than_five_failures_a_minute_answer_429(operators: Any) -> None:
    o = await operators()
    for _ in range(5):
        assert (await o.sign_in("admin", "wrong"))[0] == 401
    status, page, cookie = await o.sign_in("admin", "pw")  # even the right password now
    assert (status, cookie) == (429, "") and "Too many failed sign-ins" in page


async def test_forged_and_expired_cookies_are_refused(operators: Any) -> None:
    o = await operators(server={"admin_token": ADMIN_TOKEN})
    _, _, good = await o.sign_in()
    raw = bytearray(base64.urlsafe_b64decode(good + "=" * (-len(good) % 4)))
    raw[-1] ^= 1
    tampered = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    other_key = CookieSealer(os.urandom(32), 3600).seal("admin")
    key = base64.b64decode(COOKIE_KEY)
    expired = CookieSealer(key, 3600).seal("admin", now=time.time() - 3601)
    for forged in (tampered, other_key, expired, "admin", ""):
        assert 'action="login"' in await o.home(forged)
        url = o.url(f"/api/v1/admin/vms/{VM}/close-consoles")
        async with o.http.post(url, headers={"Origin": o.origin, **cookies(forged)}) as r:
            assert r.status == 401
    assert "Live consoles" in await o.home(CookieSealer(key, 3600).seal("admin"))
    # An account taken off the list loses its session at once.
    assert 'action="login"' in await o.home(CookieSealer(key, 3600).seal("alice"))


async def test_cross_site_posts_are_refused(operators: Any) -> None:
    o = await operators()
    status, page, cookie = await o.sign_in(Origin="https://evil.example")
    assert (status, cookie) == (403, "") and "sent from another site" in page
    status, _, cookie = await o.sign_in(**{"Sec-Fetch-Site": "cross-site"})
    assert (status, cookie) == (403, "")
    status, _, cookie = await o.sign_in(Origin="null")  # what no-referrer pages send
    assert (status, cookie) == (403, "")
    # A browser says where the form came from; same-origin passes whatever the Origin says.
    status, _, cookie = await o.sign_in(Origin="null", **{"Sec-Fetch-Site": "same-origin"})
    assert status == 303 and cookie
    _, _, good = await o.sign_in()
    url = o.url(f"/api/v1/admin/vms/{VM}/close-consoles")
    async with o.http.post(url, headers={"Origin": "https://evil.example", **cookies(good)}) as r:
        assert r.status == 403 and (await r.json())["error"]["code"] == "ORIGIN.FORBIDDEN"
    async with o.http.post(url, headers={"Origin": o.origin, **cookies(good)}) as r:
        assert r.status == 200
    async with o.http.post(
        o.url("/operator/logout"),
        headers={"Origin": "https://evil.example", **cookies(good)},
        allow_redirects=False,
    ) as r:
        assert r.status == 403 and "Set-Cookie" not in r.headers


async def test_the_cookie_is_secure_under_https(operators: Any) -> None:
    o = await operators(server={"trusted_proxies": ["127.0.0.0/8"]})
    async with o.http.post(
        o.url("/operator/login"),
        data={"account": "admin", "password": "pw"},
        headers={
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "console.example.com",
            "Origin": "https://console.example.com",
        },
        allow_redirects=False,
    ) as r:
        assert r.status == 303 and "Secure" in r.headers["Set-Cookie"]


async def test_zstack_down_is_not_a_wrong_password(operators: Any) -> None:
    o = await operators()
    await o.simulator.close()
    status, page, cookie = await o.sign_in()
    assert (status, cookie) == (502, "") and "could not check the password" in page
