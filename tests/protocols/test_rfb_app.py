"""The whole path against real QEMU: portal -> mint -> WebSocket -> proxy -> QEMU's VNC server.

The ZStack API is the simulator (proxy/demo/simulator.py) with one VM whose console address is
the QEMU started by the test. QEMU has no disk, so once SeaBIOS has drawn it shows "No bootable
device." in 720x400 text mode under the desktop name "QEMU".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestServer

from proxy.app import create_app
from proxy.demo.simulator import Inventory, create_simulator_app
from tests.support.configs import make_config, write_token_file
from tests.support.qemu import QemuVm
from tests.support.rfb_client import (
    SECURITY_NONE,
    RfbClient,
    ServerInit,
)
from tests.support.stack import zstack_login

pytestmark = pytest.mark.qemu

VM_UUID = "5eab10500000000000000000000000a1"
ADMIN_PASSWORD = "password"
SCREEN = (720, 400)
DRAW_TIMEOUT = 10.0


@pytest.fixture
async def vm() -> AsyncIterator[QemuVm]:
    async with QemuVm() as running:
        # Connect only after SeaBIOS switched to text mode: ServerInit reports the size then.
        await running.wait_for_screen(*SCREEN)
        yield running


@dataclass
class Stack:
    """The simulated ZStack and the proxy in front of it, plus a client session for both."""

    proxy: TestServer
    zstack: TestServer
    http: aiohttp.ClientSession
    session: str = ""

    async def login(self) -> None:
        zstack_url = str(self.zstack.make_url("/zstack"))
        self.session = await zstack_login(self.http, zstack_url, "admin", ADMIN_PASSWORD)

    async def mint(self, vm_uuid: str = VM_UUID) -> tuple[int, dict[str, Any]]:
        async with self.http.post(
            self.proxy.make_url("/api/v1/consoles"),
            json={"vmUuid": vm_uuid},
            headers={"Authorization": f"OAuth {self.session}"},
        ) as response:
            return response.status, await response.json()

    async def token(self) -> str:
        status, body = await self.mint()
        assert status == 201, body
        token: str = body["token"]
        return token

    async def open_console(self, token: str) -> aiohttp.ClientWebSocketResponse:
        url = self.proxy.make_url(f"/websockify?token={token}")
        return await self.http.ws_connect(url, protocols=("binary",))


StartStack = Callable[..., Any]


@pytest.fixture
async def start_stack(aiohttp_server: Any) -> AsyncIterator[StartStack]:
    sessions: list[aiohttp.ClientSession] = []

    async def start(
        vnc_port: int, host_ip: str = "127.0.0.1", password: str | None = None, **sections: Any
    ) -> Stack:
        extra = {"consolePassword": password} if password is not None else {}
        inventory = Inventory.from_dict(
            {
                "accounts": [{"name": "admin", "password": ADMIN_PASSWORD}],
                "vms": [
                    {
                        "uuid": VM_UUID,
                        "name": "qemu",
                        "state": "Running",
                        "hostIp": host_ip,
                        "protocol": "vnc",
                        "vncPort": vnc_port,
                        "owner": "admin",
                        **extra,
                    }
                ],
            }
        )
        zstack = await aiohttp_server(create_simulator_app(inventory))
        sections.setdefault("zstack", {})["url"] = str(zstack.make_url("/zstack"))
        proxy = await aiohttp_server(create_app(make_config(**sections)))
        http = aiohttp.ClientSession()
        sessions.append(http)
        stack = Stack(proxy, zstack, http)
        await stack.login()
        return stack

    yield start
    for http in sessions:
        await http.close()


def assert_qemu_init(init: ServerInit) -> None:
    assert init.name == "QEMU"
    assert (init.width, init.height) == SCREEN
    assert init.pixel_format.true_colour and init.pixel_format.bits_per_pixel == 32


async def wait_for_drawn_screen(client: RfbClient) -> int:
    """Ask for whole screens until one has more than one colour; return that colour count."""
    assert client.server_init is not None
    bytes_per_pixel = client.server_init.pixel_format.bytes_per_pixel
    await client.set_encodings()
    deadline = time.monotonic() + DRAW_TIMEOUT
    while True:
        await client.request_update(incremental=False)
        rectangles = await client.read_framebuffer_update()
        colours: set[bytes] = set()
        for rectangle in rectangles:
            colours |= rectangle.colours(bytes_per_pixel)
        if len(colours) > 1:
            assert sum(r.width * r.height for r in rectangles) == SCREEN[0] * SCREEN[1]
            return len(colours)
        assert time.monotonic() < deadline, f"screen still uniform after {DRAW_TIMEOUT:g} s"
        await asyncio.sleep(0.1)


async def wait_for_clients(vm: QemuVm, count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while len(await vm.vnc_clients()) != count:
        assert time.monotonic() < deadline, f"QEMU has {await vm.vnc_clients()}, wanted {count}"
        await asyncio.sleep(0.05)


async def test_minted_ticket_reaches_qemu_server_init_and_pixels(
    vm: QemuVm, start_stack: StartStack
) -> None:
    stack = await start_stack(vm.vnc_port)
    status, body = await stack.mint()
    assert status == 201, body
    assert body["protocol"] == "vnc"
    assert body["consoleUrl"].endswith(f"/console/vnc#token={body['token']}")
    ws = await stack.open_console(body["token"])
    assert ws.protocol == "binary"
    client = RfbClient.over_websocket(ws)
    assert await client.exchange_versions() == b"RFB 003.008\n"
    assert await client.read_security_types() == [SECURITY_NONE]
    await client.choose_security(SECURITY_NONE)
    assert await client.read_security_result() == (True, "")
    assert_qemu_init(await client.client_init())
    assert await wait_for_drawn_screen(client) > 1
    await client.close()
    await wait_for_clients(vm, 0)


async def test_replayed_token_is_refused_and_qemu_sees_one_connection(
    vm: QemuVm, start_stack: StartStack
) -> None:
    stack = await start_stack(vm.vnc_port)
    token = await stack.token()
    first = RfbClient.over_websocket(await stack.open_console(token))
    assert_qemu_init(await first.handshake())
    replay = await stack.open_console(token)
    msg = await replay.receive(timeout=5)
    assert msg.type is WSMsgType.CLOSE and msg.data == 4401, msg
    assert "ticket" in msg.extra
    await replay.close()
    assert len(await vm.vnc_clients()) == 1
    assert await vm.vnc_connections() == 1
    await first.close()
    await wait_for_clients(vm, 0)


async def test_target_outside_allow_is_refused_at_mint_and_never_dialled(
    vm: QemuVm, start_stack: StartStack
) -> None:
    stack = await start_stack(vm.vnc_port, targets={"allow": ["10.0.0.0/8", "127.0.0.1/32:1-1"]})
    status, body = await stack.mint()
    assert status == 403, body
    assert body["error"]["code"] == "TARGET.FORBIDDEN"
    assert f"127.0.0.1:{vm.vnc_port}" in body["error"]["details"]
    assert "token" not in body
    assert await vm.vnc_connections() == 0


async def test_static_token_file_reaches_qemu_server_init(
    vm: QemuVm, start_stack: StartStack, tmp_path: Path
) -> None:
    tokens = write_token_file(tmp_path / "tokens", {"qemu-vm": (vm.host, vm.vnc_port)})
    stack = await start_stack(vm.vnc_port, tickets={"token_file": str(tokens)})
    for _ in range(2):  # static tokens are reusable, as in websockify
        client = RfbClient.over_websocket(await stack.open_console("qemu-vm"))
        assert_qemu_init(await client.handshake())
        await client.close()
    assert await vm.vnc_connections() == 2


async def test_console_password_stays_in_the_proxy(start_stack: StartStack) -> None:
    async with QemuVm(vnc_password=True) as vm:
        await vm.set_password("s3cret")
        await vm.wait_for_screen(*SCREEN)
        stack = await start_stack(vm.vnc_port, password="s3cret")
        status, body = await stack.mint()
        assert status == 201 and "s3cret" not in json.dumps(body)

        # QEMU asks for VNC Authentication; the browser is offered None only and gets in.
        client = RfbClient.over_websocket(await stack.open_console(body["token"]))
        await client.exchange_versions()
        assert await client.read_security_types() == [SECURITY_NONE]
        await client.authenticate(None)
        assert_qemu_init(await client.client_init())
        assert await wait_for_drawn_screen(client) > 1
        await client.close()


async def test_wrong_console_password_gives_a_clear_close(start_stack: StartStack) -> None:
    async with QemuVm(vnc_password=True) as vm:
        await vm.set_password("s3cret")
        stack = await start_stack(vm.vnc_port, password="wrong-one")
        ws = await stack.open_console(await stack.token())
        msg = await ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 4511
        assert msg.extra == "console password rejected by the hypervisor"
        await ws.close()


async def test_password_required_but_unknown_is_refused_clearly(start_stack: StartStack) -> None:
    async with QemuVm(vnc_password=True) as vm:
        await vm.set_password("s3cret")
        stack = await start_stack(vm.vnc_port)
        ws = await stack.open_console(await stack.token())
        msg = await ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 4513
        assert "did not provide" in msg.extra
        await ws.close()


async def test_launcher_runs_vms_in_parallel_and_kills_them() -> None:
    async with contextlib.AsyncExitStack() as stack:
        vms = await asyncio.gather(*(stack.enter_async_context(QemuVm()) for _ in range(3)))
        assert len({vm.vnc_port for vm in vms}) == 3
        pids = [vm.pid for vm in vms]
        for vm in vms:
            reader, writer = await asyncio.open_connection(vm.host, vm.vnc_port)
            assert await asyncio.wait_for(reader.readexactly(12), 5) == b"RFB 003.008\n"
            writer.close()
            await writer.wait_closed()
    for pid in pids:
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
