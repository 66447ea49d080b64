"""Real QEMU SPICE behind the real application.

The proxy is ``create_app(config)``; the ZStack API is the simulator with one SPICE VM whose
console address is a QEMU started by the test (with and without SPICE ticketing, the password set
over QMP). Tickets are minted through ``POST /api/v1/consoles``; every SPICE channel is its own
WebSocket on ``/websockify?token=...`` asking for the ``binary`` subprotocol, as spice-html5 opens
them, and the client side of each link carries a dummy ticket: the proxy puts the real one in.

QEMU 7.2 (spice-server 0.15.1) crashes when a display channel goes away within a moment of
linking, so no test closes one early. spice-server admits one client at a time unless
``SPICE_DEBUG_ALLOW_MC`` is set in its environment: the tests with two consoles of one VM set it.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestServer

from proxy.app import create_app
from proxy.closecodes import Close
from proxy.demo.simulator import Inventory, create_simulator_app
from tests.support.configs import make_config
from tests.support.metrics import sample_value
from tests.support.qemu import QemuVm
from tests.support.spice_client import (
    CURSOR,
    DISPLAY,
    INPUTS,
    LINK_BAD_CONNECTION_ID,
    LINK_OK,
    LINK_PERMISSION_DENIED,
    MAIN,
    MOTION_ACK_BUNCH,
    SPICE_MSG_INPUTS_INIT,
    SPICE_MSG_INPUTS_MOUSE_MOTION_ACK,
    SPICE_MSG_MAIN_INIT,
    Closed,
    RawSpiceClient,
    SpiceChannel,
    key_down,
    key_up,
    mouse_motion,
)
from tests.support.stack import zstack_login

pytestmark = pytest.mark.qemu

SPICE_VM = "5b1ce0c0de0000000000000000000c02"
ADMIN_PASSWORD = "password"
PASSWORD = "zs-Pa55word"
IDLE = 2.0
# Every wait for something the proxy or QEMU should do: generous, the machine is shared.
DEADLINE = 30.0
# spice-html5's channels of one console, in the order it opens them.
CHANNELS = (MAIN, DISPLAY, INPUTS, CURSOR)
SHIFT = 0x2A  # PC/AT scan code of the left Shift key: harmless on SeaBIOS's screen


@dataclass
class Console:
    """One console's channels (one ticket), linked and kept alive in the background."""

    token: str
    session_id: int
    channels: dict[int, SpiceChannel] = field(default_factory=dict)

    @property
    def all(self) -> list[SpiceChannel]:
        return list(self.channels.values())

    async def wait_closed(self, timeout: float = DEADLINE) -> list[Closed]:
        try:
            async with asyncio.timeout(timeout):
                return [await channel.wait_closed(timeout) for channel in self.all]
        except TimeoutError:
            still_open = [c.name for c in self.all if c.open]
            raise AssertionError(f"channels still open after {timeout:g} s: {still_open}") from None


