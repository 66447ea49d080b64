"""One JSON line per console opened and closed, and per operator action (sign-in, sign-out,
watch, close), for whoever must answer "who saw what, when".

Never a token, a password or a ZStack session: the event is built from a fixed set of fields.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from typing import IO, Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConsoleFacts:
    console_id: str
    vm_uuid: str
    target: str
    client_ip: str
    protocol: str
    account_uuid: str = ""
    account_name: str = ""


class AuditLog:
    """Writes events to stderr, a file (``file:/var/log/console-proxy/audit.jsonl``) or nowhere."""

    def __init__(self, sink: str) -> None:
        self._stream: IO[str] | None = None
        self._owned = False
        if sink == "stderr":
            self._stream = sys.stderr
        elif sink.startswith("file:"):
            self._stream = open(sink[len("file:") :], "a", encoding="utf-8", buffering=1)
            self._owned = True

    def opened(self, facts: ConsoleFacts) -> None:
        self._write({"event": "console.open", **_facts(facts)})

    def closed(
        self,
        facts: ConsoleFacts,
        started: float,
        reason: str,
        bytes_to_host: int,
        bytes_to_browser: int,
        recording: dict[str, Any] | None = None,
    ) -> None:
        """``recording``: the console's recording (id, sha256, bytes, complete) when recorded."""
        extra = {"recording": recording} if recording is not None else {}
        self._write(
            {
                "event": "console.close",
                **_facts(facts),
                "start": _iso(started),
                "duration": round(time.time() - started, 3),
                "bytesToHost": bytes_to_host,
                "bytesToBrowser": bytes_to_browser,
                "reason": reason,
                **extra,
            }
        )

    def operator(self, event: str, operator: str, client: str, **details: Any) -> None:
        """What operators do: ``operator.login``, ``operator.login_failed``, ``operator.logout``,
        ``operator.watch``, ``operator.close`` and ``operator.close_vm``; ``operator`` is the
        account name (or "admin-token" for the bearer token). Never a password."""
        self._write(
            {"event": f"operator.{event}", "operator": operator, "client": client, **details}
        )

    def close(self) -> None:
        if self._owned and self._stream is not None:
            self._stream.close()
        self._stream = None

    def _write(self, event: dict[str, Any]) -> None:
        if self._stream is None:
            return
        event = {"time": _iso(time.time()), **event}
        try:
            self._stream.write(json.dumps(event, separators=(",", ":")) + "\n")
            self._stream.flush()
        except OSError as exc:  # a full disk must not take consoles down
            log.error("audit sink write failed: %s", exc)


def _facts(facts: ConsoleFacts) -> dict[str, Any]:
    return {
        "console": facts.console_id,
        "vm": facts.vm_uuid or None,
        "target": facts.target,
        "client": facts.client_ip,
        "protocol": facts.protocol,
        "account": (
            {"uuid": facts.account_uuid, "name": facts.account_name} if facts.account_uuid else None
        ),
    }


def iso_time(when: float) -> str:
    """``2026-11-27T15:05:00.000Z``: how audit lines and recordings write a time."""
    return _iso(when)


def _iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{int(when % 1 * 1000):03d}Z"
