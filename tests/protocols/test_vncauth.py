from __future__ import annotations

import asyncio
import json
import struct
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from proxy.protocols.rfb.vncauth import verify_vnc_auth, vnc_auth_response, vnc_des_key
from tests.support.binaries import require_binary

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


def test_verify() -> None:
    response = vnc_auth_response("secret", CHALLENGE)
    assert verify_vnc_auth("secret", CHALLENGE, response)
    assert not verify_vnc_auth("Secret", CHALLENGE, response)
    assert not verify_vnc_auth("secret", CHALLENGE, response[:15])
    assert not verify_vnc_auth("secret", bytes(16), response)


def test_challenge_size_is_checked() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        vnc_auth_response("secret", bytes(8))


# --- against a real QEMU VNC server ---------------------------------------------------------

QEMU = "qemu-system-x86_64"
TIMEOUT = 20.0


async def _wait_for_socket(path: Path, proc: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not path.exists():
            if proc.returncode is not None:
                pytest.fail(f"{QEMU} exited with {proc.returncode}")
            await asyncio.sleep(0.05)


async def _qmp(path: Path, command: str, arguments: dict[str, str]) -> None:
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        async with asyncio.timeout(TIMEOUT):
            await reader.readline()  # greeting
            for message in (
                {"execute": "qmp_capabilities"},
                {"execute": command, "arguments": arguments},
            ):
                writer.write(json.dumps(message).encode() + b"\n")
                reply = json.loads(await reader.readline())
                while "event" in reply:
                    reply = json.loads(await reader.readline())
                assert "return" in reply, reply
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.fixture
async def qemu_vnc() -> AsyncIterator[tuple[Path, Path]]:
    qemu = require_binary(QEMU, "qemu-system-x86")
    with tempfile.TemporaryDirectory() as tmp:
        vnc, qmp = Path(tmp, "vnc.sock"), Path(tmp, "qmp.sock")
        # -S keeps the guest CPU stopped: only the VNC server is needed.
        proc = await asyncio.create_subprocess_exec(
            qemu, "-S", "-display", "none", "-nodefaults", "-vga", "std", "-m", "64",
            "-vnc", f"unix:{vnc},password=on", "-qmp", f"unix:{qmp},server=on,wait=off",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await _wait_for_socket(vnc, proc)
            await _wait_for_socket(qmp, proc)
            yield vnc, qmp
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def _qemu_auth_result(vnc: Path, password: str) -> int:
    reader, writer = await asyncio.open_unix_connection(str(vnc))
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
async def test_qemu_accepts_our_response(qemu_vnc: tuple[Path, Path], password: str) -> None:
    vnc, qmp = qemu_vnc
    await _qmp(qmp, "set_password", {"protocol": "vnc", "password": password})
    assert await _qemu_auth_result(vnc, "wrong") == 1
    assert await _qemu_auth_result(vnc, password) == 0
