"""HTTPS without a reverse proxy: the listener's certificate, reloaded on SIGHUP.

The context is built once; a reload loads the new certificate and key into the same context, so
new connections get them while open consoles keep theirs. A bad file at start stops the start
with a ConfigError naming the key; a bad file at reload keeps the old certificate and logs why.
"""

from __future__ import annotations

import logging
import os
import ssl

from proxy.config import ConfigError, ServerConfig

log = logging.getLogger(__name__)


class ServerCertificate:
    def __init__(self, cert_file: str, key_file: str) -> None:
        self.cert_file = cert_file
        # The key may sit in the certificate file.
        self.key_file = key_file or None
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.set_alpn_protocols(["http/1.1"])
        self._load()

    @classmethod
    def from_config(cls, server: ServerConfig) -> ServerCertificate | None:
        """The listener's certificate, or None for plain HTTP (no ``tls_cert_file``)."""
        if not server.tls_cert_file:
            return None
        return cls(server.tls_cert_file, server.tls_key_file)

    def reload(self) -> bool:
        """Load the files again (SIGHUP); on failure keep serving the old certificate."""
        try:
            self._load()
        except ConfigError as exc:
            log.error("kept the old HTTPS certificate: %s", exc)
            return False
        log.info("reloaded the HTTPS certificate from %s", self.cert_file)
        return True

    def _load(self) -> None:
        for key, path in (
            ("server.tls_cert_file", self.cert_file),
            ("server.tls_key_file", self.key_file),
        ):
            if path is not None and not os.path.isfile(path):
                raise ConfigError(key, f"{path} does not exist or is not a file")
        try:
            # A callback, so an encrypted key fails instead of prompting on the terminal.
            self.context.load_cert_chain(self.cert_file, self.key_file, password=_no_password)
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
            raise ConfigError(
                "server.tls_cert_file",
                f"cannot load the certificate and key ({reason}); both must be PEM, the key "
                "unencrypted and matching the certificate",
            ) from None


def _no_password() -> bytes:
    return b""
