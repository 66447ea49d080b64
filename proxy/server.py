"""Running the app: listen, wait for SIGTERM/SIGINT, drain consoles, clean up.

aiohttp's own shutdown stops reading every connection before ``on_shutdown`` runs, which would
silently drop a browser's keystrokes during a drain. So the drain happens here, first: stop
listening, let consoles run up to ``drain_timeout``, close the rest with 1001, then clean up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web

from proxy.app import create_app
from proxy.closecodes import Close
from proxy.config import Config, ConfigError, parse_listen
from proxy.relay.tuning import raise_open_files_limit
from proxy.web.accesslog import RedactingAccessLogger
from proxy.web.connections import GuardedAppRunner
from proxy.web.https import ServerCertificate
from proxy.web.keys import CONFIG, HUB, REGISTRY
from proxy.workers.role import WorkerRole

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 4096


async def run_server(
    config: Config, app: web.Application | None = None, worker: WorkerRole | None = None
) -> None:
    """Serve until SIGTERM/SIGINT (or, in a worker, until the supervisor is gone), then drain."""
    raise_open_files_limit()
    certificate = ServerCertificate.from_config(config.server)
    runner = GuardedAppRunner(
        app or create_app(config, worker),
        config,
        access_log_class=RedactingAccessLogger,
        handle_signals=False,
        shutdown_timeout=10.0,
    )
    await runner.setup()
    host, port = parse_listen(config.server.listen)
    # aiohttp's default backlog (128) drops SYNs when a portal page reloads hundreds of
    # consoles at once; the kernel caps this at net.core.somaxconn.
    tls = certificate.context if certificate else None
    # A worker shares the port with the others: the kernel spreads connections over them.
    reuse_port = worker is not None
    site = web.TCPSite(
        runner, host, port, backlog=LISTEN_BACKLOG, ssl_context=tls, reuse_port=reuse_port
    )
    try:
        await site.start()
    except OSError as exc:  # a busy port, an address not on this machine: one clear line
        await runner.cleanup()
        raise ConfigError(
            "server.listen", f"cannot listen on {site.name}: {exc.strerror}"
        ) from None
    log.info("console proxy listening on %s", site.name)
    # SIGHUP (a supervisor passes it on to every worker) reloads the certificate; without one it
    # must not end the process, as its default action would.
    reload = certificate.reload if certificate is not None else nothing_to_reload
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)
    hub = runner.app.get(HUB)
    if hub is not None:
        await hub.call("ready", {})  # the supervisor reports the port served once all are
    try:
        await wait_for_signal(hub.lost if hub is not None else None)
    finally:
        await graceful_shutdown(runner)


def nothing_to_reload() -> None:
    log.info("SIGHUP: nothing to reload (no [server] tls_cert_file)")


async def graceful_shutdown(runner: web.AppRunner) -> None:
    for site in list(runner.sites):
        await site.stop()
    await drain(runner.app)
    await runner.cleanup()


async def drain(app: web.Application) -> None:
    registry, timeout = app[REGISTRY], app[CONFIG].server.drain_timeout
    if len(registry):
        log.info("draining %d console(s) for up to %g s", len(registry), timeout)
    closed = await registry.drain(timeout, Close.GOING_AWAY)
    if closed:
        log.info("closed %d console(s) still open after the drain", closed)


async def wait_for_signal(or_event: asyncio.Event | None = None) -> None:
    """Until SIGINT or SIGTERM, or ``or_event`` (a worker's hub connection lost)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    waits = [asyncio.ensure_future(stop.wait())]
    if or_event is not None:
        waits.append(asyncio.ensure_future(or_event.wait()))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    if or_event is not None and or_event.is_set() and not stop.is_set():
        log.error("the supervisor is gone; draining and stopping this worker")
