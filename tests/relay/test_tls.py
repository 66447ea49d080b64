"""TLS to the hypervisor (proxy/tls.py): VNC's VeNCrypt and SPICE's TLS port, against real QEMU.

QEMU gets a throwaway PKI (tests/support/certs.py): ``tls-creds-x509`` for VNC, which then
offers VeNCrypt with X509None (X509Vnc with ``password=on``), and ``x509-dir`` for SPICE's
``tls-port``. The proxy's side is :func:`proxy.relay.tls.client_context` from a ``TlsConfig``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from proxy.closecodes import Close
from proxy.config import ConfigError, TlsConfig
from proxy.protocols.rfb.driver import _buffered, _start_tls, authenticate_upstream
from proxy.protocols.rfb.events import (
    AuthenticationFailed,
    RemoteProtocolError,
    RfbVersion,
    SecurityComplete,
    SecurityType,
    TlsRequired,
    VencryptSubtype,
)
from proxy.protocols.rfb.security import secure_vnc
from proxy.relay.dial import dial
from proxy.relay.tls import (
    TlsFailure,
    client_context,
    open_tls_connection,
    tls_failure,
)
from tests.support.certs import Pki, write_pki
from tests.support.fake_servers import ServerFailures
from tests.support.qemu import QemuVm
from tests.support.rfb_client import RfbClient, TcpStream
from tests.support.spice_client import bare_link_mess
from tests.support.waiting import wait_until

PASSWORD = "s3cret!"
SCREEN = (720, 400)
TIMEOUT = 10.0  # for each wait; generous, for a loaded machine
X509_NONE, X509_VNC = VencryptSubtype.X509_NONE, VencryptSubtype.X509_VNC
VENCRYPT = SecurityType.VENCRYPT
TLS_RECORD_TYPES = {20, 21, 22, 23}  # change_cipher_spec, alert, handshake, application_data

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def context(pki: Pki, **options: Any) -> ssl.SSLContext:
    built = client_context(TlsConfig(ca_file=str(pki.ca_cert), **options))
    assert built is not None
    return built


@contextlib.asynccontextmanager
async def connect(port: int) -> AsyncIterator[Streams]:
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)


async def server_init(streams: Streams, trailing: bytes) -> tuple[int, int, str]:
    """ClientInit (§7.3.1), ServerInit (§7.3.2), then one whole-screen FramebufferUpdate, to show
    that the streams keep working for the bridge after the handshake."""
    assert trailing == b""
    client = RfbClient(TcpStream(*streams), TIMEOUT)
    init = await client.client_init()
    # FramebufferUpdateRequest (§7.5.3), not incremental, the whole screen.
    streams[1].write(struct.pack("!BBHHHH", 3, 0, 0, 0, init.width, init.height))
    assert await client.stream.read_exactly(1, TIMEOUT) == b"\x00"  # FramebufferUpdate (§7.6.1)
    return init.width, init.height, init.name


def is_tls(streams: Streams) -> bool:
    return streams[1].get_extra_info("ssl_object") is not None


# --- client_context and error mapping (no QEMU) -----------------------------------------------


def test_no_ca_file_means_no_tls() -> None:
    assert client_context(TlsConfig()) is None


@pytest.mark.parametrize("check_hostname", [True, False])
def test_client_context_verifies_with_tls_1_2_or_later(pki: Pki, check_hostname: bool) -> None:
    built = context(pki, check_hostname=check_hostname)
    assert built.verify_mode is ssl.CERT_REQUIRED
    assert built.minimum_version is ssl.TLSVersion.TLSv1_2
    assert built.check_hostname is check_hostname
    # Only our CA is trusted, not the system's bundle.
    assert [cert["subject"] for cert in built.get_ca_certs()] == [
        ((("organizationName", "console-proxy tests"),), (("commonName", "console-proxy test CA"),))
    ]


def test_client_context_loads_a_client_certificate(pki: Pki) -> None:
    context(pki, cert_file=str(pki.client_cert), key_file=str(pki.client_key))


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"ca_file": "/nonexistent/ca.pem"}, "tls.ca_file"),
        ({"ca_file": "SERVER_KEY"}, "tls.ca_file"),  # not a certificate
        ({"cert_file": "CLIENT_CERT", "key_file": "SERVER_KEY"}, "tls.cert_file"),  # mismatch
        ({"cert_file": "/nonexistent.pem", "key_file": "CLIENT_KEY"}, "tls.cert_file"),
    ],
)
def test_client_context_names_the_key_it_cannot_load(
    pki: Pki, options: dict[str, str], key: str
) -> None:
    paths = {
        "SERVER_KEY": str(pki.server_key),
        "CLIENT_CERT": str(pki.client_cert),
        "CLIENT_KEY": str(pki.client_key),
    }
    values: dict[str, Any] = {"ca_file": str(pki.ca_cert)}
    values |= {k: paths.get(v, v) for k, v in options.items()}
    with pytest.raises(ConfigError) as caught:
        client_context(TlsConfig(**values))
    assert caught.value.key == key


def test_tls_failure_mapping() -> None:
    unverified = ssl.SSLCertVerificationError(1, "certificate verify failed")
    unverified.verify_message = "unable to get local issuer certificate"
    failure = tls_failure(unverified)
    assert failure.close is Close.TLS_UNVERIFIED
    assert (
        failure.reason == "certificate verification failed: unable to get local issuer certificate"
    )
    assert tls_failure(ConnectionResetError()).reason == (
        "the hypervisor closed the connection during the TLS handshake"
    )
    assert tls_failure(failure) is failure
    assert repr(failure).startswith("TlsFailure('certificate verification failed")
    for close in (Close.TLS_UNVERIFIED, Close.TLS_FAILED, Close.TLS_REQUIRED):
        assert len(close.reason.encode()) < 123


async def test_plaintext_buffered_before_tls_is_refused(tcp_target: Callable[..., Any]) -> None:
    """Bytes already in the stream's buffer when TLS starts arrived in plaintext; reading them
    afterwards as if they came over TLS is the STARTTLS injection flaw."""

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    target = await tcp_target(server)
    async with connect(target.port) as (reader, writer):
        reader.feed_data(b"\x00\x00\x00\x00")  # a forged SecurityResult OK
        with pytest.raises(RemoteProtocolError, match="unexpected data before the TLS handshake"):
            await _start_tls(reader, writer, ssl.create_default_context(), None)
        assert not is_tls((reader, writer))


async def test_streams_keep_working_and_stay_bounded_after_vencrypt(
    pki: Pki, tcp_target: Callable[..., Any]
) -> None:
    """A scripted VeNCrypt server: after the handshake the bridge reads the same reader, now
    over TLS, and a reader that does not read makes the server wait (bounded buffering)."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(pki.server_cert, pki.server_key)
    # More than loopback's socket buffers can hold, so that the server has to wait.
    total = 64 * 1024 * 1024
    sent = 0

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        writer.write(b"RFB 003.008\n\x01\x13")
        assert await reader.readexactly(13) == b"RFB 003.008\n\x13"
        writer.write(b"\x00\x02")
        assert await reader.readexactly(2) == b"\x00\x02"
        writer.write(b"\x00\x01" + struct.pack("!I", X509_NONE))
        assert await reader.readexactly(4) == struct.pack("!I", X509_NONE)
        writer.write(b"\x01")
        await writer.drain()
        await writer.start_tls(server_context)
        writer.write(struct.pack("!I", 0))
        chunk = b"x" * 65536
        while sent < total:
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
        writer.close()

    target = await tcp_target(server)
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection("127.0.0.1", target.port, limit=65536)
    try:
        # server_hostname defaults to the peer's IP, checked against the IP SAN.
        event, trailing = await authenticate_upstream(
            reader, writer, None, TIMEOUT, tls=context(pki)
        )
        assert event == SecurityComplete(RfbVersion.V3_8, VENCRYPT, X509_NONE)

        async def server_waits() -> bool:
            before = sent
            await asyncio.sleep(0.3)
            return sent == before

        await wait_until(server_waits, interval=0)
        assert sent < total / 2  # the server was made to wait ...
        assert _buffered(reader) <= 4 * 65536  # ... while the proxy holds little
        received = len(trailing)
        async with asyncio.timeout(TIMEOUT):
            while data := await reader.read(65536):
                received += len(data)
        assert received == total
    finally:
        writer.close()


