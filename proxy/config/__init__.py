"""One typed configuration, read from a TOML file, the environment and CLI flags.

Precedence, lowest first: built-in defaults, the TOML file, environment variables named
``CONSOLE_PROXY_<SECTION>_<KEY>``, then CLI flags. Every value is checked at start-up and a bad
one raises :class:`ConfigError` naming the key (and never showing a secret's value).

``sections`` declares the keys and defaults, ``loading`` reads and coerces them, ``validation``
checks what parses but makes no sense, ``keys`` decodes key material, ``secrets`` says which
values are secret, ``operator`` is the ``[operator]`` section.
"""

from proxy.config.errors import ConfigError
from proxy.config.keys import MIN_SIGNING_KEY_BYTES, decode_key, decode_signing_keys
from proxy.config.loading import ENV_PREFIX, load_config
from proxy.config.operator import OperatorConfig, decode_cookie_key
from proxy.config.secrets import is_secret, redact_url, shown
from proxy.config.sections import (
    FORWARDED_FAMILIES,
    SECTIONS,
    AuditConfig,
    Config,
    LimitsConfig,
    LogConfig,
    PageConfig,
    ServerConfig,
    TargetsConfig,
    TicketsConfig,
    TlsConfig,
    ZStackConfig,
)
from proxy.config.validation import (
    parse_listen,
    redis_sentinels,
    redis_url,
    redis_wait_replicas,
    validate,
)

__all__ = [
    "ENV_PREFIX",
    "FORWARDED_FAMILIES",
    "MIN_SIGNING_KEY_BYTES",
    "SECTIONS",
    "AuditConfig",
    "Config",
    "ConfigError",
    "LimitsConfig",
    "LogConfig",
    "OperatorConfig",
    "PageConfig",
    "ServerConfig",
    "TargetsConfig",
    "TicketsConfig",
    "TlsConfig",
    "ZStackConfig",
    "decode_cookie_key",
    "decode_key",
    "decode_signing_keys",
    "is_secret",
    "load_config",
    "parse_listen",
    "redact_url",
    "redis_sentinels",
    "redis_url",
    "redis_wait_replicas",
    "shown",
    "validate",
]
