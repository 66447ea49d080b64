"""One console from the browser's upgraded socket to its end.

admit (rate, capacity) → redeem the ticket → count it against its VM → check the target →
dial → handshake → bridge; the answer is why it ended (a close code). ``web/`` upgrades the
request and hands the socket over; everything after that lives here, free of HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass

from proxy.closecodes import Close
from proxy.consoles.cluster import ClusterState
from proxy.consoles.limits import RateLimiter
from proxy.consoles.registry import ConsoleRegistry, LiveConsole
from proxy.consoles.service import ConsoleService
from proxy.observe.audit import AuditLog, ConsoleFacts
from proxy.observe.logs import CONSOLE_ID
from proxy.observe.metrics import Metrics
from proxy.recording.hooks import RecordingHooks
from proxy.recording.recorder import Recorder, Recordings
from proxy.relay.bridge import Bridge, BridgeLimits, BridgeStats
from proxy.relay.browser import BrowserSocket
from proxy.relay.dial import Streams, dial, dial_link
from proxy.relay.handshakes import HANDSHAKES, HandshakeSettings, Prelude, handshake
from proxy.relay.hostlink import HostLink
from proxy.tickets.store import StoreUnavailable, Ticket

log = logging.getLogger(__name__)


def token_key(token: str) -> str:
    """What names a console without being its ticket: the SPICE group, the viewer count."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class SessionLimits:
    max_connections: int
    max_per_vm: int
    idle_timeout: float
    max_session: float
    connect_timeout: float


