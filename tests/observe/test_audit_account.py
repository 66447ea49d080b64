"""Who opened a console: the audit names the ZStack account behind the minting session, learnt
with QueryAccount (which changes nothing about the session), and never the session itself."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.demo.simulator import ADMIN_UUID
from proxy.zstack.client import ZStackClient, ZStackError
from tests.support.rfb_client import greet_as_browser
from tests.support.stack import ALICE_VM, VM


def audit_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def wait_for_close_event(path: Path) -> list[dict[str, Any]]:
    async with asyncio.timeout(20):
        while not any(e["event"] == "console.close" for e in audit_events(path)):
            await asyncio.sleep(0.05)
    return audit_events(path)


@pytest.mark.parametrize(
    ("account", "password", "vm"), [("admin", "password", VM), ("alice", "alice-pw", ALICE_VM)]
)
async def test_audit_names_the_account_that_minted(
    stack: Any, tmp_path: Path, account: str, password: str, vm: str
) -> None:
    audit = tmp_path / "audit.jsonl"
    s = await stack(audit={"sink": f"file:{audit}"})
    session = await s.login(account, password)
    status, body = await s.request_console(session, {"vmUuid": vm})
    assert status == 201
    ws = await s.open(body["token"])
    await greet_as_browser(ws)
    await ws.close()
    async with aiohttp.ClientSession() as http:
        client = ZStackClient(http, s.zstack_url, 5.0)
        expected = await client.get_account(session)
    assert expected.name == account
    assert (expected.uuid == ADMIN_UUID) is (account == "admin")
    events = await wait_for_close_event(audit)
    opened = next(e for e in events if e["event"] == "console.open")
    closed = next(e for e in events if e["event"] == "console.close")
    assert opened["account"] == closed["account"] == {"uuid": expected.uuid, "name": account}
    assert session not in audit.read_text()


async def test_query_account_shows_a_normal_account_only_itself(stack: Any) -> None:
    s = await stack()
    async with aiohttp.ClientSession() as http:
        alice = await s.login("alice", "alice-pw")
        admin = await s.login()
        url = f"{s.zstack_url}/v1/accounts"
        async with http.get(url, headers={"Authorization": f"OAuth {alice}"}) as r:
            assert [a["name"] for a in (await r.json())["inventories"]] == ["alice"]
        async with http.get(url, headers={"Authorization": f"OAuth {admin}"}) as r:
            assert {a["name"] for a in (await r.json())["inventories"]} == {"admin", "alice"}
        client = ZStackClient(http, s.zstack_url, 5.0)
        with pytest.raises(ZStackError) as info:
            await client.get_account("f" * 32)
        assert info.value.code == "ID.1001"


async def test_a_console_opens_when_zstack_will_not_say_whose_session(
    stack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(self: ZStackClient, session_id: str) -> None:
        raise ZStackError("ZSTACK.HTTP_404", "no api mapping", "", 502)

    monkeypatch.setattr(ZStackClient, "get_account", refuse)
    audit = tmp_path / "audit.jsonl"
    s = await stack(audit={"sink": f"file:{audit}"})
    status, body = await s.request_console(await s.login(), {"vmUuid": VM})
    assert status == 201
    ws = await s.open(body["token"])
    await greet_as_browser(ws)
    await ws.close()
    await wait_for_close_event(audit)
    assert all(e["account"] is None for e in audit_events(audit))
