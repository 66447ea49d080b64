"""Honour X-Forwarded-For/-Proto/-Host and Forwarded (RFC 7239) from trusted proxies only.

Behind nginx or HAProxy the peer address is the proxy's; the client's address, the scheme the
browser used and the host it asked for arrive in headers that anyone can also forge. They are
believed only when the peer is in ``[server] trusted_proxies``; the client address is then the
right-most address in the chain that is not itself a trusted proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import hdrs, web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def forwarded_middleware(trusted: Iterable[str]) -> Callable[..., Awaitable[web.StreamResponse]]:
    networks = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in trusted)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if networks and _is_trusted(request.remote, networks):
            request = _rewritten(request, networks)
        return await handler(request)

    return middleware


def _is_trusted(address: str | None, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address((address or "").strip("[]"))
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _rewritten(request: web.Request, networks: tuple[Network, ...]) -> web.Request:
    chain, proto, host = _from_forwarded(request) or _from_x_forwarded(request)
    remote = request.remote
    for address in reversed(chain):
        remote = address
        if not _is_trusted(address, networks):
            break
    changes: dict[str, str] = {}
    if remote and remote != request.remote:
        changes["remote"] = remote
    if proto in ("http", "https"):
        changes["scheme"] = proto
    if host and _plausible_host(host):
        changes["host"] = host
    return request.clone(**changes) if changes else request  # type: ignore[arg-type]


def _from_forwarded(request: web.Request) -> tuple[list[str], str, str] | None:
    if hdrs.FORWARDED not in request.headers:
        return None
    elements = request.forwarded
    chain = [str(e["for"]).strip("[]") for e in elements if e.get("for")]
    last = elements[-1] if elements else {}
    return chain, str(last.get("proto", "")), str(last.get("host", ""))


def _from_x_forwarded(request: web.Request) -> tuple[list[str], str, str]:
    chain = [
        part.strip()
        for value in request.headers.getall(hdrs.X_FORWARDED_FOR, [])
        for part in value.split(",")
        if part.strip()
    ]
    proto = request.headers.get(hdrs.X_FORWARDED_PROTO, "").split(",")[-1].strip().lower()
    host = request.headers.get(hdrs.X_FORWARDED_HOST, "").split(",")[-1].strip()
    return chain, proto, host


def _plausible_host(host: str) -> bool:
    return len(host) <= 255 and all(c.isalnum() or c in ".-:[]" for c in host)
