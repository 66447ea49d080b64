"""[limits] idle_timeout: a console is idle when the browser sends no input (keys, pointer,
clipboard), however many update requests it sends; the proxy then closes it with 4408."""

from __future__ import annotations

import asyncio
import contextlib
import time

from tests.support.rfb_client import RfbClosed
from tests.support.rfb_messages import FBUR, KEY
from tests.support.stack import StartStack


async def test_idle_means_no_input_not_no_bytes(stack: StartStack) -> None:
    idle = 1.0
    p = await stack(limits={"idle_timeout": idle})
    ws, stream = await p.console()
    await stream.write(bytes([1]))  # ClientInit
    await stream.read_exactly(1, 5)
    started = time.monotonic()
    last_key = closed_at = None
    while time.monotonic() - started < 30:
        # Update requests all the time, key presses for the first half second only (the last
        # one at least 0.5 s in, however slow the machine): idle must still come, counted
        # from the last key.
        now = time.monotonic()
        message = KEY if last_key is None or last_key - started < 0.5 else FBUR
        try:
            with contextlib.suppress(ConnectionResetError):  # the close may beat our write
                await stream.write(message)
            if message is KEY:
                last_key = now
            await stream.read_exactly(len(message), 10)
        except RfbClosed as closed:
            closed_at, code = time.monotonic(), closed.code
            break
        await asyncio.sleep(0.05)
    assert closed_at is not None and last_key is not None, "update requests kept it open"
    assert code == 4408
    # Not before the idle timeout after the last key (had keys not counted, it would have
    # closed ~0.5 s after the last one); the upper bound only says that it did come.
    assert idle - 0.05 <= closed_at - last_key < idle + 10
    await ws.close()
