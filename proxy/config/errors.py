"""The one error a bad configuration raises: it names the key."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is missing, unknown or malformed."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config key {key}: {problem}")
        self.key = key
        self.problem = problem
