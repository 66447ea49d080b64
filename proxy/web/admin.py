"""Admin endpoints, behind ``Authorization: Bearer <[server] admin_token>`` or an operator's
session cookie (see :mod:`proxy.web.operator_session`)."""

from __future__ import annotations

import logging

from aiohttp import web

from proxy.closecodes import Close
from proxy.consoles.service import normalize_vm_uuid
from proxy.tickets.store import StoreUnavailable
from proxy.web.errors import ApiError
from proxy.web.keys import AUDIT, CLUSTER, REGISTRY
from proxy.web.operator_session import require_operator

log = logging.getLogger(__name__)


async def revoke_vm(request: web.Request) -> web.Response:
    """Close every live console of a VM (e.g. on migration or stop)."""
    operator = require_operator(request)
    vm_uuid = normalize_vm_uuid(request.match_info["uuid"])
    request.app[AUDIT].operator("close_vm", operator.account, request.remote or "", vm=vm_uuid)
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
