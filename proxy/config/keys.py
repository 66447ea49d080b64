"""Key material from its configuration form (base64)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence


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
