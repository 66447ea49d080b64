"""A fake server's failure fails its test at once and with its own message (tests/conftest.py,
tests/support/fake_servers.py): checked on inner pytest runs, in a subprocess."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent

INNER = """
import asyncio

import aiohttp
from aiohttp import web


async def test_handler_assertion_stops_a_waiting_test(tcp_target):
    async def handler(reader, writer):
        data = await reader.readexactly(5)
        assert data == b"hello", f"the fake server got {data!r}"

    target = await tcp_target(handler)
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
    writer.write(b"jello")
    # Like a test waiting for an answer that the failed server will never cause.
    await asyncio.sleep(60)


async def test_handler_failure_after_the_test_is_still_reported(tcp_target):
    async def handler(reader, writer):
        await reader.readexactly(1)
        raise RuntimeError("the fake server broke down")

    target = await tcp_target(handler)
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
    writer.write(b"x")
    # The test ends here, most likely before the handler ran: it fails in its call or teardown.


async def test_peer_going_away_is_no_failure(tcp_target):
    async def handler(reader, writer):
        await reader.readexactly(100)

    target = await tcp_target(handler)
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
    writer.write(b"short")
    writer.close()
    await asyncio.sleep(0.2)


async def test_fake_web_app_handler_failure(aiohttp_server, server_failures):
    async def handler(request):
        assert request.query.get("vm") == "1", f"the fake app was asked {request.query_string!r}"
        return web.Response(text="ok")

    app = web.Application(middlewares=[server_failures.middleware])
    app.router.add_get("/", handler)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as http:
        async with http.get(server.make_url("/?vm=2")) as answer:
            await answer.read()
        await asyncio.sleep(60)
"""


def test_fake_server_failures_fail_their_test_at_once_with_their_own_message(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(test_inner=INNER)
    started = time.monotonic()
    result = pytester.runpytest_subprocess(
        *("-p", "tests.conftest", "-p", "no:cacheprovider", "-rA"),
        *("-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function"),
        timeout=120,
    )
    took = time.monotonic() - started
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed") == 1, outcomes
    assert outcomes.get("failed", 0) + outcomes.get("errors", 0) == 3, outcomes
    result.stdout.fnmatch_lines(
        [
            # The handler's own assertion, on its own line; not a timeout or a cancellation.
            '*assert data == b"hello", f"the fake server got {data!r}"',
            "E*AssertionError: the fake server got b'jello'",
            "test_inner.py:*: AssertionError",
        ]
    )
    result.stdout.fnmatch_lines(["E*RuntimeError: the fake server broke down"])
    result.stdout.fnmatch_lines(["E*AssertionError: the fake app was asked 'vm=2'"])
    result.stdout.fnmatch_lines(
        [
            "FAILED test_inner.py::test_handler_assertion_stops_a_waiting_test*",
            "* test_inner.py::test_handler_failure_after_the_test_is_still_reported*",
            "FAILED test_inner.py::test_fake_web_app_handler_failure*",
        ]
    )
    result.stdout.fnmatch_lines(["PASSED test_inner.py::test_peer_going_away_is_no_failure"])
    # Two of the inner tests wait 60 s for something that the failed server never causes.
    assert took < 60, f"the inner tests ran for {took:.0f} s: they waited instead of failing"
