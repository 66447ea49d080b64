"""A proxy with recording on, the ZStack simulator and a small VNC server, for the recording
tests; and what they read back from the recordings directory."""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy.app import create_app
from proxy.demo.simulator import create_simulator_app
from proxy.recording.format import Kind, Record, read_records
from tests.support.configs import make_config
from tests.support.recording_vnc import HEIGHT, WIDTH, RecordingVncServer
from tests.support.rfb_client import ByteStream, greet_as_browser
from tests.support.stack import VM, inventory, standard_vms, zstack_login

TOKEN = "recording-admin-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
SERVER_INIT = 24 + len(b"recorder")
FULL_UPDATE = 4 + 12 + WIDTH * HEIGHT * 4


class Proxy:
    def __init__(self, server: TestServer, simulator: TestServer, directory: Path) -> None:
        self.server = server
        self.simulator = simulator
        self.dir = directory
        self.http = aiohttp.ClientSession()

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def token(self, vm: str = VM) -> str:
        session = await zstack_login(
            self.http, str(self.simulator.make_url("/zstack")), "admin", "password"
        )
        async with self.http.post(
            self.url("/api/v1/consoles"),
            json={"vmUuid": vm},
            headers={"Authorization": f"OAuth {session}"},
        ) as r:
            assert r.status == 201, await r.text()
            return str((await r.json())["token"])

    async def open(self) -> tuple[aiohttp.ClientWebSocketResponse, ByteStream, bytes]:
        """A console through the proxy, up to and including its ServerInit."""
        ws = await self.http.ws_connect(self.url(f"/websockify?token={await self.token()}"))
        stream = await greet_as_browser(ws)
        await stream.write(b"\x01")  # ClientInit, shared
        server_init = await stream.read_exactly(SERVER_INIT, 5)
        return ws, stream, server_init

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        kwargs.setdefault("headers", BEARER)
        async with self.http.get(self.url(path), **kwargs) as r:
            body = await r.read()
            if r.content_type == "application/json":
                return r.status, json.loads(body)
            return r.status, body

    async def ready(self) -> tuple[int, Any]:
        return await self.get("/readyz", headers={})


StartProxy = Callable[..., Awaitable[Proxy]]


@pytest.fixture
async def vnc_server() -> AsyncIterator[RecordingVncServer]:
    server = await RecordingVncServer().start()
    yield server
    await server.close()


@pytest.fixture
async def recording_proxy(
    aiohttp_server: Any, vnc_server: RecordingVncServer, tmp_path: Path
) -> AsyncIterator[StartProxy]:
    """``await recording_proxy(**recording_keys)``: a started proxy recording into tmp_path."""
    made: list[Proxy] = []

    async def start(**recording: Any) -> Proxy:
        directory = Path(recording.setdefault("dir", str(tmp_path / "recordings")))
        simulator = await aiohttp_server(
            create_simulator_app(inventory(standard_vms(vnc_server.port))), access_log=None
        )
        config = make_config(
            zstack={"url": str(simulator.make_url("/zstack"))},
            server={"admin_token": TOKEN},
            audit={"sink": f"file:{tmp_path / 'audit.jsonl'}"},
            recording=recording,
        )
        made.append(Proxy(await aiohttp_server(create_app(config)), simulator, directory))
        return made[-1]

    yield start
    for proxy in made:
        await proxy.http.close()


def recordings_in(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.rec"))


def metadata(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.with_suffix(".json").read_text()))


def records(path: Path) -> list[Record]:
    return read_records(path.read_bytes())[0]


def to_browser(path: Path) -> bytes:
    return b"".join(r.data for r in records(path) if r.kind is Kind.TO_BROWSER)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def audit_lines(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


# FramebufferUpdateRequest for the whole screen, not incremental.
FULL_REQUEST = struct.pack(">BBHHHH", 3, 0, 0, 0, WIDTH, HEIGHT)
