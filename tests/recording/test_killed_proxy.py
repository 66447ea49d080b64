"""A ``console-proxy serve`` process killed with SIGKILL mid-console leaves a recording that is
listed (incomplete, no digest) and plays up to its last complete record."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp

from proxy.demo.simulator import create_simulator_app
from proxy.recording.store import RecordingStore
from tests.recording.support import (
    FULL_REQUEST,
    FULL_UPDATE,
    SERVER_INIT,
    recordings_in,
    to_browser,
)
from tests.support.net import free_port
from tests.support.recording_vnc import RecordingVncServer
from tests.support.rfb_client import greet_as_browser
from tests.support.serve_process import ServeProcess
from tests.support.stack import VM, inventory, standard_vms, zstack_login


async def test_kill_9_leaves_a_playable_recording(
    aiohttp_server: Any, vnc_server: RecordingVncServer, tmp_path: Path
) -> None:
    simulator = await aiohttp_server(create_simulator_app(inventory(standard_vms(vnc_server.port))))
    zstack = str(simulator.make_url("/zstack"))
    directory = tmp_path / "recordings"
    port = free_port()
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\n[zstack]\nurl = "{zstack}"\n'
        '[targets]\nallow = ["127.0.0.0/8"]\n[audit]\nsink = ""\n'
        f'[recording]\ndir = "{directory}"\nkeyframe_interval = 0\n'
    )
    proxy = ServeProcess(port, ["--config", str(config)], tmp_path)
    proxy.start()
    try:
        await proxy.wait_healthy()
        async with aiohttp.ClientSession() as http:
            session = await zstack_login(http, zstack, "admin", "password")
            async with http.post(
                f"{proxy.url}/api/v1/consoles",
                json={"vmUuid": VM},
                headers={"Authorization": f"OAuth {session}"},
            ) as r:
                token = (await r.json())["token"]
            ws = await http.ws_connect(f"{proxy.url}/websockify?token={token}")
            stream = await greet_as_browser(ws)
            await stream.write(b"\x01")
            received = await stream.read_exactly(SERVER_INIT, 10)
            for _ in range(3):
                await stream.write(FULL_REQUEST)
                received += await stream.read_exactly(FULL_UPDATE, 10)
            await asyncio.sleep(0.5)  # the writer thread is not the event loop: let it write
            proxy.send(signal.SIGKILL)
            assert await proxy.wait_exit(10) == -signal.SIGKILL
            await ws.close()
    finally:
        await proxy.stop()
    [path] = recordings_in(directory)
    assert to_browser(path) == received
    store = RecordingStore(directory)
    [listed] = store.listing()
    assert listed["id"] == path.stem and listed["complete"] is False and listed["sha256"] is None
    assert listed["bytes"] == path.stat().st_size and listed["playable"] is True
    check = store.verify(path.stem)
    assert check is not None and check.matches is None and check.records >= 4
