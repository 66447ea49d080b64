"""The browser->server RFB scanner finds key/pointer/clipboard events among update requests."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.protocols.rfb.input import ClientMessageScanner
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
