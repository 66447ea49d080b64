"""``[limits] max_frame_size``: a browser message of exactly that many bytes passes; one byte
more closes the console with 1009."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import WSMsgType

from proxy.app import create_app
from tests.support.configs import make_config, write_token_file
from tests.support.net import echo

LIMIT = 65536


async def echoed(aiohttp_server: Any, tcp_target: Any, tmp_path: Path, size: int) -> Any:
    target = await tcp_target(echo)
    tokens = write_token_file(tmp_path / "tokens", {"vm": ("127.0.0.1", target.port)})
    config = make_config(tickets={"token_file": str(tokens)}, limits={"max_frame_size": LIMIT})
    server = await aiohttp_server(create_app(config))
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(server.make_url("/websockify?token=vm")) as ws,
    ):
        await ws.send_bytes(b"x" * size)
        received = 0
        while received < size:
            msg = await ws.receive(timeout=10)
            if msg.type is not WSMsgType.BINARY:
                return msg
            received += len(msg.data)
        return received


async def test_a_message_of_exactly_max_frame_size_passes(
    aiohttp_server: Any, tcp_target: Any, tmp_path: Path
) -> None:
    assert await echoed(aiohttp_server, tcp_target, tmp_path, LIMIT) == LIMIT


async def test_one_byte_more_closes_1009(
    aiohttp_server: Any, tcp_target: Any, tmp_path: Path
) -> None:
    msg = await echoed(aiohttp_server, tcp_target, tmp_path, LIMIT + 1)
    assert msg.type is WSMsgType.CLOSE and msg.data == 1009
