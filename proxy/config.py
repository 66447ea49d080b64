"""One typed configuration, read from a TOML file, the environment and CLI flags.

Precedence, lowest first: built-in defaults, the TOML file, environment variables named
``CONSOLE_PROXY_<SECTION>_<KEY>``, then CLI flags. Every value is checked at start-up and a bad
one raises :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import logging
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from proxy.consoles.targets import TargetPolicy

log = logging.getLogger(__name__)

ENV_PREFIX = "CONSOLE_PROXY_"
# [server] forwarded_headers: which family of headers trusted proxies set.
FORWARDED_FAMILIES = ("x-forwarded", "forwarded")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or malformed."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config key {key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:6080"
    base_path: str = ""
    trusted_proxies: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    frame_ancestors: tuple[str, ...] = ("'self'",)
    # HTTPS on the listener: PEM certificate (chain) and key; the key may sit in the cert file.
    # SIGHUP reloads them for new connections. Empty: plain HTTP (e.g. behind a reverse proxy).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # Where the console pages and the npm packages are served from; empty means the repository.
    assets_dir: str = ""
    # On SIGTERM: stop accepting, let open consoles run this long, then close them (1001).
    drain_timeout: float = 30.0
    # Bearer token for the admin endpoints (revocation); empty disables them.
    admin_token: str = ""
    # /readyz answers 503 while ZStack is unreachable (by default it only reports ZStack's state).
    ready_requires_zstack: bool = False
    # Which headers trusted proxies speak: "x-forwarded" (X-Forwarded-For/-Proto/-Host) or
    # "forwarded" (RFC 7239). Only that family is read; the other is ignored.
    forwarded_headers: str = "x-forwarded"
    # Bearer token /metrics asks for; empty leaves it open.
    metrics_token: str = ""
    # The origins browsers reach the proxy on; when set, they replace the Host header for the
    # WebSocket Origin check and consoleUrl (the first one), so Host is never trusted.
    public_origins: tuple[str, ...] = ()


@dataclass(frozen=True)
class ZStackConfig:
    url: str = "http://127.0.0.1:8080/zstack"
    timeout: float = 10.0


@dataclass(frozen=True)
class TicketsConfig:
    ttl: float = 30.0
    store: str = "memory"
    token_file: str = ""
    # Any websockify token plugin: a short name from websockify.token_plugins or "module.Class".
    token_plugin: str = ""
    token_source: str = ""
    max_tickets: int = 100_000
    # "redis" (then redis_url or redis_sentinels) or a redis:// / rediss:// URL directly.
    redis_url: str = ""
    redis_timeout: float = 2.0
    redis_prefix: str = "console-proxy:"
    # Redis Sentinel: "HOST:PORT" of each sentinel and the name they monitor; the primary they
    # name is used, and followed over failovers. The data connections' password, database and
    # TLS still come from redis_url (its host and port are then ignored).
    redis_sentinels: tuple[str, ...] = ()
    redis_service: str = ""
    redis_sentinel_password: str = ""
    # A ticket use counts only once this many replicas acknowledge it (WAIT), so a failover
    # cannot bring a used ticket back; -1: 1 with redis_sentinels, else 0 (no waiting).
    redis_wait_replicas: int = -1
    redis_wait_timeout: float = 0.5
    # base64 of 32 bytes: console passwords are stored AES-GCM encrypted in Redis with it.
    encrypt_key: str = ""
    # Stateless signed tickets: base64 keys (32+ bytes); the first signs, all verify.
    signing_keys: tuple[str, ...] = ()
    # SPICE opens one WebSocket per channel: one ticket admits this many for this long.
    spice_channels: int = 8
    spice_window: float = 15.0


@dataclass(frozen=True)
class TargetsConfig:
    allow: tuple[str, ...] = ()


@dataclass(frozen=True)
class LimitsConfig:
    idle_timeout: float = 900.0
    max_session: float = 8 * 3600.0
    max_connections: int = 1000
    max_per_vm: int = 8
    # Per client IP, mints and WebSocket upgrades together: sustained rate and burst.
    rate_per_minute: float = 120.0
    rate_burst: int = 30
    connect_timeout: float = 5.0
    handshake_timeout: float = 10.0
    max_frame_size: int = 4 * 1024 * 1024


@dataclass(frozen=True)
class TlsConfig:
    """TLS from the proxy to the hypervisors (SPICE's TLS port, VNC's VeNCrypt)."""

    # CA bundle that signed the hypervisors' certificates; TLS is off while it is empty.
    ca_file: str = ""
    # Optional client certificate and key, for hypervisors that verify their clients.
    cert_file: str = ""
    key_file: str = ""
    # Hypervisors are dialled by IP: their certificates need an IP SAN, or turn this off.
    check_hostname: bool = True
    # VNC: use VeNCrypt (x509) when the server offers it; refuse servers that do not.
    vnc_required: bool = False


@dataclass(frozen=True)
class AuditConfig:
    # "stderr", "file:/path/to/audit.jsonl", or "" for none.
    sink: str = "stderr"


@dataclass(frozen=True)
class LogConfig:
    # "text" (readable, the default) or "json" (one object per line); the audit has its own sink.
    format: str = "text"
    level: str = "INFO"


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    zstack: ZStackConfig = field(default_factory=ZStackConfig)
    tickets: TicketsConfig = field(default_factory=TicketsConfig)
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    log: LogConfig = field(default_factory=LogConfig)


SECTIONS: dict[str, type[Any]] = get_type_hints(Config)


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the config. ``overrides`` maps ``"section.key"`` to a value (from CLI flags)."""
    raw: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    if path is not None:
        _merge(raw, _read_toml(Path(path)), origin=str(path))
    _merge(raw, _from_env(env or {}), origin="environment")
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        _merge(raw, {section: {key: value}}, origin="command line")
    config = Config(**{name: _build(name, cls, raw[name]) for name, cls in SECTIONS.items()})
    validate(config)
    return config


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from exc


