"""README "Running it": ``console-proxy serve --config FILE`` and ``--zstack-url URL`` on a real
process, which then serves a mint against the simulated ZStack (and a console); flags win over
the file; a bad key stops the start with a message naming it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from proxy.demo.simulator import create_simulator_app
from tests.support.net import TcpTarget, free_port, rfb_echo
from tests.support.rfb_client import greet_as_browser
from tests.support.serve_process import ServeProcess
from tests.support.stack import (
    VM,
    AiohttpServer,
    inventory,
    request_console,
    vm_entry,
    zstack_login,
)


def write_config(path: Path, port: int, zstack: str) -> Path:
    path.write_text(
        "[server]\n"
        f'listen = "127.0.0.1:{port}"\n'
        "[zstack]\n"
        f'url = "{zstack}"\n'
        "timeout = 3\n"
        "[targets]\n"
        'allow = ["127.0.0.0/8"]\n'
        "[audit]\n"
        'sink = ""\n'
    )
    return path


async def simulated_zstack(aiohttp_server: AiohttpServer, tcp_target: Any) -> tuple[str, TcpTarget]:
    target: TcpTarget = await tcp_target(rfb_echo)
    simulator = await aiohttp_server(
        create_simulator_app(inventory([vm_entry(VM, vncPort=target.port)])), access_log=None
    )
    return str(simulator.make_url("/zstack")), target


async def mint(http: aiohttp.ClientSession, base: str, session: str) -> tuple[int, Any]:
    return await request_console(http, f"{base}/api/v1/consoles", session, {"vmUuid": VM})


async def test_serve_with_only_a_config_file_listens_where_it_says_and_mints(
    aiohttp_server: AiohttpServer, tcp_target: Any, tmp_path: Path
) -> None:
    zstack, target = await simulated_zstack(aiohttp_server, tcp_target)
    port = free_port()
    config = write_config(tmp_path / "config.toml", port, zstack)
    async with (
        ServeProcess(port, ["--config", str(config)], tmp_path),
        aiohttp.ClientSession() as http,
    ):
        status, body = await request_console(
            http,
            f"http://127.0.0.1:{port}/api/v1/consoles",
            await zstack_login(http, zstack),
            {"vmUuid": VM},
        )
        assert status == 201, body
        assert body["consoleUrl"].startswith(f"http://127.0.0.1:{port}/console/vnc#token=")
        ws = await http.ws_connect(f"http://127.0.0.1:{port}/websockify?token={body['token']}")
        stream = await greet_as_browser(ws)
        await stream.write(b"cli")
        assert await stream.read_exactly(3, 5) == b"cli"
        await ws.close()
    assert target.connections == 1


async def test_zstack_url_flag_wins_over_the_config_file(
    aiohttp_server: AiohttpServer, tcp_target: Any, tmp_path: Path
) -> None:
    zstack, _ = await simulated_zstack(aiohttp_server, tcp_target)
    nowhere = f"http://127.0.0.1:{free_port()}/zstack"  # nothing listens there
    async with aiohttp.ClientSession() as http:
        session = await zstack_login(http, zstack)
        # The file alone points at the dead ZStack: the mint fails...
        port = free_port()
        config = write_config(tmp_path / "file-only.toml", port, nowhere)
        async with ServeProcess(port, ["--config", str(config)], tmp_path):
            status, body = await mint(http, f"http://127.0.0.1:{port}", session)
        assert status == 502 and body["error"]["code"] == "ZSTACK.UNREACHABLE", body
        # ...and --zstack-url on the command line replaces it.
        port = free_port()
        config = write_config(tmp_path / "flag.toml", port, nowhere)
        args = ["--config", str(config), "--zstack-url", zstack]
        async with ServeProcess(port, args, tmp_path):
            status, body = await mint(http, f"http://127.0.0.1:{port}", session)
        assert status == 201, body


async def test_zstack_url_and_listen_flags_without_a_config_file(
    aiohttp_server: AiohttpServer, tcp_target: Any, tmp_path: Path
) -> None:
    zstack, _ = await simulated_zstack(aiohttp_server, tcp_target)
    port = free_port()
    args = ["--listen", f"127.0.0.1:{port}", "--zstack-url", zstack]
    env = {"CONSOLE_PROXY_TARGETS_ALLOW": "127.0.0.0/8"}
    async with ServeProcess(port, args, tmp_path, env), aiohttp.ClientSession() as http:
        status, body = await request_console(
            http,
            f"http://127.0.0.1:{port}/api/v1/consoles",
            await zstack_login(http, zstack),
            {"vmUuid": VM},
        )
    assert status == 201, body


async def test_a_bad_value_in_the_config_file_stops_the_start_naming_the_key(
    tmp_path: Path,
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[limits]\nidle_timeout = 0\n")
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "limits.idle_timeout" in done.stderr


async def test_serve_starts_beside_kubernetes_service_variables(
    aiohttp_server: AiohttpServer, tcp_target: Any, tmp_path: Path
) -> None:
    """A Service named console-proxy makes Kubernetes inject CONSOLE_PROXY_PORT and friends."""
    zstack, _ = await simulated_zstack(aiohttp_server, tcp_target)
    port = free_port()
    config = write_config(tmp_path / "config.toml", port, zstack)
    injected = {
        "CONSOLE_PROXY_PORT": "tcp://10.96.0.10:6080",
        "CONSOLE_PROXY_PORT_6080_TCP": "tcp://10.96.0.10:6080",
        "CONSOLE_PROXY_PORT_6080_TCP_PROTO": "tcp",
        "CONSOLE_PROXY_PORT_6080_TCP_PORT": "6080",
        "CONSOLE_PROXY_PORT_6080_TCP_ADDR": "10.96.0.10",
        "CONSOLE_PROXY_SERVICE_HOST": "10.96.0.10",
        "CONSOLE_PROXY_SERVICE_PORT": "6080",
        "CONSOLE_PROXY_SERVICE_PORT_HTTP": "6080",
    }
    async with (
        ServeProcess(port, ["--config", str(config)], tmp_path, env=injected) as proxy,
        aiohttp.ClientSession() as http,
    ):
        status, body = await request_console(
            http,
            f"http://127.0.0.1:{port}/api/v1/consoles",
            await zstack_login(http, zstack),
            {"vmUuid": VM},
        )
        assert status == 201, body
    warnings = [line for line in proxy.stderr.splitlines() if "unknown environment" in line]
    assert len(warnings) == 1 and all(name in warnings[0] for name in injected)
    # A bad value of a known key still stops the start, naming the key.
    bad = {**injected, "CONSOLE_PROXY_LIMITS_IDLE_TIMEOUT": "forever"}
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config)],
        env={**ServeProcess(port, [], tmp_path).env, **bad},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "limits.idle_timeout" in result.stderr


async def test_missing_files_named_by_the_config_stop_the_start_naming_the_key(
    tmp_path: Path,
) -> None:
    cases = {
        "tls.ca_file": {"CONSOLE_PROXY_TLS_CA_FILE": str(tmp_path / "no-ca.pem")},
        "audit.sink": {"CONSOLE_PROXY_AUDIT_SINK": f"file:{tmp_path / 'no-dir' / 'audit.jsonl'}"},
        "tickets.token_plugin": {
            "CONSOLE_PROXY_TICKETS_TOKEN_PLUGIN": "no_such_module.Plugin",
            "CONSOLE_PROXY_TICKETS_TOKEN_SOURCE": "x",
        },
    }
    for key, env in cases.items():
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "proxy.cli", "serve", "--listen", f"127.0.0.1:{free_port()}"],
            env={**ServeProcess(0, [], tmp_path).env, **env},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2, (key, result.stderr)
        assert key in result.stderr and "Traceback" not in result.stderr, result.stderr
