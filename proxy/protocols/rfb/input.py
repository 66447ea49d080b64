"""Spotting user input in the browser->server RFB message stream (RFC 6143 section 7.5).

noVNC sends FramebufferUpdateRequests all the time, so counting bytes never sees a user walk
away. This scanner walks the message headers only (types and lengths, never payloads) and says
whether a chunk held a key, pointer or clipboard event. On a message type it does not know it
stops parsing and counts every later byte as input: an unknown client must never be closed as
idle by mistake.
"""

from __future__ import annotations

from collections.abc import Callable

# Message types that are a person's doing (255 only with sub-type 0, QEMU's extended key event).
INPUT_TYPES = frozenset({4, 5, 6, 250})

LengthRule = Callable[[bytes], int | None]  # header bytes -> whole message length (None: need more)


def _fixed(size: int) -> tuple[int, LengthRule]:
    return 1, lambda head: size


def _u8_at(offset: int, base: int, unit: int) -> tuple[int, LengthRule]:
    return offset + 1, lambda head: base + unit * head[offset]


def _u16_at(offset: int, base: int, unit: int) -> tuple[int, LengthRule]:
    return offset + 2, lambda head: base + unit * int.from_bytes(head[offset : offset + 2], "big")


def _cut_text(head: bytes) -> int:
    # A negative length is the extended-clipboard form; its size is the absolute value.
    return 8 + abs(int.from_bytes(head[4:8], "big", signed=True))


def _pointer(head: bytes) -> int:
    # The marker bit announces the 7-byte ExtendedMouseButtons form that noVNC sends.
    return 7 if head[1] & 0x80 else 6


def _qemu(head: bytes) -> int | None:
    if head[1] == 0:  # extended key event (section 7.7.1 of the community RFB spec)
        return 12
    if head[1] == 1:  # audio: enable/disable (4) or set format (10)
        return 10 if int.from_bytes(head[2:4], "big") == 2 else 4
    return None


# type -> (header bytes needed, rule giving the full length from those bytes)
MESSAGES: dict[int, tuple[int, LengthRule]] = {
    0: _fixed(20),  # SetPixelFormat
    2: _u16_at(2, 4, 4),  # SetEncodings
    3: _fixed(10),  # FramebufferUpdateRequest
    4: _fixed(8),  # KeyEvent
    5: (2, _pointer),  # PointerEvent
    6: (8, _cut_text),  # ClientCutText
    150: _fixed(10),  # EnableContinuousUpdates
    248: _u8_at(8, 9, 1),  # ClientFence
    250: _fixed(4),  # xvp
    251: _u8_at(6, 8, 16),  # SetDesktopSize
    253: _u16_at(2, 4, 1),  # gii
    255: (4, _qemu),  # QEMU client message
}


class ClientMessageScanner:
    """Feed it the browser's bytes after the handshake, in order; it says if input passed."""

    def __init__(self, skip: int = 0) -> None:
        self._head = bytearray()  # the header of the message being read (at most 12 bytes)
        # Bytes of the current message still to pass; the caller passes skip=1 when the
        # stream starts with the one-byte ClientInit (7.3.1).
        self._skip = skip
        self.lost = False  # True once an unknown message made the stream unparseable

    def feed(self, data: bytes) -> bool:
        if self.lost:
            return True
        saw_input = False
        view = memoryview(data)
        while view:
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
                continue
            taken, head = self._read_header(view)
            view = view[taken:]
            if head is None:
                continue
            if not head:
                self.lost = True
                return True
            saw_input = saw_input or _is_input(head)
        return saw_input

    def _read_header(self, view: memoryview) -> tuple[int, bytes | None]:
        """Consume header bytes; return (bytes taken, the header once complete; b"" if unknown)."""
        if not self._head and view[0] not in MESSAGES:
            return 0, b""
        need, rule = MESSAGES[self._head[0] if self._head else view[0]]
        taken = min(need - len(self._head), len(view))
        self._head += view[:taken]
        if len(self._head) < need:
            return taken, None
        head = bytes(self._head)
        length = rule(head)
        if length is None:
            return taken, b""
        self._head.clear()
        self._skip = length - need
        return taken, head


def _is_input(head: bytes) -> bool:
    return head[0] in INPUT_TYPES or (head[0] == 255 and head[1] == 0)