class ConsoleSessions:
    """Everything a console needs after the upgrade, wired once per application."""

    def __init__(
        self,
        service: ConsoleService,
        registry: ConsoleRegistry,
        limits: SessionLimits,
        handshakes: HandshakeSettings,
        failures: RateLimiter,
        metrics: Metrics,
        audit: AuditLog,
        cluster: ClusterState | None = None,
        recordings: Recordings | None = None,
    ) -> None:
        self.service = service
        self.registry = registry
        self.limits = limits
        self.handshakes = handshakes
        self.failures = failures
        self.metrics = metrics
        self.audit = audit
        self.cluster = cluster
        self.recordings = recordings
        # Consoles being closed because their required recording failed (kept referenced).
        self._closing: set[asyncio.Task[None]] = set()

    async def serve(self, browser: BrowserSocket, token: str, client_ip: str) -> Close:
        """Run the console to its end; close the browser's socket with the reason."""
        console = LiveConsole(browser, client_ip=client_ip)
        CONSOLE_ID.set(console.console_id)  # this task's log lines name the console
        self.registry.add(console)
        self.metrics.active.inc()
        try:
            # Admitted, then connected: _admit's frame is gone while the console lives.
            admitted = await self._admit(console, token)
            if isinstance(admitted, Close):
                reason = admitted
            else:
                reason = await self._connect(console, admitted)
        except StoreUnavailable as exc:
            log.error("shared state unavailable: %s", exc.reason)
            reason = Close.STORE_UNAVAILABLE
        finally:
            last = not self.registry.counts(console)
            self.registry.remove(console)
            self.metrics.active.dec()
            if console.claimed and last and self.cluster is not None:
                await self.cluster.release(console.vm_uuid, console.counted_as)
        reason = console.interrupted or reason
        self.metrics.closed.labels(reason.name.lower()).inc()
        if not browser.closed:
            await browser.close(code=reason.code, message=reason.reason.encode())
        return reason

    async def _admit(self, console: LiveConsole, token: str) -> Ticket | Close:
        # Only failed redemptions spend this per-address budget (mints have their own): a valid
        # ticket is proof of a mint, so it costs nothing, nor do a SPICE console's channel
        # sockets. An address that has spent it guessing is refused before any lookup.
        if self.failures.exhausted(console.client_ip):
            self.metrics.rejected.labels("rate").inc()
            return Close.RATE_LIMITED
        if len(self.registry) > self.limits.max_connections:
            self.metrics.rejected.labels("max_connections").inc()
            return Close.TOO_MANY
        ticket = await self.service.redeem(token)
        self.metrics.redeems.labels("ok" if ticket else "invalid").inc()
        if ticket is None:
            self.failures.allow(console.client_ip)
            return Close.TICKET_INVALID
        console.token_key = token_key(token)
        if ticket.uses > 1:
            console.group = console.token_key
        console.ticket = ticket
        if not await self._claim_vm(console, ticket.vm_uuid or f"{ticket.host}:{ticket.port}"):
            self.metrics.rejected.labels("max_per_vm").inc()
            return Close.TOO_MANY_FOR_VM
        if not self.service.policy.permits(ticket.host, ticket.port):
            log.warning(
                "refused console target %s:%s: outside [targets] allow", ticket.host, ticket.port
            )
            return Close.TARGET_REFUSED
        return ticket

    async def _claim_vm(self, console: LiveConsole, vm_key: str) -> bool:
        """Count the console against its VM's limit: cluster-wide with Redis, else here."""
        local_count = self.registry.assign_vm(console, vm_key)
        if self.cluster is None:
            return local_count <= self.limits.max_per_vm
        console.claimed = await self.cluster.claim(
            vm_key, console.counted_as, self.limits.max_per_vm
        )
        return console.claimed

    async def _connect(self, console: LiveConsole, ticket: Ticket) -> Close:
        if ticket.tls and self.handshakes.tls is None:
            return Close.TLS_REQUIRED  # minted elsewhere with TLS: never fall back to plaintext
        started = time.monotonic()
        tls = self.handshakes.tls if ticket.tls else None
        streams: Streams | HostLink | Close
        if tls is None and ticket.protocol not in HANDSHAKES:
            streams = await dial_link(ticket.host, ticket.port, self.limits.connect_timeout)
        else:
            streams = await dial(ticket.host, ticket.port, self.limits.connect_timeout, tls)
        if isinstance(streams, Close):
            return streams
        self.metrics.connect_seconds.observe(time.monotonic() - started)
        facts = ConsoleFacts(
            console.console_id,
            ticket.vm_uuid,
            f"{ticket.host}:{ticket.port}",
            console.client_ip,
            ticket.protocol,
            ticket.account_uuid,
            ticket.account_name,
        )
        self.audit.opened(facts)
        stats = console.stats = BridgeStats()
        reason = Close.HOST_CLOSED
        recorder: Recorder | None = None
        try:
            recordings = self.recordings
            if recordings is not None and recordings.enabled:
                recorder = await recordings.begin(facts, console.started)
                if recorder is None and recordings.required:
                    reason = Close.RECORDING_UNAVAILABLE
                    return reason
                if recorder is not None and recordings.required:
                    recorder.on_failure = lambda: self._end_unrecorded(console)
            reason = await self._pump(console, ticket, streams, stats, recorder)
            return reason
        finally:
            # The StreamWriter stays referenced until here: dropping it would close the transport.
            if isinstance(streams, HostLink):
                streams.close()
            else:
                streams[1].close()
            reason = console.interrupted or reason
            self.metrics.bytes.labels("to_host").inc(stats.bytes_to_host)
            self.metrics.bytes.labels("to_browser").inc(stats.bytes_to_browser)
            outcome = await recorder.close(reason.name.lower()) if recorder else None
            self.audit.closed(
                facts,
                console.started,
                reason.name.lower(),
                stats.bytes_to_host,
                stats.bytes_to_browser,
                recording=outcome.audit() if outcome else None,
            )

    def _end_unrecorded(self, console: LiveConsole) -> None:
        """[recording] mode = "required": a console whose recording stopped ends now."""
        task = asyncio.ensure_future(console.interrupt(Close.RECORDING_UNAVAILABLE))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _pump(
        self,
        console: LiveConsole,
        ticket: Ticket,
        streams: Streams | HostLink,
        stats: BridgeStats,
        recorder: Recorder | None = None,
    ) -> Close:
        if isinstance(streams, HostLink):
            prelude, host = Prelude(), streams
        else:
            done = await handshake(
                ticket.protocol,
                console.ws,
                streams,
                ticket.password,
                ticket.host,
                self.handshakes,
                ticket.view_only,
            )
            if isinstance(done, Close):
                return done
            prelude, host = done, HostLink.adopt(*streams)
        idle = self.limits.idle_timeout if prelude.carries_input else None
        console.stop_host = host.abort
        limits = BridgeLimits(idle, self.limits.max_session)
        bridge = Bridge(console.ws, host, limits, prelude.is_input, stats, prelude.transform)
        hooks = None
        if recorder is not None and self.recordings is not None:
            interval = self.recordings.config.keyframe_interval
            hooks = RecordingHooks(recorder, ticket.protocol, interval, host.write)
            bridge.observe, bridge.host_tap = hooks.observe, hooks.host_tap
            hooks.start()
        try:
            reason = await bridge.run(prelude.to_host, prelude.to_browser)
        finally:
            if hooks is not None:
                hooks.stop()
        if reason in (Close.IDLE, Close.SESSION_LIMIT):
            # The other channels of a SPICE console end with the one that timed out.
            await self.registry.close_group(console.group, reason)
        return reason
