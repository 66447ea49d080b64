"""Which console addresses the proxy may dial: `[targets] allow` entries.

An entry is a network with an optional port or port range: ``10.0.0.0/8``,
``192.168.1.10:5900-6100``, ``127.0.0.1/32:5901``, ``[::1]:5900-5999``. An empty list allows
nothing, so a fresh install dials no host until the operator says which.

An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) reaches the IPv4 host, so it is judged as that
IPv4 address, by the IPv4 rules (a ``::ffff:0:0/96`` entry is read as the IPv4 network it maps).
An IPv6 entry with a port needs brackets: ``::1:5900`` could be either, so it is refused.
"""

from __future__ import annotations

import functools
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
        address = _parsed(host)
        return address is not None and any(rule.permits(address, port) for rule in self.rules)


@functools.lru_cache(maxsize=4096)
def _parsed(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    # Every console's target is checked; a site has a bounded set of hypervisors.
    try:
        return unmapped(ipaddress.ip_address(host))
    except ValueError:
        return None


def unmapped(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The IPv4 address an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) reaches, else itself."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


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
        _refuse_ambiguous(entry, text)
        net = text
    try:
        network = _unmapped_network(ipaddress.ip_network(net, strict=False))
    except ValueError as exc:
        raise ValueError(f"{entry!r} is not a network: {exc}") from exc
    first, last = _parse_ports(entry, ports) if ports else (1, 65535)
    return TargetRule(network, first, last)


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _unmapped_network(network: Network) -> Network:
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None
        return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def _refuse_ambiguous(entry: str, text: str) -> None:
    """An unbracketed IPv6 entry ending in ``:<port>`` or ``:<port>-<port>`` after a network."""
    head, _, tail = text.rpartition(":")
    low, _, high = tail.partition("-")
    if not low.isdigit() or not (high.isdigit() or not high) or not head.strip(":"):
        return
    try:
        ipaddress.ip_network(head, strict=False)
    except ValueError:
        return
    problem = f"{entry!r} is ambiguous: write [{head}]:{tail} for port(s) {tail} of {head}"
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(problem) from None
    raise ValueError(f"{problem}, or [{text}] for the address {text} on every port")


def _parse_ports(entry: str, text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    if not low.isdigit() or (sep and not high.isdigit()):
        raise ValueError(f"{entry!r}: port range must look like 5900 or 5900-6100")
    first, last = int(low), int(high) if sep else int(low)
    if not 1 <= first <= last <= 65535:
        raise ValueError(f"{entry!r}: ports must be 1-65535 and the range ascending")
    return first, last
