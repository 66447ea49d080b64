"""The browser->server RFB scanner finds key/pointer/clipboard events among update requests."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from proxy.protocols.rfb.input import ClientMessageScanner

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

NOT_INPUT = [FBUR, SET_ENCODINGS, PIXEL_FORMAT, FENCE, DESKTOP, CONTINUOUS, QEMU_AUDIO]
INPUT = [KEY, POINTER, EXT_POINTER, CUT, EXT_CUT, QEMU_KEY]


def feed_split(messages: list[bytes], sizes: list[int]) -> list[bool]:
    stream = b"".join(messages)
    scanner = ClientMessageScanner()
    results, offset, i = [], 0, 0
    while offset < len(stream):
        step = max(1, sizes[i % len(sizes)])
        results.append(scanner.feed(stream[offset : offset + step]))
        offset += step
        i += 1
    assert not scanner.lost
    return results


def test_update_requests_alone_are_not_input() -> None:
    assert not any(feed_split(NOT_INPUT * 50, [4096]))
    assert not any(feed_split(NOT_INPUT * 5, [1]))


def test_each_input_message_is_seen_whole_and_byte_by_byte() -> None:
    for message in INPUT:
        assert any(feed_split([FBUR, message, FBUR], [1000]))
        assert any(feed_split([FBUR, message, FBUR], [1]))


@given(
    st.lists(st.sampled_from(NOT_INPUT + INPUT), min_size=1, max_size=40),
    st.lists(st.integers(1, 64), min_size=1, max_size=10),
)
def test_any_split_finds_input_exactly_when_present(
    messages: list[bytes], sizes: list[int]
) -> None:
    assert any(feed_split(messages, sizes)) == any(m in INPUT for m in messages)


def test_unknown_type_gives_up_and_counts_everything_as_input() -> None:
    scanner = ClientMessageScanner()
    assert scanner.feed(bytes([77, 1, 2, 3]))
    assert scanner.lost
    assert scanner.feed(FBUR)


def test_client_init_is_skipped_when_asked() -> None:
    scanner = ClientMessageScanner(skip=1)
    assert not scanner.feed(bytes([1]) + FBUR)
    assert not scanner.lost
    assert scanner.feed(KEY)
