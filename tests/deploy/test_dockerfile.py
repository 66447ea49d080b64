"""deploy/Dockerfile read as text (no Docker engine in the test environment): a supported Node
LTS builds the browser packages, the image installs the wheel with the hashed lock, and the
HEALTHCHECK follows the configured port, which is checked by running its command."""

from __future__ import annotations

import asyncio
import fnmatch
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from proxy.app import create_app
from tests.support.configs import make_config
from tests.support.net import free_port

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
# Node 20's support ended in April 2026; 22 is supported until April 2027, 24 until April 2028.
SUPPORTED_NODE = {22, 24}


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def stages() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(image, stage name, instructions) per FROM."""
    result: list[tuple[str, str, list[tuple[str, str]]]] = []
    for word, rest in instructions():
        if word == "FROM":
            image, _, name = rest.partition(" AS ")
            result.append((image.strip(), name.strip(), []))
        elif result:
            result[-1][2].append((word, rest))
    return result


def test_browser_packages_are_built_with_a_supported_node_lts() -> None:
    nodes = [image for image, _, _ in stages() if image.startswith("node:")]
    assert nodes, "no node stage"
    for image in nodes:
        found = re.match(r"node:(\d+)\b", image)
        assert found, f"{image}: name the Node major version"
        assert int(found.group(1)) in SUPPORTED_NODE, f"{image} is not a supported LTS"


def test_the_image_installs_the_wheel_with_the_lock() -> None:
    by_name = {name: steps for _, name, steps in stages() if name}
    runtime_image, _, runtime = stages()[-1]
    assert runtime_image.startswith("python:3.11-slim")
    # The wheel is built where the npm packages are, so it carries them.
    wheel_stage = next(n for n, s in by_name.items() if any("pip wheel" in a for _, a in s))
    steps = by_name[wheel_stage]
    node_modules = next(i for i, (w, a) in enumerate(steps) if w == "COPY" and "node_modules" in a)
    build = next(i for i, (w, a) in enumerate(steps) if w == "RUN" and "pip wheel" in a)
    assert node_modules < build and "--no-deps" in steps[build][1]
    # Dependencies only from the lock, hashes required; then the wheel alone.
    runs = [a for _, _, s in stages() for w, a in s if w == "RUN" and "pip install" in a]
    assert any(re.search(r"--require-hashes -r \S*requirements\.lock\b", a) for a in runs), runs
    wheel_installs = [a for a in runs if ".whl" in a]
    assert wheel_installs and all("--no-deps" in a for a in wheel_installs)
    assert not [a for a in runs if "--require-hashes" not in a and ".whl" not in a]
    # The runtime image takes the installed venv, not a source tree or a second asset copy.
    copies = [a for w, a in runtime if w == "COPY"]
    assert copies and all(a.startswith("--from=") for a in copies), copies
    assert not [a for w, a in runtime if w == "ENV" and "ASSETS_DIR" in a]


def test_every_copied_file_is_in_the_build_context() -> None:
    ignore = (REPO / "deploy" / "Dockerfile.dockerignore").read_text().splitlines()
    patterns = [p.strip() for p in ignore if p.strip() and not p.startswith("#")]

    def excluded(path: str) -> bool:
        result = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            bare = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, bare) or path.startswith(bare + "/") or bare == "**":
                result = not negate
        return result

    for word, rest in instructions():
        if word == "COPY" and not rest.startswith("--from="):
            for source in rest.split()[:-1]:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
                assert not excluded(source), f"COPY {source}: left out by the .dockerignore"


def healthcheck_command() -> str:
    found = [rest for word, rest in instructions() if word == "HEALTHCHECK"]
    assert len(found) == 1
    command = re.search(r"\bCMD (.+)$", found[0])
    assert command, found[0]
    return command.group(1)


async def run_healthcheck(environment: dict[str, str], tmp_path: Path) -> int:
    # `python` inside the image is the venv's; here it is this interpreter.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "python").exists():
        (bin_dir / "python").symlink_to(sys.executable)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", **environment}
    shell = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        healthcheck_command(),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,  # the failing cases' tracebacks
    )
    return await asyncio.wait_for(shell.wait(), timeout=30)


def test_healthcheck_does_not_hard_code_the_port() -> None:
    command = healthcheck_command()
    assert "CONSOLE_PROXY_SERVER_LISTEN" in command
    assert not re.search(r"127\.0\.0\.1:\d", command)


async def test_healthcheck_follows_the_configured_port_and_base_path(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    port = free_port()
    app = create_app(make_config(server={"listen": f"127.0.0.1:{port}", "base_path": "/cp"}))
    await aiohttp_server(app, port=port)
    environment = {
        "CONSOLE_PROXY_SERVER_LISTEN": f"0.0.0.0:{port}",
        "CONSOLE_PROXY_SERVER_BASE_PATH": "/cp",
    }
    assert await run_healthcheck(environment, tmp_path) == 0
    # Another port (nothing there) or another base path (404): unhealthy.
    other = {**environment, "CONSOLE_PROXY_SERVER_LISTEN": f"0.0.0.0:{free_port()}"}
    assert await run_healthcheck(other, tmp_path) == 1
    assert await run_healthcheck({**environment, "CONSOLE_PROXY_SERVER_BASE_PATH": ""}, tmp_path)


@pytest.mark.parametrize("listen", ["127.0.0.1", "[::1]"])
async def test_healthcheck_reads_the_port_of_any_listen_form(
    listen: str, aiohttp_server: Any, tmp_path: Path
) -> None:
    port = free_port()
    await aiohttp_server(create_app(make_config()), port=port)
    assert await run_healthcheck({"CONSOLE_PROXY_SERVER_LISTEN": f"{listen}:{port}"}, tmp_path) == 0
