"""The SPICE server's side of the link wire formats, written out again here independently of the
proxy (spice/protocol.h): a server key, its SpiceLinkReply, decrypting the ticket. The client's
side is in tests/support/spice_client.py."""

from __future__ import annotations

import functools
import struct

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.support.spice_client import CAP_AUTH_SELECTION, CAP_AUTH_SPICE, CAP_MINI_HEADER, HEADER

LINK_REPLY_FIXED = 4 + 162 + 12
OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)


@functools.cache
def server_key(bits: int = 1024) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def public_der(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def link_reply(
    der: bytes | None = None,
    error: int = 0,
    common: tuple[int, ...] = (CAP_AUTH_SELECTION | CAP_AUTH_SPICE | CAP_MINI_HEADER,),
) -> bytes:
    """SpiceLinkHeader + SpiceLinkReply as spice-server writes it (reds_send_link_ack)."""
    if error:  # reds_send_link_error: everything but ``error`` zeroed, no capabilities
        body = struct.pack("<I", error) + bytes(LINK_REPLY_FIXED - 4)
        return HEADER.pack(b"REDQ", 2, 2, len(body)) + body
    der = public_der(server_key()) if der is None else der
    caps = struct.pack(f"<{len(common)}I", *common)
    body = struct.pack("<I162sIII", 0, der, len(common), 0, LINK_REPLY_FIXED) + caps
    return HEADER.pack(b"REDQ", 2, 2, len(body)) + body


def decrypt(encrypted: bytes) -> bytes:
    return server_key().decrypt(encrypted, OAEP)
