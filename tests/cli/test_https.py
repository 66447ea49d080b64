"""HTTPS without a reverse proxy: console pages, the API and wss from the proxy itself, with a
certificate that SIGHUP reloads for new connections while open consoles stay up."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from proxy.demo.vncserver import DemoVncServer
from tests.support.browser import chromium, wait_drawn, wait_state
from tests.support.configs import write_token_file
from tests.support.net import free_port
from tests.support.reverse_proxies import Tls, make_tls
from tests.support.rfb_client import greet_as_browser
from tests.support.serve_process import ServeProcess

TOKEN = "https-console"


def serve_args(port: int, tokens: Path, cert: Path, key: Path) -> tuple[list[str], dict[str, str]]:
    """Command-line flags and the environment (the TLS files come in through the latter)."""
    args = ["--listen", f"127.0.0.1:{port}", "--token-file", str(tokens)]
    env = {
        "CONSOLE_PROXY_SERVER_TLS_CERT_FILE": str(cert),
        "CONSOLE_PROXY_SERVER_TLS_KEY_FILE": str(key),
        "CONSOLE_PROXY_TARGETS_ALLOW": "127.0.0.0/8",
        "CONSOLE_PROXY_AUDIT_SINK": "",
    }
    return args, env


def tls_in(directory: Path) -> Tls:
    directory.mkdir()
    return make_tls(directory)


async def served_certificate(port: int) -> bytes:
    """The DER certificate a new TLS connection to the proxy gets."""

    def fetch() -> bytes:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with context.wrap_socket(raw) as tls:
                der = tls.getpeercert(binary_form=True)
                assert der is not None
                return der

    return await asyncio.to_thread(fetch)


def der(tls: Tls) -> bytes:
    return ssl.PEM_cert_to_DER_cert(tls.cert.read_text())


async def test_console_over_https_in_chromium_and_sighup_reload(tmp_path: Path) -> None:
    first, second = tls_in(tmp_path / "first"), tls_in(tmp_path / "second")
    live_cert, live_key = tmp_path / "cert.pem", tmp_path / "key.pem"
    live_cert.write_bytes(first.cert.read_bytes())
    live_key.write_bytes(first.key.read_bytes())
    async with DemoVncServer(name="https-vm") as vnc:
        tokens = write_token_file(tmp_path / "tokens", {TOKEN: ("127.0.0.1", vnc.port)})
        port = free_port()
        args, env = serve_args(port, tokens, live_cert, live_key)
        async with ServeProcess(port, args, tmp_path, env=env, scheme="https") as proxy:
            origin = f"https://127.0.0.1:{port}"
            assert await served_certificate(port) == der(first)
            # The page, its scripts and the wss console, in Chromium trusting nothing but TLS.
            async with chromium() as browser:
                context = await browser.new_context(ignore_https_errors=True)
                page = await context.new_page()
                await page.goto(f"{origin}/console/vnc#token={TOKEN}")
                await wait_state(page, "connected")
                await wait_drawn(page)
                assert page.url.startswith("https://")
                # The API over the same listener: a mint without a session is a JSON 401.
                status = await page.evaluate(
                    "fetch('/api/v1/consoles', {method: 'POST', body: '{}'})"
                    ".then(r => r.json().then(b => [r.status, b.error.code]))"
                )
                assert status == [401, "AUTH.MISSING_SESSION"]
                # A console opened before the reload, from Python, verifying the first cert.
                verify_first = first.client_context()
                async with aiohttp.ClientSession() as http:
                    ws = await http.ws_connect(
                        f"wss://127.0.0.1:{port}/websockify?token={TOKEN}", ssl=verify_first
                    )
                    stream = await greet_as_browser(ws)
                    await stream.write(bytes([1]))  # ClientInit
                    await stream.read_exactly(24, 10)  # ServerInit's fixed part

                    live_cert.write_bytes(second.cert.read_bytes())
                    live_key.write_bytes(second.key.read_bytes())
                    proxy.send(signal.SIGHUP)
                    async with asyncio.timeout(20):
                        while await served_certificate(port) != der(second):
                            await asyncio.sleep(0.1)
                    # The open console and the page both still work on the old connection.
                    await stream.write(bytes([3, 0, 0, 0, 0, 0, 0, 16, 0, 16]))
                    assert len(await stream.read_exactly(4, 10)) == 4  # a FramebufferUpdate
                    assert await page.evaluate("document.body.dataset.state") == "connected"
                    await ws.close()

                # A broken file at SIGHUP: the second certificate stays, and the log says why.
                live_cert.write_text("not a certificate")
                proxy.send(signal.SIGHUP)
                async with asyncio.timeout(20):
                    while "kept the old HTTPS certificate" not in proxy.stderr:
                        await asyncio.sleep(0.1)
                assert await served_certificate(port) == der(second)
                await context.close()


@pytest.mark.parametrize("broken", ["missing key", "garbage cert"])
async def test_a_bad_certificate_at_start_names_the_key(tmp_path: Path, broken: str) -> None:
    tls = tls_in(tmp_path / "tls")
    cert, key = tls.cert, tls.key
    if broken == "missing key":
        key = tmp_path / "nowhere.pem"
        expected = "server.tls_key_file"
    else:
        cert = tmp_path / "garbage.pem"
        cert.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        expected = "server.tls_cert_file"
    tokens = write_token_file(tmp_path / "tokens", {TOKEN: ("127.0.0.1", 5900)})
    args, env = serve_args(free_port(), tokens, cert, key)
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "proxy.cli", "serve", *args],
        env={**ServeProcess(0, [], tmp_path).env, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
