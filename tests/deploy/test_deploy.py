"""The deploy kit checked by its own tools, and real traffic through nginx and HAProxy over TLS."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer

from proxy.app import create_app
from proxy.config import (
    SECTIONS,
    ConfigError,
    LimitsConfig,
    ServerConfig,
    load_config,
    redis_sentinels,
    redis_wait_replicas,
)
from proxy.demo.simulator import Inventory, create_simulator_app
from tests.support.binaries import require_binary
from tests.support.configs import make_config, write_token_file
from tests.support.net import echo, free_port
from tests.support.reverse_proxies import (
    BASE,
    DEPLOY,
    Nginx,
    Tls,
    haproxy_config,
    nginx_setup,
    replace_once,
    start_nginx_process,
)
from tests.support.services import HAProxy, stop

REPO = DEPLOY.parent
TOKEN = "console-token"
# Added to the drain so that close handshakes finish (proxy/cli.py: shutdown_timeout).
SHUTDOWN_MARGIN = 10.0

AiohttpServer = Callable[..., Any]


def drain_budget() -> float:
    return ServerConfig().drain_timeout + SHUTDOWN_MARGIN


def seconds(text: str) -> float:
    found = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|min)?", text.strip())
    assert found is not None, f"not a duration: {text!r}"
    scale = {"ms": 0.001, "s": 1, None: 1, "m": 60, "min": 60, "h": 3600}[found.group(2)]
    return float(found.group(1)) * scale


# --- certificates and processes --------------------------------------------------------------


def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False, **kwargs)


# --- nginx -----------------------------------------------------------------------------------


@pytest.fixture
def start_nginx() -> Iterator[Callable[[Nginx], None]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(nginx: Nginx) -> None:
        started.append(start_nginx_process(nginx))

    yield start
    for process in started:
        stop(process)


def test_nginx_config_passes_nginx_t(tmp_path: Path, tls: Tls) -> None:
    nginx = nginx_setup(tmp_path, tls, free_port())
    result = run([*nginx.base_args(), "-t", "-c", str(nginx.conf), "-g", nginx.globals])
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    assert "[warn]" not in result.stderr, result.stderr


def test_nginx_websocket_timeouts_outlast_the_idle_timeout() -> None:
    site = (DEPLOY / "nginx" / "console-proxy.conf").read_text()
    ws_location = site[site.index(f"location = {BASE}/websockify") :]
    ws_location = ws_location[: ws_location.index("\n    }")]
    idle = LimitsConfig().idle_timeout
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        found = re.search(rf"{directive} (\S+);", ws_location)
        assert found is not None and seconds(found.group(1)) > idle, directive
    assert "proxy_buffering off;" in ws_location
    # Tokens stay out of the access log: the format names the path, never the query.
    log_format = re.search(r"^log_format [^;]+;", site, re.MULTILINE)
    assert log_format is not None and "$uri" in log_format.group(0)
    for leaky in ("$request ", "$request_uri", "$args", "$query_string", '$request"'):
        assert leaky not in log_format.group(0)


# --- the proxy behind the load balancers -----------------------------------------------------


async def start_proxy(
    aiohttp_server: AiohttpServer,
    tmp_path: Path,
    name: str,
    target_port: int,
    zstack_url: str,
    ready_requires_zstack: bool = False,
) -> TestServer:
    tokens = write_token_file(tmp_path / f"tokens-{name}", {TOKEN: ("127.0.0.1", target_port)})
    config = make_config(
        server={
            "base_path": BASE,
            "trusted_proxies": ["127.0.0.1/32"],
            "ready_requires_zstack": ready_requires_zstack,
        },
        tickets={"token_file": str(tokens)},
        zstack={"url": zstack_url},
    )
    server: TestServer = await aiohttp_server(create_app(config))
    return server


async def start_zstack(aiohttp_server: AiohttpServer) -> str:
    inventory = Inventory.from_dict({"accounts": [{"name": "admin", "password": "pw"}], "vms": []})
    simulator: TestServer = await aiohttp_server(create_simulator_app(inventory))
    return str(simulator.make_url("/zstack"))


async def echo_through(port: int, tls: Tls, payload: bytes, origin: str = "") -> bytes:
    """One console WebSocket through the load balancer, as a browser on its origin opens it."""
    url = f"https://127.0.0.1:{port}"
    origin = origin or url
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(
            f"{url}{BASE}/websockify?token={TOKEN}",
            ssl=tls.client_context(),
            headers={"Origin": origin},
            protocols=("binary",),
        ) as ws,
    ):
        assert ws.protocol == "binary"
        await ws.send_bytes(payload)
        received = b""
        while len(received) < len(payload):
            message = await ws.receive(timeout=5)
            assert message.type == aiohttp.WSMsgType.BINARY, message
            received += message.data
        return received


async def fetch(url: str, tls: Tls) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, ssl=tls.client_context(), allow_redirects=False) as response,
    ):
        return response.status, response.headers.get("Location", ""), await response.text()


async def test_websocket_echo_through_nginx_over_tls(
    aiohttp_server: AiohttpServer,
    tcp_target: Callable[..., Any],
    start_nginx: Callable[[Nginx], None],
    tmp_path: Path,
    tls: Tls,
) -> None:
    target = await tcp_target(echo)
    zstack = await start_zstack(aiohttp_server)
    proxy = await start_proxy(aiohttp_server, tmp_path, "a", target.port, zstack)
    nginx = nginx_setup(tmp_path, tls, int(proxy.port or 0))
    await asyncio.to_thread(start_nginx, nginx)
    payload = bytes(range(256)) * 1024
    assert await echo_through(nginx.https_port, tls, payload) == payload
    assert target.connections == 1
    # Accepted above only because nginx told the proxy the browser's scheme and host; a page on
    # another origin is still refused.
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await echo_through(nginx.https_port, tls, b"x", origin="https://evil.example")
    assert refused.value.status == 403 and target.connections == 1

    status, _, body = await fetch(f"https://127.0.0.1:{nginx.https_port}{BASE}/readyz", tls)
    assert (status, '"ready"' in body) == (200, True)
    status, location, _ = await fetch(f"http://127.0.0.1:{nginx.http_port}{BASE}/healthz", tls)
    assert status == 301 and location.startswith("https://")
    access_log = (tmp_path / "console-proxy.access.log").read_text()
    assert f"GET {BASE}/websockify HTTP/1.1" in access_log
    assert TOKEN not in access_log


# --- HAProxy ---------------------------------------------------------------------------------


def haproxy_check(config: Path) -> subprocess.CompletedProcess[str]:
    binary = require_binary("haproxy", "haproxy")
    # As compose.yaml runs it: no chroot or privilege drop (this test need not run as root).
    return run([binary, "-c", "-f", str(config)], env={"HAPROXY_CONTAINER": "1"})


def test_haproxy_config_passes_haproxy_c(tmp_path: Path, tls: Tls) -> None:
    config, _, _ = haproxy_config(tmp_path, tls, [free_port(), free_port()])
    result = haproxy_check(config)
    assert result.returncode == 0, result.stderr
    assert "[WARNING]" not in result.stderr and "[ALERT]" not in result.stderr, result.stderr


def test_haproxy_config_as_shipped_only_lacks_its_hosts(tmp_path: Path, tls: Tls) -> None:
    # proxy1/proxy2 resolve only inside compose; init-addr lets HAProxy start without them.
    shipped = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    path = tmp_path / "haproxy.cfg"
    path.write_text(replace_once(shipped, "/etc/haproxy/certs/console-proxy.pem", str(tls.bundle)))
    result = haproxy_check(path)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "[WARNING]" in line]
    assert warnings and all("could not resolve address" in line for line in warnings), warnings


def test_haproxy_timeouts_outlast_the_idle_timeout() -> None:
    text = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    found = re.search(r"timeout tunnel (\S+)", text)
    assert found is not None and seconds(found.group(1)) > LimitsConfig().idle_timeout
    assert f"uri {BASE}/readyz" in text
    # Tokens stay out of the log: the format names the path (%HPO), never the URI or the query.
    log_format = re.search(r"^\s*log-format (.+)$", text, re.MULTILINE)
    assert log_format is not None and "%HPO" in log_format.group(1)
    assert not re.search(r"%(r|HU|HQ)(?![A-Za-z])", log_format.group(1))
    assert not re.search(r"^\s*option (httplog|httpslog)", text, re.MULTILINE)


@pytest.fixture
def start_haproxy() -> Iterator[Callable[[Path, int], Path]]:
    started: list[HAProxy] = []

    def start(config: Path, port: int) -> Path:
        balancer = HAProxy(require_binary("haproxy", "haproxy"), config, port)
        started.append(balancer)
        balancer.start()
        return balancer.log

    yield start
    for balancer in started:
        balancer.stop()


async def test_websocket_round_robin_through_haproxy_over_tls(
    aiohttp_server: AiohttpServer,
    tcp_target: Callable[..., Any],
    start_haproxy: Callable[[Path, int], Path],
    tmp_path: Path,
    tls: Tls,
) -> None:
    zstack = await start_zstack(aiohttp_server)
    targets = [await tcp_target(echo) for _ in range(3)]
    proxies = [
        await start_proxy(aiohttp_server, tmp_path, "a", targets[0].port, zstack),
        await start_proxy(aiohttp_server, tmp_path, "b", targets[1].port, zstack),
        # ZStack unreachable and required: /readyz answers 503, so the health check must take
        # it out.
        await start_proxy(
            aiohttp_server,
            tmp_path,
            "c",
            targets[2].port,
            f"http://127.0.0.1:{free_port()}/zstack",
            ready_requires_zstack=True,
        ),
    ]
    config, https_port, http_port = haproxy_config(
        tmp_path, tls, [int(p.port or 0) for p in proxies]
    )
    log = await asyncio.to_thread(start_haproxy, config, https_port)

    await wait_for_healthy_rotation(f"https://127.0.0.1:{https_port}{BASE}/readyz", tls)
    for size in (1, 4096, 65536, 300_000):
        payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        assert await echo_through(https_port, tls, payload) == payload
    # Round robin over the two ready proxies. Under load a health check of one may time out
    # (then HAProxy sends everything to the other until it rises again): go on until both
    # took consoles; the unready one never does.
    deadline = time.monotonic() + 20
    while not (targets[0].connections and targets[1].connections):
        assert time.monotonic() < deadline, [t.connections for t in targets]
        assert await echo_through(https_port, tls, b"again") == b"again"
        await asyncio.sleep(0.2)
    assert targets[2].connections == 0
    if sum(t.connections for t in targets) == 4:  # no check flapped: strict alternation
        assert [t.connections for t in targets] == [2, 2, 0]

    status, location, _ = await fetch(f"http://127.0.0.1:{http_port}{BASE}/healthz", tls)
    assert status == 301 and location.startswith("https://")
    status, _, _ = await fetch(f"https://127.0.0.1:{https_port}/elsewhere", tls)
    assert status == 404
    text = await wait_for_log(log, f"{BASE}/websockify")
    assert TOKEN not in text


async def wait_for_healthy_rotation(url: str, tls: Tls) -> None:
    """Until enough requests in a row succeed that no unready server can be in the rotation."""
    in_a_row, deadline = 0, time.monotonic() + 15
    while in_a_row < 6:
        assert time.monotonic() < deadline, "HAProxy never settled on the ready servers"
        status, _, _ = await fetch(url, tls)
        in_a_row = in_a_row + 1 if status == 200 else 0
        if status != 200:
            await asyncio.sleep(0.1)


async def wait_for_log(log: Path, needle: str) -> str:
    deadline = time.monotonic() + 5
    while needle not in (text := log.read_text(errors="replace")):
        assert time.monotonic() < deadline, f"{needle!r} never logged: {text}"
        await asyncio.sleep(0.05)
    return text


# --- systemd ---------------------------------------------------------------------------------


def unit_with_existing_binary(tmp_path: Path) -> Path:
    unit = (DEPLOY / "systemd" / "console-proxy.service").read_text()
    installed = Path(sys.executable).parent / "console-proxy"
    binary = installed if installed.exists() else Path(sys.executable)
    path = tmp_path / "console-proxy.service"
    path.write_text(replace_once(unit, "/opt/console-proxy/.venv/bin/console-proxy", str(binary)))
    return path


def systemd_analyze() -> str:
    return require_binary("systemd-analyze", "systemd")


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    result = run([systemd_analyze(), "verify", str(unit_with_existing_binary(tmp_path))])
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # unknown keys only warn


def test_systemd_unit_is_hardened(tmp_path: Path) -> None:
    unit = unit_with_existing_binary(tmp_path)
    # --offline needs systemd >= 252: Debian 12's, which scripts/system-deps.sh installs.
    result = run([systemd_analyze(), "security", "--offline=true", "--no-pager", str(unit)])
    assert result.returncode == 0, result.stderr
    found = re.search(r"Overall exposure level for console-proxy\.service: ([\d.]+)", result.stdout)
    assert found is not None, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.0, result.stdout


def test_systemd_stops_after_the_drain() -> None:
    unit = (DEPLOY / "systemd" / "console-proxy.service").read_text()
    found = re.search(r"^TimeoutStopSec=(\S+)$", unit, re.MULTILINE)
    assert found is not None and seconds(found.group(1)) > drain_budget()
    assert "KillSignal=SIGTERM" in unit


# --- config, compose, Kubernetes, Dockerfile -------------------------------------------------


def test_example_config_loads_and_names_every_key() -> None:
    load_config(DEPLOY / "config.example.toml", env={})
    data = tomllib.loads((DEPLOY / "config.example.toml").read_text())
    for section, cls in SECTIONS.items():
        missing = {f.name for f in fields(cls)} - set(data.get(section, {}))
        assert not missing, f"[{section}] keys missing from config.example.toml: {missing}"


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


SAMPLES = {
    "ZSTACK_URL": "http://zstack:8080/zstack",
    "CONSOLE_TARGETS": "10.0.0.0/16:5900-6999",
    "REDIS_PASSWORD": "redis-pw",
    "TICKET_ENCRYPT_KEY": base64.b64encode(bytes(32)).decode(),
    "SENTINEL_PASSWORD": "sentinel-pw",
}


def interpolate(value: str) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} with sample values."""

    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(3) if match.group(2) == ":-" else ""
        return SAMPLES.get(name, default or "")

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


