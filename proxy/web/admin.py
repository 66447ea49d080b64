"""Admin endpoints, behind ``Authorization: Bearer <[server] admin_token>``."""

from __future__ import annotations

import hmac
import logging

from aiohttp import hdrs, web

from proxy.closecodes import Close
from proxy.consoles.service import normalize_vm_uuid
from proxy.tickets.store import StoreUnavailable
from proxy.web.errors import ApiError
from proxy.web.keys import CLUSTER, CONFIG, REGISTRY

log = logging.getLogger(__name__)


def require_admin(request: web.Request) -> None:
    expected = request.app[CONFIG].server.admin_token
    scheme, _, given = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    if not expected:
        raise ApiError(404, "ADMIN.DISABLED", "Admin endpoints are off (set server.admin_token).")
    if scheme != "Bearer" or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(401, "ADMIN.UNAUTHORIZED", "Send 'Authorization: Bearer <admin token>'.")


async def revoke_vm(request: web.Request) -> web.Response:
    """Close every live console of a VM (e.g. on migration or stop)."""
    require_admin(request)
    vm_uuid = normalize_vm_uuid(request.match_info["uuid"])
    cluster = request.app.get(CLUSTER)
    listening = 0
    if cluster is not None:
        try:
            listening = await cluster.publish_revoke(vm_uuid)
        except StoreUnavailable as exc:
            raise ApiError(
                503, exc.code, "Other proxy instances could not be told; try again shortly."
            ) from None
    closed = await request.app[REGISTRY].close_vm(vm_uuid, Close.REVOKED)
    log.info("revoked %d console(s) of VM %s here", closed, vm_uuid)
    # An instance that was reconnecting to Redis missed the message: the count tells.
    others = max(0, listening - 1)
    return web.json_response(
        {"vmUuid": vm_uuid, "closedHere": closed, "otherInstancesTold": others}
    )