@dataclass
class SpiceStack:
    """The simulated ZStack and the proxy in front of it, logged in as a portal would be."""

    proxy: TestServer
    zstack: TestServer
    http: aiohttp.ClientSession
    session: str = ""
    opened: list[SpiceChannel] = field(default_factory=list)

    async def login(self) -> None:
        zstack_url = str(self.zstack.make_url("/zstack"))
        self.session = await zstack_login(self.http, zstack_url, "admin", ADMIN_PASSWORD)

    async def mint(self) -> dict[str, Any]:
        async with self.http.post(
            self.proxy.make_url("/api/v1/consoles"),
            json={"vmUuid": SPICE_VM},
            headers={"Authorization": f"OAuth {self.session}"},
        ) as response:
            body: dict[str, Any] = await response.json()
            assert response.status == 201, body
        assert body["protocol"] == "spice"
        return body

    async def socket(self, token: str) -> RawSpiceClient:
        """One channel's WebSocket, opened as spice-html5 opens it."""
        url = self.proxy.make_url(f"/websockify?token={token}")
        ws = await self.http.ws_connect(url, protocols=("binary",))
        assert ws.protocol == "binary"  # Chromium drops the socket otherwise
        return RawSpiceClient(ws)

    async def link(self, token: str, channel_type: int, connection_id: int = 0) -> RawSpiceClient:
        client = await self.socket(token)
        assert await client.link(channel_type, connection_id=connection_id) == LINK_OK
        return client

    async def open_console(
        self, token: str, main: RawSpiceClient | None = None, *, silent_inputs: bool = False
    ) -> Console:
        """Link main (unless given linked), then display, inputs and cursor with main's session
        id; keep them alive.

        ``silent_inputs``: the inputs channel sends nothing after its link (no pongs either).
        """
        main = main or await self.link(token, MAIN)
        (session_id,) = struct.unpack_from("<I", await main.read_until(SPICE_MSG_MAIN_INIT))
        console = Console(token, session_id)
        console.channels[MAIN] = self.keep(main, MAIN)
        for channel_type in (DISPLAY, INPUTS, CURSOR):
            client = await self.link(token, channel_type, session_id)
            silent = silent_inputs and channel_type == INPUTS
            console.channels[channel_type] = self.keep(client, channel_type, silent)
        return console

    def keep(self, client: RawSpiceClient, channel_type: int, silent: bool = False) -> SpiceChannel:
        channel = SpiceChannel(client, channel_type, silent=silent).start()
        self.opened.append(channel)
        return channel

    async def closed_total(self, reason: str) -> float:
        async with self.http.get(self.proxy.make_url("/metrics")) as response:
            text = await response.text()
        return sample_value(text, "console_proxy_consoles_closed_total", reason=reason)

    async def wait_closed_total(self, reason: str, count: int) -> None:
        """Until /metrics counts ``count`` sockets closed for ``reason`` (the handler counts
        them a moment after the close frame went out)."""
        deadline = time.monotonic() + DEADLINE
        while (got := await self.closed_total(reason)) != count:
            assert got < count and time.monotonic() < deadline, f"{got} closed for {reason}"
            await asyncio.sleep(0.05)


StartStack = Callable[..., Any]


@pytest.fixture
async def start_stack(aiohttp_server: Any) -> AsyncIterator[StartStack]:
    stacks: list[SpiceStack] = []

    async def start(spice_port: int, password: str | None = None, **sections: Any) -> SpiceStack:
        vm: dict[str, Any] = {
            "uuid": SPICE_VM,
            "name": "qemu-spice",
            "state": "Running",
            "hostIp": "127.0.0.1",
            "protocol": "spice",
            "spicePort": spice_port,
            "owner": "admin",
        }
        if password is not None:
            vm["consolePassword"] = password
        inventory = Inventory.from_dict(
            {"accounts": [{"name": "admin", "password": ADMIN_PASSWORD}], "vms": [vm]}
        )
        zstack = await aiohttp_server(create_simulator_app(inventory), access_log=None)
        sections.setdefault("zstack", {})["url"] = str(zstack.make_url("/zstack"))
        proxy = await aiohttp_server(create_app(make_config(**sections)))
        stack = SpiceStack(proxy, zstack, aiohttp.ClientSession())
        stacks.append(stack)
        await stack.login()
        return stack

    yield start
    for stack in stacks:
        for channel in stack.opened:
            await channel.stop()
        await stack.http.close()


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        await asyncio.sleep(0.05)


def assert_closed_with(console: Console, reason: Close) -> None:
    got = {c.name: (c.closed.code, c.closed.reason) for c in console.all if c.closed is not None}
    assert got == {c.name: (reason.code, reason.reason) for c in console.all}


async def type_and_move(inputs: SpiceChannel) -> None:
    """What a person at the console does: a key pressed and released, the mouse moved."""
    await inputs.send(key_down(SHIFT) + key_up(SHIFT))
    await inputs.send(mouse_motion(3, 2))


# --- linking every channel ----------------------------------------------------------------