def test_compose_file() -> None:
    (compose,) = yaml_documents(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert {"proxy1", "proxy2", "redis", "haproxy"} <= set(services)
    for name in ("proxy1", "proxy2"):
        proxy = services[name]
        assert (DEPLOY / proxy["build"]["context"] / proxy["build"]["dockerfile"]).is_file()
        assert seconds(proxy["stop_grace_period"]) > drain_budget()
        env = {key: interpolate(str(value)) for key, value in proxy["environment"].items()}
        assert env["CONSOLE_PROXY_SERVER_BASE_PATH"] == BASE
        tickets = load_config(env=env).tickets
        assert (tickets.store, tickets.redis_url) == ("redis", "redis://:redis-pw@redis:6379/0")
        assert tickets.encrypt_key == SAMPLES["TICKET_ENCRYPT_KEY"]
    mounted = [volume.split(":")[0] for volume in services["haproxy"]["volumes"]]
    assert "./haproxy/haproxy.cfg" in mounted and (DEPLOY / "haproxy" / "haproxy.cfg").is_file()
    haproxy_ip = services["haproxy"]["networks"]["backend"]["ipv4_address"]
    trusted = services["proxy1"]["environment"]["CONSOLE_PROXY_SERVER_TRUSTED_PROXIES"]
    assert ipaddress.ip_address(haproxy_ip) in ipaddress.ip_network(trusted)


def k8s_objects() -> dict[str, dict[str, Any]]:
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml_documents(path):
            objects[doc["kind"]] = doc
    return objects


def test_kubernetes_manifests_agree_with_each_other() -> None:
    objects = k8s_objects()
    assert {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "Kustomization"} <= set(
        objects
    )
    toml = tomllib.loads(objects["ConfigMap"]["data"]["config.toml"])
    config = load_config(
        # The Deployment brings the Redis URL from a Secret.
        env={"CONSOLE_PROXY_TICKETS_REDIS_URL": "redis://redis:6379/0"},
        overrides={f"{s}.{k}": v for s, kv in toml.items() for k, v in kv.items()},
    )
    pod = objects["Deployment"]["spec"]["template"]
    labels = pod["metadata"]["labels"]
    (container,) = pod["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == f"{config.server.base_path}/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == f"{config.server.base_path}/healthz"
    port_names = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert port_names["http"] == int(config.server.listen.rpartition(":")[2])
    pre_stop = float(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert grace > pre_stop + config.server.drain_timeout + SHUTDOWN_MARGIN
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    for selector in (
        objects["Deployment"]["spec"]["selector"]["matchLabels"],
        objects["Service"]["spec"]["selector"],
        objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    assert objects["Service"]["spec"]["ports"][0]["targetPort"] == "http"


def test_kustomize_builds_the_manifests() -> None:
    # kubectl >= 1.24 (its kustomize v5 knows `labels:`); Debian 12's kubernetes-client is 1.20.
    kubectl = require_binary(
        "kubectl", "kubectl", how="run scripts/system-deps.sh as root (it installs kubectl)"
    )
    result = run([kubectl, "kustomize", str(DEPLOY / "k8s")])
    assert result.returncode == 0, result.stderr
    built = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    kustomization = k8s_objects()["Kustomization"]
    # Every manifest is listed, so `kubectl apply -k` deploys all of them, and each comes out once.
    manifests = {path.name for path in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(manifests)
    listed = [doc for name in manifests for doc in yaml_documents(DEPLOY / "k8s" / name)]
    assert sorted(name_of(doc) for doc in built) == sorted(name_of(doc) for doc in listed)
    kinds = sorted(doc["kind"] for doc in built)
    assert kinds == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service"]
    # `labels:` reached every object (an older kustomize rejects the field).
    (labels,) = (entry["pairs"] for entry in kustomization["labels"])
    for doc in built:
        assert labels.items() <= doc["metadata"]["labels"].items(), name_of(doc)


def name_of(doc: dict[str, Any]) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def test_redis_store_is_configurable() -> None:
    # compose.yaml and k8s/ run several replicas sharing tickets through Redis.
    objects = k8s_objects()
    toml = tomllib.loads(objects["ConfigMap"]["data"]["config.toml"])
    env = {"CONSOLE_PROXY_TICKETS_REDIS_URL": "redis://127.0.0.1:6379/0"}
    env["CONSOLE_PROXY_TICKETS_ENCRYPT_KEY"] = SAMPLES["TICKET_ENCRYPT_KEY"]
    try:
        config = load_config(
            env=env, overrides={f"{s}.{k}": v for s, kv in toml.items() for k, v in kv.items()}
        )
    except ConfigError as exc:
        pytest.fail(f"the k8s ConfigMap does not load: {exc}")
    assert config.tickets.store == "redis"


def test_dockerfile() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?$", text, re.MULTILINE)
    assert re.match(r"node:(22|24)\b", stages[0][0])  # an LTS line that is still supported
    assert stages[-1][0].startswith("python:3.11-slim")
    assert "npm ci" in text and "EXPOSE 6080" in text and "/healthz" in text
    assert re.search(r'^CMD \["console-proxy", "serve"\]$', text, re.MULTILINE)
    user = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert user and not user[-1].startswith(("root", "0"))
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.MULTILINE):
        for item in source.split():
            assert (REPO / item).exists(), f"COPY source {item} is not in the repository"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    assert "static/node_modules/" in ignore


# --- the Redis Sentinel variants -------------------------------------------------------------

SENTINEL_DIR = DEPLOY / "k8s" / "sentinel"


@pytest.mark.parametrize("script", ["redis-start.sh", "sentinel-start.sh"])
def test_sentinel_start_scripts_parse(script: str) -> None:
    result = run([require_binary("sh", "dash"), "-n", str(SENTINEL_DIR / script)])
    assert result.returncode == 0, result.stderr


def test_compose_sentinel_file() -> None:
    (compose,) = yaml_documents(DEPLOY / "compose.sentinel.yaml")
    services = compose["services"]
    data_nodes = sorted(name for name in services if name.startswith("redis-"))
    sentinels = sorted(name for name in services if name.startswith("sentinel-"))
    assert len(data_nodes) == 3 and len(sentinels) == 3
    for name in data_nodes + sentinels:
        service = services[name]
        env = service["environment"]
        assert env["NODE"] == name and env["FIRST_PRIMARY"] in data_nodes
        assert env["SENTINELS"].split() == sentinels and env["DATA_NODES"].split() == data_nodes
        for volume in service["volumes"]:
            assert (DEPLOY / volume.split(":")[0]).is_file(), volume
    for name in ("proxy1", "proxy2"):
        proxy = services[name]
        assert seconds(proxy["stop_grace_period"]) > drain_budget()
        env = {key: interpolate(str(value)) for key, value in proxy["environment"].items()}
        config = load_config(env=env)
        tickets = config.tickets
        assert tickets.store == "redis" and tickets.redis_service == env_of(services, "SERVICE")
        assert [host for host, _ in redis_sentinels(config)] == sentinels
        assert {port for _, port in redis_sentinels(config)} == {26379}
        assert tickets.redis_url == f"redis://:{SAMPLES['REDIS_PASSWORD']}@console-proxy/0"
        assert tickets.redis_sentinel_password == SAMPLES["SENTINEL_PASSWORD"]
        # Losing one node leaves a primary with enough replicas to acknowledge ticket uses.
        assert len(data_nodes) - 2 >= redis_wait_replicas(config) == 1
    haproxy_ip = services["haproxy"]["networks"]["backend"]["ipv4_address"]
    trusted = services["proxy1"]["environment"]["CONSOLE_PROXY_SERVER_TRUSTED_PROXIES"]
    assert ipaddress.ip_address(haproxy_ip) in ipaddress.ip_network(trusted)


def env_of(services: dict[str, Any], key: str) -> str:
    (value,) = {str(s["environment"][key]) for n, s in services.items() if n.startswith("redis-")}
    return value


def test_kustomize_builds_the_sentinel_variant(tmp_path: Path) -> None:
    kubectl = require_binary(
        "kubectl", "kubectl", how="run scripts/system-deps.sh as root (it installs kubectl)"
    )
    # As a user would: an overlay of their own with the base and the component.
    base = Path(os.path.relpath(DEPLOY / "k8s", tmp_path))
    (tmp_path / "kustomization.yaml").write_text(
        f"resources: [{base}]\ncomponents: [{base / 'sentinel'}]\n"
    )
    result = run([kubectl, "kustomize", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    built = {name_of(doc): doc for doc in yaml.safe_load_all(result.stdout) if doc}
    redis = built["StatefulSet", "console-proxy-redis"]
    headless = built["Service", redis["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    assert redis["spec"]["replicas"] == 3

    pod = redis["spec"]["template"]
    proxy_selector = built["Service", "console-proxy"]["spec"]["selector"]
    assert not proxy_selector.items() <= pod["metadata"]["labels"].items()
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    sentinel_port = containers["sentinel"]["ports"][0]["containerPort"]
    # The generated ConfigMap's name ends in a hash of its contents.
    (generated,) = [doc for key, doc in built.items() if key[1].startswith("console-proxy-redis-s")]
    for name, text in generated["data"].items():
        assert text == (SENTINEL_DIR / name).read_text(), name

    (proxy,) = built["Deployment", "console-proxy"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value", f"secret:{e.get('valueFrom')}") for e in proxy["env"]}
    toml = tomllib.loads(built["ConfigMap", "console-proxy"]["data"]["config.toml"])
    # The Secret's values.
    env["CONSOLE_PROXY_TICKETS_REDIS_URL"] = "redis://:pw@console-proxy/0"
    env["CONSOLE_PROXY_TICKETS_ENCRYPT_KEY"] = SAMPLES["TICKET_ENCRYPT_KEY"]
    config = load_config(
        env={k: v for k, v in env.items() if k.startswith("CONSOLE_PROXY_")},
        overrides={f"{s}.{k}": v for s, kv in toml.items() for k, v in kv.items()},
    )
    pods = [f"{redis['metadata']['name']}-{i}.{headless['metadata']['name']}" for i in range(3)]
    assert redis_sentinels(config) == [(name, sentinel_port) for name in pods]
    assert "secretKeyRef" in env["CONSOLE_PROXY_TICKETS_REDIS_SENTINEL_PASSWORD"]
    node_env = {e["name"]: e.get("value", "") for e in containers["redis"]["env"]}
    assert config.tickets.redis_service == node_env["SERVICE"]
    assert node_env["SENTINELS"].split() == pods
