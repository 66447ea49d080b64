"""Typed keys for the objects that live on the application."""

from __future__ import annotations

import weakref

from aiohttp import web

from proxy.config import Config
from proxy.consoles import ConsoleService
from proxy.zstack import ZStackClient

CONFIG = web.AppKey("config", Config)
ZSTACK = web.AppKey("zstack", ZStackClient)
CONSOLES = web.AppKey("consoles", ConsoleService)
OPEN_SOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("open_sockets")
