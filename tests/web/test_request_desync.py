"""An early answer (401, 429) to a request whose body was not read must not leave that body on
a connection that is reused: behind HAProxy with an h2 frontend, the next user's request would be
read as the rest of the old body. Raw sockets: the proxy either discards the body (small) and
answers the next request on the connection, or closes the connection (large or slow bodies)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from proxy.app import create_app
from tests.support.configs import make_config

BODY = b'{"vmUuid": "0123456789abcdef0123456789abcdef"}'
# What the old body would look like to a server that took it for the next request.
SMUGGLED = b"GET /healthz HTTP/1.1\r\nHost: smuggled\r\n\r\n" * 40
NEXT = b"GET /healthz HTTP/1.1\r\nHost: proxy\r\n\r\n"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def post(body: bytes, authorization: str | None = None, chunked: bool = False) -> bytes:
    head = b"POST /api/v1/consoles HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n"
    if authorization is not None:
        head += f"Authorization: {authorization}\r\n".encode()
    if chunked:
        return head + b"Transfer-Encoding: chunked\r\n\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % len(body)


def parse(data: bytes) -> list[Answer]:
    answers = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
        }
        length = int(headers.get("content-length", "0"))
        answers.append(Answer(int(lines[0].split()[1]), headers, rest[:length]))
        data = rest[length:]
    return answers


async def exchange(port: int, *parts: bytes, pause: float = 0.2) -> tuple[list[Answer], bool]:
    """Send ``parts`` with a pause between them; the answers, and whether the proxy closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = bytearray()
    closed = False
    try:
        for i, part in enumerate(parts):
            if i:
                await asyncio.sleep(pause)
            try:
                writer.write(part)
                await writer.drain()
            except ConnectionError:
                closed = True
                break
        try:
            async with asyncio.timeout(3.0):
                while chunk := await reader.read(65536):
                    received += chunk
                closed = True
        except TimeoutError:
            pass
        except ConnectionError:
            closed = True
    finally:
        writer.close()
    return parse(bytes(received)), closed


@pytest.fixture
async def port(aiohttp_server: Any) -> Any:
    async def start(**sections: Any) -> int:
        server = await aiohttp_server(create_app(make_config(**sections)))
        return int(server.port)

    return start


def assert_next_answered_or_closed(answers: list[Answer], closed: bool, first: int) -> None:
    assert answers and answers[0].status == first, answers
    assert all(a.status != 400 for a in answers), answers
    if len(answers) == 1:
        assert closed, "the old body's connection stayed open without answering the next request"
    else:
        assert [a.status for a in answers] == [first, 200], answers
        assert answers[1].body == b'{"status": "ok"}'


async def test_pipelined_after_401_is_answered(port: Any) -> None:
    answers, closed = await exchange(await port(), post(BODY) + BODY + NEXT)
    assert_next_answered_or_closed(answers, closed, 401)


async def test_body_sent_after_the_401_is_discarded(port: Any) -> None:
    p = await port()
    answers, closed = await exchange(p, post(SMUGGLED, "Basic x"), SMUGGLED + NEXT)
    assert_next_answered_or_closed(answers, closed, 401)
    answers, closed = await exchange(p, post(SMUGGLED, chunked=True), b"%x\r\n" % len(SMUGGLED)
                                     + SMUGGLED + b"\r\n0\r\n\r\n" + NEXT)  # fmt: skip
    assert_next_answered_or_closed(answers, closed, 401)


async def test_rate_limited_mint_with_body(port: Any) -> None:
    p = await port(limits={"rate_burst": 1, "rate_per_minute": 1})
    await exchange(p, post(BODY) + BODY)
    answers, closed = await exchange(p, post(SMUGGLED), SMUGGLED + NEXT)
    assert_next_answered_or_closed(answers, closed, 429)


async def test_large_unread_body_closes_the_connection(port: Any) -> None:
    # Over 64 KiB: the proxy does not read it all to keep the connection; it says so and closes.
    big = SMUGGLED * 100
    answers, closed = await exchange(await port(), post(big, "OAuth"), big + NEXT)
    assert [a.status for a in answers] == [401], answers
    assert answers[0].headers.get("connection", "").lower() == "close"
    assert closed


async def test_slow_body_closes_the_connection(port: Any) -> None:
    # Headers now, the body never: the answer does not wait for it, and the connection ends.
    answers, closed = await exchange(await port(), post(BODY))
    assert [a.status for a in answers] == [401], answers
    assert answers[0].headers.get("connection", "").lower() == "close"
    assert closed