# --- VNC: VeNCrypt against QEMU ---------------------------------------------------------------


@pytest.fixture
async def tls_vm(pki: Pki) -> AsyncIterator[QemuVm]:
    async with QemuVm(vnc_x509_dir=pki.dir) as vm:
        await vm.wait_for_screen(*SCREEN)
        yield vm


@pytest.fixture
async def locked_tls_vm(pki: Pki) -> AsyncIterator[QemuVm]:
    async with QemuVm(vnc_x509_dir=pki.dir, vnc_password=True) as vm:
        await vm.set_password(PASSWORD)
        await vm.wait_for_screen(*SCREEN)
        yield vm


class Recorder:
    """A TCP relay in front of QEMU that records what the client sent, to check that nothing
    after the VeNCrypt sub-type choice went out as plaintext. ``client_done`` is set once the
    client's side has ended: everything it sent is recorded."""

    def __init__(self, port: int, failures: ServerFailures) -> None:
        self.port = port
        self.sent = bytearray()
        self.client_done = asyncio.Event()
        self.server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._failures = failures

    async def __aenter__(self) -> Recorder:
        self.server = await asyncio.start_server(self._failures.guard(self._relay), "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self._writers:
            writer.close()
        await self.server.wait_closed()

    @property
    def listen_port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._writers.append(up_writer)

        async def pump(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, record: bool
        ) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(65536):
                    if record:
                        self.sent += data
                    sink.write(data)
                    await sink.drain()
            if record:
                self.client_done.set()
            sink.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))


