"""The recording file format, version 1: sans-IO (no asyncio, no aiohttp, no files).

A file is the 7-byte magic ``CPREC1\\n`` followed by records, each a 9-byte header (big-endian
``u8 kind``, ``u32 ms`` since the recording started, ``u32 length``) and ``length`` bytes::

    kind 0  TO_BROWSER  bytes the VM's console sent the browser (VNC: from ServerInit on)
    kind 1  TO_HOST     bytes the browser sent the VM (only with [recording] include_input)
    kind 2  KEYFRAME    empty: the proxy asked the VNC server for a full screen here

The file is append-only, so a recording cut short (crash, kill -9, full disk) is read up to its
last complete record and the torn tail is ignored. Readers refuse unknown kinds: a newer
version gets a new magic. The SHA-256 of the whole file goes into the metadata file.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

MAGIC = b"CPREC1\n"
VERSION = 1
HEADER = struct.Struct(">BII")
# No record is this big (the proxy reads the host in far smaller chunks): a longer one is damage.
MAX_RECORD = 16 * 1024 * 1024
MAX_MS = 0xFFFFFFFF  # about 49 days: longer than any console session


class Kind(enum.IntEnum):
    TO_BROWSER = 0
    TO_HOST = 1
    KEYFRAME = 2


class FormatError(ValueError):
    """The bytes are not a recording (bad magic, unknown kind, absurd length)."""


@dataclass(frozen=True, slots=True)
class Record:
    kind: Kind
    ms: int
    data: bytes


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


def encode_header(kind: Kind, ms: int, length: int) -> bytes:
    return HEADER.pack(kind, min(max(ms, 0), MAX_MS), length)


def encode_record(kind: Kind, ms: int, data: bytes = b"") -> bytes:
    return encode_header(kind, ms, len(data)) + data


class Decoder:
    """Feed it a file's bytes in any pieces; ``next_record()`` gives records or NEED_DATA."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pos = 0  # where the next record starts in _buffer
        self._magic = False
        # Bytes of the file consumed by complete records (and the magic).
        self.consumed = 0

    def receive_data(self, data: bytes) -> None:
        if self._pos:
            del self._buffer[: self._pos]
            self._pos = 0
        self._buffer += data

    @property
    def pending(self) -> int:
        """Bytes held that do not (yet) make a complete record: a torn tail at the end."""
        return len(self._buffer) - self._pos

    def next_record(self) -> Record | _NeedData:
        buffer, pos = self._buffer, self._pos
        if not self._magic:
            head = bytes(buffer[: len(MAGIC)])
            if not MAGIC.startswith(head) if len(head) < len(MAGIC) else head != MAGIC:
                raise FormatError("not a console recording (bad magic)")
            if len(head) < len(MAGIC):
                return NEED_DATA
            self._magic = True
            self._pos = pos = self.consumed = len(MAGIC)
        if len(buffer) - pos < HEADER.size:
            return NEED_DATA
        kind, ms, length = HEADER.unpack_from(buffer, pos)
        if kind not in Kind._value2member_map_:
            raise FormatError(f"unknown record kind {kind} at byte {self.consumed}")
        if length > MAX_RECORD:
            raise FormatError(f"record of {length} bytes at byte {self.consumed}")
        end = pos + HEADER.size + length
        if len(buffer) < end:
            return NEED_DATA
        data = bytes(buffer[pos + HEADER.size : end])
        self._pos = end
        self.consumed += end - pos
        return Record(Kind(kind), ms, data)


def read_records(data: bytes) -> tuple[list[Record], int]:
    """Every complete record of a file's bytes, and how many bytes they (with the magic) span."""
    decoder = Decoder()
    decoder.receive_data(data)
    records: list[Record] = []
    while isinstance(record := decoder.next_record(), Record):
        records.append(record)
    return records, decoder.consumed
