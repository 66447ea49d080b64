"""[targets] allow with IPv6: an IPv4-mapped address is judged as the IPv4 address it maps, and an
unbracketed entry whose last group could be a port is refused rather than guessed."""

from __future__ import annotations

import pytest

from proxy.config import ConfigError, load_config
from proxy.consoles.targets import TargetPolicy


@pytest.mark.parametrize(
    ("rules", "host", "port", "allowed"),
    [
        # ::/0 is "any IPv6 host", not a way round a policy that leaves out loopback.
        (["::/0"], "::ffff:127.0.0.1", 5900, False),
        (["::/0"], "::ffff:7f00:1", 5900, False),
        (["::/0"], "2001:db8::1", 5900, True),
        (["10.0.0.0/8"], "::ffff:10.1.2.3", 5900, True),
        (["10.0.0.0/8:5900-5999"], "::ffff:10.1.2.3", 6000, False),
        (["192.168.0.0/16"], "::ffff:10.1.2.3", 5900, False),
        # An operator who wrote the mapped form means the IPv4 network.
        (["::ffff:10.0.0.0/104"], "10.1.2.3", 5900, True),
        (["::ffff:10.0.0.0/104"], "::ffff:10.1.2.3", 5900, True),
        (["::ffff:10.0.0.0/104"], "11.1.2.3", 5900, False),
        (["[::1]:5900"], "::1", 5900, True),
        (["[::1]:5900"], "::1", 5901, False),
        (["[::1:5900]"], "::1:5900", 22, True),
        (["::1:5900/128"], "::1:5900", 22, True),
    ],
)
def test_mapped_addresses_are_judged_as_ipv4(
    rules: list[str], host: str, port: int, allowed: bool
) -> None:
    assert TargetPolicy.parse(rules).permits(host, port) is allowed


@pytest.mark.parametrize(
    ("entry", "suggestion"),
    [
        ("::1:5900", "[::1]:5900"),
        ("fe80::1:5901", "[fe80::1]:5901"),
        ("::1:5900-5999", "[::1]:5900-5999"),
        ("2001:db8::/32:5900", "[2001:db8::/32]:5900"),
    ],
)
def test_ambiguous_ipv6_entries_are_refused(entry: str, suggestion: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(env={}, overrides={"targets.allow": ["10.0.0.0/8", entry]})
    assert error.value.key == "targets.allow"
    assert entry in error.value.problem and suggestion in error.value.problem


@pytest.mark.parametrize(
    "entry", ["::1", "::/0", "2001:db8::/32", "fd00::10", "::ffff:10.0.0.0/104", "[::1]:5900"]
)
def test_unambiguous_ipv6_entries_still_load(entry: str) -> None:
    assert load_config(env={}, overrides={"targets.allow": [entry]}).targets.allow == (entry,)
