"""websockify token plugins, looked up off the loop and remembered while files are unchanged."""

from __future__ import annotations

import asyncio
from pathlib import Path

from websockify.token_plugins import TokenFile

from proxy.tickets.static import StaticTokens
from tests.support.configs import write_token_file


async def test_token_file_changes_are_seen_at_once(tmp_path: Path) -> None:
    path = write_token_file(tmp_path / "tokens", {"vm": ("10.0.0.1", 5901)})
    tokens = StaticTokens.load("TokenFile", str(path))
    assert await tokens.lookup("vm") == ("10.0.0.1", 5901)
    assert await tokens.lookup("other") is None
    write_token_file(path, {"vm": ("10.0.0.22", 5902), "other": ("10.0.0.3", 5903)})
    assert await tokens.lookup("vm") == ("10.0.0.22", 5902)
    assert await tokens.lookup("other") == ("10.0.0.3", 5903)


async def test_token_directory_add_and_remove_are_seen_at_once(tmp_path: Path) -> None:
    folder = tmp_path / "tokens"
    folder.mkdir()
    tokens = StaticTokens.load("TokenFile", str(folder))
    assert await tokens.lookup("a") is None
    write_token_file(folder / "console-a", {"a": ("10.0.0.1", 5901)})
    assert await tokens.lookup("a") == ("10.0.0.1", 5901)
    (folder / "console-a").unlink()
    assert await tokens.lookup("a") is None


async def test_edit_in_place_inside_a_directory_is_seen_within_max_age(tmp_path: Path) -> None:
    folder = tmp_path / "tokens"
    folder.mkdir()
    write_token_file(folder / "console-a", {"a": ("10.0.0.1", 5901)})
    tokens = StaticTokens(TokenFile(str(folder)), source=str(folder), max_age=0.2)
    assert await tokens.lookup("a") == ("10.0.0.1", 5901)
    write_token_file(folder / "console-a", {"a": ("10.0.0.9", 5909)})
    await asyncio.sleep(0.3)
    assert await tokens.lookup("a") == ("10.0.0.9", 5909)


async def test_unknown_plugins_are_never_remembered(tmp_path: Path) -> None:
    calls: list[str] = []

    class Counting:
        def lookup(self, token: str) -> list[str]:
            calls.append(token)
            return ["10.0.0.1", "5901"]

    tokens = StaticTokens(Counting(), source=str(tmp_path))
    for _ in range(3):
        assert await tokens.lookup("x") == ("10.0.0.1", 5901)
    assert calls == ["x", "x", "x"]
