"""The configuration's sections and keys, with their defaults: what the README's table lists."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, get_type_hints

from proxy.config.operator import OperatorConfig
from proxy.config.recording import RecordingConfig

# [server] forwarded_headers: which family of headers trusted proxies set.
FORWARDED_FAMILIES = ("x-forwarded", "forwarded")


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
    # Processes serving the one port (SO_REUSEPORT), sharing tickets and limits through a hub in
    # the supervisor; "auto": one per core.
    workers: str = "1"


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
    # A connection must send a complete request head within this many seconds (also the
    # longest an idle keep-alive connection stays open).
    header_timeout: float = 10.0
    # Connections per client address that have not sent their first request head yet
    # (trusted_proxies are exempt: they carry everyone's connections).
    max_pending_per_address: int = 256


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
class PageConfig:
    """The console pages."""

    # More entries for the page's key menu, besides the built-in ones: "Ctrl+Shift+Esc", ...
    key_combos: tuple[str, ...] = ()


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
    operator: OperatorConfig = field(default_factory=OperatorConfig)
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    page: PageConfig = field(default_factory=PageConfig)


SECTIONS: dict[str, type[Any]] = get_type_hints(Config)
