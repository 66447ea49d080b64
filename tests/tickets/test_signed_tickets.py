"""Signed tickets: verification, key rotation, tampering, sealed passwords."""

from __future__ import annotations

import base64
import json
import os
import time

import pytest

from proxy.config import decode_signing_keys
from proxy.tickets.signed import PREFIX, TicketSigner
from proxy.tickets.store import Ticket, is_well_formed

KEY_A, KEY_B = os.urandom(32), os.urandom(32)


def ticket(ttl: float = 30.0, password: str | None = "s3cret-pw") -> Ticket:
    return Ticket("a" * 32, "10.0.0.5", 5901, "vnc", time.time() + ttl, password, uses=1)


def test_round_trip_keeps_every_field_and_the_password() -> None:
    signer = TicketSigner([KEY_A])
    minted = ticket()
    token = signer.sign(minted)
    assert token.startswith(PREFIX) and is_well_formed(token)
    verified = signer.verify(token)
    assert verified is not None
    ticket_id, got = verified
    assert got == minted and got.password == "s3cret-pw"
    assert len(ticket_id) >= 20


def test_password_is_not_in_the_token_in_clear() -> None:
    token = TicketSigner([KEY_A]).sign(ticket(password="hunter2-console"))
    payload = base64.urlsafe_b64decode(token.split(".")[1] + "==")
    assert b"hunter2" not in payload and b"hunter2" not in token.encode()


def test_rotation_old_key_still_verifies_new_key_signs() -> None:
    old = TicketSigner([KEY_A]).sign(ticket())
    rotated = TicketSigner([KEY_B, KEY_A])
    assert rotated.verify(old) is not None
    assert TicketSigner([KEY_A]).verify(rotated.sign(ticket())) is None
    assert TicketSigner([KEY_B]).verify(old) is None


def test_tampering_and_expiry_are_refused() -> None:
    signer = TicketSigner([KEY_A])
    token = signer.sign(ticket())
    body, mac = token.rsplit(".", 1)
    payload = json.loads(base64.urlsafe_b64decode(body[len(PREFIX) :] + "=="))
    payload["h"] = "10.0.0.66"
    forged = PREFIX + base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    assert signer.verify(f"{forged}.{mac}") is None
    assert signer.verify(token[:-2] + ("AA" if token[-2:] != "AA" else "BB")) is None
    assert signer.verify(signer.sign(ticket(ttl=-1))) is None
    for junk in ("s1.", "s1..", "s1.e30.", "s1.!!!.x", "nope"):
        assert signer.verify(junk) is None


def test_keys_must_be_long_enough() -> None:
    with pytest.raises(ValueError):
        TicketSigner([b"short"])
    assert decode_signing_keys([base64.b64encode(KEY_A).decode()]) == [KEY_A]
