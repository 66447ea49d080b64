"""[targets] allow: networks and port ranges."""

from __future__ import annotations

import pytest

from proxy.consoles.targets import TargetPolicy, parse_rule


def test_empty_policy_allows_nothing() -> None:
    assert not TargetPolicy.parse([]).permits("127.0.0.1", 5900)


@pytest.mark.parametrize(
    ("rules", "host", "port", "allowed"),
    [
        (["10.0.0.0/8"], "10.1.2.3", 5900, True),
        (["10.0.0.0/8"], "11.1.2.3", 5900, False),
        (["10.0.0.0/8:5900-5999"], "10.1.2.3", 6000, False),
        (["10.0.0.0/8:5900-5999"], "10.1.2.3", 5999, True),
        (["192.168.1.10:5901"], "192.168.1.10", 5901, True),
        (["192.168.1.10:5901"], "192.168.1.10", 5902, False),
        (["[::1]:5900-5999"], "::1", 5950, True),
        (["::1"], "::1", 22, True),
        (["10.0.0.0/8"], "host.example", 5900, False),
        (["0.0.0.0/0"], "::1", 5900, False),
    ],
)
def test_allow_rules_permit_only_their_networks_and_ports(
    rules: list[str], host: str, port: int, allowed: bool
) -> None:
    assert TargetPolicy.parse(rules).permits(host, port) is allowed


@pytest.mark.parametrize("bad", ["10.0.0.0/40", "10.0.0.1:0", "10.0.0.1:6000-5900", "x:1", "[::1"])
def test_bad_rules_raise(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_rule(bad)
