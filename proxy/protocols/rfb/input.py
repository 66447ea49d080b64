"""Spotting and filtering user input in the browser->server RFB stream (RFC 6143 section 7.5).

noVNC sends FramebufferUpdateRequests all the time, so counting bytes never sees a user walk
away. This scanner walks the message headers only (types and lengths, never payloads) and says
whether a chunk held a key, pointer or clipboard event. On a message type it does not know it
stops parsing and counts every later byte as input: an unknown client must never be closed as
idle by mistake.

:class:`ClientStreamFilter` uses the same walk to change the stream in two ways: ClientInit's
shared-flag always becomes 1 (a second viewer never disconnects the first, 7.3.1), and for a
view-only console whole messages that act on the VM are dropped. A view-only stream that stops
being parseable drops everything after that point: it fails closed.
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


# What a view-only console never forwards: keys, pointer, clipboard, xvp (reboot/reset),
# SetDesktopSize, gii input devices and every QEMU message (extended keys, audio).
VIEW_ONLY_DROPS = frozenset({4, 5, 6, 250, 251, 253, 255})

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

    def __init__(self, skip: int = 0, drop: frozenset[int] = frozenset()) -> None:
        self._head = bytearray()  # the header of the message being read (at most 12 bytes)
        # Bytes of the current message still to pass; the caller passes skip=1 when the
        # stream starts with the one-byte ClientInit (7.3.1).
        self._skip = skip
        self.lost = False  # True once an unknown message made the stream unparseable
        # Message types that filter() leaves out, and whether the current message is one.
        self._drop = drop
        self._dropping = False

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

    def filter(self, data: bytes) -> tuple[bytes, bool]:
        """(the bytes to forward, whether input passed): messages of a ``drop`` type are cut
        out whole, wherever the chunks split them. Input counts even when it is dropped: the
        person is there."""
        if self.lost:
            return b"", True
        kept: list[memoryview] = []
        saw_input = False
        view = memoryview(data)
        while view:
            if self._skip:
                step = min(self._skip, len(view))
                if not self._dropping:
                    kept.append(view[:step])
                self._skip -= step
                view = view[step:]
                continue
            if not self._head:
                self._dropping = view[0] in self._drop
            taken, head = self._read_header(view)
            if not self._dropping:
                kept.append(view[:taken])
            view = view[taken:]
            if head is None:
                continue
            if not head:
                self.lost = True
                return b"".join(kept), True
            saw_input = saw_input or _is_input(head)
        if len(kept) == 1 and len(kept[0]) == len(data):
            return data, saw_input
        return b"".join(kept), saw_input

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


class ClientStreamFilter:
    """The browser's bytes after the RFB handshake, starting with its one-byte ClientInit:
    ``feed(data)`` answers (the bytes to forward, whether they held input)."""

    def __init__(self, view_only: bool = False) -> None:
        self.view_only = view_only
        self._scanner = ClientMessageScanner(
            skip=1, drop=VIEW_ONLY_DROPS if view_only else frozenset()
        )
        self._client_init = True

    @property
    def lost(self) -> bool:
        return self._scanner.lost

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        if self._client_init and data:
            # shared-flag: any non-zero value means shared, so only 0 (exclusive) is rewritten;
            # other viewers of this VM stay connected (7.3.1).
            self._client_init = False
            if data[0] == 0:
                data = b"\x01" + data[1:]
        if not self.view_only:
            return data, self._scanner.feed(data)
        return self._scanner.filter(data)
