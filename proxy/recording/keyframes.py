"""Where a keyframe request may go into a VNC console's browser→host stream: sans-IO.

A keyframe is a non-incremental FramebufferUpdateRequest for the whole screen (RFC 6143
section 7.5.3) that the proxy adds to what the browser sends the VM, so the recording holds a
full screen every few seconds. It may only go between two of the browser's messages, never
inside one: the same header walk that spots input (:mod:`proxy.protocols.rfb.input`) says where
the boundaries are. The server's full update also reaches the browser, which is harmless (it
redraws the same pixels).
"""

from __future__ import annotations

import struct

from proxy.protocols.rfb.input import ClientMessageScanner

FRAMEBUFFER_UPDATE_REQUEST = 3


class KeyframeRequests:
    """Feed it the bytes going each way; it answers the request bytes when one may go now."""

    def __init__(self) -> None:
        # The browser's stream after the handshake starts with its one-byte ClientInit.
        self._scanner = ClientMessageScanner(skip=1)
        self._server_init = b""
        self.size: tuple[int, int] | None = None
        self.due = False

    def server_bytes(self, data: bytes) -> None:
        """The host's stream from ServerInit on; its first 4 bytes are the screen's size."""
        if self.size is None:
            self._server_init += data[: 4 - len(self._server_init)]
            if len(self._server_init) == 4:
                width, height = struct.unpack(">HH", self._server_init)
                self.size = (width, height)

    def client_bytes(self, data: bytes) -> bytes:
        """Bytes sent to the host; answers a due request once they end on a boundary."""
        self._scanner.feed(data)
        return self._take() if self.due else b""

    def ask(self) -> bytes:
        """A keyframe is wanted: the request if it may go now, else b"" (it waits for the next
        boundary)."""
        self.due = True
        return self._take()

    @property
    def at_boundary(self) -> bool:
        scanner = self._scanner
        # The scanner's own state: no message half read (nothing to skip, no partial header).
        return not scanner.lost and not scanner._skip and not scanner._head

    def _take(self) -> bytes:
        if self.size is None or not self.at_boundary:
            return b""
        self.due = False
        width, height = self.size
        return struct.pack(">BBHHHH", FRAMEBUFFER_UPDATE_REQUEST, 0, 0, 0, width, height)
