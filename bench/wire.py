"""Just enough of RFC 6455 for a load client: a handshake, pre-masked frames, a frame counter.

The client never builds frames per message: it masks a payload once and sends the same bytes
again and again, and it reads server frames by counting payload bytes without copying them.
"""

from __future__ import annotations

import base64
import hashlib
import os

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_HEADER = 14  # 2 + 8 (64-bit length) + 4 (mask key)


def handshake_request(host: str, port: int, path: str) -> tuple[bytes, bytes]:
    """The upgrade request and the ``Sec-WebSocket-Accept`` value the server must answer with."""
    key = base64.b64encode(os.urandom(16))
    request = (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: binary\r\n"
        "\r\n"
    ).encode()
    return request, base64.b64encode(hashlib.sha1(key + WS_GUID).digest())


class HandshakeError(Exception):
    pass


def check_response(head: bytes, accept: bytes) -> None:
    """Raise unless ``head`` (up to the blank line) is a valid 101 answer for ``accept``."""
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or status[1] != b"101":
        raise HandshakeError(f"expected 101, got {lines[0][:80]!r}")
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-accept":
            if value.strip() != accept:
                raise HandshakeError("wrong Sec-WebSocket-Accept")
            return
    raise HandshakeError("no Sec-WebSocket-Accept")


def mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if n == 0:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def client_frame(payload: bytes, opcode: int = OP_BINARY) -> bytes:
    """One final, masked client frame (a random key, masked once here)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    key = os.urandom(4)
    return head + key + mask(payload, key)


def _header(buf: bytes | memoryview, pos: int, end: int) -> tuple[int, int, int] | None:
    """(header length, opcode, payload length) of the frame at ``pos``, or None if incomplete."""
    if end - pos < 2:
        return None
    b1 = buf[pos + 1]
    length = b1 & 0x7F
    size = 2
    if length == 126:
        size = 4
        if end - pos < size:
            return None
        length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
    elif length == 127:
        size = 10
        if end - pos < size:
            return None
        length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
    if b1 & 0x80:
        raise HandshakeError("server sent a masked frame")
    return size, buf[pos] & 0x0F, length


class FrameReader:
    """Counts data payload bytes of server frames fed in arbitrary chunks.

    Data payload is only counted, never copied. Control frames (small) are collected whole in
    ``controls`` so the caller can answer pings; a close frame sets ``closed``.
    """

    __slots__ = ("_need", "_head", "_opcode", "_control", "payload", "controls", "closed", "why")

    def __init__(self) -> None:
        self._need = 0
        self._head = b""
        self._opcode = OP_BINARY
        self._control = bytearray()
        self.payload = 0
        self.controls: list[tuple[int, bytes]] = []
        self.closed = False
        self.why = ""  # the close frame's code and reason

    def feed(self, data: memoryview) -> int:
        """Consume ``data``; return how many data payload bytes it carried."""
        end = len(data)
        pos = 0
        got = 0
        if self._head:
            pos = self._resume_header(data)
            if pos < 0:
                return 0
        while pos < end:
            if self._need:
                take = min(self._need, end - pos)
                if self._opcode >= OP_CLOSE:
                    self._control += data[pos : pos + take]
                else:
                    got += take
                self._need -= take
                pos += take
                if not self._need and self._opcode >= OP_CLOSE:
                    self._finish_control()
                continue
            header = _header(data, pos, end)
            if header is None:
                self._head = bytes(data[pos:end])
                break
            pos += header[0]
            self._start(header[1], header[2])
        self.payload += got
        return got

    def _resume_header(self, data: memoryview) -> int:
        """Complete a header split across chunks; the position after it, or -1 if still short."""
        joined = self._head + bytes(data[:MAX_HEADER])
        header = _header(joined, 0, len(joined))
        if header is None:
            self._head = joined
            return -1
        used = header[0] - len(self._head)
        self._head = b""
        self._start(header[1], header[2])
        return used

    def _start(self, opcode: int, length: int) -> None:
        self._opcode = opcode
        self._need = length
        if opcode >= OP_CLOSE and length == 0:
            self._finish_control()

    def _finish_control(self) -> None:
        if self._opcode == OP_CLOSE:
            self.closed = True
            code = int.from_bytes(self._control[:2], "big") if len(self._control) >= 2 else 1005
            self.why = f"close {code} {self._control[2:].decode(errors='replace')}".strip()
        elif self._opcode == OP_PING:
            self.controls.append((OP_PING, bytes(self._control)))
        self._control.clear()
