"""Several workers' expositions become one: counters, histograms and gauges summed per label set,
``*_created`` the earliest, and the result parses as Prometheus text again."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from proxy.observe.merged import merge_expositions
from proxy.observe.metrics import Metrics


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_samples_are_summed_per_label_set() -> None:
    first, second = Metrics(), Metrics()
    first.active.inc(3)
    second.active.inc(4)
    first.closed.labels("idle").inc()
    second.closed.labels("idle").inc(2)
    second.closed.labels("revoked").inc()
    first.connect_seconds.observe(0.002)
    second.connect_seconds.observe(3.0)
    texts = [m.exposition()[0].decode() for m in (first, second)]
    merged = samples(merge_expositions(texts))
    assert merged[("console_proxy_consoles_active", ())] == 7
    assert merged[("console_proxy_consoles_closed_total", (("reason", "idle"),))] == 3
    assert merged[("console_proxy_consoles_closed_total", (("reason", "revoked"),))] == 1
    assert merged[("console_proxy_connect_seconds_count", ())] == 2
    assert merged[("console_proxy_connect_seconds_sum", ())] == 3.002
    assert merged[("console_proxy_connect_seconds_bucket", (("le", "0.0025"),))] == 1
    assert merged[("console_proxy_connect_seconds_bucket", (("le", "+Inf"),))] == 2
    created = ("console_proxy_consoles_closed_created", (("reason", "idle"),))
    assert merged[created] == min(samples(t.encode())[created] for t in texts)


def test_one_exposition_comes_back_unchanged_in_value() -> None:
    metrics = Metrics()
    metrics.bytes.labels("to_browser").inc(1234)
    text = metrics.exposition()[0]
    assert samples(merge_expositions([text.decode()])) == samples(text)
