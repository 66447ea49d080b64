"""Honour X-Forwarded-For/-Proto/-Host or Forwarded (RFC 7239) from trusted proxies only.

Behind nginx or HAProxy the peer address is the proxy's; the client's address, the scheme the
browser used and the host it asked for arrive in headers that anyone can also forge. They are
believed only when the peer is in ``[server] trusted_proxies``, and only from the one family
``[server] forwarded_headers`` names: a reverse proxy rewrites its own family and passes the
other through from the client untouched. The client address is then the right-most address in
the chain that is not itself a trusted proxy; a value that is not an IP address, a host that is
not a plain ``host[:port]`` and a scheme other than http/https are ignored.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import hdrs, web

from proxy.web.keys import CONFIG

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# A DNS name, an IPv4 address or a bracketed IPv6 address, then an optional port.
_HOST = re.compile(
    r"(?:[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.?|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
# RFC 7239 node: an IPv4 address with an optional port, or a bracketed IPv6 address with one.
_NODE = re.compile(r"\[(?P<v6>[^\]]+)\](?::[0-9]+)?|(?P<v4>[0-9.]+)(?::[0-9]+)?")


Rewrite = Callable[[web.Request], web.Request]


def forwarded_rewriter(trusted: Iterable[str]) -> Rewrite:
    """The request as the client made it, when a trusted proxy says so; else the request."""
    networks = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in trusted)

    def rewrite(request: web.Request) -> web.Request:
        if networks and _is_trusted(request.remote, networks):
            family = request.app[CONFIG].server.forwarded_headers
            return _rewritten(request, networks, family)
        return request

    return rewrite


def forwarded_middleware(rewrite: Rewrite) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await handler(rewrite(request))

    return middleware


def _is_trusted(address: str | None, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address((address or "").strip("[]"))
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _rewritten(request: web.Request, networks: tuple[Network, ...], family: str) -> web.Request:
    if family == "forwarded":
        chain, proto, host = _from_forwarded(request)
    else:
        chain, proto, host = _from_x_forwarded(request)
    remote = request.remote
    for address in reversed(chain):
        if address is None:
            # A trusted hop could not name its client: what stands left of it is the client's.
            break
        remote = address
        if not _is_trusted(address, networks):
            break
    changes: dict[str, str] = {}
    if remote and remote != request.remote:
        changes["remote"] = remote
    if proto in ("http", "https"):
        changes["scheme"] = proto
    if host and valid_host(host):
        changes["host"] = host
    return request.clone(**changes) if changes else request  # type: ignore[arg-type]


def _from_forwarded(request: web.Request) -> tuple[list[str | None], str, str]:
    if hdrs.FORWARDED not in request.headers:
        return [], "", ""
    elements = request.forwarded
    chain = [_node_address(str(e["for"])) for e in elements if "for" in e]
    last = elements[-1] if elements else {}
    return chain, str(last.get("proto", "")).lower(), str(last.get("host", ""))


def _from_x_forwarded(request: web.Request) -> tuple[list[str | None], str, str]:
    chain = [
        _address(part.strip())
        for value in request.headers.getall(hdrs.X_FORWARDED_FOR, [])
        for part in value.split(",")
        if part.strip()
    ]
    proto = request.headers.get(hdrs.X_FORWARDED_PROTO, "").split(",")[-1].strip().lower()
    host = request.headers.get(hdrs.X_FORWARDED_HOST, "").split(",")[-1].strip()
    return chain, proto, host


def _node_address(node: str) -> str | None:
    """The IP address in an RFC 7239 ``for=`` node, or None ("unknown", "_hidden", junk)."""
    found = _NODE.fullmatch(node.strip())
    if found is None:
        return _address(node.strip())  # an unbracketed IPv6 address, as some proxies send
    return _address(found.group("v6") or found.group("v4"))


def _address(text: str) -> str | None:
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    # A zone ("fe80::1%eth0") may hold any text at all: not an address a client comes from.
    return None if "%" in text else str(address)


def valid_host(host: str) -> bool:
    """A plain ``host[:port]``: no spaces, slashes, userinfo or control characters."""
    found = _HOST.fullmatch(host)
    if found is None or len(host) > 255:
        return False
    return not found.group("port") or int(found.group("port")) <= 65535
