"""Prometheus metrics, on a registry of the application's own (tests build many apps).

Every label value comes from a fixed set: a value taken from outside (ZStack's error code) is
kept only when known, else counted as ``other``, so no one can grow the exposition without end.
"""

from __future__ import annotations

from http import HTTPStatus

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

OTHER = "other"
# The codes ZStack answers the proxy's calls with (reference/ZSTACK_API.md), then the proxy's own.
KNOWN_ZSTACK_CODES = frozenset(
    {"ID.1000", "ID.1001", "ID.1002", "SYS.1003", "SYS.1006", "VM.1010"}
    | {"ZSTACK.TIMEOUT", "ZSTACK.UNREACHABLE", "ZSTACK.BAD_RESPONSE"}
    | {f"ZSTACK.HTTP_{status.value}" for status in HTTPStatus}
)


def zstack_error_label(code: str) -> str:
    """``code`` when it is a known ZStack or ZSTACK.* code, else ``other``."""
    return code if code in KNOWN_ZSTACK_CODES else OTHER


class _ByZStackCode:
    """The ZStack error counter, whose ``labels(code)`` keeps only known codes."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    def labels(self, code: str) -> Counter:
        return self.counter.labels(zstack_error_label(code))


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active = Gauge("console_proxy_consoles_active", "Open consoles", registry=r)
        self.closed = Counter(
            "console_proxy_consoles_closed",
            "Consoles ended, by close reason",
            ["reason"],
            registry=r,
        )
        self.bytes = Counter(
            "console_proxy_bytes", "Console bytes moved", ["direction"], registry=r
        )
        self.connect_seconds = Histogram(
            "console_proxy_connect_seconds",
            "Time to open the TCP connection to the hypervisor",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.zstack_seconds = Histogram(
            "console_proxy_zstack_request_seconds",
            "ZStack API call latency",
            ["call"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.zstack_errors = _ByZStackCode(
            Counter(
                "console_proxy_zstack_errors",
                "ZStack API failures, by code (unknown codes as 'other')",
                ["code"],
                registry=r,
            )
        )
        self.mints = Counter(
            "console_proxy_tickets_minted", "Tickets minted", ["protocol"], registry=r
        )
        self.redeems = Counter(
            "console_proxy_tickets_redeemed",
            "WebSocket ticket look-ups, by result",
            ["result"],
            registry=r,
        )
        self.rejected = Counter(
            "console_proxy_requests_rejected",
            "Requests refused by a limit",
            ["limit"],
            registry=r,
        )

        self.recordings = Counter(
            "console_proxy_recordings",
            "Console recordings finished, by result",
            ["result"],
            registry=r,
        )
        self.recording_failures = Counter(
            "console_proxy_recording_failures",
            "Recordings stopped early or refused: queue_full, size_limit, disk_error, unwritable",
            ["reason"],
            registry=r,
        )

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
