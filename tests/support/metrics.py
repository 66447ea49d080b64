"""Reading the proxy's ``/metrics`` (Prometheus text) with prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """Every sample by (name, sorted labels), and every family's type."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample ``name`` with exactly ``labels``; None when it has not been recorded."""
    return samples.get((name, tuple(sorted(labels.items()))))


def sample_value(text: str, name: str, **labels: str) -> float:
    """One sample of a ``/metrics`` text, 0 when it has not been recorded yet."""
    found = value(parse(text)[0], name, **labels)
    return 0.0 if found is None else found
