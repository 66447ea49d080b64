"""``console-proxy demo``: simulated ZStack, demo VNC servers and the proxy, in one process."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from aiohttp import web

from proxy.app import create_app
from proxy.config import load_config, parse_listen
from proxy.demo.portal import add_demo_routes
from proxy.demo.simulator import Inventory, create_simulator_app, load_inventory
from proxy.demo.vncserver import DemoVncServer
from proxy.server import wait_for_signal
from proxy.web.accesslog import RedactingAccessLogger

log = logging.getLogger(__name__)

DEFAULT_INVENTORY = Path(__file__).with_name("inventory.toml")


def run_demo(listen: str) -> int:
    asyncio.run(serve_demo(listen))
    return 0


async def start_vnc_servers(inventory: Inventory) -> tuple[Inventory, list[DemoVncServer]]:
    servers: dict[str, DemoVncServer] = {}
    for vm in inventory.vms:
        if vm.protocol != "spice":
            servers[vm.name] = DemoVncServer(password=vm.console_password, name=vm.name)
    for server in servers.values():
        await server.start()
    ports = {name: server.port for name, server in servers.items()}
    return inventory.with_ports(ports), list(servers.values())


def banner(proxy_url: str, zstack_url: str, inventory: Inventory) -> str:
    """What the demo prints: where to click, and how to mint a console by hand with curl."""
    accounts = ", ".join(f"{a.name} / {a.password}" for a in inventory.accounts)
    vm = inventory.vms[0]
    return f"""
Demo console proxy ready: open {proxy_url}/
Simulated ZStack API: {zstack_url}   accounts: {accounts}
(admin sees every VM, the others only their own). Ctrl-C stops.

Mint a console by hand (the README's recipe):
  PW=$(printf %s password | sha512sum | cut -d' ' -f1)
  SESSION=$(curl -s -X PUT {zstack_url}/v1/accounts/login \\
    -d '{{"logInByAccount": {{"accountName": "admin", "password": "'$PW'"}}}}' \\
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["inventory"]["uuid"])')
  curl -s -X POST {proxy_url}/api/v1/consoles -H "Authorization: OAuth $SESSION" \\
    -d '{{"vmUuid": "{vm.uuid}"}}'
then open the consoleUrl it answers ({vm.name}).
"""


async def serve_demo(listen: str) -> None:
    inventory, vnc_servers = await start_vnc_servers(load_inventory(DEFAULT_INVENTORY))
    simulator = web.AppRunner(create_simulator_app(inventory), access_log=None)
    await simulator.setup()
    sim_site = web.TCPSite(simulator, "127.0.0.1", 0)
    await sim_site.start()
    sim_port = simulator.addresses[0][1]
    simulator_url = f"http://127.0.0.1:{sim_port}/zstack"
    config = load_config(
        env=os.environ,
        overrides={
            "server.listen": listen,
            "zstack.url": simulator_url,
            "targets.allow": ["127.0.0.0/8"],
        },
    )
    app = create_app(config)
    add_demo_routes(app, inventory, simulator_url)
    runner = web.AppRunner(app, access_log_class=RedactingAccessLogger)
    await runner.setup()
    host, port = parse_listen(config.server.listen)
    await web.TCPSite(runner, host, port).start()
    url_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    proxy_url = f"http://{url_host}:{runner.addresses[0][1]}{config.server.base_path}"
    print(banner(proxy_url, simulator_url, inventory), flush=True)
    try:
        await wait_for_signal()
    finally:
        await runner.cleanup()
        await simulator.cleanup()
        for server in vnc_servers:
            await server.close()
