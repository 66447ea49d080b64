"""One Prometheus exposition for several worker processes: their samples summed.

Each worker keeps its own registry (no shared memory-mapped files to clean up after a worker
that dies); the worker that serves ``/metrics`` gathers the others' expositions through the hub
and adds them up with prometheus-client's own parser and writer. Every sample is a count, a
sum or a gauge of open things, so adding is right; a ``*_created`` timestamp keeps the earliest.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def merge_expositions(texts: Iterable[str]) -> bytes:
    families: dict[str, Metric] = {}
    values: dict[str, dict[SampleKey, float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            merged = families.setdefault(
                family.name, Metric(family.name, family.documentation, family.type)
            )
            totals = values.setdefault(merged.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in totals:
                    totals[key] = sample.value
                elif sample.name.endswith("_created"):
                    totals[key] = min(totals[key], sample.value)
                else:
                    totals[key] += sample.value
    for name, metric in families.items():
        for (sample_name, labels), value in values[name].items():
            metric.add_sample(sample_name, dict(labels), value)
    registry = CollectorRegistry()
    registry.register(_Fixed(list(families.values())))
    return generate_latest(registry)


class _Fixed(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics
