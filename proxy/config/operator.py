"""The ``[operator]`` section: who may sign in to the operator pages, and their session cookie.

Kept apart from :mod:`proxy.config` (which only names the section) so that module stays small.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

COOKIE_KEY_BYTES = 32
_ACCOUNT = re.compile(r"[^\s]{1,255}")


class OperatorConfigError(ValueError):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = f"operator.{key}"
        self.problem = problem


@dataclass(frozen=True)
class OperatorConfig:
    # ZStack account names that may sign in at <base>/operator/ (their password is checked by
    # logging in to ZStack). Empty: nobody can sign in; the bearer admin_token still works.
    accounts: tuple[str, ...] = ("admin",)
    # base64 of 32 bytes sealing the session cookie (AES-GCM), the same on every instance;
    # empty: a random key per process (sessions then end with a restart and stay on one instance).
    cookie_key: str = ""
    # Seconds a sign-in lasts.
    session_ttl: float = 8 * 3600.0


def decode_cookie_key(text: str) -> bytes:
    try:
        key = base64.b64decode(text.strip().replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise OperatorConfigError("cookie_key", "is not base64") from exc
    if len(key) != COOKIE_KEY_BYTES:
        raise OperatorConfigError(
            "cookie_key", f"must be {COOKIE_KEY_BYTES} bytes in base64, got {len(key)}"
        )
    return key


def check_operator(config: OperatorConfig) -> None:
    """Raise OperatorConfigError naming the key of a value that makes no sense."""
    for account in config.accounts:
        if not _ACCOUNT.fullmatch(account):
            raise OperatorConfigError("accounts", f"{account!r} is not an account name")
    if config.cookie_key:
        decode_cookie_key(config.cookie_key)
    if config.session_ttl <= 0:
        raise OperatorConfigError(
            "session_ttl", f"must be greater than 0, got {config.session_ttl}"
        )
