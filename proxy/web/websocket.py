"""GET <base>/websockify: check, upgrade, redeem the ticket, dial the console, bridge it."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import hdrs, web

from proxy.closecodes import Close
from proxy.consoles.registry import LiveConsole
from proxy.observe.audit import ConsoleFacts
from proxy.protocols.rfb.input import ClientMessageScanner
from proxy.protocols.rfb.security import secure_vnc
from proxy.protocols.spice import link as spice
from proxy.protocols.spice.link import secure_spice
from proxy.relay.bridge import (
    READ_SIZE,
    Bridge,
    BridgeLimits,
    BridgeStats,
    Streams,
    connect_host,
)
from proxy.relay.hostlink import HostLink
from proxy.relay.tls import connect_tls
from proxy.tickets.store import Ticket, TicketStoreUnavailable
from proxy.web.errors import ApiError
from proxy.web.keys import (
    AUDIT,
    CLUSTER,
    CONFIG,
    CONSOLES,
    METRICS,
    RATE_LIMITER,
    REGISTRY,
    TLS_CONTEXT,
)

log = logging.getLogger(__name__)

TOKEN_PROTOCOL_PREFIX = "token."


def token_from(request: web.Request) -> str:
    """The ticket from ``?token=`` or from a ``token.<T>`` WebSocket subprotocol."""
    if token := request.query.get("token", ""):
        return token
    offered = request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "")
    for proto in (p.strip() for p in offered.split(",")):
        if proto.startswith(TOKEN_PROTOCOL_PREFIX):
            return proto[len(TOKEN_PROTOCOL_PREFIX) :]
    return ""


def origin_allowed(request: web.Request) -> bool:
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        # Only browsers send Origin, and only browsers can be tricked into cross-site requests.
        return True
    own = f"{request.scheme}://{request.host}"
    return origin == own or origin in request.app[CONFIG].server.allowed_origins


async def websockify(request: web.Request) -> web.StreamResponse:
    # Checked before the upgrade: a page on another site must not borrow the user's ticket.
    if not origin_allowed(request):
        log.warning("refused WebSocket from origin %s", request.headers.get(hdrs.ORIGIN))
        raise ApiError(403, "ORIGIN.FORBIDDEN", "This page's origin may not open consoles here.")
    config = request.app[CONFIG]
    ws = web.WebSocketResponse(
        protocols=("binary",),
        compress=False,  # console payloads are already compressed; deflate costs 30x throughput
        max_msg_size=config.limits.max_frame_size,
        heartbeat=30.0,
        timeout=5.0,
    )
    if not ws.can_prepare(request).ok:
        raise ApiError(
            400, "REQUEST.NOT_WEBSOCKET", "This endpoint only accepts WebSocket upgrades."
        )
    await ws.prepare(request)
    console = LiveConsole(ws, client_ip=request.remote or "")
    registry, metrics = request.app[REGISTRY], request.app[METRICS]
    registry.add(console)
    metrics.active.inc()
    try:
        reason = await _serve(request, console)
    except TicketStoreUnavailable as exc:
        log.error("cluster state unavailable: %s", exc.reason)
        reason = Close.STORE_UNAVAILABLE
    finally:
        registry.remove(console)
        metrics.active.dec()
        cluster = request.app.get(CLUSTER)
        if console.claimed and cluster is not None:
            await cluster.release(console.vm_uuid, console.console_id)
    reason = console.interrupted or reason
    metrics.closed.labels(reason.name.lower()).inc()
    if not ws.closed:
        await ws.close(code=reason.code, message=reason.reason.encode())
    return ws


async def _serve(request: web.Request, console: LiveConsole) -> Close:
    app = request.app
    limits = app[CONFIG].limits
    if not app[RATE_LIMITER].allow(console.client_ip):
        app[METRICS].rejected.labels("rate").inc()
        return Close.RATE_LIMITED
    if len(app[REGISTRY]) > limits.max_connections:
        app[METRICS].rejected.labels("max_connections").inc()
        return Close.TOO_MANY
    token = token_from(request)
    try:
        ticket = await app[CONSOLES].redeem(token)
    except TicketStoreUnavailable as exc:
        log.error("ticket store unavailable: %s", exc.reason)
        return Close.STORE_UNAVAILABLE
    app[METRICS].redeems.labels("ok" if ticket else "invalid").inc()
    if ticket is None:
        return Close.TICKET_INVALID
    if ticket.uses > 1:
        console.group = hashlib.sha256(token.encode()).hexdigest()[:16]
    vm_key = ticket.vm_uuid or f"{ticket.host}:{ticket.port}"
    if not await _claim_vm(request, console, vm_key):
        app[METRICS].rejected.labels("max_per_vm").inc()
        return Close.TOO_MANY_FOR_VM
    if not app[CONSOLES].policy.permits(ticket.host, ticket.port):
        log.warning(
            "refused console target %s:%s: outside [targets] allow", ticket.host, ticket.port
        )
        return Close.TARGET_REFUSED
    return await _connect_and_bridge(request, console, ticket)


async def _claim_vm(request: web.Request, console: LiveConsole, vm_key: str) -> bool:
    """Count the console against its VM's limit: cluster-wide with Redis, else here."""
    limit = request.app[CONFIG].limits.max_per_vm
    local_count = request.app[REGISTRY].assign_vm(console, vm_key)
    cluster = request.app.get(CLUSTER)
    if cluster is None:
        return local_count <= limit
    console.claimed = await cluster.claim(vm_key, console.console_id, limit)
    return console.claimed


