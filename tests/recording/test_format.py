"""The recording file format: round trips whole and byte by byte, torn tails, damage."""

from __future__ import annotations

import pytest

from proxy.recording.format import (
    HEADER,
    MAGIC,
    NEED_DATA,
    Decoder,
    FormatError,
    Kind,
    Record,
    encode_record,
    read_records,
)

RECORDS = [
    Record(Kind.TO_BROWSER, 0, b"\x02\xd0\x01\x90" + bytes(16) + b"\x00\x00\x00\x04QEMU"),
    Record(Kind.KEYFRAME, 5, b""),
    Record(Kind.TO_HOST, 17, b"\x03\x00\x00\x00\x00\x00\x02\xd0\x01\x90"),
    Record(Kind.TO_BROWSER, 1234, bytes(range(256)) * 40),
    Record(Kind.TO_BROWSER, 4_000_000_000, b"x"),
]
FILE = MAGIC + b"".join(encode_record(r.kind, r.ms, r.data) for r in RECORDS)


def decode_pieces(pieces: list[bytes]) -> tuple[list[Record], Decoder]:
    decoder, out = Decoder(), []
    for piece in pieces:
        decoder.receive_data(piece)
        while (record := decoder.next_record()) is not NEED_DATA:
            assert isinstance(record, Record)
            out.append(record)
    return out, decoder


def test_round_trip_whole() -> None:
    records, consumed = read_records(FILE)
    assert records == RECORDS
    assert consumed == len(FILE)


def test_round_trip_byte_by_byte() -> None:
    records, decoder = decode_pieces([FILE[i : i + 1] for i in range(len(FILE))])
    assert records == RECORDS
    assert decoder.pending == 0
    assert decoder.consumed == len(FILE)


@pytest.mark.parametrize("cut", [1, HEADER.size - 1, HEADER.size, HEADER.size + 100])
def test_a_torn_file_reads_up_to_its_last_complete_record(cut: int) -> None:
    torn = FILE[: len(FILE) - len(RECORDS[-1].data) - HEADER.size - len(RECORDS[-2].data) + cut]
    records, consumed = read_records(torn)
    assert records == RECORDS[:3]
    assert consumed == len(FILE) - sum(HEADER.size + len(r.data) for r in RECORDS[3:])


def test_empty_and_magic_only() -> None:
    assert read_records(b"") == ([], 0)
    assert read_records(MAGIC[:3]) == ([], 0)
    assert read_records(MAGIC) == ([], len(MAGIC))


@pytest.mark.parametrize(
    "data",
    [
        b"GIF89a\x00" + bytes(20),
        b"CPREC2\n" + bytes(20),
        MAGIC + bytes([7]) + bytes(8),
        MAGIC + encode_record(Kind.TO_BROWSER, 0)[:5] + b"\xff\xff\xff\xff",
    ],
)
def test_damage_is_a_format_error(data: bytes) -> None:
    with pytest.raises(FormatError):
        read_records(data)


def test_timestamps_are_clamped() -> None:
    records, _ = read_records(
        MAGIC + encode_record(Kind.TO_BROWSER, -5) + encode_record(Kind.TO_BROWSER, 2**40)
    )
    assert [r.ms for r in records] == [0, 0xFFFFFFFF]
