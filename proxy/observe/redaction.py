"""A safety net for log lines we do not write ourselves: aiohttp's loggers may quote a request
line (``?token=...``) or the offered WebSocket subprotocols (``token.<T>``) in a warning or in
a parser error. :class:`TicketRedactingFilter` replaces every such value before any handler
sees the record."""

from __future__ import annotations

import logging
import re

# ?token=..., token=... in a quoted request line, and the token.<T> WebSocket subprotocol.
_TOKEN = re.compile(r"(?i)(token(?:=|%3D|\.))[^\s&'\",;\]\)>]+")
REDACTED = "<redacted>"
AIOHTTP_LOGGERS = (
    "aiohttp.access",
    "aiohttp.client",
    "aiohttp.internal",
    "aiohttp.server",
    "aiohttp.web",
    "aiohttp.websocket",
)


def redact(text: str) -> str:
    return _TOKEN.sub(lambda m: m.group(1) + REDACTED, text)


class TicketRedactingFilter(logging.Filter):
    """Rewrites a record's message and exception text with every ticket value replaced."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[0] is not None:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_text, record.exc_info = redact(text), None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install(names: tuple[str, ...] = AIOHTTP_LOGGERS) -> None:
    """Attach the filter to each named logger once (create_app may run many times)."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, TicketRedactingFilter) for f in logger.filters):
            logger.addFilter(TicketRedactingFilter())
