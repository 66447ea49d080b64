"""Static console targets from websockify's token plugins, used as they are.

ZStack's shipped console agent writes websockify TokenFile files (``token: host:port``), so
pointing ``[tickets] token_file`` at the same directory lets this proxy replace that agent's
websockify unchanged. Any other plugin (ReadOnlyTokenFile, TokenRedis, JWTTokenApi, ...) can be
named by its short name or as ``package.module.Class``.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import Any, Protocol

log = logging.getLogger(__name__)


class TokenPlugin(Protocol):
    def lookup(self, token: str) -> Any: ...


class StaticTokens:
    """Resolves tokens through a websockify plugin, off the event loop (look-ups block)."""

    def __init__(self, plugin: TokenPlugin, timeout: float = 5.0) -> None:
        self._plugin = plugin
        self._timeout = timeout

    @classmethod
    def load(cls, name: str, source: str) -> StaticTokens:
        return cls(load_plugin(name)(source))

    async def lookup(self, token: str) -> tuple[str, int] | None:
        try:
            found = await asyncio.wait_for(
                asyncio.to_thread(self._plugin.lookup, token), self._timeout
            )
        except TimeoutError:
            log.warning("token plugin %s timed out", type(self._plugin).__name__)
            return None
        except Exception as exc:  # a plugin's own failure must not take the handler down
            log.warning("token plugin %s failed: %s", type(self._plugin).__name__, exc)
            return None
        return _as_target(found)


def load_plugin(name: str) -> Any:
    module_name, _, class_name = name.rpartition(".")
    module = importlib.import_module(module_name or "websockify.token_plugins")
    plugin = getattr(module, class_name, None)
    if plugin is None:
        raise ValueError(f"no token plugin named {name!r}")
    return plugin


def _as_target(found: Any) -> tuple[str, int] | None:
    if not found:
        return None
    try:
        host, port = found[0], int(found[1])
    except (TypeError, ValueError, IndexError):
        return None
    # websockify's "unix_socket:" targets are not supported: this proxy dials IP hosts only.
    return (str(host).strip(), port) if 0 < port < 65536 else None
