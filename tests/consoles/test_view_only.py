"""View-only consoles: the proxy forwards none of the browser's keys, clicks or clipboard, and
every VNC viewer joins shared (ClientInit's shared-flag rewritten to 1).

The filter is tested sans-IO (whole, byte by byte, split anywhere); then end to end against a
VNC server that records the client messages it receives, with stored (memory, Redis) and
signed tickets.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.protocols.rfb.input import ClientStreamFilter
from tests.support.recording_vnc import RecordingVncServer
from tests.support.rfb_client import RfbClient, greet_as_browser
from tests.support.rfb_messages import (
    CONTINUOUS,
    CUT,
    DESKTOP,
    EXT_CUT,
    EXT_POINTER,
    FBUR,
    FENCE,
    KEY,
    PIXEL_FORMAT,
    POINTER,
    QEMU_AUDIO,
    QEMU_KEY,
    SET_ENCODINGS,
)
from tests.support.services import RedisServer
from tests.support.stack import Stack, start_stack, vm_entry

XVP = bytes([250, 0, 1, 4])  # xvp: reboot the VM
KEPT = [FBUR, SET_ENCODINGS, PIXEL_FORMAT, FENCE, CONTINUOUS]
DROPPED = [KEY, POINTER, EXT_POINTER, CUT, EXT_CUT, QEMU_KEY, QEMU_AUDIO, XVP, DESKTOP]


def run_filter(view_only: bool, stream: bytes, sizes: list[int]) -> tuple[bytes, list[bool]]:
    flt = ClientStreamFilter(view_only)
    out, inputs, offset, i = bytearray(), [], 0, 0
    while offset < len(stream):
        step = max(1, sizes[i % len(sizes)])
        data, saw = flt.feed(stream[offset : offset + step])
        out += data
        inputs.append(saw)
        offset += step
        i += 1
    return bytes(out), inputs


def test_view_only_keeps_display_messages_and_drops_input_whole() -> None:
    messages = [b"\x00", FBUR, KEY, SET_ENCODINGS, POINTER, CUT, PIXEL_FORMAT, QEMU_KEY, FBUR]
    expected = b"\x01" + FBUR + SET_ENCODINGS + PIXEL_FORMAT + FBUR
    for sizes in ([10_000], [1], [3, 1, 7]):
        out, inputs = run_filter(True, b"".join(messages), sizes)
        assert out == expected
        assert any(inputs)  # the person is there: input still counts against idling


@given(
    st.lists(st.sampled_from(KEPT + DROPPED), max_size=12),
    st.lists(st.integers(1, 40), min_size=1, max_size=6),
)
def test_view_only_filter_holds_for_any_split(messages: list[bytes], sizes: list[int]) -> None:
    out, _ = run_filter(True, b"\x00" + b"".join(messages), sizes)
    assert out == b"\x01" + b"".join(m for m in messages if m in KEPT)


@given(
    st.lists(st.sampled_from(KEPT + DROPPED), max_size=12),
    st.lists(st.integers(1, 40), min_size=1, max_size=6),
)
def test_interactive_consoles_pass_everything_but_the_shared_flag(
    messages: list[bytes], sizes: list[int]
) -> None:
    out, _ = run_filter(False, b"\x00" + b"".join(messages), sizes)
    assert out == b"\x01" + b"".join(messages)


def test_an_unknown_message_in_a_view_only_stream_stops_everything_after_it() -> None:
    flt = ClientStreamFilter(True)
    assert flt.feed(b"\x01" + FBUR + bytes([77, 1, 2]) + FBUR) == (b"\x01" + FBUR, True)
    assert flt.lost
    assert flt.feed(FBUR) == (b"", True)


def test_an_interactive_stream_that_is_already_shared_is_unchanged() -> None:
    data = b"\x01" + FBUR + KEY
    out, saw = ClientStreamFilter(False).feed(data)
    assert out is data and saw


# --- end to end -------------------------------------------------------------------------------


@pytest.fixture
async def recorder() -> AsyncIterator[RecordingVncServer]:
    server = await RecordingVncServer().start()
    yield server
    await server.close()


async def mint(stack: Stack, view_only: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"OAuth {await stack.login()}"}
    body = {"vmUuid": vm_entry()["uuid"], "viewOnly": view_only}
    async with stack.http.post(stack.url("/api/v1/consoles"), json=body, headers=headers) as r:
        return r.status, await r.json()


async def send_everything(stack: Stack, token: str) -> None:
    """Play a browser that types, clicks and pastes, then wait for the screen to come back."""
    ws = await stack.open(token)
    stream = await greet_as_browser(ws)
    client = RfbClient(stream)
    await stream.write(b"\x00")  # ClientInit: exclusive, as a hostile client would ask
    await client._read(24 + len(b"recorder"))
    await stream.write(bytes([2, 0, 0, 1]) + struct.pack("!i", 0))
    await stream.write(KEY + POINTER + EXT_POINTER + CUT + QEMU_KEY + XVP)
    await stream.write(FBUR[:1] + b"\x00" + FBUR[2:])  # a full (non-incremental) request
    update = await client._read(4 + 12)
    assert update[0] == 0
    await ws.close()


async def wait_types(recorder: RecordingVncServer, count: int) -> list[int]:
    deadline = time.monotonic() + 10
    while len(recorder.types()) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # nothing more may follow
    return recorder.types()


STORES = {
    "memory": {},
    "signed": {"signing_keys": [base64.b64encode(os.urandom(32)).decode()]},
}


@pytest.mark.parametrize("store", sorted(STORES))
async def test_keys_clicks_and_clipboard_never_reach_the_vm(
    aiohttp_server: Any, recorder: RecordingVncServer, store: str
) -> None:
    stack = await start_stack(
        aiohttp_server, [vm_entry(vncPort=recorder.port)], tickets=STORES[store]
    )
    try:
        status, body = await mint(stack, True)
        assert status == 201, body
        assert body["consoleUrl"].endswith("&view_only=1")
        await send_everything(stack, body["token"])
        assert await wait_types(recorder, 2) == [2, 3]
        assert recorder.viewers[0].shared == 1
    finally:
        await stack.close()


async def test_view_only_survives_redis(
    aiohttp_server: Any, recorder: RecordingVncServer, redis_server: RedisServer
) -> None:
    stack = await start_stack(
        aiohttp_server,
        [vm_entry(vncPort=recorder.port)],
        tickets={"store": redis_server.url},
    )
    try:
        _, body = await mint(stack, True)
        await send_everything(stack, body["token"])
        assert await wait_types(recorder, 2) == [2, 3]
    finally:
        await stack.close()


async def test_an_interactive_console_forwards_input_and_joins_shared(
    aiohttp_server: Any, recorder: RecordingVncServer
) -> None:
    stack = await start_stack(aiohttp_server, [vm_entry(vncPort=recorder.port)])
    try:
        status, body = await mint(stack, False)
        assert status == 201 and "view_only" not in body["consoleUrl"]
        await send_everything(stack, body["token"])
        assert await wait_types(recorder, 8) == [2, 4, 5, 5, 6, 255, 250, 3]
        assert recorder.viewers[0].shared == 1
    finally:
        await stack.close()


@pytest.mark.parametrize("bad", ["yes", 1, None, [True]])
async def test_view_only_must_be_a_boolean(
    aiohttp_server: Any, recorder: RecordingVncServer, bad: Any
) -> None:
    stack = await start_stack(aiohttp_server, [vm_entry(vncPort=recorder.port)])
    try:
        status, body = await mint(stack, bad)
        assert status == 400 and body["error"]["code"] == "REQUEST.INVALID_VIEW_ONLY"
    finally:
        await stack.close()
