"""A real QEMU SPICE console recorded through the proxy: one recording per channel socket, each
listed as SPICE (not playable in the browser) with its channel's name, holding exactly the bytes
that channel carried to the browser after its link, with a SHA-256 that matches the file.

Real components: QEMU (SPICE) and the proxy app; only ZStack is the simulator. The browser's
side is the raw SPICE client of tests/support/spice_client.py (links with a dummy ticket, then
acknowledges and answers pings like spice-html5), then spice-html5 itself in Chromium.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from proxy.app import create_app
from proxy.demo.simulator import create_simulator_app
from proxy.recording.format import Kind
from tests.recording.support import BEARER, TOKEN, metadata, recordings_in, records
from tests.support.browser import (
    SPICE_VM,
    ConsoleStack,
    StartConsoleStack,
    spice_inventory,
    wait_drawn,
    wait_state,
)
from tests.support.configs import make_config
from tests.support.operator_page import sign_in
from tests.support.qemu import QemuVm
from tests.support.spice_client import (
    CHANNEL_NAMES,
    CURSOR,
    DISPLAY,
    INPUTS,
    LINK_OK,
    MAIN,
    SPICE_MSG_INPUTS_INIT,
    SPICE_MSG_MAIN_INIT,
    RawSpiceClient,
    SpiceChannel,
    key_down,
    key_up,
    message_kinds,
)

pytestmark = pytest.mark.qemu

SHIFT = 0x2A  # PC/AT scan code of the left Shift key: harmless on SeaBIOS's screen
DEADLINE = 30.0


async def wait_until(check: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < deadline, f"not within {DEADLINE:g} s: {what}"
        await asyncio.sleep(0.05)


async def api(stack: ConsoleStack, path: str) -> Any:
    async with stack.http.get(stack.url(path), headers=BEARER) as response:
        assert response.status == 200, await response.text()
        return await response.json()


def stream_of(path: Path) -> bytes:
    return b"".join(r.data for r in records(path) if r.kind is Kind.TO_BROWSER)


def closed(directory: Path, count: int) -> bool:
    paths = recordings_in(directory)
    try:
        return len(paths) == count and all(metadata(p)["closed"] for p in paths)
    except FileNotFoundError:  # a .rec gets its .json a moment after it is created
        return False


async def test_a_spice_console_is_recorded_channel_by_channel(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    directory, audit = tmp_path / "recordings", tmp_path / "audit.jsonl"
    async with QemuVm(spice=True) as vm:
        assert vm.spice_port is not None
        simulator = await aiohttp_server(create_simulator_app(spice_inventory(vm.spice_port, None)))
        config = make_config(
            zstack={"url": str(simulator.make_url("/zstack"))},
            server={"admin_token": TOKEN},
            audit={"sink": f"file:{audit}"},
            recording={"dir": str(directory)},
        )
        stack = ConsoleStack(await aiohttp_server(create_app(config)), simulator)
        token = (await stack.mint(SPICE_VM))["token"]

        async def link(channel_type: int, session: int = 0) -> RawSpiceClient:
            ws = await stack.http.ws_connect(
                stack.url(f"/websockify?token={token}"), protocols=("binary",)
            )
            client = RawSpiceClient(ws)
            assert await client.link(channel_type, connection_id=session) == LINK_OK
            return client

        main = await link(MAIN)
        (session,) = struct.unpack_from("<I", await main.read_until(SPICE_MSG_MAIN_INIT))
        clients = {MAIN: main}
        for channel_type in (DISPLAY, INPUTS, CURSOR):
            clients[channel_type] = await link(channel_type, session)
        channels = {t: SpiceChannel(c, t).start() for t, c in clients.items()}
        await channels[INPUTS].send(key_down(SHIFT) + key_up(SHIFT))
        # QEMU draws SeaBIOS's screen; a display channel closed within a moment of linking
        # can crash QEMU 7.2, so the console stays open a while.
        await wait_until(lambda: channels[DISPLAY].received > 1000, "the display draws")
        await asyncio.sleep(2.0)
        for channel in channels.values():
            await channel.stop()
        await wait_until(lambda: closed(directory, len(channels)), "four closed recordings")

    listing = await api(stack, "/api/v1/recordings")
    assert listing["total"] == len(channels)
    listed = {r["channel"]: r for r in listing["recordings"]}
    assert set(listed) == {CHANNEL_NAMES[t] for t in channels}
    assert len({r["console"] for r in listed.values()}) == len(channels)  # one per socket
    for entry in listed.values():
        assert (entry["protocol"], entry["playable"], entry["vmUuid"]) == ("spice", False, SPICE_VM)
        assert entry["complete"] is True

    closes = {
        line["console"]: line
        for line in map(json.loads, audit.read_text().splitlines())
        if line["event"] == "console.close"
    }
    for channel_type, channel in channels.items():
        entry = listed[CHANNEL_NAMES[channel_type]]
        path = directory / f"{entry['id']}.rec"
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        assert (entry["sha256"], entry["bytes"]) == (digest, len(data))
        detail = await api(stack, f"/api/v1/recordings/{entry['id']}")
        assert detail["integrity"]["matches"] is True
        # What was recorded is everything the proxy carried to the browser on that socket after
        # the link (the audit counts it), in whole SPICE messages.
        stream = stream_of(path)
        close = closes[entry["console"]]
        assert len(stream) == close["bytesToBrowser"] > 0
        assert close["recording"] == {
            "id": entry["id"], "sha256": digest, "bytes": len(data), "complete": True,
        }  # fmt: skip
        kinds = message_kinds(stream)
        # At least every message the client counted once it kept the channel alive.
        for kind, count in channel.kinds.items():
            assert kinds.count(kind) >= count, (channel.name, kind)
        assert {r.kind for r in records(path)} == {Kind.TO_BROWSER}  # no input, no keyframes
    # Each channel's own greeting is in its recording, which the client read before counting.
    for name, greeting in (("main", SPICE_MSG_MAIN_INIT), ("inputs", SPICE_MSG_INPUTS_INIT)):
        assert greeting in message_kinds(stream_of(directory / f"{listed[name]['id']}.rec"))
    await stack.close()


@pytest.mark.browser
async def test_spice_html5_in_chromium_is_recorded_and_its_playback_page_says_so(
    start_console_stack: StartConsoleStack, new_page: Any, tmp_path: Path
) -> None:
    directory = tmp_path / "recordings"
    async with QemuVm(spice=True) as vm:
        assert vm.spice_port is not None
        stack, _ = await start_console_stack(
            spice_inventory(vm.spice_port, None),
            portal_vm=SPICE_VM,
            server={"admin_token": TOKEN},
            recording={"dir": str(directory)},
        )
        page = await new_page()
        sockets: list[Any] = []
        page.on("websocket", lambda ws: sockets.append(ws))
        await page.goto((await stack.mint(SPICE_VM))["consoleUrl"])
        await wait_state(page, "connected")
        await wait_drawn(page, timeout=20.0)
        await asyncio.sleep(2.0)  # QEMU 7.2 dislikes a display channel closed at once
        await page.goto("about:blank")
        await wait_until(lambda: closed(directory, len(sockets)), "every channel's recording")

    listing = await api(stack, "/api/v1/recordings")
    channels = {r["channel"] for r in listing["recordings"]}
    assert {"main", "display", "inputs", "cursor"} <= channels
    assert len(channels) == listing["total"] == len(sockets)
    for entry in listing["recordings"]:
        assert (entry["protocol"], entry["playable"]) == ("spice", False)
        data = (directory / f"{entry['id']}.rec").read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        message_kinds(stream_of(directory / f"{entry['id']}.rec"))  # whole SPICE messages
    display = next(r for r in listing["recordings"] if r["channel"] == "display")
    assert display["bytes"] > 1000  # SeaBIOS's screen, drawn

    # The operator's playback page offers the download instead of a player.
    await sign_in(page, stack)
    await page.goto(stack.url(f"/operator/recordings/{display['id']}"))
    await page.locator("body[data-state=unplayable]").wait_for(timeout=10_000)
    assert "spice" in (await page.locator("#message").text_content() or "")
    assert await page.get_attribute("body", "data-integrity") == "match"
