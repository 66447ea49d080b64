"""A long VNC recording for the seeking tests, made of a real QEMU console's stream.

The VM boots :data:`SCROLLING_LOG` (a boot sector that prints a scrolling log). While the proxy
records its console, :func:`record_qemu_console` is a browser that speaks to QEMU through the
proxy as noVNC does (its pixel format and encodings, so QEMU answers in Tight with its persistent
zlib streams), asking for an update every few milliseconds, and pauses the VM between bursts of
activity. :func:`stretch` then spreads that recording over an hour: the bytes, their order and the
keyframe markers stay as recorded, the markers are spread evenly and what followed each marker
keeps its real pace. A capture of a few tens of seconds with a keyframe asked every
``capture / 360`` seconds becomes an hour with a keyframe every 10 s: a mostly idle console
with some activity, a few MB.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import struct
import time
from pathlib import Path

import aiohttp

from proxy.recording.format import MAGIC, Kind, encode_record, read_records
from tests.support.qemu import QemuVm
from tests.support.rfb_client import greet_as_browser

# What noVNC 1.7 sends after ServerInit (core/rfb.js: RFB.messages.pixelFormat(24),
# _sendEncodings without H.264): 32 bpp, depth 24, little-endian true colour, red at bit 0.
NOVNC_PIXEL_FORMAT = struct.pack(">B3xBBBBHHHBBB3x", 0, 32, 24, 0, 1, 255, 255, 255, 0, 8, 16)
NOVNC_ENCODINGS = (
    1, 7, -260, 16, 21, 5, 2, 6, 0,  # CopyRect, Tight, TightPNG, ZRLE, JPEG, ... Raw
    -32 + 6, -256 + 2,  # quality 6, compression 2
    -223, -224, -258, -261, -308, -309, -312, -313, -307, -1063131698, -316,
    0x574D5664, -239,  # VMware cursor, cursor
)  # fmt: skip
UPDATE_EVERY = 0.04  # a browser asks again as soon as an update is drawn


# A boot sector (GNU as, ``.code16``, linked at 0x7c00) that prints a scrolling log: on each timer
# tick (18.2 Hz) it scrolls the 80x25 text screen up a line and writes a line of made-up words,
# mostly grey, now and then a coloured one. Assembled from this source:
#   .code16
#   .globl _start
#   _start:
#       cli
#       xor %ax, %ax
#       mov %ax, %ss
#       mov $0x7c00, %sp
#       sti
#       mov $0x0003, %ax        # 80x25 colour text
#       int $0x10
#       mov $0xb800, %ax
#       mov %ax, %ds
#       mov %ax, %es
#       cld
#       mov $0x2b67, %bp        # the generator's state
#   next:
#       hlt                     # one line per timer tick (18.2 Hz)
#       mov $160, %si           # scroll the screen up one line
#       xor %di, %di
#       mov $1920, %cx
#       rep movsw
#       call random
#       and $0x3f, %ax
#       add $12, %ax
#       mov %ax, %bx            # this line's length: 12..75
#       mov $80, %cx
#   char:
#       mov $0x0720, %dx        # a grey space
#       mov $80, %ax
#       sub %cx, %ax
#       cmp %bx, %ax
#       jae put
#       call random
#       test $0x07, %ah
#       jz put                  # a space between words
#       mov %ah, %dl
#       and $0x0f, %dl
#       add $0x61, %dl          # a..p
#       test $0x70, %al
#       jnz put                 # mostly grey, now and then a colour
#       mov %al, %dh
#       and $0x0f, %dh
#       or $0x09, %dh
#   put:
#       mov %dx, %ax
#       stosw
#       loop char
#       jmp next
#   random:                     # bp = bp * 25173 + 13849; ax = bp
#       push %dx
#       mov %bp, %ax
#       mov $25173, %dx
#       mul %dx
#       add $13849, %ax
#       mov %ax, %bp
#       pop %dx
#       ret
SCROLLING_LOG = bytes.fromhex(
    "fa31c08ed0bc007cfbb80300cd10b800b88ed88ec0fcbd672bf4bea00031ffb9"
    "8007f3a5e83a0083e03f83c00c89c3b95000ba2007b8500029c839d8731ce820"
    "00f6c407741488e280e20f80c261a870750888c680e60f80ce0989d0abe2d3eb"
    "b85289e8ba5562f7e205193689c55ac3"
)


def boot_disk(path: Path) -> Path:
    """A raw disk image whose boot sector is :data:`SCROLLING_LOG`."""
    path.write_bytes(SCROLLING_LOG.ljust(510, b"\0") + b"\x55\xaa")
    return path


def set_encodings(encodings: tuple[int, ...]) -> bytes:
    return struct.pack(f">BxH{len(encodings)}i", 2, len(encodings), *encodings)


def update_request(width: int, height: int, incremental: bool) -> bytes:
    return struct.pack(">BBHHHH", 3, incremental, 0, 0, width, height)


async def record_qemu_console(
    http: aiohttp.ClientSession,
    websocket_url: str,
    vm: QemuVm,
    seconds: float,
    bursts: int,
    burst_seconds: float,
) -> int:
    """Watch the console at ``websocket_url`` for ``seconds`` while the VM (running
    :data:`SCROLLING_LOG`) is paused except for ``bursts`` bursts of ``burst_seconds`` at even
    intervals; returns how many bytes arrived."""
    ws = await http.ws_connect(websocket_url)
    received = 0
    try:
        stream = await greet_as_browser(ws)
        await stream.write(b"\x01")  # ClientInit, shared
        head = await stream.read_exactly(24, 5)
        width, height = struct.unpack(">HH", head[:4])
        await stream.read_exactly(struct.unpack(">I", head[20:24])[0], 5)
        await stream.write(NOVNC_PIXEL_FORMAT + set_encodings(NOVNC_ENCODINGS))
        await stream.write(update_request(width, height, False))

        async def drain() -> None:
            nonlocal received
            async for message in ws:
                if message.type is aiohttp.WSMsgType.BINARY:
                    received += len(message.data)

        reader = asyncio.create_task(drain())
        started = time.monotonic()
        period = seconds / bursts
        running = True
        try:
            while (elapsed := time.monotonic() - started) < seconds:
                wanted = elapsed % period >= period - burst_seconds
                if wanted != running:
                    await vm.qmp.execute("cont" if wanted else "stop")
                    running = wanted
                await stream.write(update_request(width, height, True))
                await asyncio.sleep(UPDATE_EVERY)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    finally:
        await ws.close()
    return received


def stretch(source: Path, target: Path, duration_ms: int) -> dict[str, int]:
    """Write ``source``'s records to ``target`` (a .rec; its .json beside it, from the source's)
    spread over ``duration_ms``; returns counts for the report.

    The keyframe markers are spread evenly in proportion; every other record keeps its real
    distance from the marker before it, so what the VM did after a keyframe request (the full
    screen, the scrolling) stays as quick as it was, and the console is idle in between.
    """
    records, _ = read_records(source.read_bytes())
    markers = [r.ms for r in records if r.kind is Kind.KEYFRAME]
    tail = records[-1].ms - markers[-1]
    factor = (duration_ms - tail) / markers[-1]
    out, marker, moved = [], 0, 0
    for record in records:
        if record.kind is Kind.KEYFRAME:
            marker, moved = record.ms, round(record.ms * factor)
        ms = moved + record.ms - marker if marker else record.ms
        out.append(encode_record(record.kind, ms, record.data))
    data = MAGIC + b"".join(out)
    target.write_bytes(data)
    meta = json.loads(source.with_suffix(".json").read_text())
    meta.update(
        id=target.stem,
        duration=duration_ms / 1000,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        complete=True,
        closed=True,
    )
    target.with_suffix(".json").write_text(json.dumps(meta))
    return {"bytes": len(data), "records": len(records), "keyframes": len(markers)}
