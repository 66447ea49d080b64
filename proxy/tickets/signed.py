"""Stateless signed tickets: any instance holding the key verifies them, no store needed.

A token is ``s1.<payload>.<mac>``: base64url JSON (target, expiry, uses, a random id) and an
HMAC-SHA256 over ``s1.<payload>``. Keys rotate: the first configured key signs, every key
verifies, and the payload names its key by a short id. A console password is never in the
payload in clear: it is sealed with AES-GCM under a key derived from the signing key (HKDF),
bound to the ticket's id.

Signed tickets cannot be forgotten once handed out, so single use is enforced by counting each
ticket id's uses in the store: across every instance with Redis, per instance in memory.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from proxy import safejson
from proxy.tickets.store import Ticket

PREFIX = "s1."
MIN_KEY_BYTES = 32


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"console-proxy key id" + key).hexdigest()[:8]


def _sealing_key(key: bytes) -> AESGCM:
    hkdf = HKDF(hashes.SHA256(), 32, salt=None, info=b"console-proxy ticket password")
    return AESGCM(hkdf.derive(key))


def is_signed(token: str) -> bool:
    return token.startswith(PREFIX)


class TicketSigner:
    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("at least one signing key is needed")
        for key in keys:
            if len(key) < MIN_KEY_BYTES:
                raise ValueError(f"signing keys need at least {MIN_KEY_BYTES} bytes")
        self._signing_key = keys[0]
        self._keys = {_key_id(key): key for key in keys}

    def sign(self, ticket: Ticket) -> str:
        ticket_id = _b64(os.urandom(16))
        payload = {
            "k": _key_id(self._signing_key),
            "j": ticket_id,
            "v": ticket.vm_uuid,
            "h": ticket.host,
            "p": ticket.port,
            "t": ticket.protocol,
            "e": ticket.expires_at,
            "u": ticket.uses,
            "s": ticket.tls,
            "a": [ticket.account_uuid, ticket.account_name],
            "w": ticket.view_only,
            "x": self._seal(self._signing_key, ticket_id, ticket.password),
        }
        body = PREFIX + _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{_b64(self._mac(self._signing_key, body))}"

    def verify(self, token: str) -> tuple[str, Ticket] | None:
        """(ticket id, ticket) when the token is genuine and unexpired; else None.

        The MAC is checked before anything in the payload is decoded or parsed: a forged token
        costs an HMAC per key and nothing else.
        """
        body, _, mac = token.rpartition(".")
        if not body.startswith(PREFIX):
            return None
        key = self._signed_by(body, mac)
        if key is None:
            return None
        try:
            payload = safejson.loads(_unb64(body[len(PREFIX) :]))
            if not isinstance(payload, dict):
                return None
            ticket = self._ticket(key, payload)
        except (ValueError, KeyError, TypeError, binascii.Error, InvalidTag):
            return None
        return (str(payload["j"]), ticket) if not ticket.expired() else None

    def _signed_by(self, body: str, mac: str) -> bytes | None:
        """The key whose MAC over ``body`` is ``mac``, or None. Every key is tried (there are
        few), so the payload's key id need not be read before the MAC is checked."""
        try:
            given = _unb64(mac)
        except (ValueError, binascii.Error):
            return None
        found = None
        for key in self._keys.values():
            if hmac.compare_digest(given, self._mac(key, body)):
                found = key
        return found

    @staticmethod
    def _mac(key: bytes, body: str) -> bytes:
        return hmac.digest(key, body.encode(), "sha256")

    def _ticket(self, key: bytes, payload: dict[str, Any]) -> Ticket:
        return Ticket(
            vm_uuid=str(payload["v"]),
            host=str(payload["h"]),
            port=int(payload["p"]),
            protocol=str(payload["t"]),
            expires_at=float(payload["e"]),
            password=self._open(key, str(payload["j"]), payload["x"]),
            uses=int(payload["u"]),
            tls=bool(payload["s"]),
            account_uuid=str(payload["a"][0]),
            account_name=str(payload["a"][1]),
            view_only=payload.get("w") is True,
        )

    @staticmethod
    def _seal(key: bytes, ticket_id: str, password: str | None) -> str | None:
        if password is None:
            return None
        nonce = os.urandom(12)
        sealed = _sealing_key(key).encrypt(nonce, password.encode(), ticket_id.encode())
        return _b64(nonce + sealed)

    @staticmethod
    def _open(key: bytes, ticket_id: str, sealed: object) -> str | None:
        if sealed is None:
            return None
        blob = _unb64(str(sealed))
        return _sealing_key(key).decrypt(blob[:12], blob[12:], ticket_id.encode()).decode()
