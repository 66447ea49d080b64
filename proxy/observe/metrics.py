"""Prometheus metrics, on a registry of the application's own (tests build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


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
        self.zstack_errors = Counter(
            "console_proxy_zstack_errors", "ZStack API failures, by code", ["code"], registry=r
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

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
