"""The effective configuration as TOML or JSON with its secrets redacted (``check-config``).

What is a secret: tokens, keys and passwords by their key's name (``admin_token``,
``signing_keys``, ``encrypt_key``, ``cookie_key``, anything ending in ``_token``, ``_key(s)`` or
``_password(s)``), the password in any URL (``redis://:pw@host``) and the password field of a
websockify ``TokenRedis`` source (``host:port:db:password``). Paths to key files stay readable.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from proxy.config import Config

REDACTED = "<redacted>"
SECRET_KEYS = frozenset(
    {"admin_token", "metrics_token", "signing_keys", "encrypt_key", "cookie_key"}
)
SECRET_SUFFIXES = ("_token", "_tokens", "_key", "_keys", "_password", "_passwords", "_secret")
BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def is_secret(key: str) -> bool:
    return key in SECRET_KEYS or key.endswith(SECRET_SUFFIXES)


def redacted_config(config: Config) -> dict[str, dict[str, Any]]:
    """``{section: {key: value}}`` with lists for tuples and every secret replaced."""
    plain = _plain(dataclasses.asdict(config))
    sections: dict[str, dict[str, Any]] = {}
    for section, values in plain.items():
        sections[section] = {key: _redact(key, value) for key, value in values.items()}
    tickets = sections.get("tickets", {})
    if str(tickets.get("token_plugin", "")).endswith("TokenRedis") and tickets["token_source"]:
        tickets["token_source"] = _redact_token_redis(tickets["token_source"])
    return sections


def to_json(config: Config) -> str:
    return json.dumps(redacted_config(config), indent=2, ensure_ascii=False) + "\n"


def to_toml(config: Config) -> str:
    lines: list[str] = []
    for section, values in redacted_config(config).items():
        lines.append(f"[{section}]")
        lines.extend(f"{_toml_key(key)} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(item) for item in value]
    if isinstance(value, str):
        return str(value)  # config strings from the environment are a str subclass
    return value


def _redact(key: str, value: Any) -> Any:
    if is_secret(key) and value not in ("", None, [], {}):
        return [REDACTED for _ in value] if isinstance(value, list) else REDACTED
    if isinstance(value, Mapping):
        return {name: _redact(name, item) for name, item in value.items()}
    if isinstance(value, list):
        return [_redact(key, item) for item in value]
    if isinstance(value, str):
        return _redact_url(value)
    return value


def _redact_url(text: str) -> str:
    if "://" not in text or "@" not in text:
        return text
    try:
        parts = urlsplit(text)
        password = parts.password
    except ValueError:
        return REDACTED  # unparseable but URL-shaped with a userinfo part: show nothing
    if not password:
        return text
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{host}"))


def _redact_token_redis(source: str) -> str:
    # websockify's TokenRedis: host[:port[:db[:password[:namespace]]]]
    fields = source.split(":", 4)
    if len(fields) >= 4 and fields[3]:
        fields[3] = REDACTED
    return ":".join(fields)


def _toml_key(key: str) -> str:
    return key if BARE_KEY.fullmatch(key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    # JSON's strings, integers, booleans and arrays are valid TOML; floats need inf/nan spelt.
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{" + (f" {items} " if items else "") + "}"
    if value is None:
        return '""'
    # TOML forbids a raw DEL in a string; JSON leaves it as it is.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
