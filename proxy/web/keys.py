"""Typed keys for the objects that live on the application."""

from __future__ import annotations

import ssl

from aiohttp import web

from proxy.config import Config
from proxy.consoles.cluster import ClusterState
from proxy.consoles.limits import RateLimiter
from proxy.consoles.registry import ConsoleRegistry
from proxy.consoles.service import ConsoleService
from proxy.observe.audit import AuditLog
from proxy.observe.metrics import Metrics
from proxy.zstack.client import ZStackClient

CONFIG = web.AppKey("config", Config)
ZSTACK = web.AppKey("zstack", ZStackClient)
CONSOLES = web.AppKey("consoles", ConsoleService)
REGISTRY = web.AppKey("registry", ConsoleRegistry)
METRICS = web.AppKey("metrics", Metrics)
AUDIT = web.AppKey("audit", AuditLog)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
CLUSTER = web.AppKey("cluster", ClusterState)
# The context for TLS to hypervisors, or None when [tls] ca_file is empty.
TLS_CONTEXT: web.AppKey[ssl.SSLContext | None] = web.AppKey("tls_context")
