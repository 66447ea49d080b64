"""Probes and metrics: /healthz (the process is up), /readyz (it can take consoles), /metrics."""

from __future__ import annotations

import hmac

from aiohttp import hdrs, web

from proxy.observe.merged import merge_expositions
from proxy.tickets.store import StoreUnavailable
from proxy.web.errors import ApiError
from proxy.web.keys import CONFIG, CONSOLES, HUB, METRICS, RECORDINGS, REGISTRY, ZSTACK
from proxy.zstack.client import ZStackError


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 when this instance can take consoles: not draining, ticket store reachable.

    ZStack's state is reported but does not decide (static-token consoles never ask ZStack, and
    an outage must not take every instance out of the balancer), unless
    ``[server] ready_requires_zstack``.
    """
    body = {"status": "ready", "zstack": "ok", "store": "ok"}
    if request.app[REGISTRY].draining:
        body["status"] = "draining"
    try:
        await request.app[ZSTACK].check_reachable()
    except ZStackError as exc:
        body["zstack"] = exc.code
        if request.app[CONFIG].server.ready_requires_zstack:
            body["status"] = "unavailable"
    try:
        await request.app[CONSOLES].store.check_reachable()
    except StoreUnavailable as exc:
        body.update(status="unavailable", store=exc.code)
    recordings = request.app.get(RECORDINGS)
    if recordings is not None and recordings.enabled:
        # Required recording: a directory that cannot take files means no new consoles.
        writable = await recordings.check_writable()
        body["recording"] = "ok" if writable else "unwritable"
        if not writable and recordings.required:
            body["status"] = "unavailable"
    return web.json_response(body, status=200 if body["status"] == "ready" else 503)


async def metrics(request: web.Request) -> web.Response:
    expected = request.app[CONFIG].server.metrics_token
    if expected:
        scheme, _, given = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        if scheme != "Bearer" or not hmac.compare_digest(given.encode(), expected.encode()):
            raise ApiError(
                401, "METRICS.UNAUTHORIZED", "Send 'Authorization: Bearer <metrics token>'."
            )
    body, content_type = request.app[METRICS].exposition()
    hub = request.app.get(HUB)
    if hub is not None:  # one of several workers: report them all, summed
        try:
            others = await hub.call("ask", {"kind": "metrics"})
        except StoreUnavailable as exc:
            raise ApiError(503, exc.code, "The other workers' metrics cannot be read.") from None
        texts = [body.decode()] + [t for t in others or () if isinstance(t, str)]
        body = merge_expositions(texts)
    response = web.Response(body=body)
    response.headers[hdrs.CONTENT_TYPE] = content_type
    return response
