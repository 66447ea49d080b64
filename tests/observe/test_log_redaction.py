"""No ticket in any log line: aiohttp's own warnings (a client offering only ``token.<T>``
without ``binary``), a throttled connection, and aiohttp's parser errors for a request line that
carries ``?token=``; checked in-process (caplog) and on a real process's stderr."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from proxy.app import create_app
from proxy.observe.redaction import TicketRedactingFilter, redact
from tests.support.configs import make_config
from tests.support.net import free_port


def ticket() -> str:
    return secrets.token_urlsafe(32)


def test_redact_replaces_every_form() -> None:
    t = ticket()
    for text in (
        f"GET /websockify?token={t} HTTP/1.1",
        f"Client protocols ['token.{t}'] don't overlap",
        f"b'/websockify?a=1&token={t}\\x01'",
        f"Sec-WebSocket-Protocol: binary, token.{t}",
    ):
        assert t not in redact(text), text


def test_filter_cleans_arguments_and_tracebacks() -> None:
    t = ticket()
    record = logging.LogRecord("aiohttp.server", logging.ERROR, "f", 1, "bad token=%s", (t,), None)
    try:
        raise ValueError(f"Invalid URL: /websockify?token={t}")
    except ValueError:
        record.exc_info = sys.exc_info()
    TicketRedactingFilter().filter(record)
    assert t not in logging.Formatter().format(record)


async def test_non_overlapping_protocol_logs_no_ticket(
    aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = await aiohttp_client(create_app(make_config()))
    t = ticket()
    with caplog.at_level(logging.DEBUG):
        ws = await client.ws_connect("/websockify", protocols=(f"token.{t}",))
        msg = await ws.receive(timeout=10)
        assert msg.type is WSMsgType.CLOSE and msg.data == 4401
        assert ws.protocol is None
        # binary is echoed, the ticket never is.
        ws = await client.ws_connect("/websockify", protocols=("binary", f"token.{t}"))
        assert ws.protocol == "binary"
        await ws.receive(timeout=10)
    assert caplog.records
    assert not [r for r in caplog.records if t in r.getMessage() or t in (r.exc_text or "")]


async def serve_with_stderr(
    log: Path, *env: tuple[str, str]
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "--log-level", "DEBUG", "serve",
         "--listen", f"127.0.0.1:{port}"],
        env={**os.environ, "CONSOLE_PROXY_TARGETS_ALLOW": "127.0.0.0/8", **dict(env)},
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )  # fmt: skip
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return process, port
            except aiohttp.ClientConnectionError:
                pass
            assert process.poll() is None, log.read_text()
            await asyncio.sleep(0.1)
    process.kill()
    raise AssertionError("the proxy did not start")


async def raw_request(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        async with asyncio.timeout(5):
            return await reader.read(4096)
    finally:
        writer.close()


async def test_real_process_stderr_holds_no_ticket(tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    process, port = await serve_with_stderr(
        log, ("CONSOLE_PROXY_LIMITS_RATE_BURST", "2"), ("CONSOLE_PROXY_LIMITS_RATE_PER_MINUTE", "1")
    )
    seen = []
    try:
        async with aiohttp.ClientSession() as http:
            for protocols in ((f"token.{ticket()}",), ("binary", f"token.{ticket()}")) * 2:
                seen.append(protocols[-1][len("token.") :])
                async with http.ws_connect(
                    f"http://127.0.0.1:{port}/websockify", protocols=protocols
                ) as ws:
                    msg = await ws.receive(timeout=10)
                    assert msg.type is WSMsgType.CLOSE and msg.data in (4401, 4429)
        for line in (b"GET /websockify?token=%s\x01 HTTP/1.1\r\n\r\n",
                     b"GET /websockify?token=%s HTTP/1.1\r\nBad Header\r\n\r\n",
                     b"GET /websockify?token=%s HTTP/9.9\r\n\r\n"):  # fmt: skip
            seen.append(ticket())
            answer = await raw_request(port, line % seen[-1].encode())
            assert b" 400 " in answer.split(b"\r\n")[0], answer
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
    text = log.read_text(errors="replace")
    assert "refused" in text or "Error handling request" in text, text
    leaked = [t for t in seen if t in text or t[:12] in text]
    assert not leaked, text
