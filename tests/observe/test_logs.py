"""Application logs: readable text by default; ``[log] format = "json"`` writes one object per
line with time, level, logger, message and, inside a console, its id; the audit keeps its own
sink."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from proxy.demo.vncserver import DemoVncServer
from tests.support.configs import write_token_file
from tests.support.net import free_port
from tests.support.rfb_client import greet_as_browser
from tests.support.serve_process import ServeProcess

TOKEN = "logs-console"


async def run_one_console(tmp_path: Path, env: dict[str, str]) -> ServeProcess:
    audit = tmp_path / "audit.jsonl"
    async with DemoVncServer(name="logs-vm") as vnc:
        tokens = write_token_file(tmp_path / "tokens", {TOKEN: ("127.0.0.1", vnc.port)})
        port = free_port()
        args = ["--listen", f"127.0.0.1:{port}", "--token-file", str(tokens)]
        env = {
            "CONSOLE_PROXY_TARGETS_ALLOW": "127.0.0.0/8",
            "CONSOLE_PROXY_AUDIT_SINK": f"file:{audit}",
            **env,
        }
        async with (
            ServeProcess(port, args, tmp_path, env=env, log_level="DEBUG") as proxy,
            aiohttp.ClientSession() as http,
        ):
            ws = await http.ws_connect(f"{proxy.url}/websockify?token={TOKEN}")
            await greet_as_browser(ws)  # a raw console: the VNC server's own greeting
            await ws.close()
            # A refused ticket logs inside its console's task too.
            bad = await http.ws_connect(f"{proxy.url}/websockify?token=nope")
            await bad.receive(timeout=10)
            await bad.close()
    return proxy


async def test_json_logs_are_one_object_per_line_with_the_console_id(tmp_path: Path) -> None:
    proxy = await run_one_console(tmp_path, {"CONSOLE_PROXY_LOG_FORMAT": "json"})
    lines = [line for line in proxy.stderr.splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= e.keys() for e in entries)
    assert any(e["logger"] == "proxy.server" and "listening" in e["message"] for e in entries)
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    console_ids = {e["console"] for e in audit}
    # Lines written inside a console's task name it, with the id the audit uses.
    assert console_ids & {e.get("console") for e in entries}
    assert TOKEN not in proxy.stderr


async def test_text_logs_stay_the_default(tmp_path: Path) -> None:
    proxy = await run_one_console(tmp_path, {})
    line = next(x for x in proxy.stderr.splitlines() if "listening" in x)
    assert not line.startswith("{") and " INFO proxy.server: " in line
