"""The hub's wire format: one JSON object per line, both ways, over a private Unix socket.

Worker to hub: ``{"i": <request id>, "op": <operation>, "a": {...}}``; the hub answers
``{"i": <id>, "r": <result>}`` or ``{"i": <id>, "e": <error code>}``, except to id 0 (a message
that needs no answer: the hub takes a worker's messages in order, so what it sends next sees
the effect). Hub to worker, unasked:
``{"ev": <kind>, "b": <body>}`` (a broadcast) or ``{"ev": <kind>, "q": <question id>, "b": ...}``
(a question the worker answers with the operation ``reply``).

JSON lines rather than pickle: a peer that is not what it claims can at worst send values the
hub refuses, never code; the socket is the supervisor's user's only (mode 0600, directory 0700,
and the hub checks the peer's uid).
"""

from __future__ import annotations

import json
from typing import Any

# The largest line either side accepts: a worker's console listing for operators (some 300
# bytes a console, 10,000 consoles) fits; anything bigger ends the connection.
MAX_LINE = 16 * 1024 * 1024
# How long a worker waits for the hub's answer, and the hub for workers' answers to a question.
CALL_TIMEOUT = 2.0
ASK_TIMEOUT = 1.0

# The request id of a message that wants no answer (a release, a reply to a question).
NO_ANSWER = 0

# Error codes in answers.
FULL = "full"
BAD_REQUEST = "bad_request"


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """A message; ValueError when the line is not a JSON object."""
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("a hub message must be a JSON object")
    return message
