"""Configuration for tests: a :class:`~proxy.config.Config` with overrides, a token file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from proxy.config import Config, load_config


def make_config(**sections: dict[str, Any]) -> Config:
    """A config for tests: loopback targets allowed, short timeouts, overrides per section."""
    overrides: dict[str, Any] = {"targets.allow": ["127.0.0.0/8"], "zstack.timeout": 2.0}
    for section, values in sections.items():
        for key, value in values.items():
            overrides[f"{section}.{key}"] = value
    return load_config(env={}, overrides=overrides)


def write_token_file(path: Path, entries: dict[str, tuple[str, int]]) -> Path:
    """A websockify token file: one ``name: host:port`` line per entry."""
    path.write_text("".join(f"{name}: {host}:{port}\n" for name, (host, port) in entries.items()))
    return path
