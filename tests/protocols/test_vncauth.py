from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from proxy.protocols.rfb.vncauth import verify_vnc_auth, vnc_auth_response, vnc_des_key
from tests.support.qemu import QemuVm

CHALLENGE = bytes((i * 17 + 3) & 0xFF for i in range(16))

# Computed with noVNC 1.7.0's own DES (core/crypto/des.js, an independent implementation that
# does the key-bit reversal inside its key schedule) for CHALLENGE.
NOVNC_VECTORS = [
    ("password", "e76da4ff8ea6cc02055a30ce95d5e6af"),
    ("secret", "c99f3ad0e4ca1690371d3185dc2bec24"),
    ("", "562c25d76cc998b0abdb8424a0195286"),
    ("verylongpassword", "2914130e87e5b8ef742835d5962ae827"),
]


@pytest.mark.parametrize(("password", "expected"), NOVNC_VECTORS)
def test_response_matches_novnc(password: str, expected: str) -> None:
    assert vnc_auth_response(password, CHALLENGE).hex() == expected


def test_des_primitive_matches_the_textbook_vector() -> None:
    # The classic worked DES example (key 133457799BBCDFF1): proves the 3-key trick is plain DES.
    key = bytes.fromhex("133457799BBCDFF1")
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    block = encryptor.update(bytes.fromhex("0123456789ABCDEF")) + encryptor.finalize()
    assert block.hex() == "85e813540f0ab405"


def test_key_is_truncated_padded_and_bit_reversed() -> None:
    assert vnc_des_key("") == bytes(8)
    assert vnc_des_key("\x01") == b"\x80" + bytes(7)
    assert vnc_des_key("abcdefghXYZ") == vnc_des_key("abcdefgh")
    assert vnc_des_key("a") == bytes([0b10000110]) + bytes(7)  # 'a' = 0b01100001


def test_only_the_first_eight_bytes_count() -> None:
    assert vnc_auth_response("12345678", CHALLENGE) == vnc_auth_response("123456789", CHALLENGE)
    assert vnc_auth_response("1234567", CHALLENGE) != vnc_auth_response("12345678", CHALLENGE)


def test_verify_vnc_auth_accepts_only_the_right_response() -> None:
    response = vnc_auth_response("secret", CHALLENGE)
    assert verify_vnc_auth("secret", CHALLENGE, response)
    assert not verify_vnc_auth("Secret", CHALLENGE, response)
    assert not verify_vnc_auth("secret", CHALLENGE, response[:15])
    assert not verify_vnc_auth("secret", bytes(16), response)


def test_challenge_size_is_checked() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        vnc_auth_response("secret", bytes(8))


# --- against a real QEMU VNC server ---------------------------------------------------------

TIMEOUT = 20.0


@pytest.fixture
async def qemu_vnc() -> AsyncIterator[QemuVm]:
    async with QemuVm(vnc_password=True) as vm:
        yield vm


async def _qemu_auth_result(vm: QemuVm, password: str) -> int:
    reader, writer = await asyncio.open_connection(vm.host, vm.vnc_port)
    try:
        async with asyncio.timeout(TIMEOUT):
            assert await reader.readexactly(12) == b"RFB 003.008\n"
            writer.write(b"RFB 003.008\n")
            count = (await reader.readexactly(1))[0]
            assert 2 in await reader.readexactly(count)
            writer.write(b"\x02")
            challenge = await reader.readexactly(16)
            writer.write(vnc_auth_response(password, challenge))
            (result,) = struct.unpack(">I", await reader.readexactly(4))
            return int(result)
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.qemu
@pytest.mark.parametrize("password", ["s3cret", "12345678", "été"])
async def test_qemu_accepts_our_response(qemu_vnc: QemuVm, password: str) -> None:
    await qemu_vnc.set_password(password)
    assert await _qemu_auth_result(qemu_vnc, "wrong") == 1
    assert await _qemu_auth_result(qemu_vnc, password) == 0
