"""Reading the configuration: TOML file < ``CONSOLE_PROXY_<SECTION>_<KEY>`` < CLI flags,
each value coerced to its key's type."""

from __future__ import annotations

import json
import logging
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from proxy.config.errors import ConfigError
from proxy.config.secrets import shown
from proxy.config.sections import (
    SECTIONS,
    Config,
)
from proxy.config.validation import validate

log = logging.getLogger(__name__)

ENV_PREFIX = "CONSOLE_PROXY_"


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
    if key in NUMBER_OR_WORD and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a string, got {shown(key, value)}")
    return str(value)


# Keys that take a number or a word (``workers = 2`` or ``workers = "auto"``), kept as text.
NUMBER_OR_WORD = frozenset({"server.workers"})


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
        raise ConfigError(key, f"must be a list, got {shown(key, value)}")
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
    raise ConfigError(key, f"must be true or false, got {shown(key, value)}")


def _coerce_number(key: str, hint: type[Any], value: Any) -> Any:
    if isinstance(value, bool):
        raise ConfigError(key, f"must be a number, got {shown(key, value)}")
    try:
        number = float(value) if isinstance(value, str) else value
    except ValueError as exc:
        raise ConfigError(key, f"must be a number, got {shown(key, value)}") from exc
    if not isinstance(number, int | float):
        raise ConfigError(key, f"must be a number, got {shown(key, value)}")
    if hint is int and isinstance(number, float) and not number.is_integer():
        raise ConfigError(key, f"must be a whole number, got {shown(key, value)}")
    return hint(number)
