"""Typed keys for the objects that live on the application."""

from __future__ import annotations

from aiohttp import web

from proxy.config import Config
from proxy.consoles.cluster import ClusterState
from proxy.consoles.limits import RateLimiter
from proxy.consoles.registry import ConsoleRegistry
from proxy.consoles.service import ConsoleService
from proxy.consoles.sessions import ConsoleSessions
from proxy.observe.audit import AuditLog
from proxy.observe.metrics import Metrics
from proxy.zstack.client import ZStackClient

CONFIG = web.AppKey("config", Config)
ZSTACK = web.AppKey("zstack", ZStackClient)
CONSOLES = web.AppKey("consoles", ConsoleService)
SESSIONS = web.AppKey("sessions", ConsoleSessions)
REGISTRY = web.AppKey("registry", ConsoleRegistry)
METRICS = web.AppKey("metrics", Metrics)
AUDIT = web.AppKey("audit", AuditLog)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
CLUSTER = web.AppKey("cluster", ClusterState)