@pytest.mark.parametrize("ticketing", [False, True], ids=["no-password", "password"])
async def test_minted_ticket_links_every_channel_to_qemu(
    start_stack: StartStack, ticketing: bool
) -> None:
    async with QemuVm(spice=True, spice_ticketing=ticketing) as vm:
        password = PASSWORD if ticketing else None
        if password is not None:
            await vm.set_password(password, protocol="spice")
        assert vm.spice_port is not None
        # Five sockets per ticket here: main, display, inputs, cursor and one with a bad id.
        stack = await start_stack(vm.spice_port, password, tickets={"spice_channels": 5})
        body = await stack.mint()
        assert body["consoleUrl"].endswith(f"/console/spice#token={body['token']}")
        assert PASSWORD not in json.dumps(body)
        token = body["token"]

        # With ticketing, QEMU admits each channel only because the proxy put the password in
        # place of the dummy ticket the client sent.
        main = await stack.link(token, MAIN)
        (session_id,) = struct.unpack_from("<I", await main.read_until(SPICE_MSG_MAIN_INIT))
        display = await stack.link(token, DISPLAY, session_id)
        inputs = await stack.link(token, INPUTS, session_id)
        cursor = await stack.link(token, CURSOR, session_id)
        # Past the link, each stream is QEMU's own channel: the inputs channel greets with its
        # keyboard modifiers, and the display channel starts drawing.
        (modifiers,) = struct.unpack("<H", await inputs.read_until(SPICE_MSG_INPUTS_INIT))
        assert modifiers < 8
        channels = [stack.keep(c, t) for c, t in ((main, MAIN), (display, DISPLAY))]
        channels.append(stack.keep(cursor, CURSOR))
        await wait_until(lambda: channels[1].received > 1000, "the display channel draws")

        # A made-up session id reaches QEMU's channel code and is refused there.
        stray = await stack.socket(token)
        assert await stray.link(INPUTS, connection_id=session_id ^ 1) == LINK_BAD_CONNECTION_ID
        msg = await stray.ws.receive(timeout=10)
        assert (msg.type, msg.data) == (WSMsgType.CLOSE, Close.HOST_PROTOCOL.code)

        # The ticket admitted its five sockets and no more.
        late = await stack.socket(token)
        msg = await late.ws.receive(timeout=10)
        assert (msg.type, msg.data) == (WSMsgType.CLOSE, Close.TICKET_INVALID.code)
        assert all(c.open for c in channels)


@pytest.mark.parametrize(
    ("zstack_password", "close"),
    [("wrong-one", Close.AUTH_FAILED), (None, Close.PASSWORD_UNKNOWN)],
    ids=["wrong", "missing"],
)
async def test_qemu_refuses_a_wrong_or_missing_password(
    start_stack: StartStack, zstack_password: str | None, close: Close
) -> None:
    async with QemuVm(spice=True, spice_ticketing=True) as vm:
        await vm.set_password(PASSWORD, protocol="spice")
        assert vm.spice_port is not None
        stack = await start_stack(vm.spice_port, zstack_password)
        client = await stack.socket((await stack.mint())["token"])
        assert await client.link(MAIN) == LINK_PERMISSION_DENIED  # QEMU's answer, forwarded
        msg = await client.ws.receive(timeout=10)
        assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, close.code, close.reason)


# --- idle: only the inputs channel counts, and the console closes as one --------------------


async def test_silent_inputs_channel_closes_every_channel_while_the_display_streams(
    start_stack: StartStack,
) -> None:
    async with QemuVm(spice=True) as vm:
        assert vm.spice_port is not None
        stack = await start_stack(vm.spice_port, limits={"idle_timeout": IDLE})
        token = (await stack.mint())["token"]
        before_link = time.monotonic()
        console = await stack.open_console(token, silent_inputs=True)
        linked = time.monotonic()
        closed = await console.wait_closed()

        assert_closed_with(console, Close.IDLE)
        # Not before the inputs channel had been silent for the whole timeout...
        assert min(c.at for c in closed) - before_link >= IDLE
        # ... although the display channel kept receiving all along (QEMU redraws the blinking
        # text cursor): bytes to the browser are not input.
        display = console.channels[DISPLAY]
        assert display.last_received - linked >= IDLE / 2, "the display went quiet"
        assert console.channels[INPUTS].received > 0  # QEMU spoke; the browser did not
        await stack.wait_closed_total("idle", len(CHANNELS))


