"""The operator's session cookie value: account name and expiry, sealed with AES-GCM."""

from __future__ import annotations

import base64
import binascii
import json
import os
import time

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_AAD = b"console-proxy operator session v1"
_NONCE = 12


class CookieSealer:
    def __init__(self, key: bytes | None, ttl: float) -> None:
        self._aead = AESGCM(key if key is not None else AESGCM.generate_key(256))
        self.ttl = ttl

    def seal(self, account: str, now: float | None = None) -> str:
        expires = (time.time() if now is None else now) + self.ttl
        body = json.dumps({"a": account, "e": expires}, separators=(",", ":")).encode()
        nonce = os.urandom(_NONCE)
        blob = nonce + self._aead.encrypt(nonce, body, _AAD)
        return base64.urlsafe_b64encode(blob).rstrip(b"=").decode()

    def open(self, value: str, now: float | None = None) -> str | None:
        """The account a genuine, unexpired cookie names; else None."""
        try:
            blob = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            body = json.loads(self._aead.decrypt(blob[:_NONCE], blob[_NONCE:], _AAD))
            account, expires = str(body["a"]), float(body["e"])
        except (ValueError, KeyError, TypeError, binascii.Error, InvalidTag):
            return None
        return account if (time.time() if now is None else now) < expires else None