async def _dial(request: web.Request, ticket: Ticket) -> Streams | Close:
    timeout = request.app[CONFIG].limits.connect_timeout
    if not ticket.tls:
        return await connect_host(ticket.host, ticket.port, timeout)
    context = request.app[TLS_CONTEXT]
    if context is None:  # minted elsewhere with TLS: never fall back to plaintext
        return Close.TLS_REQUIRED
    return await connect_tls(ticket.host, ticket.port, context, timeout, READ_SIZE)


@dataclass(frozen=True)
class Prelude:
    """What the handshake the proxy took part in leaves for the bridge."""

    to_host: bytes = b""
    to_browser: bytes = b""
    # Says whether browser bytes are input; None counts every byte (raw consoles).
    is_input: Callable[[bytes], bool] | None = None
    # False for sockets that never carry input (SPICE display, cursor...): no idle timeout.
    carries_input: bool = True


async def _handshake(
    request: web.Request, console: LiveConsole, ticket: Ticket, streams: Streams
) -> Prelude | Close:
    reader, writer = streams
    config = request.app[CONFIG]
    timeout = config.limits.handshake_timeout
    if ticket.protocol == "vnc":
        done = await secure_vnc(
            console.ws,
            reader,
            writer,
            ticket.password,
            timeout,
            tls=request.app[TLS_CONTEXT],
            require_tls=config.tls.vnc_required,
            server_hostname=ticket.host,
        )
        if isinstance(done, Close):
            return done
        # The browser's stream starts with its one-byte ClientInit, then messages.
        scanner = ClientMessageScanner(skip=1)
        scanner.feed(done[0])
        return Prelude(done[0], done[1], scanner.feed)
    if ticket.protocol == "spice":
        linked = await secure_spice(console.ws, reader, writer, ticket.password, timeout)
        if isinstance(linked, Close):
            return linked
        # Key and mouse events travel on the inputs channel only.
        inputs = linked.channel_type == spice.INPUTS
        return Prelude(linked.to_host, linked.to_browser, carries_input=inputs)
    return Prelude()


async def _connect_and_bridge(request: web.Request, console: LiveConsole, ticket: Ticket) -> Close:
    app = request.app
    started = time.monotonic()
    connected = await _dial(request, ticket)
    if isinstance(connected, Close):
        return connected
    app[METRICS].connect_seconds.observe(time.monotonic() - started)
    facts = ConsoleFacts(
        console.console_id,
        ticket.vm_uuid,
        f"{ticket.host}:{ticket.port}",
        console.client_ip,
        ticket.protocol,
    )
    app[AUDIT].opened(facts)
    stats = BridgeStats()
    reason = Close.HOST_CLOSED
    try:
        reason = await _pump(request, console, ticket, connected, stats)
        return reason
    finally:
        # The StreamWriter stays referenced until here: dropping it would close the transport.
        connected[1].close()
        reason = console.interrupted or reason
        app[METRICS].bytes.labels("to_host").inc(stats.bytes_to_host)
        app[METRICS].bytes.labels("to_browser").inc(stats.bytes_to_browser)
        app[AUDIT].closed(
            facts, console.started, reason.name.lower(), stats.bytes_to_host, stats.bytes_to_browser
        )


async def _pump(
    request: web.Request,
    console: LiveConsole,
    ticket: Ticket,
    streams: Streams,
    stats: BridgeStats,
) -> Close:
    limits = request.app[CONFIG].limits
    prelude = await _handshake(request, console, ticket, streams)
    if isinstance(prelude, Close):
        return prelude
    idle = limits.idle_timeout if prelude.carries_input else None
    host = HostLink.adopt(*streams)
    limited = BridgeLimits(idle, limits.max_session)
    bridge = Bridge(console.ws, host, limited, prelude.is_input, stats)
    reason = await bridge.run(prelude.to_host, prelude.to_browser)
    if reason in (Close.IDLE, Close.SESSION_LIMIT):
        # The other channels of a SPICE console end with the one that timed out.
        await request.app[REGISTRY].close_group(console.group, reason)
    return reason
