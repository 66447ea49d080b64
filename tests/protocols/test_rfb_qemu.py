"""The upstream RFB handshake (proxy/rfb.py via proxy/rfb_driver.py) against real QEMU.

QEMU offers RFB 3.8 and also accepts 3.3 and 3.7 answers, so ``max_version`` makes the proxy
speak each of the three, with VNC Authentication (``password=on``) and with None.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from proxy.protocols.rfb.driver import authenticate_upstream
from proxy.protocols.rfb.events import (
    AuthenticationFailed,
    RemoteProtocolError,
    RfbVersion,
    SecurityComplete,
    SecurityType,
)
from tests.support.qemu import QemuVm
from tests.support.rfb_client import RfbClient, TcpStream

pytestmark = pytest.mark.qemu

PASSWORD = "s3cret!"
SCREEN = (720, 400)
TIMEOUT = 5.0
VERSIONS = [RfbVersion.V3_3, RfbVersion.V3_7, RfbVersion.V3_8]


@contextlib.asynccontextmanager
async def connect(vm: QemuVm) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection(vm.host, vm.vnc_port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)


async def server_init(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, trailing: bytes
) -> tuple[int, int, str]:
    """Send a shared ClientInit (§7.3.1), read ServerInit (§7.3.2): (width, height, name)."""
    assert trailing == b""
    init = await RfbClient(TcpStream(reader, writer), TIMEOUT).client_init()
    return init.width, init.height, init.name


@pytest.fixture
async def locked_vm() -> AsyncIterator[QemuVm]:
    async with QemuVm(vnc_password=True) as vm:
        await vm.set_password(PASSWORD)
        await vm.wait_for_screen(*SCREEN)
        yield vm


@pytest.fixture
async def open_vm() -> AsyncIterator[QemuVm]:
    async with QemuVm() as vm:
        await vm.wait_for_screen(*SCREEN)
        yield vm


@pytest.mark.parametrize("version", VERSIONS, ids=str)
async def test_vnc_auth_with_the_right_password_reaches_server_init(
    locked_vm: QemuVm, version: RfbVersion
) -> None:
    async with connect(locked_vm) as (reader, writer):
        event, trailing = await authenticate_upstream(
            reader, writer, PASSWORD, TIMEOUT, max_version=version
        )
        assert event == SecurityComplete(version, SecurityType.VNC_AUTH)
        assert await server_init(reader, writer, trailing) == (*SCREEN, "QEMU")


@pytest.mark.parametrize("version", VERSIONS, ids=str)
async def test_vnc_auth_with_a_wrong_password_fails(locked_vm: QemuVm, version: RfbVersion) -> None:
    async with connect(locked_vm) as (reader, writer):
        with pytest.raises(AuthenticationFailed) as caught:
            await authenticate_upstream(reader, writer, "wrong", TIMEOUT, max_version=version)
    if version is RfbVersion.V3_8:
        assert caught.value.reason == caught.value.server_reason == "Authentication failed"
    else:  # §7.1.3: no reason string before 3.8
        assert caught.value.server_reason is None
        assert caught.value.reason == "the VNC server rejected the console password"


@pytest.mark.parametrize("version", VERSIONS, ids=str)
async def test_vnc_auth_without_a_password_is_refused_by_the_proxy(
    locked_vm: QemuVm, version: RfbVersion
) -> None:
    async with connect(locked_vm) as (reader, writer):
        with pytest.raises(RemoteProtocolError) as caught:
            await authenticate_upstream(reader, writer, None, TIMEOUT, max_version=version)
    assert caught.value.reason == "the VNC server requires a password the proxy does not have"


@pytest.mark.parametrize("password", [None, PASSWORD], ids=["no-password", "password-unused"])
@pytest.mark.parametrize("version", VERSIONS, ids=str)
async def test_security_none_reaches_server_init(
    open_vm: QemuVm, version: RfbVersion, password: str | None
) -> None:
    async with connect(open_vm) as (reader, writer):
        event, trailing = await authenticate_upstream(
            reader, writer, password, TIMEOUT, max_version=version
        )
        assert event == SecurityComplete(version, SecurityType.NONE)
        assert await server_init(reader, writer, trailing) == (*SCREEN, "QEMU")
