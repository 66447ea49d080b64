"""Values that parse but make no sense: each check raises ConfigError naming its key."""

from __future__ import annotations

import contextlib
import ipaddress
import re
from pathlib import Path
from urllib.parse import urlsplit

from proxy.config.errors import ConfigError
from proxy.config.keys import decode_key, decode_signing_keys
from proxy.config.operator import OperatorConfigError, check_operator
from proxy.config.recording import RecordingConfigError, check_recording
from proxy.config.secrets import redact_url, shown
from proxy.config.sections import FORWARDED_FAMILIES, Config, TicketsConfig
from proxy.consoles.targets import TargetPolicy
from proxy.keynames import parse_combo


def validate(config: Config) -> None:
    """Check values that parse but make no sense; raise ConfigError naming the key."""
    parse_listen(config.server.listen, "server.listen")
    _check_workers(config.server.workers)
    base = config.server.base_path
    if base and (not base.startswith("/") or base.endswith("/")):
        raise ConfigError(
            "server.base_path", f"must start with '/' and not end with '/', got {base!r}"
        )
    for origin in config.server.allowed_origins:
        if "://" not in origin or origin.endswith("/"):
            raise ConfigError(
                "server.allowed_origins",
                f"{origin!r} is not an origin like https://portal.example.com",
            )
    for origin in config.server.public_origins:
        _check_public_origin(origin)
    if config.server.forwarded_headers not in FORWARDED_FAMILIES:
        raise ConfigError(
            "server.forwarded_headers",
            f"must be 'x-forwarded' or 'forwarded', got {config.server.forwarded_headers!r}",
        )
    for key, cidrs in (("server.trusted_proxies", config.server.trusted_proxies),):
        for cidr in cidrs:
            _check_network(key, cidr)
    if not config.zstack.url.startswith(("http://", "https://")):
        raise ConfigError(
            "zstack.url", f"must be an http(s) URL, got {shown('zstack.url', config.zstack.url)}"
        )
    _positive("zstack.timeout", config.zstack.timeout)
    _positive("tickets.ttl", config.tickets.ttl)
    _positive("tickets.max_tickets", config.tickets.max_tickets)
    _check_store(config)
    if config.tickets.token_file and config.tickets.token_plugin:
        raise ConfigError("tickets.token_file", "set either token_file or token_plugin, not both")
    token_file = config.tickets.token_file
    if token_file and not Path(token_file).exists():
        # Starting anyway would refuse every console with 4401 and no word why. An empty
        # directory is fine: ZStack's console agent fills it later.
        raise ConfigError(
            "tickets.token_file", f"{token_file} does not exist (a token file or a directory)"
        )
    if config.tickets.token_plugin and not config.tickets.token_source:
        raise ConfigError("tickets.token_source", "token_plugin needs a token_source")
    for name in (
        "idle_timeout",
        "max_session",
        "connect_timeout",
        "handshake_timeout",
        "header_timeout",
    ):
        _positive(f"limits.{name}", getattr(config.limits, name))
    _positive("limits.max_connections", config.limits.max_connections)
    _positive("limits.max_per_vm", config.limits.max_per_vm)
    _positive("limits.max_pending_per_address", config.limits.max_pending_per_address)
    _positive("limits.rate_per_minute", config.limits.rate_per_minute)
    _positive("limits.rate_burst", config.limits.rate_burst)
    if config.server.tls_key_file and not config.server.tls_cert_file:
        raise ConfigError("server.tls_key_file", "needs server.tls_cert_file")
    if config.log.format not in ("text", "json"):
        raise ConfigError("log.format", f"must be 'text' or 'json', got {config.log.format!r}")
    if config.log.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(
            "log.level", f"must be DEBUG, INFO, WARNING or ERROR, got {config.log.level!r}"
        )
    if config.server.drain_timeout < 0:
        raise ConfigError("server.drain_timeout", "must be 0 or more seconds")
    sink = config.audit.sink
    if sink not in ("", "stderr") and not (sink.startswith("file:") and len(sink) > 5):
        raise ConfigError("audit.sink", f"must be 'stderr', 'file:/path' or '', got {sink!r}")
    if config.limits.max_frame_size < 4096:
        raise ConfigError("limits.max_frame_size", "must be at least 4096 bytes")
    for combo in config.page.key_combos:
        try:
            parse_combo(combo)
        except ValueError as exc:
            raise ConfigError("page.key_combos", str(exc)) from None
    try:
        TargetPolicy.parse(config.targets.allow)
        check_operator(config.operator)
        check_recording(config.recording)
    except (OperatorConfigError, RecordingConfigError) as exc:
        raise ConfigError(exc.key, exc.problem) from exc
    except ValueError as exc:
        raise ConfigError("targets.allow", str(exc)) from exc


def redis_url(config: Config) -> str:
    """The Redis URL when tickets live in Redis, else ""."""
    store = config.tickets.store
    if store == "redis":
        return config.tickets.redis_url
    return store if store.startswith(("redis://", "rediss://", "unix://")) else ""


DEFAULT_SENTINEL_PORT = 26379


def redis_sentinels(config: Config) -> list[tuple[str, int]]:
    """``[tickets] redis_sentinels`` as (host, port) pairs; empty without Sentinel."""
    return [_sentinel_address(entry) for entry in config.tickets.redis_sentinels]


