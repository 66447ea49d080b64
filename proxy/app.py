"""The application factory: ``create_app(config)`` builds everything, tests included."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import aiohttp_jinja2
import jinja2
from aiohttp import web
from redis.asyncio import Redis

from proxy.closecodes import Close
from proxy.config import (
    Config,
    ConfigError,
    decode_cookie_key,
    decode_key,
    decode_signing_keys,
    redis_sentinels,
    redis_url,
    redis_wait_replicas,
)
from proxy.consoles.background import running
from proxy.consoles.cluster import REFRESH_EVERY, ClusterState, ClusterUnavailable, SharedCounts
from proxy.consoles.limits import Budget, LocalBudget, RateLimiter
from proxy.consoles.live import LiveDirectory, instance_name
from proxy.consoles.live_tasks import live_tasks
from proxy.consoles.registry import ConsoleRegistry
from proxy.consoles.service import ConsoleService, TicketPolicy
from proxy.consoles.sessions import ConsoleSessions, SessionLimits
from proxy.consoles.targets import TargetPolicy
from proxy.observe import redaction
from proxy.observe.audit import AuditLog
from proxy.observe.metrics import Metrics
from proxy.recording.recorder import Recordings
from proxy.recording.store import RecordingStore
from proxy.relay.handshakes import HandshakeSettings
from proxy.relay.tls import client_context
from proxy.tickets.memory import MemoryTicketStore
from proxy.tickets.redis_client import redis_client_from_sentinels, redis_client_from_url
from proxy.tickets.redis_store import RedisTicketStore
from proxy.tickets.signed import TicketSigner
from proxy.tickets.static import StaticTokens, load_plugin
from proxy.tickets.store import TicketStore
from proxy.web.forwarded import forwarded_middleware, forwarded_rewriter
from proxy.web.keys import (
    AUDIT,
    CLUSTER,
    CONFIG,
    CONSOLES,
    HUB,
    INSTANCE,
    LIVE,
    METRICS,
    OPERATOR_COOKIES,
    OPERATOR_FAILURES,
    RATE_LIMITER,
    RECORDINGS,
    REGISTRY,
    SESSIONS,
    WORKER,
    ZSTACK,
    ZSTACK_LOGIN,
)
from proxy.web.middlewares import (
    error_middleware,
    javascript_type,
    security_headers,
    settle_request_body,
    upgrade_fast_path,
)
from proxy.web.operator import FAILURES_PER_MINUTE
from proxy.web.operator_cookie import CookieSealer
from proxy.web.routes import add_routes
from proxy.web.websocket import websockify
from proxy.workers.client import HubClient
from proxy.workers.role import WorkerRole, share_limits
from proxy.workers.shared import HubBudget, HubCounts, HubDirectory, HubTicketStore
from proxy.zstack.client import ZStackClient
from proxy.zstack.login import ZStackLogin

log = logging.getLogger(__name__)


PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent


def assets_dir(config: Config) -> Path:
    """Where ``templates/`` and ``static/`` are: ``[server] assets_dir`` when set, else the
    installed package's own copy (a wheel carries them in ``proxy/``), else the repository (a
    checkout, or ``pip install -e .``)."""
    if config.server.assets_dir:
        return Path(config.server.assets_dir)
    return PACKAGE_DIR if (PACKAGE_DIR / "templates").is_dir() else REPO_ROOT


def create_app(config: Config, worker: WorkerRole | None = None) -> web.Application:
    """The application; ``worker`` when it is one of several processes (``serve --workers``)."""
    if worker is not None:
        config = share_limits(config, worker.workers)
    # Outermost first: forwarded headers are applied before anything reads the request, and
    # security headers also go on the JSON errors made below them.
    rewrite = forwarded_rewriter(config.server.trusted_proxies)
    middlewares = [
        upgrade_fast_path(rewrite, websockify),
        forwarded_middleware(rewrite),
        settle_request_body,
        security_headers,
        error_middleware,
    ]
    # aiohttp's own log lines may quote a request line or WebSocket subprotocols: tickets.
    redaction.install()
    app = web.Application(middlewares=middlewares, client_max_size=64 * 1024)
    app[CONFIG] = config
    if worker is not None:
        app[WORKER] = worker
    app[REGISTRY] = ConsoleRegistry()
    app[INSTANCE] = instance_name()
    app[METRICS] = Metrics()
    app[AUDIT] = audit_log(config)
    app[RECORDINGS] = Recordings(config.recording, app[METRICS], app[INSTANCE])
    limits = config.limits
    app[RATE_LIMITER] = LocalBudget(RateLimiter(limits.rate_per_minute, limits.rate_burst))
    operators = config.operator
    cookie_key = decode_cookie_key(operators.cookie_key) if operators.cookie_key else None
    app[OPERATOR_COOKIES] = CookieSealer(cookie_key, operators.session_ttl)
    app[OPERATOR_FAILURES] = LocalBudget(RateLimiter(FAILURES_PER_MINUTE, FAILURES_PER_MINUTE))
    # Built here, not at start-up, so a bad [tls] file stops create_app with a ConfigError.
    handshakes = HandshakeSettings(
        config.limits.handshake_timeout, client_context(config.tls), config.tls.vnc_required
    )
    if config.tickets.token_plugin:
        # Checked here, before anything is called with token_source: a bad name is a ConfigError.
        try:
            load_plugin(config.tickets.token_plugin)
        except ValueError as exc:
            raise ConfigError("tickets.token_plugin", str(exc)) from None
    root = assets_dir(config)
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(root / "templates"), autoescape=True)
    # Before the consoles: the writer outlives them, so their recordings close properly.
    app.cleanup_ctx.append(recording_writer)
    app.cleanup_ctx.append(functools.partial(console_services, handshakes=handshakes))
    app.on_response_prepare.append(javascript_type)
    app.on_shutdown.append(close_consoles)
    app.on_cleanup.append(close_audit)
    add_routes(app, config.server.base_path, root)
    return app


async def console_services(
    app: web.Application, handshakes: HandshakeSettings
) -> AsyncIterator[None]:
    """The ZStack client, the ticket store, the console sessions and what is shared with other
    instances (Redis) or, without Redis, with the other workers of this machine (their hub)."""
    config = app[CONFIG]
    worker = app.get(WORKER)
    redis = redis_client(config)
    hub = await HubClient.connect(worker.hub_path) if worker is not None else None
    shared_hub = hub if redis is None else None
    async with aiohttp.ClientSession() as http:
        app[ZSTACK] = ZStackClient(http, config.zstack.url, config.zstack.timeout)
        app[ZSTACK_LOGIN] = ZStackLogin(http, config.zstack.url, config.zstack.timeout)
        store = HubTicketStore(shared_hub) if shared_hub else ticket_store(config, redis)
        app[CONSOLES] = console_service(config, app[ZSTACK], store, app)
        cluster: SharedCounts | None = None
        if redis is not None:
            cluster = cluster_state(config, redis)
        elif shared_hub is not None:
            cluster = HubCounts(shared_hub, app[INSTANCE])
        app[SESSIONS] = ConsoleSessions(
            app[CONSOLES],
            app[REGISTRY],
            session_limits(config),
            handshakes,
            failures_budget(app, shared_hub),
            app[METRICS],
            app[AUDIT],
            cluster,
            app[RECORDINGS],
        )
        async with contextlib.AsyncExitStack() as background:
            if hub is not None:
                await background.enter_async_context(worker_tasks(app, hub))
            if shared_hub is not None and cluster is not None:
                await background.enter_async_context(hub_directory_tasks(app, shared_hub))
                await background.enter_async_context(cluster_tasks(app, cluster))
            elif redis is not None and isinstance(cluster, ClusterState):
                live = app[LIVE] = live_directory(config, redis, cluster.instance_id)
                await background.enter_async_context(cluster_tasks(app, cluster))
                await background.enter_async_context(live_tasks(live, app[REGISTRY], app[INSTANCE]))
            yield
        await app[CONSOLES].store.close()


def failures_budget(app: web.Application, hub: HubClient | None) -> Budget:
    """The failed redemptions' budget. With the workers' hub every per-address budget (this one,
    mints', operator sign-ins') is the machine's, not each worker's: the hub keeps them."""
    limits = app[CONFIG].limits
    if hub is None:
        return LocalBudget(RateLimiter(limits.rate_per_minute, limits.rate_burst))
    app[RATE_LIMITER] = HubBudget(hub, "mint", limits.rate_per_minute, limits.rate_burst)
    app[OPERATOR_FAILURES] = HubBudget(
        hub, "operator_sign_in", FAILURES_PER_MINUTE, FAILURES_PER_MINUTE
    )
    return HubBudget(hub, "redemption_failures", limits.rate_per_minute, limits.rate_burst)


@contextlib.asynccontextmanager
async def worker_tasks(app: web.Application, hub: HubClient) -> AsyncIterator[None]:
    """A worker answers for its metrics (``/metrics`` on any worker sums them all); its hub
    connection closes last."""
    app[HUB] = hub
    metrics = app[METRICS]

    async def exposition(_body: object) -> str:
        return metrics.exposition()[0].decode()

    hub.on("metrics", exposition)
    try:
        yield
    finally:
        await hub.close()


@contextlib.asynccontextmanager
async def hub_directory_tasks(app: web.Application, hub: HubClient) -> AsyncIterator[None]:
    """Without Redis, the workers' listing: this worker's consoles and targets when others ask,
    and the closes they send."""
    directory = HubDirectory(hub, app[REGISTRY], app[INSTANCE])
    app[LIVE] = directory

    async def close(console_id: str) -> int:
        return await app[REGISTRY].close_console(console_id, Close.REVOKED)

    async with running(directory.listen_for_closes(close)):
        yield


async def recording_writer(app: web.Application) -> AsyncIterator[None]:
    """The thread that writes recordings, and pruning now and then (retention, total size)."""
    recordings = app[RECORDINGS]
    recordings.start()
    if recordings.dir is None:
        yield
        return

    async def prune_hourly() -> None:
        config = recordings.config
        store = RecordingStore(recordings.dir or Path())
        while True:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(store.prune, config.retention_days, config.max_total_bytes)
            await asyncio.sleep(PRUNE_EVERY)

    async with running(prune_hourly()):
        yield
    await recordings.stop()


PRUNE_EVERY = 3600.0


def audit_log(config: Config) -> AuditLog:
    try:
        return AuditLog(config.audit.sink)
    except OSError as exc:
        raise ConfigError("audit.sink", f"cannot open the audit file: {exc.strerror}") from None


def console_service(
    config: Config, zstack: ZStackClient, store: TicketStore, app: web.Application
) -> ConsoleService:
    tickets = config.tickets
    signing_keys = decode_signing_keys(tickets.signing_keys)
    return ConsoleService(
        zstack,
        store,
        TargetPolicy.parse(config.targets.allow),
        TicketPolicy(
            tickets.ttl,
            tickets.spice_channels,
            tickets.spice_window,
            spice_tls=bool(config.tls.ca_file),
        ),
        static_tokens(config),
        app[METRICS],
        TicketSigner(signing_keys) if signing_keys else None,
    )


def session_limits(config: Config) -> SessionLimits:
    limits = config.limits
    return SessionLimits(
        limits.max_connections,
        limits.max_per_vm,
        limits.idle_timeout,
        limits.max_session,
        limits.connect_timeout,
    )


def redis_client(config: Config) -> Redis | None:
    tickets = config.tickets
    if tickets.redis_sentinels:
        return redis_client_from_sentinels(
            redis_sentinels(config),
            tickets.redis_service,
            tickets.redis_timeout,
            url=tickets.redis_url,
            sentinel_password=tickets.redis_sentinel_password,
        )
    url = redis_url(config)
    return redis_client_from_url(url, tickets.redis_timeout) if url else None


# With Sentinel, the revocation channel is subscribed again soon after a failover (seconds),
# rather than after the longer waits that suit a Redis that is down.
SENTINEL_RESUBSCRIBE_WITHIN = 1.0


def cluster_state(config: Config, redis: Redis) -> ClusterState:
    tickets = config.tickets
    return ClusterState(
        redis,
        tickets.redis_prefix,
        tickets.redis_timeout,
        resubscribe_within=SENTINEL_RESUBSCRIBE_WITHIN if tickets.redis_sentinels else 10.0,
    )


@contextlib.asynccontextmanager
async def cluster_tasks(app: web.Application, cluster: SharedCounts) -> AsyncIterator[None]:
    """Revocations from other instances, and lease refreshes for our consoles' VM counts."""
    app[CLUSTER] = cluster
    registry = app[REGISTRY]

    async def refresh_leases() -> None:
        while True:
            await asyncio.sleep(REFRESH_EVERY)
            with contextlib.suppress(ClusterUnavailable):
                await cluster.refresh(registry.assigned())

    async def revoke(vm_uuid: str) -> int:
        return await registry.close_vm(vm_uuid, Close.REVOKED)

    async with running(cluster.listen_for_revocations(revoke), refresh_leases()):
        yield


