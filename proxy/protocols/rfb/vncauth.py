"""VNC Authentication (RFC 6143 §7.2.2): the DES challenge-response.

The server sends a random 16-byte challenge; the client encrypts it with DES in ECB mode, keyed
with the password, and sends the 16-byte result back. VNC departs from plain DES in how the key
is made: the password is cut or NUL-padded to 8 bytes and the bits of every key byte are reversed
(a quirk inherited from the original AT&T code, which RFC 6143 §7.2.2 does not spell out).

Passwords are encoded as UTF-8, which is what QEMU stores when a password is set over QMP.
"""

from __future__ import annotations

import hmac

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

CHALLENGE_SIZE = 16
KEY_SIZE = 8

_REVERSED_BITS = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def vnc_des_key(password: str) -> bytes:
    """Return the 8-byte DES key VNC derives from ``password``."""
    raw = password.encode("utf-8")[:KEY_SIZE].ljust(KEY_SIZE, b"\0")
    return raw.translate(_REVERSED_BITS)


def vnc_auth_response(password: str, challenge: bytes) -> bytes:
    """Return the 16-byte response a client sends for ``challenge`` and ``password``."""
    if len(challenge) != CHALLENGE_SIZE:
        raise ValueError(f"VNC challenge must be {CHALLENGE_SIZE} bytes, got {len(challenge)}")
    key = vnc_des_key(password)
    # Triple DES with K1 = K2 = K3 is single DES (encrypt, decrypt, encrypt with one key);
    # cryptography deprecates the 8-byte form, so the key is repeated instead.
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return encryptor.update(challenge) + encryptor.finalize()


def verify_vnc_auth(password: str, challenge: bytes, response: bytes) -> bool:
    """Tell whether ``response`` answers ``challenge`` for ``password`` (constant time)."""
    if len(response) != CHALLENGE_SIZE:
        return False
    return hmac.compare_digest(vnc_auth_response(password, challenge), response)
