"""Application logs: readable text by default, or one JSON object per line for collectors.

The audit (``observe.audit``) keeps its own sink; this is everything else. In JSON each line has
``time``, ``level``, ``logger``, ``message`` and, inside a console's task, ``console`` (the id the
audit uses too), so a collector can join a console's log lines with its audit events.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar

# The console whose task is running; tasks started from it inherit it.
CONSOLE_ID: ContextVar[str] = ContextVar("console_id", default="")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if console := CONSOLE_ID.get():
            entry["console"] = console
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


def configure_logging(fmt: str, level: str) -> None:
    """Send the application's logs to stderr as ``fmt`` ("text" or "json") from ``level`` up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def _iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{int(when % 1 * 1000):03d}Z"
