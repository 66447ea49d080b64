"""An access log that never writes a query string (tickets may travel in ``?token=``) and
cannot be forged through the path: it writes the path as the client sent it (still
percent-encoded), with every byte that is not visible ASCII escaped as ``\\xNN``."""

from __future__ import annotations

import functools

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

# Visible ASCII but the backslash, which starts an escape.
_KEPT = frozenset(chr(c) for c in range(0x21, 0x7F)) - {"\\"}


@functools.lru_cache(maxsize=1024)  # a handful of paths make almost every line
def printable(text: str) -> str:
    """``text`` with every character but visible ASCII written as its UTF-8 bytes, ``\\xNN``."""
    if all(c in _KEPT for c in text):
        return text
    return "".join(
        c if c in _KEPT else "".join(f"\\x{b:02x}" for b in c.encode("utf-8", "surrogateescape"))
        for c in text
    )


class RedactingAccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        path, query, _ = request.raw_path.partition("?")
        self.logger.info(
            '%s "%s %s%s" %s %s %.1fms',
            request.remote,
            request.method,
            printable(path),
            "?…" if query or request.query_string else "",
            response.status,
            response.body_length,
            time * 1000,
        )