def redis_wait_replicas(config: Config) -> int:
    """How many replicas must acknowledge a ticket use: the key, or its automatic default."""
    wanted = config.tickets.redis_wait_replicas
    if wanted >= 0:
        return wanted
    return 1 if config.tickets.redis_sentinels else 0


def _sentinel_address(entry: str) -> tuple[str, int]:
    host, sep, port = entry.strip().rpartition(":")
    if not sep or host.endswith(":"):  # no port, or a bare IPv6 address
        host, port = entry.strip(), str(DEFAULT_SENTINEL_PORT)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ConfigError(
            "tickets.redis_sentinels", f"{entry!r} is not HOST:PORT (e.g. '10.0.0.5:26379')"
        )
    return host, int(port)


def _check_sentinels(tickets: TicketsConfig) -> None:
    if not tickets.redis_sentinels:
        for key in ("redis_service", "redis_sentinel_password"):
            if getattr(tickets, key):
                raise ConfigError(f"tickets.{key}", "is used only with redis_sentinels")
        return
    if tickets.store != "redis":
        raise ConfigError(
            "tickets.redis_sentinels", f"needs store = 'redis', got store = {tickets.store!r}"
        )
    for entry in tickets.redis_sentinels:
        _sentinel_address(entry)
    if not tickets.redis_service:
        raise ConfigError(
            "tickets.redis_service", "redis_sentinels need the name they monitor, e.g. 'mymaster'"
        )
    if tickets.redis_url and not tickets.redis_url.startswith(("redis://", "rediss://")):
        raise ConfigError(
            "tickets.redis_url",
            "with redis_sentinels it gives the password, database and TLS: use redis:// or"
            " rediss:// (e.g. 'rediss://:password@mymaster/0'; its host is not used)",
        )


def _check_store(config: Config) -> None:
    store = config.tickets.store
    if store != "memory" and not redis_url(config) and store != "redis":
        raise ConfigError(
            "tickets.store",
            f"unsupported store {shown('tickets.store', store)} "
            "(use 'memory', 'redis' or a redis:// URL)",
        )
    _check_sentinels(config.tickets)
    if store == "redis" and not config.tickets.redis_url and not config.tickets.redis_sentinels:
        raise ConfigError("tickets.redis_url", "store = 'redis' needs redis_url or redis_sentinels")
    if config.tickets.redis_wait_replicas < -1:
        raise ConfigError("tickets.redis_wait_replicas", "must be 0 or more (or -1: automatic)")
    _positive("tickets.redis_wait_timeout", config.tickets.redis_wait_timeout)
    waits = redis_wait_replicas(config) > 0
    if waits and config.tickets.redis_wait_timeout >= config.tickets.redis_timeout:
        raise ConfigError(
            "tickets.redis_wait_timeout",
            f"must be shorter than redis_timeout ({config.tickets.redis_timeout:g} s)",
        )
    _check_redis_url("tickets.redis_url" if store == "redis" else "tickets.store", config)
    if config.tickets.encrypt_key:
        try:
            decode_key(config.tickets.encrypt_key)
        except ValueError as exc:
            raise ConfigError("tickets.encrypt_key", str(exc)) from exc
    try:
        decode_signing_keys(config.tickets.signing_keys)
    except ValueError as exc:
        raise ConfigError("tickets.signing_keys", str(exc)) from exc
    _positive("tickets.redis_timeout", config.tickets.redis_timeout)
    _positive("tickets.spice_channels", config.tickets.spice_channels)
    _positive("tickets.spice_window", config.tickets.spice_window)
    tls = config.tls
    if (tls.cert_file or tls.key_file or tls.vnc_required) and not tls.ca_file:
        raise ConfigError("tls.ca_file", "client certificates and vnc_required need ca_file")
    if bool(tls.cert_file) != bool(tls.key_file):
        raise ConfigError("tls.key_file", "cert_file and key_file go together")


def _check_redis_url(key: str, config: Config) -> None:
    """A Redis URL redis-py cannot parse stops the start here, not with a traceback later."""
    from redis.asyncio.connection import parse_url

    url = redis_url(config)
    try:
        if url:
            parse_url(url)
    except (ValueError, TypeError) as exc:
        # The parser's messages quote parts of the URL: keep only what cannot be the password.
        problem = redact_url(str(exc))
        with contextlib.suppress(ValueError):
            if secret := urlsplit(url).password:
                problem = problem.replace(secret, "***")
        raise ConfigError(key, f"is not a Redis URL: {problem}") from None


def parse_listen(value: str, key: str = "server.listen") -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(key, f"must be HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


_ORIGIN = re.compile(r"https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?")


def _check_public_origin(origin: str) -> None:
    found = _ORIGIN.fullmatch(origin)
    if found is None or (found.group(2) and int(found.group(2)[1:]) > 65535):
        raise ConfigError(
            "server.public_origins",
            f"{origin!r} is not an origin like https://console.example.com "
            "(http or https, a host, an optional port, no path)",
        )


def _check_network(key: str, cidr: str) -> None:
    try:
        ipaddress.ip_network(cidr, strict=False)
    except ValueError as exc:
        raise ConfigError(key, f"{cidr!r} is not a network: {exc}") from exc


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(key, f"must be greater than 0, got {value!r}")


MAX_WORKERS = 256


def _check_workers(value: str) -> None:
    if value == "auto":
        return
    if not value.isdigit() or not 1 <= int(value) <= MAX_WORKERS:
        raise ConfigError(
            "server.workers", f"must be 'auto' or a number from 1 to {MAX_WORKERS}, got {value!r}"
        )
