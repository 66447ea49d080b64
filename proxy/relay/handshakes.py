"""The handshake the proxy takes part in before the bridge pumps raw bytes.

VNC: the proxy answers the server's authentication with the console password and offers the
browser None (:mod:`proxy.protocols.rfb.security`). SPICE: the proxy puts the password into each
channel's link (:mod:`proxy.protocols.spice.driver`). Static (websockify) targets pass raw.

View-only consoles: for VNC the bridge filters the browser's messages
(:class:`~proxy.protocols.rfb.input.ClientStreamFilter`); for SPICE the inputs channel carries
nothing to the host after its link.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass

from proxy.closecodes import Close
from proxy.protocols.rfb.input import ClientStreamFilter
from proxy.protocols.rfb.security import secure_vnc
from proxy.protocols.spice.driver import secure_spice
from proxy.protocols.spice.link import CHANNEL_NAMES, INPUTS
from proxy.relay.bridge import Transform
from proxy.relay.browser import BrowserSocket
from proxy.relay.dial import Streams

# The protocols whose handshake the proxy takes part in; others pass raw from the first byte.
HANDSHAKES = frozenset({"vnc", "spice"})


@dataclass(frozen=True, slots=True)
class Prelude:
    """What the handshake leaves for the bridge."""

    to_host: bytes = b""
    to_browser: bytes = b""
    # Says whether browser bytes are input; None counts every byte (raw consoles).
    is_input: Callable[[bytes], bool] | None = None
    # False for sockets that never carry input (SPICE display, cursor...): no idle timeout.
    carries_input: bool = True
    # Rewrites or drops browser bytes (see Bridge); replaces is_input when set.
    transform: Transform | None = None
    # A SPICE socket's channel ("main", "display", ...); "" for VNC and raw consoles.
    channel: str = ""


@dataclass(frozen=True, slots=True)
class HandshakeSettings:
    timeout: float
    # TLS to hypervisors (VeNCrypt for VNC), or None when [tls] is not configured.
    tls: ssl.SSLContext | None = None
    vnc_requires_tls: bool = False


async def handshake(
    protocol: str,
    browser: BrowserSocket,
    streams: Streams,
    password: str | None,
    host: str,
    settings: HandshakeSettings,
    view_only: bool = False,
) -> Prelude | Close:
    reader, writer = streams
    if protocol == "vnc":
        done = await secure_vnc(
            browser,
            reader,
            writer,
            password,
            settings.timeout,
            tls=settings.tls,
            require_tls=settings.vnc_requires_tls,
            server_hostname=host,
        )
        if isinstance(done, Close):
            return done
        # The browser's stream starts with its one-byte ClientInit, then messages.
        return Prelude(done[0], done[1], transform=ClientStreamFilter(view_only).feed)
    if protocol == "spice":
        linked = await secure_spice(browser, reader, writer, password, settings.timeout)
        if isinstance(linked, Close):
            return linked
        # Key and mouse events travel on the inputs channel only.
        inputs = linked.channel_type == INPUTS
        channel = CHANNEL_NAMES.get(linked.channel_type, str(linked.channel_type))
        if inputs and view_only:
            return Prelude(b"", linked.to_browser, transform=_nothing_to_host, channel=channel)
        return Prelude(linked.to_host, linked.to_browser, carries_input=inputs, channel=channel)
    return Prelude()


def _nothing_to_host(data: bytes) -> tuple[bytes, bool]:
    # A view-only SPICE inputs channel: the person's activity still counts against idling.
    return b"", True
