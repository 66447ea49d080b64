"""TLS to hypervisors through the whole app: mint via the simulator, WebSocket, real QEMU."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from proxy.app import create_app
from proxy.demo.simulator import Inventory, create_simulator_app
from tests.support.certs import Pki
from tests.support.configs import make_config
from tests.support.qemu import QemuVm
from tests.support.rfb_client import greet_as_browser
from tests.support.spice_client import bare_link_mess
from tests.support.stack import zstack_login

VM = "abcdefabcdefabcdefabcdefabcdef01"
pytestmark = pytest.mark.qemu


class Stack:
    def __init__(self, proxy: Any, simulator: Any, http: aiohttp.ClientSession) -> None:
        self.proxy, self.simulator, self.http = proxy, simulator, http

    async def mint(self, protocol: str | None = None) -> tuple[int, Any]:
        zstack_url = str(self.simulator.make_url("/zstack"))
        session = await zstack_login(self.http, zstack_url, "admin", "pw")
        request = {"vmUuid": VM, **({"protocol": protocol} if protocol else {})}
        async with self.http.post(
            self.proxy.make_url("/api/v1/consoles"),
            json=request,
            headers={"Authorization": f"OAuth {session}"},
        ) as r:
            return r.status, await r.json()

    async def open(self, token: str) -> aiohttp.ClientWebSocketResponse:
        return await self.http.ws_connect(self.proxy.make_url(f"/websockify?token={token}"))


@pytest.fixture
async def stack(aiohttp_server: Any) -> AsyncIterator[Any]:
    sessions: list[aiohttp.ClientSession] = []

    async def start(vm: dict[str, Any], tls: dict[str, Any]) -> Stack:
        inventory = Inventory.from_dict(
            {
                "accounts": [{"name": "admin", "password": "pw"}],
                "vms": [
                    {
                        "uuid": VM,
                        "name": "tls",
                        "state": "Running",
                        "hostIp": "127.0.0.1",
                        "owner": "admin",
                        **vm,
                    }
                ],
            }
        )
        simulator = await aiohttp_server(create_simulator_app(inventory), access_log=None)
        config = make_config(zstack={"url": str(simulator.make_url("/zstack"))}, tls=tls)
        proxy = await aiohttp_server(create_app(config))
        sessions.append(aiohttp.ClientSession())
        return Stack(proxy, simulator, sessions[-1])

    yield start
    for http in sessions:
        await http.close()


async def test_vnc_over_vencrypt_through_the_proxy(stack: Any, pki: Pki) -> None:
    async with QemuVm(vnc_x509_dir=pki.dir, vnc_password=True) as vm:
        await vm.set_password("s3cret")
        s = await stack(
            {"protocol": "vnc", "vncPort": vm.vnc_port, "consolePassword": "s3cret"},
            {"ca_file": str(pki.ca_cert)},
        )
        status, body = await s.mint()
        assert status == 201
        ws = await s.open(body["token"])
        stream = await greet_as_browser(ws)  # the browser sees None; TLS and auth are ours
        await stream.write(bytes([1]))
        width = int.from_bytes(await stream.read_exactly(2, 10), "big")
        height = int.from_bytes(await stream.read_exactly(2, 10), "big")
        assert (width, height) in ((720, 400), (640, 480))
        await ws.close()


async def test_vencrypt_with_an_untrusted_ca_closes_clearly(stack: Any, pki: Pki) -> None:
    async with QemuVm(vnc_x509_dir=pki.dir) as vm:
        s = await stack(
            {"protocol": "vnc", "vncPort": vm.vnc_port}, {"ca_file": str(pki.other_ca_cert)}
        )
        _, body = await s.mint()
        ws = await s.open(body["token"])
        msg = await ws.receive(timeout=10)
        assert msg.type is WSMsgType.CLOSE and msg.data == 4515
        assert "certificate" in msg.extra
        await ws.close()


async def test_spice_tls_port_is_used_when_tls_is_configured(stack: Any, pki: Pki) -> None:
    async with QemuVm(spice_x509_dir=pki.dir) as vm:
        port = vm.spice_tls_port
        assert port is not None
        vm_entry = {"protocol": "spice", "spicePort": 1, "spiceTlsPort": port}
        s = await stack(vm_entry, {"ca_file": str(pki.ca_cert)})
        status, body = await s.mint()
        assert status == 201 and body["protocol"] == "spice"
        ws = await s.open(body["token"])
        await ws.send_bytes(bare_link_mess())
        msg = await ws.receive(timeout=10)
        assert msg.type is WSMsgType.BINARY and msg.data[:4] == b"REDQ"
        await ws.close()


async def test_spice_tls_only_without_tls_configured_is_refused_at_mint(
    stack: Any, pki: Pki
) -> None:
    s = await stack({"protocol": "spice", "spiceTlsPort": 5999}, {})
    status, body = await s.mint()
    assert status == 409 and body["error"]["code"] == "CONSOLE.TLS_NOT_CONFIGURED"
