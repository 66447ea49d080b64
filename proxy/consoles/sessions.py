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
from typing import Any

from proxy.closecodes import Close
from proxy.consoles.cluster import SharedCounts
from proxy.consoles.limits import Budget
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
        failures: Budget,
        metrics: Metrics,
        audit: AuditLog,
        cluster: SharedCounts | None = None,
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
        # Consoles being closed because their required recording failed, and consoles' ends
        # carried through a cancellation (kept referenced until done).
        self._closing: set[asyncio.Future[Any]] = set()

    async def serve(self, browser: BrowserSocket, token: str, client_ip: str) -> Close:
        """Run the console to its end; close the browser's socket with the reason."""
        console = LiveConsole(browser, client_ip=client_ip)
        CONSOLE_ID.set(console.console_id)  # this task's log lines name the console
        self.registry.add(console)
        self.metrics.active.inc()
        reason = Close.HOST_CLOSED
        prepared: Prepared | Close | None = None
        try:
            # The bridge runs in this frame, so a console that stays open keeps none of the
            # frames of the steps that opened it (memory per idle console).
            prepared = await self._prepare(console, token)
            if isinstance(prepared, Close):
                reason = prepared
            else:
                reason = await prepared.bridge.run(prepared.to_host, prepared.to_browser)
        except asyncio.CancelledError:
            # aiohttp may cancel the handler once the browser's connection is gone (its test
            # server does), possibly right after a limit closed it: the end still acts on why
            # (a SPICE console's other channels close with it).
            if isinstance(prepared, Prepared) and prepared.bridge.ended is not None:
                reason = prepared.bridge.ended
            raise
        except StoreUnavailable as exc:
            log.error("shared state unavailable: %s", exc.reason)
            reason = Close.STORE_UNAVAILABLE
        finally:
            # Each step also when aiohttp cancels this task (the browser's connection went).
            try:
                if isinstance(prepared, Prepared):
                    reason = await self._finish(console, prepared, reason)
            finally:
                reason = console.interrupted or reason
                self.metrics.closed.labels(reason.name.lower()).inc()
                await self._leave(console)
        if not browser.closed:
            await browser.close(code=reason.code, message=reason.reason.encode())
        return reason

    async def _leave(self, console: LiveConsole) -> None:
        last = not self.registry.counts(console)
        self.registry.remove(console)
        self.metrics.active.dec()
        if console.claimed and last and self.cluster is not None:
            await self.cluster.release(console.vm_uuid, console.counted_as)

    async def _prepare(self, console: LiveConsole, token: str) -> Prepared | Close:
        admitted = await self._admit(console, token)
        if isinstance(admitted, Close):
            return admitted
        return await self._connect(console, admitted)

    async def _admit(self, console: LiveConsole, token: str) -> Ticket | Close:
        # Only failed redemptions spend this per-address budget (mints have their own): a valid
        # ticket is proof of a mint, so it costs nothing, nor do a SPICE console's channel
        # sockets. An address that has spent it guessing is refused before any lookup.
        if await self.failures.exhausted(console.client_ip):
            self.metrics.rejected.labels("rate").inc()
            return Close.RATE_LIMITED
        if len(self.registry) > self.limits.max_connections:
            self.metrics.rejected.labels("max_connections").inc()
            return Close.TOO_MANY
        ticket = await self.service.redeem(token)
        self.metrics.redeems.labels("ok" if ticket else "invalid").inc()
        if ticket is None:
            await self.failures.spend(console.client_ip)
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

    async def _connect(self, console: LiveConsole, ticket: Ticket) -> Prepared | Close:
        """Dial, begin the recording, run the handshake, and build the bridge (not yet run)."""
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
        opened = Opened(facts, streams, BridgeStats())
        console.stats = opened.stats
        try:
            prepared = await self._begin(console, ticket, opened)
        except BaseException:
            await self._finish(console, opened, Close.HOST_CLOSED)
            raise
        if isinstance(prepared, Close):
            return await self._finish(console, opened, prepared)
        return prepared

    async def _begin(
        self, console: LiveConsole, ticket: Ticket, opened: Opened
    ) -> Prepared | Close:
        recordings = self.recordings
        if recordings is not None and recordings.enabled:
            opened.recorder = await recordings.begin(opened.facts, console.started)
            if opened.recorder is None and recordings.required:
                return Close.RECORDING_UNAVAILABLE
            if opened.recorder is not None and recordings.required:
                opened.recorder.on_failure = lambda: self._end_unrecorded(console)
        if isinstance(opened.streams, HostLink):
            prelude, host = Prelude(), opened.streams
        else:
            done = await handshake(
                ticket.protocol,
                console.ws,
                opened.streams,
                ticket.password,
                ticket.host,
                self.handshakes,
                ticket.view_only,
            )
            if isinstance(done, Close):
                return done
            prelude, host = done, HostLink.adopt(*opened.streams)
        idle = self.limits.idle_timeout if prelude.carries_input else None
        console.stop_host = host.abort
        limits = BridgeLimits(idle, self.limits.max_session)
        bridge = Bridge(console.ws, host, limits, prelude.is_input, opened.stats, prelude.transform)
        if opened.recorder is not None and recordings is not None:
            opened.recorder.channel = prelude.channel
            interval = recordings.config.keyframe_interval
            hooks = RecordingHooks(opened.recorder, ticket.protocol, interval, host.write)
            bridge.observe, bridge.host_tap = hooks.observe, hooks.host_tap
            opened.hooks = hooks
            hooks.start()
        return Prepared(opened, bridge, prelude.to_host, prelude.to_browser)

    async def _finish(
        self, console: LiveConsole, opened: Opened | Prepared, reason: Close
    ) -> Close:
        """:meth:`_ended`, carried through even when this task is cancelled (aiohttp cancels the
        handler when the browser's connection goes, maybe while a recording is flushing): the
        console's close audit line and the end of its recording are not lost."""
        plain = opened.opened if isinstance(opened, Prepared) else opened
        if plain.recorder is None and reason not in (Close.IDLE, Close.SESSION_LIMIT):
            # Nothing in it waits: done here and now, with no turn of the loop in which the
            # handler could be cancelled before aiohttp writes its access line.
            return await self._ended(console, opened, reason)
        ending = asyncio.ensure_future(self._ended(console, opened, reason))
        self._closing.add(ending)
        ending.add_done_callback(self._closing.discard)
        return await asyncio.shield(ending)

    async def _ended(self, console: LiveConsole, opened: Opened | Prepared, reason: Close) -> Close:
        """After a dialled console: stop its recording, count its bytes, audit its end."""
        if isinstance(opened, Prepared):
            opened = opened.opened
            if reason in (Close.IDLE, Close.SESSION_LIMIT):
                # The other channels of a SPICE console end with the one that timed out.
                await self.registry.close_group(console.group, reason)
        if opened.hooks is not None:
            opened.hooks.stop()
        if isinstance(opened.streams, HostLink):
            opened.streams.close()
        else:
            # The StreamWriter stays referenced until here: dropping it would close the transport.
            opened.streams[1].close()
        reason = console.interrupted or reason
        stats, recorder = opened.stats, opened.recorder
        self.metrics.bytes.labels("to_host").inc(stats.bytes_to_host)
        self.metrics.bytes.labels("to_browser").inc(stats.bytes_to_browser)
        outcome = await recorder.close(reason.name.lower()) if recorder else None
        self.audit.closed(
            opened.facts,
            console.started,
            reason.name.lower(),
            stats.bytes_to_host,
            stats.bytes_to_browser,
            recording=outcome.audit() if outcome else None,
        )
        return reason

    def _end_unrecorded(self, console: LiveConsole) -> None:
        """[recording] mode = "required": a console whose recording stopped ends now."""
        task = asyncio.ensure_future(console.interrupt(Close.RECORDING_UNAVAILABLE))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


@dataclass(eq=False, slots=True)
class Opened:
    """A console whose host was dialled: what its end must close, count and audit."""

    facts: ConsoleFacts
    # Streams for a handshake of ours; a raw console is dialled straight into its host link.
    streams: Streams | HostLink
    stats: BridgeStats
    recorder: Recorder | None = None
    hooks: RecordingHooks | None = None


@dataclass(eq=False, slots=True)
class Prepared:
    """A console ready to bridge: the handshake is done."""

    opened: Opened
    bridge: Bridge
    to_host: bytes
    to_browser: bytes
