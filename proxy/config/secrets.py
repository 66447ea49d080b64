"""Which configuration values are secrets, and how an error message may show a value."""

from __future__ import annotations

import re
from typing import Any

# Keys whose values are secrets: errors about them say what is wrong, never what the value was.
SECRET_KEYS = frozenset(
    {"tickets.signing_keys", "server.admin_token", "tickets.encrypt_key", "tickets.token_source"}
)
SECRET_SUFFIXES = ("_token", "_key", "_keys", "_password", "_secret")
# The password (or whole userinfo) of a URL such as redis://user:password@host/0.
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^@/?#\s]*@")


def is_secret(key: str) -> bool:
    """Whether ``section.key`` holds a secret (signing and encryption keys, tokens)."""
    return key in SECRET_KEYS or key.endswith(SECRET_SUFFIXES)


def redact_url(text: str) -> str:
    """``text`` with the user and password of every URL in it replaced by ``***``."""
    return _URL_USERINFO.sub(r"\g<scheme>***@", text)


def shown(key: str, value: Any) -> str:
    """``value`` as an error message may show it: secrets hidden, URL passwords masked."""
    if is_secret(key):
        return f"a {type(value).__name__} (value hidden: {key} is a secret)"
    return redact_url(repr(value))