def assert_only_tls_after(sent: bytes, prefix: bytes) -> None:
    """``sent`` is ``prefix`` followed by nothing but whole TLS records."""
    assert sent.startswith(prefix)
    rest = sent[len(prefix) :]
    assert rest, "no TLS ClientHello was sent"
    while rest:
        kind, version, length = struct.unpack("!BHH", rest[:5])
        assert kind in TLS_RECORD_TYPES and version >> 8 == 3, rest[:16]
        rest = rest[5 + length :]


@pytest.mark.qemu
@pytest.mark.parametrize("version", [RfbVersion.V3_7, RfbVersion.V3_8], ids=str)
async def test_vencrypt_x509none_reaches_server_init_over_tls(
    pki: Pki, tls_vm: QemuVm, version: RfbVersion
) -> None:
    async with connect(tls_vm.vnc_port) as streams:
        event, trailing = await authenticate_upstream(
            *streams, None, TIMEOUT, max_version=version, tls=context(pki)
        )
        assert event == SecurityComplete(version, VENCRYPT, X509_NONE)
        assert is_tls(streams)
        assert await server_init(streams, trailing) == (*SCREEN, "QEMU")


@pytest.mark.qemu
async def test_vencrypt_x509vnc_with_the_password(pki: Pki, locked_tls_vm: QemuVm) -> None:
    async with connect(locked_tls_vm.vnc_port) as streams:
        event, trailing = await authenticate_upstream(*streams, PASSWORD, TIMEOUT, tls=context(pki))
        assert event == SecurityComplete(RfbVersion.V3_8, VENCRYPT, X509_VNC)
        assert is_tls(streams)
        assert await server_init(streams, trailing) == (*SCREEN, "QEMU")


@pytest.mark.qemu
async def test_vencrypt_x509vnc_wrong_password(pki: Pki, locked_tls_vm: QemuVm) -> None:
    async with connect(locked_tls_vm.vnc_port) as streams:
        with pytest.raises(AuthenticationFailed) as caught:
            await authenticate_upstream(*streams, "wrong", TIMEOUT, tls=context(pki))
    assert caught.value.reason == "Authentication failed"


@pytest.mark.qemu
async def test_vencrypt_x509vnc_without_a_password(pki: Pki, locked_tls_vm: QemuVm) -> None:
    async with connect(locked_tls_vm.vnc_port) as streams:
        with pytest.raises(RemoteProtocolError, match="requires a password the proxy does not"):
            await authenticate_upstream(*streams, None, TIMEOUT, tls=context(pki))


