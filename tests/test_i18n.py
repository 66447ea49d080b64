"""The pages' languages (issue #15): every translation file has every key, the server picks a
page's language, the mint carries one, and [page] key_combos is checked at start-up."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from proxy import i18n
from proxy.app import create_app
from proxy.closecodes import PAGE_MESSAGES, Close
from proxy.config import ConfigError
from proxy.keynames import BUILTIN_COMBOS, KEYS, parse_combo
from tests.support.configs import make_config
from tests.support.stack import VM

PLACEHOLDER = re.compile(r"\{(\w+)\}")


def test_there_are_english_and_simplified_chinese() -> None:
    assert i18n.available()[0] == "en"
    assert "zh-CN" in i18n.available()
    assert i18n.names()["zh-CN"] == "简体中文"


@pytest.mark.parametrize("language", i18n.available())
def test_every_file_has_every_key_and_no_other(language: str) -> None:
    english = i18n.flatten(i18n.tables()["en"])
    other = i18n.flatten(i18n.tables()[language])
    assert sorted(english.keys() - other.keys()) == [], f"{language}.json lacks these keys"
    assert sorted(other.keys() - english.keys()) == [], f"{language}.json has unknown keys"
    for key, sentence in english.items():
        # A translation keeps the placeholders (English may leave one out, e.g. withReason).
        assert set(PLACEHOLDER.findall(other[key])) <= set(PLACEHOLDER.findall(sentence)) | {
            "message",
            "reason",
        }, key
        assert other[key].strip(), f"{language}: {key} is empty"


@pytest.mark.parametrize("language", i18n.available())
def test_every_close_code_has_a_sentence_in_every_language(language: str) -> None:
    codes = i18n.close_messages(language)
    assert {c.code for c in Close} <= codes.keys()
    assert codes.keys() == PAGE_MESSAGES.keys()


def test_english_close_messages_are_the_page_messages() -> None:
    assert i18n.close_messages("en") == PAGE_MESSAGES
    assert i18n.close_messages("zh-CN")[4401].startswith("此控制台链接已过期")


@pytest.mark.parametrize(
    ("preferences", "expected"),
    [
        (["zh-CN", "en"], "zh-CN"),
        (["zh-cn"], "zh-CN"),
        (["zh"], "zh-CN"),  # the primary subtag is enough
        (["zh-TW", "en"], "en"),  # an exact match comes first
        (["zh-TW"], "zh-CN"),
        (["fr-FR", "de"], "en"),
        ([], "en"),
    ],
)
def test_negotiate(preferences: list[str], expected: str) -> None:
    assert i18n.negotiate(preferences) == expected


def test_accept_language_orders_by_quality() -> None:
    assert i18n.accept_language("en;q=0.5, zh-CN, *;q=0.1, fr;q=0") == ["zh-CN", "en"]
    assert i18n.accept_language("") == []
    assert i18n.accept_language("en;q=bad, de") == ["de"]


def test_text_fills_placeholders_and_falls_back_to_english() -> None:
    assert i18n.text("zh-CN", "console.connectedTo", name="vm1") == "已连接到 vm1"
    assert i18n.text("xx", "console.reconnect") == "Reconnect"


# --- pages rendered by the server -----------------------------------------------------------


def json_block(html: str, block: str) -> Any:
    match = re.search(rf'<script type="application/json" id="{block}">(.*?)</script>', html, re.S)
    assert match is not None, block
    return json.loads(match[1])


@pytest.mark.parametrize("page", ["vnc", "spice"])
async def test_console_page_follows_accept_language_then_lang(
    aiohttp_client: Any, page: str
) -> None:
    client = await aiohttp_client(create_app(make_config()))
    chinese = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}
    html = await (await client.get(f"/console/{page}", headers=chinese)).text()
    assert '<html lang="zh-CN">' in html
    assert "<title>云主机控制台</title>" in html and "重新连接" in html
    assert json_block(html, "close-messages")["4401"].startswith("此控制台链接已过期")
    words = json_block(html, "i18n")
    assert words["language"] == "zh-CN"
    assert set(words["tables"]) == set(i18n.available())  # the page can switch live
    html = await (await client.get(f"/console/{page}?lang=en", headers=chinese)).text()
    assert '<html lang="en">' in html and "Reconnect" in html


async def test_operator_sign_in_page_in_chinese(aiohttp_client: Any) -> None:
    client = await aiohttp_client(create_app(make_config()))
    response = await client.get("/operator/", headers={"Accept-Language": "zh-CN"})
    html = await response.text()
    assert '<html lang="zh-CN">' in html
    assert "控制台代理操作员" in html and "登录" in html
    html = await (await client.get("/operator/")).text()
    assert "Console proxy operators" in html


# --- the mint's language ----------------------------------------------------------------------


async def test_mint_carries_the_language_in_the_console_url(stack: Any) -> None:
    s = await stack()
    session = await s.login()
    status, body = await s.request_console(session, {"vmUuid": VM, "language": "ZH-cn"})
    assert status == 201, body
    assert body["consoleUrl"].endswith(f"#token={body['token']}&lang=zh-CN")
    status, body = await s.request_console(session, {"vmUuid": VM, "language": None})
    assert status == 201 and "lang=" not in body["consoleUrl"]
    for bad in ("fr", "", 7, ["en"]):
        status, body = await s.request_console(session, {"vmUuid": VM, "language": bad})
        assert status == 400, bad
        assert body["error"]["code"] == "REQUEST.INVALID_LANGUAGE"
        assert "zh-CN" in body["error"]["description"]


# --- [page] key_combos ------------------------------------------------------------------------


def test_key_combos_are_parsed_against_the_key_table() -> None:
    assert parse_combo(" ctrl + Shift+ESCAPE ") == ("Ctrl", "Shift", "Esc")
    assert parse_combo("Win+R") == ("Super", "R")
    for combo in BUILTIN_COMBOS:
        assert all(name in KEYS for name in combo)
    for bad in ("", "Ctrl+", "Ctrl+Hyper", "+".join(["A"] * 7)):
        with pytest.raises(ValueError):
            parse_combo(bad)


def test_an_unknown_key_stops_the_start_naming_the_setting() -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(page={"key_combos": ["Ctrl+Shift+Esc", "Ctrl+Hyper+X"]})
    assert caught.value.key == "page.key_combos"
    assert "Hyper" in str(caught.value)


async def test_configured_combos_reach_the_page(aiohttp_client: Any) -> None:
    config = make_config(page={"key_combos": ["ctrl+shift+esc"]})
    client = await aiohttp_client(create_app(config))
    menu = json_block(await (await client.get("/console/vnc")).text(), "key-menu")
    assert menu["combos"][-1] == ["Ctrl", "Shift", "Esc"] and menu["configured"] == 1
    assert menu["keys"]["Esc"] == [0xFF1B, "Escape", 0x01]
    assert ["Ctrl", "Alt", "Del"] in menu["combos"]
