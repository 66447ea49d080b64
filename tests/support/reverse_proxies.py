"""nginx and HAProxy in front of the proxy, run from the configs in deploy/ over TLS.

The shipped files are rendered for a test (loopback ports, a throw-away certificate, log and
temp paths in the test's directory) by exact replacements that fail loudly when a file no longer
has the text they replace: what runs is the snippet the README points to, not a copy of it.

    tls = make_tls(directory)
    nginx = nginx_setup(directory, tls, upstream_port)
    process = start_nginx_process(nginx)     # stop it with tests.support.services.stop
    config, https_port, http_port = haproxy_config(directory, tls, [upstream_port])
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.binaries import require_binary
from tests.support.net import free_port
from tests.support.services import wait_listening

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# The path prefix both deploy configs route to the proxy.
BASE = "/console-proxy"


def replace_once(text: str, old: str, new: str) -> str:
    """Rewrite a deploy file for the test; fails loudly when the file no longer has ``old``."""
    assert old in text, f"deploy file changed: {old!r} not found"
    return text.replace(old, new)


# --- a self-signed certificate for 127.0.0.1 and localhost ------------------------------------


@dataclass(frozen=True)
class Tls:
    cert: Path
    key: Path
    bundle: Path  # HAProxy: certificate then key in one file

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


def make_tls(directory: Path) -> Tls:
    """A self-signed P-256 certificate (SANs 127.0.0.1 and localhost) written to ``directory``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "console-proxy test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    paths = Tls(directory / "cert.pem", directory / "key.pem", directory / "bundle.pem")
    paths.cert.write_bytes(cert_pem)
    paths.key.write_bytes(key_pem)
    paths.bundle.write_bytes(cert_pem + key_pem)
    return paths


# --- nginx: deploy/nginx/console-proxy.conf inside a minimal nginx.conf -----------------------


@dataclass(frozen=True)
class Nginx:
    binary: str
    prefix: Path
    conf: Path
    https_port: int
    http_port: int

    @property
    def globals(self) -> str:
        return f"pid {self.prefix}/nginx.pid; error_log {self.prefix}/error.log info;"

    @property
    def access_log(self) -> Path:
        return self.prefix / "console-proxy.access.log"

    def base_args(self) -> list[str]:
        return [self.binary, "-p", str(self.prefix), "-e", str(self.prefix / "error.log")]


def nginx_setup(directory: Path, tls: Tls, upstream_port: int) -> Nginx:
    """Render the shipped site for loopback ports, ``tls`` and an upstream on ``upstream_port``."""
    binary = require_binary("nginx", "nginx")
    https_port, http_port = free_port(), free_port()
    site = (DEPLOY / "nginx" / "console-proxy.conf").read_text()
    for old, new in (
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;"),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("    listen [::]:443 ssl http2;\n", ""),
        ("    listen [::]:80;\n", ""),
        ("/etc/ssl/console-proxy/fullchain.pem", str(tls.cert)),
        ("/etc/ssl/console-proxy/privkey.pem", str(tls.key)),
        ("/var/log/nginx/", f"{directory}/"),
        ("server 127.0.0.1:6080 ", f"server 127.0.0.1:{upstream_port} "),
    ):
        site = replace_once(site, old, new)
    (directory / "console-proxy.conf").write_text(site)
    temp_paths = "".join(
        f"    {kind}_temp_path {directory}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = directory / "nginx.conf"
    conf.write_text(
        "worker_processes 1;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"{temp_paths}"
        f"    access_log {directory}/default.access.log;\n"
        f"    include {directory}/console-proxy.conf;\n"
        "}\n"
    )
    return Nginx(binary, directory, conf, https_port, http_port)


def start_nginx_process(nginx: Nginx) -> subprocess.Popen[bytes]:
    """``nginx`` in the foreground, once it listens on its HTTPS port (blocking)."""
    args = [*nginx.base_args(), "-c", str(nginx.conf), "-g", f"{nginx.globals} daemon off;"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(nginx.https_port, process, nginx.prefix / "error.log")
    return process


# --- HAProxy: deploy/haproxy/haproxy.cfg ------------------------------------------------------


def haproxy_config(directory: Path, tls: Tls, backends: list[int]) -> tuple[Path, int, int]:
    """Render the shipped config for loopback ports, ``tls`` and ``backends``; write it into
    ``directory`` and return its path, the HTTPS port and the HTTP port. Run it with
    :class:`tests.support.services.HAProxy` (which sets ``HAPROXY_CONTAINER``: no chroot)."""
    https_port, http_port = free_port(), free_port()
    text = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    servers = "".join(f"    server proxy{i} 127.0.0.1:{p}\n" for i, p in enumerate(backends, 1))
    for old, new in (
        ("bind :80\n", f"bind 127.0.0.1:{http_port}\n"),
        ("bind :443 ssl", f"bind 127.0.0.1:{https_port} ssl"),
        ("/etc/haproxy/certs/console-proxy.pem", str(tls.bundle)),
        ("    server proxy1 proxy1:6080\n    server proxy2 proxy2:6080\n", servers),
        ("inter 5s fastinter 1s", "inter 100ms fastinter 100ms downinter 100ms"),
        # The test machine's file limit may be lower than 2 x maxconn.
        ("maxconn 20000", "maxconn 1000"),
    ):
        text = replace_once(text, old, new)
    path = directory / "haproxy.cfg"
    path.write_text(text)
    return path, https_port, http_port


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """One :func:`make_tls` per test module (registered in tests/conftest.py)."""
    return make_tls(tmp_path_factory.mktemp("tls"))