@pytest.mark.qemu
@pytest.mark.parametrize("password", [None, PASSWORD], ids=["x509none", "x509vnc"])
async def test_an_untrusted_certificate_fails_and_nothing_goes_out_in_plaintext(
    pki: Pki,
    password: str | None,
    caplog: pytest.LogCaptureFixture,
    server_failures: ServerFailures,
) -> None:
    async with QemuVm(vnc_x509_dir=pki.dir, vnc_password=password is not None) as vm:
        if password:
            await vm.set_password(password)
        untrusted = client_context(TlsConfig(ca_file=str(pki.other_ca_cert)))
        async with Recorder(vm.vnc_port, server_failures) as relay:
            async with connect(relay.listen_port) as streams:
                with pytest.raises(TlsFailure) as caught:
                    await authenticate_upstream(*streams, password, TIMEOUT, tls=untrusted)
            # Closed: once the relay has seen the end, it has recorded all that was sent.
            await wait_until(relay.client_done.is_set)
            subtype = X509_VNC if password else X509_NONE
            prefix = b"RFB 003.008\n\x13\x00\x02" + struct.pack("!I", subtype)
            assert_only_tls_after(bytes(relay.sent), prefix)
        assert caught.value.close is Close.TLS_UNVERIFIED
        assert caught.value.reason == (
            "certificate verification failed: unable to get local issuer certificate"
        )

        # secure_vnc maps it to the close code and logs the real cause.
        async with connect(vm.vnc_port) as (reader, writer):
            with caplog.at_level(logging.WARNING, logger="proxy.protocols.rfb.security"):
                result = await secure_vnc(None, reader, writer, password, TIMEOUT, tls=untrusted)  # type: ignore[arg-type]
        assert result is Close.TLS_UNVERIFIED
        assert "unable to get local issuer certificate" in caplog.text
        assert (password or "no-password") not in caplog.text


@pytest.mark.qemu
async def test_a_certificate_without_the_ip_fails_only_with_check_hostname(
    tmp_path: Path,
) -> None:
    pki = write_pki(tmp_path, server_ip_san=False)
    async with QemuVm(vnc_x509_dir=pki.dir) as vm:
        async with connect(vm.vnc_port) as streams:
            with pytest.raises(TlsFailure) as caught:
                await authenticate_upstream(*streams, None, TIMEOUT, tls=context(pki))
        assert caught.value.close is Close.TLS_UNVERIFIED
        assert "IP address mismatch" in caught.value.reason
        async with connect(vm.vnc_port) as streams:
            event, _ = await authenticate_upstream(
                *streams, None, TIMEOUT, tls=context(pki, check_hostname=False)
            )
        assert event.subtype is X509_NONE
        # server_hostname overrides the peer's IP: the certificate names localhost.
        async with connect(vm.vnc_port) as streams:
            event, _ = await authenticate_upstream(
                *streams, None, TIMEOUT, tls=context(pki), server_hostname="localhost"
            )
        assert event.subtype is X509_NONE


@pytest.mark.qemu
async def test_client_certificate_when_qemu_verifies_peers(pki: Pki) -> None:
    async with QemuVm(vnc_x509_dir=pki.dir, vnc_verify_peer=True) as vm:
        await vm.wait_for_screen(*SCREEN)
        with_cert = context(pki, cert_file=str(pki.client_cert), key_file=str(pki.client_key))
        async with connect(vm.vnc_port) as streams:
            _, trailing = await authenticate_upstream(*streams, None, TIMEOUT, tls=with_cert)
            assert await server_init(streams, trailing) == (*SCREEN, "QEMU")
        async with connect(vm.vnc_port) as streams:
            with pytest.raises(RemoteProtocolError) as caught:
                await authenticate_upstream(*streams, None, TIMEOUT, tls=context(pki))
        assert caught.value.reason.startswith(
            "the VNC server closed the connection right after the TLS handshake"
        )


@pytest.mark.qemu
async def test_tls_context_with_a_plain_server_is_used_only_when_offered(pki: Pki) -> None:
    async with QemuVm() as vm:
        async with connect(vm.vnc_port) as streams:
            event, _ = await authenticate_upstream(*streams, None, TIMEOUT, tls=context(pki))
            assert event == SecurityComplete(RfbVersion.V3_8, SecurityType.NONE)
            assert not is_tls(streams)
        async with connect(vm.vnc_port) as streams:
            with pytest.raises(TlsRequired) as caught:
                await authenticate_upstream(
                    *streams, None, TIMEOUT, tls=context(pki), require_tls=True
                )
        assert caught.value.reason == (
            "the VNC server does not offer VeNCrypt (TLS), which [tls] vnc_required demands "
            "(offered: 1)"
        )
        async with connect(vm.vnc_port) as (reader, writer):
            result = await secure_vnc(
                None,  # type: ignore[arg-type]
                reader,
                writer,
                None,
                TIMEOUT,
                tls=context(pki),
                require_tls=True,
            )
        assert result is Close.TLS_REQUIRED


