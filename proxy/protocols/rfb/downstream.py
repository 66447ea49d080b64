"""The proxy as RFB server towards the browser (RFC 6143 §7.1–§7.2): offer security type None
only, so the console password never reaches the browser.
"""

from __future__ import annotations

from proxy.protocols.rfb.common import Handshake, Message, dotted, negotiate, wire_string
from proxy.protocols.rfb.events import (
    DOWNSTREAM_TRANSITIONS,
    U8,
    U32,
    DownstreamState,
    LocalProtocolError,
    RemoteProtocolError,
    RfbVersion,
    SecurityComplete,
    SecurityType,
    VersionAgreed,
)


class DownstreamHandshake(Handshake):
    """The proxy as RFB server towards the browser, offering security type None only.

    Write ``initial_bytes()`` (ProtocolVersion 3.8) first, then after every event write
    ``bytes_to_send()``. The client may answer 3.3, 3.7 or 3.8; ``trailing_data`` then holds its
    ClientInit. ``fail(reason)`` ends the handshake with a refusal the browser can show.
    """

    _peer = "the browser"

    def __init__(self) -> None:
        super().__init__()
        self.state = DownstreamState.AWAIT_VERSION
        self._send(Message.VERSION, RfbVersion.V3_8.wire)  # §7.1.1: the server speaks first

    def initial_bytes(self) -> bytes:
        """The ProtocolVersion to write as soon as the connection is up."""
        if Message.VERSION in self._emitted:
            raise LocalProtocolError("initial_bytes() was already called")
        return self.bytes_to_send()

    def fail(self, reason: str) -> bytes:
        """End the handshake; return what to write before closing so the client shows ``reason``.

        Before the security message has been handed out (``bytes_to_send()``), it is replaced by
        a refusal with ``reason`` (§7.1.2); after it, a 3.8 client gets SecurityResult failed
        with ``reason`` (§7.1.3). Otherwise (no client version yet, or a 3.3/3.7 client already
        told "None") RFB has no way to carry a reason and the result holds only pending bytes.
        """
        if self.state is DownstreamState.FAILED:
            raise LocalProtocolError("fail() was already called")
        self.state = DownstreamState.FAILED
        self._events.clear()
        # Drop the undelivered security answer: the refusal below takes its place.
        self._outgoing = [item for item in self._outgoing if item[0] is Message.VERSION]
        if self.version is None:
            return self.bytes_to_send()
        if Message.SECURITY not in self._emitted:
            invalid = U32 if self.version is RfbVersion.V3_3 else U8
            self._send(Message.SECURITY, invalid.pack(0) + wire_string(reason))
        elif self.version is RfbVersion.V3_8 and Message.RESULT not in self._emitted:
            self._send(Message.RESULT, U32.pack(1) + wire_string(reason))
        return self.bytes_to_send()

    def _goto(self, state: DownstreamState) -> None:
        if state not in DOWNSTREAM_TRANSITIONS[self.state]:
            raise LocalProtocolError(f"internal error: {self.state.name} -> {state.name}")
        self.state = state

    def _finished(self) -> bool:
        return self.state is DownstreamState.DONE

    def _errored(self) -> bool:
        return self.state in (DownstreamState.ERROR, DownstreamState.FAILED)

    def _error(self) -> None:
        self.state = DownstreamState.ERROR

    def _complete(self) -> None:
        assert self.version is not None
        self._goto(DownstreamState.DONE)
        self._events.append(SecurityComplete(self.version, SecurityType.NONE))

    def _parse(self) -> bool:
        if self.state is DownstreamState.AWAIT_VERSION:
            return self._on_version()
        return self._on_choice()

    def _on_version(self) -> bool:
        """§7.1.1: the client answers with a version no higher than ours (3.8)."""
        numbers = self._take_version()
        if numbers is None:
            return False
        version = negotiate(*numbers)
        if version is None or numbers > (3, 8):
            raise RemoteProtocolError(
                f"the browser asked for RFB {dotted(numbers)}; the proxy offered 3.8"
            )
        self.version = version
        self._events.append(VersionAgreed(version, dotted(numbers)))
        if version is RfbVersion.V3_3:
            # §7.1.2 for 3.3 (Appendix A): the server decides; None has no SecurityResult.
            self._send(Message.SECURITY, U32.pack(SecurityType.NONE))
            self._complete()
        else:
            self._send(Message.SECURITY, bytes([1, SecurityType.NONE]))
            self._goto(DownstreamState.AWAIT_CHOICE)
        return True

    def _on_choice(self) -> bool:
        """§7.1.2: the client's U8 choice; §7.2.1: None gets SecurityResult OK in 3.8 only."""
        data = self._take(U8.size)
        if data is None:
            return False
        if data[0] != SecurityType.NONE:
            raise RemoteProtocolError(
                f"the browser chose security type {data[0]}, which the proxy did not offer"
            )
        if self.version is RfbVersion.V3_8:
            self._send(Message.RESULT, U32.pack(0))
        self._complete()
        return True
