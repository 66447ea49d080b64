"""Typed keys for the objects that live on the application."""

from __future__ import annotations

from aiohttp import web

from proxy.config import Config
from proxy.consoles.cluster import SharedCounts
from proxy.consoles.limits import Budget
from proxy.consoles.live import ConsoleDirectory
from proxy.consoles.registry import ConsoleRegistry
from proxy.consoles.service import ConsoleService
from proxy.consoles.sessions import ConsoleSessions
from proxy.observe.audit import AuditLog
from proxy.observe.metrics import Metrics
from proxy.recording.recorder import Recordings
from proxy.web.operator_cookie import CookieSealer
from proxy.workers.client import HubClient
from proxy.workers.role import WorkerRole
from proxy.zstack.client import ZStackClient
from proxy.zstack.login import ZStackLogin

CONFIG = web.AppKey("config", Config)
ZSTACK = web.AppKey("zstack", ZStackClient)
CONSOLES = web.AppKey("consoles", ConsoleService)
SESSIONS = web.AppKey("sessions", ConsoleSessions)
REGISTRY = web.AppKey("registry", ConsoleRegistry)
METRICS = web.AppKey("metrics", Metrics)
AUDIT = web.AppKey("audit", AuditLog)
RATE_LIMITER = web.AppKey("rate_limiter", Budget)
CLUSTER = web.AppKey("cluster", SharedCounts)
OPERATOR_COOKIES = web.AppKey("operator_cookies", CookieSealer)
# Failed operator sign-ins per address (5 a minute).
OPERATOR_FAILURES = web.AppKey("operator_failures", Budget)
ZSTACK_LOGIN = web.AppKey("zstack_login", ZStackLogin)
# How operators see this process, and (with Redis) every instance's live consoles.
INSTANCE = web.AppKey("instance", str)
LIVE = web.AppKey("live", ConsoleDirectory)
# The session recordings of this instance, when [recording] dir is set.
RECORDINGS = web.AppKey("recordings", Recordings)
# Set in a worker process of ``serve --workers N``: its supervisor's hub, and the connection to it.
WORKER = web.AppKey("worker", WorkerRole)
HUB = web.AppKey("hub", HubClient)