async def test_input_keeps_a_console_open_while_another_of_the_vm_idles_alone(
    start_stack: StartStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPICE_DEBUG_ALLOW_MC", "1")  # two SPICE clients of one VM at once
    async with QemuVm(spice=True) as vm:
        assert vm.spice_port is not None
        stack = await start_stack(vm.spice_port, limits={"idle_timeout": IDLE})
        busy = await stack.open_console((await stack.mint())["token"], silent_inputs=True)
        inputs = busy.channels[INPUTS]
        await type_and_move(inputs)
        idle = await stack.open_console((await stack.mint())["token"], silent_inputs=True)
        typing_since = time.monotonic()

        # Someone types on ``busy`` every quarter of the timeout, for three timeouts; ``idle``
        # (the other ticket) gets nothing on its inputs channel and closes alone meanwhile.
        motions = 1
        while time.monotonic() - typing_since < 3 * IDLE:
            await asyncio.sleep(IDLE / 4)
            assert all(c.open for c in busy.all), [(c.name, c.closed) for c in busy.all]
            await type_and_move(inputs)
            motions += 1
        last_input = time.monotonic()
        assert all(c.open for c in busy.all), [(c.name, c.closed) for c in busy.all]
        assert all(not c.open for c in idle.all), [(c.name, c.closed) for c in idle.all]
        assert_closed_with(idle, Close.IDLE)
        # QEMU took the input: it acknowledges every fourth mouse motion.
        await wait_until(
            lambda: (
                inputs.kinds.get(SPICE_MSG_INPUTS_MOUSE_MOTION_ACK, 0)
                >= motions // MOTION_ACK_BUNCH
            ),
            "QEMU acknowledges the mouse motions",
        )

        # Then nobody types: ``busy`` closes too, all its channels, a timeout after the input.
        closed = await busy.wait_closed()
        assert_closed_with(busy, Close.IDLE)
        assert min(c.at for c in closed) - last_input >= IDLE
        await stack.wait_closed_total("idle", 2 * len(CHANNELS))


# --- max_session: the first channel to reach it takes its console's other channels along ----


async def test_session_limit_on_one_channel_closes_its_console_not_another_of_the_vm(
    start_stack: StartStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPICE_DEBUG_ALLOW_MC", "1")
    max_session, head_start = 5.0, 2.5
    async with QemuVm(spice=True) as vm:
        assert vm.spice_port is not None
        # Two consoles of four channels each on one VM: room for them under max_per_vm.
        limits = {"max_session": max_session, "max_per_vm": 2 * len(CHANNELS)}
        stack = await start_stack(vm.spice_port, limits=limits)
        first, second = (await stack.mint())["token"], (await stack.mint())["token"]

        # ``first``'s main channel starts its clock a head start before everything else; then
        # all of ``second``, then the rest of ``first``.
        first_main = await stack.link(first, MAIN)
        await asyncio.sleep(head_start)
        second_started = time.monotonic()
        other = await stack.open_console(second)
        console = await stack.open_console(first, first_main)

        closed = await console.wait_closed()
        assert_closed_with(console, Close.SESSION_LIMIT)
        # ``first``'s display, inputs and cursor closed with its main channel, not at their own
        # limit: ``second``'s channels, whose clocks started before theirs, were all still open.
        first_gone = max(c.at for c in closed)
        assert all(c.closed is None or c.closed.at > first_gone for c in other.all), [
            (c.name, c.closed, first_gone) for c in other.all
        ]

        # ``second`` then reaches its own limit.
        later = await other.wait_closed()
        assert_closed_with(other, Close.SESSION_LIMIT)
        assert min(c.at for c in later) - second_started >= max_session
        await stack.wait_closed_total("session_limit", 2 * len(CHANNELS))


# --- max_per_vm -----------------------------------------------------------------------------


async def test_max_per_vm_counts_a_spice_console_once(start_stack: StartStack) -> None:
    async with QemuVm(spice=True) as vm:
        assert vm.spice_port is not None
        stack = await start_stack(vm.spice_port, limits={"max_per_vm": 1})
        console = await stack.open_console((await stack.mint())["token"])
        await wait_until(lambda: console.channels[DISPLAY].received > 1000, "the display draws")
        assert all(c.open for c in console.all)
        # A second console of the VM is one too many.
        client = await stack.socket((await stack.mint())["token"])
        msg = await client.ws.receive(timeout=10)
        expected = (WSMsgType.CLOSE, Close.TOO_MANY_FOR_VM.code, Close.TOO_MANY_FOR_VM.reason)
        assert (msg.type, msg.data, msg.extra) == expected