def live_directory(config: Config, redis: Redis, instance_id: str) -> LiveDirectory:
    tickets = config.tickets
    key = decode_key(tickets.encrypt_key) if tickets.encrypt_key else None
    return LiveDirectory(redis, tickets.redis_prefix, instance_id, key, tickets.redis_timeout)


def ticket_store(config: Config, redis: Redis | None) -> TicketStore:
    if redis is None:
        return MemoryTicketStore(config.tickets.max_tickets)
    tickets = config.tickets
    return RedisTicketStore(
        redis,
        tickets.redis_prefix + "ticket:",
        timeout=tickets.redis_timeout,
        encrypt_key=decode_key(tickets.encrypt_key) if tickets.encrypt_key else None,
        wait_replicas=redis_wait_replicas(config),
        wait_timeout=tickets.redis_wait_timeout,
    )


def static_tokens(config: Config) -> StaticTokens | None:
    tickets = config.tickets
    if tickets.token_file:
        return StaticTokens.load("TokenFile", tickets.token_file)
    if tickets.token_plugin:
        return StaticTokens.load(tickets.token_plugin, tickets.token_source)
    return None


async def close_consoles(app: web.Application) -> None:
    """Last resort when cleanup runs without a drain (see proxy.server): close at once."""
    await app[REGISTRY].drain(0, Close.GOING_AWAY)


async def close_audit(app: web.Application) -> None:
    app[AUDIT].close()
