"""Client-to-server RFB messages (RFC 6143 section 7.5 and common extensions), one of each kind,
as a browser (noVNC) sends them: input events and everything else."""

from __future__ import annotations

import struct

FBUR = bytes([3, 1]) + struct.pack("!HHHH", 0, 0, 800, 600)
SET_ENCODINGS = bytes([2, 0]) + struct.pack("!H", 3) + struct.pack("!iii", 0, 7, -223)
PIXEL_FORMAT = bytes([0, 0, 0, 0]) + bytes(
    [32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 0, 8, 16, 0, 0, 0]
)
FENCE = bytes([248, 0, 0, 0]) + struct.pack("!I", 3) + bytes([4]) + b"abcd"
DESKTOP = bytes([251, 0]) + struct.pack("!HH", 800, 600) + bytes([1, 0]) + bytes(16)
CONTINUOUS = bytes([150, 1]) + struct.pack("!HHHH", 0, 0, 800, 600)
KEY = bytes([4, 1, 0, 0]) + struct.pack("!I", 0x61)
POINTER = bytes([5, 1]) + struct.pack("!HH", 10, 20)
EXT_POINTER = bytes([5, 0x81]) + struct.pack("!HH", 10, 20) + bytes([1])
CUT = bytes([6, 0, 0, 0]) + struct.pack("!I", 5) + b"hello"
EXT_CUT = bytes([6, 0, 0, 0]) + struct.pack("!i", -4) + b"\x00\x00\x00\x01"
QEMU_KEY = bytes([255, 0]) + struct.pack("!HII", 1, 0x61, 30)
QEMU_AUDIO = bytes([255, 1]) + struct.pack("!H", 2) + bytes([3, 2]) + struct.pack("!I", 44100)
