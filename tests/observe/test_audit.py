"""README's audit: with no ``[audit] sink`` configured a real ``console-proxy serve`` process
writes one JSON line per console opened and closed to stderr, with no token, password or
session in it (nor anywhere else on its stderr)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from proxy.demo.simulator import ADMIN_UUID, create_simulator_app
from proxy.demo.vncserver import DemoVncServer
from tests.support.net import free_port
from tests.support.rfb_client import greet_as_browser
from tests.support.serve_process import ServeProcess
from tests.support.stack import VM, AiohttpServer, StartStack, inventory, vm_entry, zstack_login
from tests.support.waiting import wait_until

PASSWORD = "s3cret-audit"


def audit_events(stderr: str) -> list[dict[str, Any]]:
    """The JSON objects among stderr's lines (log lines start with a timestamp, not '{')."""
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


async def test_default_audit_sink_is_stderr_with_open_and_close_and_no_secrets(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    async with DemoVncServer(password=PASSWORD) as vnc:
        vms = [vm_entry(VM, vncPort=vnc.port, consolePassword=PASSWORD)]
        simulator = await aiohttp_server(create_simulator_app(inventory(vms)), access_log=None)
        zstack = str(simulator.make_url("/zstack"))
        port = free_port()
        env = {"CONSOLE_PROXY_ZSTACK_URL": zstack, "CONSOLE_PROXY_TARGETS_ALLOW": "127.0.0.0/8"}
        # DEBUG: the most the process ever says, none of it may carry a secret.
        proxy = ServeProcess(port, ["--listen", f"127.0.0.1:{port}"], tmp_path, env, "DEBUG")
        async with proxy, aiohttp.ClientSession() as http:
            session = await zstack_login(http, zstack)
            async with http.post(
                f"{proxy.url}/api/v1/consoles",
                json={"vmUuid": VM},
                headers={"Authorization": f"OAuth {session}"},
            ) as answer:
                assert answer.status == 201
                token = (await answer.json())["token"]
            ws = await http.ws_connect(f"{proxy.url}/websockify?token={token}")
            stream = await greet_as_browser(ws)  # the proxy answered the VNC password itself
            await stream.write(bytes([1]))  # ClientInit
            width = int.from_bytes(await stream.read_exactly(2, 10), "big")
            assert width == 800  # the demo server's ServerInit came through
            opened = [e for e in audit_events(proxy.stderr) if e["event"] == "console.open"]
            await ws.close()
            deadline = time.monotonic() + 10
            while not any(e["event"] == "console.close" for e in audit_events(proxy.stderr)):
                assert time.monotonic() < deadline, proxy.stderr
                await asyncio.sleep(0.05)
        stderr = proxy.stderr

    events = audit_events(stderr)
    assert [e["event"] for e in events] == ["console.open", "console.close"]
    assert opened == events[:1]  # written when the console opened, not at its end
    open_event, close_event = events
    facts = {
        "console": open_event["console"],
        "vm": VM,
        "target": f"127.0.0.1:{vnc.port}",
        "client": "127.0.0.1",
        "protocol": "vnc",
        "account": {"uuid": ADMIN_UUID, "name": "admin"},
    }
    assert {k: open_event[k] for k in facts} == facts
    assert {k: close_event[k] for k in facts} == facts
    assert close_event["reason"] == "browser_closed"
    assert close_event["bytesToHost"] >= 1 and close_event["bytesToBrowser"] >= 24
    assert close_event["duration"] >= 0 and close_event["start"].endswith("Z")
    assert open_event["time"].endswith("Z")
    for secret in (token, session, PASSWORD):
        assert secret not in stderr
    # The process did log the upgrade (so "no secret" is not "no output").
    assert '"GET /websockify' in stderr


async def test_audit_events_to_a_file_hold_no_secrets(stack: StartStack, tmp_path: Path) -> None:
    sink = tmp_path / "audit.jsonl"
    p = await stack(audit={"sink": f"file:{sink}"})
    status, body = await p.mint()
    ws = await p.http.ws_connect(p.proxy.make_url(f"/websockify?token={body['token']}"))
    stream = await greet_as_browser(ws)
    await stream.write(b"abc")
    await stream.read_exactly(3, 5)
    await ws.close()
    await wait_until(lambda: sink.exists() and len(sink.read_text().splitlines()) == 2)
    opened, closed = (json.loads(line) for line in sink.read_text().splitlines())
    assert opened["event"] == "console.open" and closed["event"] == "console.close"
    assert closed["vm"] == VM and closed["target"] == f"127.0.0.1:{p.target.port}"
    assert closed["client"] == "127.0.0.1"
    assert closed["reason"] == "browser_closed"
    assert closed["bytesToHost"] >= 3 and closed["bytesToBrowser"] >= 3
    assert closed["duration"] >= 0 and closed["start"].endswith("Z")
    text = sink.read_text()
    assert body["token"] not in text and p.session not in text