def _from_env(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Known ``CONSOLE_PROXY_<SECTION>_<KEY>`` variables; others are named once and ignored.

    Kubernetes injects ``CONSOLE_PROXY_PORT``, ``CONSOLE_PROXY_SERVICE_HOST`` and the like for a
    Service named console-proxy, so an unknown name must not stop the start; a bad value of a
    known key still does (in ``_build``).
    """
    found: dict[str, dict[str, Any]] = {}
    unknown: list[str] = []
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        section, sep, key = name[len(ENV_PREFIX) :].lower().partition("_")
        if not sep or section not in SECTIONS or key not in get_type_hints(SECTIONS[section]):
            unknown.append(name)
            continue
        found.setdefault(section, {})[key] = _EnvString(value)
    if unknown:
        # Names only: a value may be a secret.
        log.warning("ignoring unknown environment variables: %s", ", ".join(sorted(unknown)))
    return found


class _EnvString(str):
    """A value that came from the environment, so it may still need parsing into a list."""


def _merge(raw: dict[str, dict[str, Any]], data: Mapping[str, Any], origin: str) -> None:
    for section, values in data.items():
        if section not in SECTIONS:
            raise ConfigError(section, f"unknown section in {origin}")
        if not isinstance(values, Mapping):
            raise ConfigError(section, f"must be a table in {origin}")
        raw[section].update(values)


def _build(section: str, cls: type[Any], values: Mapping[str, Any]) -> Any:
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in hints:
            known = ", ".join(sorted(hints))
            raise ConfigError(f"{section}.{key}", f"unknown key (known keys: {known})")
        kwargs[key] = _coerce(f"{section}.{key}", hints[key], value)
    return cls(**kwargs)


def _coerce(key: str, hint: Any, value: Any) -> Any:
    if get_origin(hint) is tuple:
        return _coerce_list(key, get_args(hint)[0], value)
    if hint is bool:
        return _coerce_bool(key, value)
    if hint is int or hint is float:
        return _coerce_number(key, hint, value)
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a string, got {value!r}")
    return str(value)


def _coerce_list(key: str, item: Any, value: Any) -> tuple[Any, ...]:
    if isinstance(value, _EnvString):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(key, f"is not a JSON list: {exc.msg}") from exc
        else:
            value = [part.strip() for part in text.split(",") if part.strip()]
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError(key, f"must be a list, got {value!r}")
    return tuple(_coerce(key, item, v) for v in value)


def _coerce_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {
        "1",
        "true",
        "yes",
        "on",
        "0",
        "false",
        "no",
        "off",
    }:
        return value.lower() in {"1", "true", "yes", "on"}
    raise ConfigError(key, f"must be true or false, got {value!r}")


def _coerce_number(key: str, hint: type[Any], value: Any) -> Any:
    if isinstance(value, bool):
        raise ConfigError(key, f"must be a number, got {value!r}")
    try:
        number = float(value) if isinstance(value, str) else value
    except ValueError as exc:
        raise ConfigError(key, f"must be a number, got {value!r}") from exc
    if not isinstance(number, int | float):
        raise ConfigError(key, f"must be a number, got {value!r}")
    if hint is int and isinstance(number, float) and not number.is_integer():
        raise ConfigError(key, f"must be a whole number, got {value!r}")
    return hint(number)


def validate(config: Config) -> None:
    """Check values that parse but make no sense; raise ConfigError naming the key."""
    parse_listen(config.server.listen, "server.listen")
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
        raise ConfigError("zstack.url", f"must be an http(s) URL, got {config.zstack.url!r}")
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
    for name in ("idle_timeout", "max_session", "connect_timeout", "handshake_timeout"):
        _positive(f"limits.{name}", getattr(config.limits, name))
    _positive("limits.max_connections", config.limits.max_connections)
    _positive("limits.max_per_vm", config.limits.max_per_vm)
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
    try:
        TargetPolicy.parse(config.targets.allow)
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
            f"unsupported store {store!r} (use 'memory', 'redis' or a redis:// URL)",
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


def decode_key(text: str) -> bytes:
    """An ``encrypt_key`` from its config form: 16, 24 or 32 bytes in (url-safe) base64."""
    try:
        key = base64.b64decode(text.strip().replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("encrypt_key is not base64") from exc
    if len(key) not in (16, 24, 32):
        raise ValueError(f"encrypt_key must be 16, 24 or 32 bytes, got {len(key)}")
    return key


MIN_SIGNING_KEY_BYTES = 32


def decode_signing_keys(values: Sequence[str]) -> list[bytes]:
    """``signing_keys`` from base64 (standard or url-safe); each at least 32 bytes."""
    keys = []
    for value in values:
        try:
            key = base64.b64decode(value.encode(), validate=True)
        except (binascii.Error, ValueError):
            try:
                key = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            except (binascii.Error, ValueError) as exc:
                raise ValueError("a signing key is not base64") from exc
        if len(key) < MIN_SIGNING_KEY_BYTES:
            raise ValueError(f"signing keys need at least {MIN_SIGNING_KEY_BYTES} bytes")
        keys.append(key)
    return keys


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
