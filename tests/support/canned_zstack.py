"""A stand-in ZStack that gives one hand-made answer to every request and records what it was
asked (path and Authorization): for answers the simulator never gives."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Canned:
    status: int = 200
    body: str = "{}"
    content_type: str = "application/json"
    seen: list[tuple[str, str | None]] = field(default_factory=list)


CANNED = web.AppKey("canned", Canned)


async def canned_answer(request: web.Request) -> web.Response:
    canned = request.app[CANNED]
    canned.seen.append((request.path, request.headers.get("Authorization")))
    if canned.status == 302:
        return web.Response(status=302, headers={"Location": "http://127.0.0.1:1/elsewhere"})
    return web.Response(status=canned.status, text=canned.body, content_type=canned.content_type)
