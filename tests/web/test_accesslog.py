"""The access log writes the path as the client sent it, escaped: a request cannot forge a line,
colour a terminal or slip a NUL into the log, and a query string never appears."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp import web

from proxy.web.accesslog import RedactingAccessLogger, printable

LOGGER = "tests.accesslog"


async def raw_request(port: int, target: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    return answer


@pytest.fixture
async def logged(aiohttp_server: Any, caplog: pytest.LogCaptureFixture) -> Any:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get(r"/{tail:[\s\S]*}", hello)
    server = await aiohttp_server(
        app, access_log_class=RedactingAccessLogger, access_log=logging.getLogger(LOGGER)
    )

    async def request(target: bytes) -> str:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=LOGGER):
            assert (await raw_request(int(server.port or 0), target)).startswith(b"HTTP/1.1 ")
            for _ in range(100):
                if caplog.records:
                    break
                await asyncio.sleep(0.01)
        (record,) = [r for r in caplog.records if r.name == LOGGER]
        return record.getMessage()

    return request


async def test_encoded_newline_escape_and_nul_stay_encoded(logged: Any) -> None:
    line = await logged(b"/x%0a127.0.0.1%20%22GET%20/admin%22%20200%1b[31m%00?token=s3cret")
    assert "\n" not in line and "\x1b" not in line and "\x00" not in line
    assert '"GET /x%0a127.0.0.1%20%22GET%20/admin%22%20200%1b[31m%00?…" 200' in line
    assert "s3cret" not in line


async def test_plain_paths_and_no_query(logged: Any) -> None:
    assert '"GET /console/vnc" 200' in await logged(b"/console/vnc")


def test_printable_escapes_everything_but_visible_ascii() -> None:
    assert printable("/a-b_c.d~e/%41") == "/a-b_c.d~e/%41"
    assert printable("/\n\r\t\x00\x1b\x7f \\") == "/\\x0a\\x0d\\x09\\x00\\x1b\\x7f\\x20\\x5c"
    # Raw bytes that a lenient parser would let through: non-ASCII, bidi overrides.
    assert printable("/caf\u00e9/\u202e") == "/caf\\xc3\\xa9/\\xe2\\x80\\xae"
    assert printable("/\udcff") == "/\\xff"  # undecodable byte, as surrogateescape keeps it
