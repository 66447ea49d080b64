"""Which console addresses the proxy may dial: `[targets] allow` entries.

An entry is a network with an optional port or port range: ``10.0.0.0/8``,
``192.168.1.10:5900-6100``, ``127.0.0.1/32:5901``, ``[::1]:5900-5999``. An empty list allows
nothing, so a fresh install dials no host until the operator says which.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class TargetRule:
    network: Network
    first_port: int = 1
    last_port: int = 65535

    def permits(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bool:
        return address in self.network and self.first_port <= port <= self.last_port


@dataclass(frozen=True)
class TargetPolicy:
    rules: tuple[TargetRule, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> TargetPolicy:
        return cls(tuple(parse_rule(entry) for entry in entries))

    def permits(self, host: str, port: int) -> bool:
        """True when host (an IP literal; names are never dialled) and port are allowed."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(rule.permits(address, port) for rule in self.rules)


def parse_rule(entry: str) -> TargetRule:
    text = entry.strip()
    ports = ""
    if text.startswith("["):
        net, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise ValueError(f"{entry!r}: missing ']'")
        ports = rest.removeprefix(":")
        if rest and not rest.startswith(":"):
            raise ValueError(f"{entry!r}: expected ':' after ']'")
    elif text.count(":") == 1:
        net, _, ports = text.partition(":")
    else:
        net = text
    try:
        network = ipaddress.ip_network(net, strict=False)
    except ValueError as exc:
        raise ValueError(f"{entry!r} is not a network: {exc}") from exc
    first, last = _parse_ports(entry, ports) if ports else (1, 65535)
    return TargetRule(network, first, last)


def _parse_ports(entry: str, text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    if not low.isdigit() or (sep and not high.isdigit()):
        raise ValueError(f"{entry!r}: port range must look like 5900 or 5900-6100")
    first, last = int(low), int(high) if sep else int(low)
    if not 1 <= first <= last <= 65535:
        raise ValueError(f"{entry!r}: ports must be 1-65535 and the range ascending")
    return first, last
