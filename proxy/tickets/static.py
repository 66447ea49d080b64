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
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)
# websockify's plugins log each token they resolve at INFO (TokenRedis: "resolving token ...");
# a token must never reach a log, so only their warnings and errors pass.
logging.getLogger("websockify.token_plugins").setLevel(logging.WARNING)


class TokenPlugin(Protocol):
    def lookup(self, token: str) -> Any: ...


Target = tuple[str, int] | None

# Plugins whose answers depend only on the files at their source path.
FILE_PLUGINS = frozenset({"TokenFile", "ReadOnlyTokenFile"})
CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class _Remembered:
    signature: tuple[int, int, int]
    at: float
    target: Target


class StaticTokens:
    """Resolves tokens through a websockify plugin, off the event loop (look-ups block).

    TokenFile reads every file on every look-up (so that new consoles show up at once). For the
    file plugins, answers are remembered while the source's modification time and size stay the
    same, for at most ``max_age`` seconds: adding or removing a token file changes the
    directory, and an edit in place is seen within ``max_age``.
    """

    def __init__(
        self, plugin: TokenPlugin, timeout: float = 5.0, source: str = "", max_age: float = 2.0
    ) -> None:
        self._plugin = plugin
        self._timeout = timeout
        self._source = source if type(plugin).__name__ in FILE_PLUGINS else ""
        self._max_age = max_age
        self._cache: OrderedDict[str, _Remembered] = OrderedDict()

    @classmethod
    def load(cls, name: str, source: str) -> StaticTokens:
        return cls(load_plugin(name)(source), source=source)

    async def lookup(self, token: str) -> Target:
        signature = self._signature()
        now = time.monotonic()
        remembered = self._cache.get(token)
        if (
            remembered is not None
            and signature is not None
            and remembered.signature == signature
            and now - remembered.at < self._max_age
        ):
            return remembered.target
        target = await self._ask_plugin(token)
        if signature is not None:
            self._cache[token] = _Remembered(signature, now, target)
            self._cache.move_to_end(token)
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return target

    def _signature(self) -> tuple[int, int, int] | None:
        if not self._source:
            return None
        try:
            # One stat of a local path; no reading, so it stays on the event loop.
            info = os.stat(self._source)
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size, info.st_ino)

    async def _ask_plugin(self, token: str) -> Target:
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
    """The websockify token plugin class ``name`` (a short name or ``module.Class``).

    Only a class with a ``lookup`` method is accepted: the value is called with the token
    source at start-up, so a function such as ``os.system`` must never get here.
    """
    module_name, _, class_name = name.rpartition(".")
    try:
        module = importlib.import_module(module_name or "websockify.token_plugins")
    except ImportError as exc:
        raise ValueError(f"cannot import the module of token plugin {name!r}: {exc}") from None
    plugin = getattr(module, class_name, None)
    if plugin is None:
        raise ValueError(f"no token plugin named {name!r}")
    if not isinstance(plugin, type) or not callable(getattr(plugin, "lookup", None)):
        raise ValueError(f"{name!r} is not a websockify token plugin class (one with lookup())")
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
