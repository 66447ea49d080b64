"""Every URL the proxy serves, relative to ``[server] base_path``."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from proxy.web import admin, admin_consoles, api, health, operator, pages, peers
from proxy.web.recordings import add_recording_routes
from proxy.web.websocket import websockify


def add_routes(app: web.Application, base: str, assets: Path) -> None:
    app.router.add_post(f"{base}/api/v1/consoles", api.mint_console)
    app.router.add_post(f"{base}/api/v1/consoles/peers", peers.peers)
    app.router.add_get(f"{base}/websockify", websockify)
    app.router.add_get(f"{base}/console/vnc", pages.vnc_page)
    app.router.add_get(f"{base}/console/spice", pages.spice_page)
    app.router.add_get(f"{base}/healthz", health.healthz)
    app.router.add_get(f"{base}/readyz", health.readyz)
    app.router.add_get(f"{base}/metrics", health.metrics)
    app.router.add_post(f"{base}/api/v1/admin/vms/{{uuid}}/close-consoles", admin.revoke_vm)
    consoles = f"{base}/api/v1/admin/consoles"
    app.router.add_get(consoles, admin_consoles.list_consoles)
    app.router.add_post(f"{consoles}/{{id}}/close", admin_consoles.close_console)
    app.router.add_post(f"{consoles}/{{id}}/watch", admin_consoles.watch_console)
    app.router.add_get(f"{base}/operator", operator.operator_redirect)
    app.router.add_get(f"{base}/operator/", operator.operator_home)
    app.router.add_post(f"{base}/operator/login", operator.login)
    app.router.add_post(f"{base}/operator/logout", operator.logout)
    add_recording_routes(app, base)
    novnc = assets / "static" / "node_modules" / "@novnc" / "novnc"
    if novnc.is_dir():
        app.router.add_static(f"{base}/static/novnc", novnc)
    spice = assets / "static" / "node_modules" / "@spice-project" / "spice-html5"
    if spice.is_dir():
        app.router.add_static(f"{base}/static/spice", spice)
    app.router.add_static(f"{base}/static", assets / "static")