@pytest.mark.qemu
async def test_a_vencrypt_server_without_tls_configured_is_refused_clearly(
    tls_vm: QemuVm,
) -> None:
    async with connect(tls_vm.vnc_port) as streams:
        with pytest.raises(RemoteProtocolError) as caught:
            await authenticate_upstream(*streams, None, TIMEOUT)
    assert caught.value.reason == (
        "the VNC server offers no supported security type (offered: 19); it wants TLS "
        "(VeNCrypt): set [tls] ca_file to let the proxy verify it"
    )


# --- SPICE: the TLS port against QEMU ---------------------------------------------------------

SPICE_MAGIC = b"REDQ"
SPICE_VERSION = (2, 2)


async def spice_link(streams: Streams) -> int:
    """Send the link message; return the error code of the server's SpiceLinkReply."""
    reader, writer = streams
    writer.write(bare_link_mess())
    async with asyncio.timeout(TIMEOUT):
        header = await reader.readexactly(16)
        assert header[:4] == SPICE_MAGIC
        major, _minor, size = struct.unpack("<III", header[4:])
        assert major == SPICE_VERSION[0]
        reply = await reader.readexactly(size)
    (error,) = struct.unpack_from("<I", reply)
    return int(error)


@pytest.fixture
async def spice_tls_vm(pki: Pki) -> AsyncIterator[QemuVm]:
    async with QemuVm(spice_x509_dir=pki.dir) as vm:
        yield vm


@pytest.mark.qemu
async def test_spice_tls_port_links_with_the_right_ca(pki: Pki, spice_tls_vm: QemuVm) -> None:
    assert spice_tls_vm.spice_tls_port is not None and spice_tls_vm.spice_port is None
    connected = await dial("127.0.0.1", spice_tls_vm.spice_tls_port, TIMEOUT, context(pki))
    assert not isinstance(connected, Close)
    try:
        assert is_tls(connected)
        assert await spice_link(connected) == 0  # SPICE_LINK_ERR_OK
    finally:
        connected[1].close()


@pytest.mark.qemu
async def test_spice_tls_with_the_wrong_ca_fails_clearly(
    pki: Pki, spice_tls_vm: QemuVm, caplog: pytest.LogCaptureFixture
) -> None:
    port = spice_tls_vm.spice_tls_port
    assert port is not None
    untrusted = client_context(TlsConfig(ca_file=str(pki.other_ca_cert)))
    assert untrusted is not None
    with pytest.raises(TlsFailure) as caught:
        await open_tls_connection("127.0.0.1", port, untrusted, TIMEOUT)
    assert caught.value.close is Close.TLS_UNVERIFIED
    # spice-server sends its CA along, so OpenSSL finds a self-signed root it does not trust.
    assert caught.value.reason.startswith("certificate verification failed: self-signed")
    with caplog.at_level(logging.WARNING, logger="proxy.relay.tls"):
        assert await dial("127.0.0.1", port, TIMEOUT, untrusted) is Close.TLS_UNVERIFIED
    assert f"TLS to console host 127.0.0.1:{port} failed: certificate verification" in caplog.text


@pytest.mark.qemu
async def test_tls_to_a_plaintext_port_says_so(pki: Pki) -> None:
    async with QemuVm() as vm:
        with pytest.raises(TlsFailure) as caught:
            await open_tls_connection("127.0.0.1", vm.vnc_port, context(pki), TIMEOUT)
    assert caught.value.close is Close.TLS_FAILED
    # asyncio's TLS reads the stray bytes; uvloop's sees the server give up on them.
    assert caught.value.reason.startswith(
        (
            "TLS handshake failed: the port does not speak TLS",
            "the hypervisor closed the connection during the TLS handshake",
        )
    )


async def test_tls_connect_errors_map_to_close_codes(pki: Pki) -> None:
    from tests.support.net import free_port

    port = free_port()
    assert await dial("127.0.0.1", port, TIMEOUT, context(pki)) is Close.HOST_UNREACHABLE
