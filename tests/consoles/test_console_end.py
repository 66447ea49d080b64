"""A console's end is carried through when aiohttp cancels its handler (the browser's connection
went away) while the end is under way: it leaves the registry, its recording is finished and
its close audit line is written."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from proxy.app import create_app
from proxy.consoles.sessions import ConsoleSessions
from proxy.recording.recorder import Recorder
from proxy.web.keys import REGISTRY
from tests.support.configs import make_config, write_token_file
from tests.support.net import rfb_echo
from tests.support.rfb_client import greet_as_browser
from tests.support.waiting import wait_until


async def test_a_cancelled_handler_still_ends_its_console_whole(
    aiohttp_server: Any, tcp_target: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    handlers: list[asyncio.Task[Any]] = []
    real_prepare, real_close = ConsoleSessions._prepare, Recorder.close

    async def prepare(self: ConsoleSessions, *args: Any) -> Any:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        return await real_prepare(self, *args)

    async def close(self: Recorder, reason: str) -> Any:
        handlers[0].cancel()  # as aiohttp does when the connection goes
        await asyncio.sleep(0.2)
        return await real_close(self, reason)

    monkeypatch.setattr(ConsoleSessions, "_prepare", prepare)
    monkeypatch.setattr(Recorder, "close", close)
    target = await tcp_target(rfb_echo)
    tokens = write_token_file(tmp_path / "tokens", {"vm": ("127.0.0.1", target.port)})
    audit = tmp_path / "audit.jsonl"
    config = make_config(
        tickets={"token_file": str(tokens)},
        audit={"sink": f"file:{audit}"},
        recording={"dir": str(tmp_path / "recordings")},
    )
    server = await aiohttp_server(create_app(config))
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.make_url("/websockify?token=vm"))
        stream = await greet_as_browser(ws)
        await stream.write(b"recorded")
        assert await stream.read_exactly(8, 5) == b"recorded"
        await ws.close()
    await wait_until(lambda: len(server.app[REGISTRY]) == 0, timeout=10)
    assert handlers[0].cancelled()

    def closed_line() -> dict[str, Any] | None:
        events = [json.loads(line) for line in audit.read_text().splitlines()]
        return next((e for e in events if e["event"] == "console.close"), None)

    line = await wait_until(closed_line, timeout=10)
    assert line["recording"]["complete"] is True and line["recording"]["sha256"]
    (metadata,) = (tmp_path / "recordings").glob("*.json")
    assert json.loads(metadata.read_text())["complete"] is True
