"""The wheel as a user gets it: built from this checkout (hatchling from the index), installed
with its locked dependencies into a fresh venv outside the repository, and that venv's
``console-proxy serve`` serving a console that Chromium connects to and draws.

The build and the install take most of a minute (less with pip's cache warm); every test here
that needs them shares one build and one venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Response

import proxy
import proxy.app
from proxy.app import assets_dir
from proxy.demo.simulator import Inventory, create_simulator_app
from tests.support.binaries import IN_CI
from tests.support.browser import PageProblems, chromium, status_text, wait_drawn, wait_state
from tests.support.configs import make_config
from tests.support.net import free_port
from tests.support.serve_process import ServeProcess
from tests.support.stack import zstack_login

REPO = Path(__file__).resolve().parents[2]
NPM_PACKAGES = {
    "@novnc/novnc": "core/rfb.js",
    "@spice-project/spice-html5": "src/main.js",
}
DEMO_VNC_PASSWORD = "d3ad0c0de0000000000000000000a002"  # proxy/demo/inventory.toml
INSTALL_TIMEOUT = 240


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    workdir: Path  # outside the repository: the installed package cannot come from the checkout

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


def clean_env() -> dict[str, str]:
    """This environment minus what would point the venv back at the checkout or this venv."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env = {k: v for k, v in env.items() if not k.startswith("CONSOLE_PROXY_")}
    return {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def run(*command: str | Path, cwd: Path, timeout: float = INSTALL_TIMEOUT) -> str:
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def require_npm_packages() -> None:
    missing = [p for p in NPM_PACKAGES if not (REPO / "static/node_modules" / p).is_dir()]
    if missing:
        message = f"static/node_modules lacks {missing}: run `make test` (or npm ci in static/)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def build_wheel(source: Path, dist: Path) -> subprocess.CompletedProcess[str]:
    """``pip wheel --no-deps .``, as ``make wheel`` does: hatchling comes from the index."""
    return subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(source)],
        cwd=source,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    require_npm_packages()
    root = tmp_path_factory.mktemp("wheel")
    built = build_wheel(REPO, root / "dist")
    assert built.returncode == 0, built.stderr
    (wheel,) = (root / "dist").glob("*.whl")
    venv = root / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=root)
    # The dependencies exactly as locked (hashes checked), then the wheel on its own.
    started = time.monotonic()
    run(
        venv / "bin/pip",
        "install",
        "-q",
        "--require-hashes",
        "-r",
        REPO / "requirements.lock",
        cwd=root,
    )
    run(venv / "bin/pip", "install", "-q", "--no-deps", wheel, cwd=root)
    print(f"\nwheel {wheel.stat().st_size} bytes, installed in {time.monotonic() - started:.1f} s")
    workdir = root / "run"
    workdir.mkdir()
    yield Installed(wheel, venv, workdir)
    shutil.rmtree(root, ignore_errors=True)


# --- what is in the wheel -------------------------------------------------------------------


@pytest.mark.wheel
def test_the_wheel_carries_the_pages_and_the_browser_packages(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    tracked = [
        *(f"templates/{p.name}" for p in (REPO / "templates").iterdir()),
        *(p.relative_to(REPO).as_posix() for p in (REPO / "static").rglob("*.*")),
    ]
    for path in tracked:
        if "node_modules" not in path:
            assert f"proxy/{path}" in names, f"{path} is not in the wheel"
    modules = "proxy/static/node_modules"
    for package, entry in NPM_PACKAGES.items():
        assert f"{modules}/{package}/{entry}" in names
        assert f"{modules}/{package}/package.json" in names
    assert f"{modules}/@novnc/novnc/LICENSE.txt" in names  # MPL-2.0 asks for it
    assert f"{modules}/@spice-project/spice-html5/COPYING.LESSER" in names  # LGPL-3.0 too
    assert not {n for n in names if n.startswith(("templates/", "static/", "tests/"))}
    assert not {n for n in names if n.startswith(modules) and n.count("/") < 5}, "npm leftovers"


@pytest.mark.wheel
def test_the_wheel_is_not_built_without_the_npm_packages(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "hatch_build.py"):
        shutil.copy(REPO / name, source / name)
    for folder in ("proxy", "templates"):
        shutil.copytree(
            REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copytree(
        REPO / "static", source / "static", ignore=shutil.ignore_patterns("node_modules")
    )
    built = build_wheel(source, tmp_path / "dist")
    assert built.returncode != 0
    assert "Run `npm ci` in static/ first" in built.stdout + built.stderr
    assert not list((tmp_path / "dist").glob("*.whl"))


# --- the installed command ------------------------------------------------------------------


@pytest.mark.wheel
def test_the_installed_command_runs_from_the_venv(installed: Installed) -> None:
    cwd = installed.workdir
    out = run(installed.bin / "console-proxy", "--version", cwd=cwd, timeout=60)
    assert out == f"console-proxy {proxy.__version__}\n"
    where = run(installed.bin / "python", "-c", "import proxy; print(proxy.__file__)", cwd=cwd)
    site = installed.venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    assert Path(where.strip()).is_relative_to(site / "site-packages")
    # The locked dependencies satisfy what the wheel declares.
    run(installed.bin / "pip", "check", cwd=cwd, timeout=60)
    dump = run(installed.bin / "console-proxy", "check-config", cwd=cwd, timeout=60)
    assert dump.startswith(f"# console pages and static files from {site / 'site-packages/proxy'}")


def serve_installed(installed: Installed, config: Path) -> ServeProcess:
    """The venv's ``console-proxy serve --config FILE`` run from a directory outside the repo;
    ``PORT`` in the file becomes a free port."""
    port = free_port()
    config.write_text(config.read_text().replace("PORT", str(port)))
    return ServeProcess(
        port,
        ["--config", str(config)],
        installed.workdir,
        log_level=None,
        base_env=clean_env(),
        program=[str(installed.bin / "console-proxy")],
        cwd=installed.workdir,
        start_timeout=30.0,
        stop_timeout=20.0,
    )


async def mint(http: aiohttp.ClientSession, zstack: TestServer, proxy_url: str) -> str:
    """Log in to the simulated ZStack and mint a console ticket, as a portal does."""
    session = await zstack_login(http, str(zstack.make_url("/zstack")))
    async with http.post(
        f"{proxy_url}/api/v1/consoles",
        json={"vmUuid": DEMO_VNC_PASSWORD},
        headers={"Authorization": f"OAuth {session}"},
    ) as answer:
        ticket = await answer.json()
        assert answer.status == 201, ticket
    return str(ticket["consoleUrl"])


@pytest.mark.wheel
@pytest.mark.browser
@pytest.mark.timeout(300)
async def test_the_installed_proxy_serves_a_console_chromium_draws(
    installed: Installed, demo_inventory: Inventory, aiohttp_server: Any
) -> None:
    zstack: TestServer = await aiohttp_server(create_simulator_app(demo_inventory))
    config = installed.workdir / "config.toml"
    config.write_text(
        '[server]\nlisten = "127.0.0.1:PORT"\n'
        f'[zstack]\nurl = "{zstack.make_url("/zstack")}"\n'
        '[targets]\nallow = ["127.0.0.0/8"]\n[audit]\nsink = ""\n'
    )
    answers: list[tuple[str, int]] = []
    failed: list[str] = []
    async with serve_installed(installed, config) as serve, aiohttp.ClientSession() as http:
        console_url = await mint(http, zstack, serve.url)
        async with chromium() as browser:
            page = await browser.new_page()
            problems = PageProblems(page)

            def seen(response: Response) -> None:
                answers.append((response.url, response.status))

            page.on("response", seen)
            page.on("requestfailed", lambda request: failed.append(request.url))
            await page.goto(console_url)
            await wait_state(page, "connected")
            assert await status_text(page) == "Connected to demo-vnc-password"
            stats = await wait_drawn(page)
            assert stats.colours > 10
            problems.check()
        # spice-html5 comes from the installed package too (no SPICE server needed for that).
        async with http.get(f"{serve.url}/static/spice/src/main.js") as answer:
            assert answer.status == 200
            assert "export" in await answer.text()
    assert not failed, failed
    static = [(url, status) for url, status in answers if "/static/" in url]
    assert {status for _, status in static} == {200}, static
    loaded = {url.removeprefix(serve.url) for url, _ in static}
    assert "/static/novnc/core/rfb.js" in loaded
    assert {u for u in loaded if u.startswith("/static/js/")}, loaded


# --- where the assets come from -------------------------------------------------------------


def test_assets_come_from_the_installed_package_when_it_has_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site-packages" / "proxy"
    (package / "templates").mkdir(parents=True)
    monkeypatch.setattr(proxy.app, "PACKAGE_DIR", package)
    assert assets_dir(make_config()) == package
    assert assets_dir(make_config(server={"assets_dir": "/srv/assets"})) == Path("/srv/assets")


def test_a_checkout_serves_its_own_assets() -> None:
    # Here (a checkout or `pip install -e .`) proxy/ has no templates/: the repository's are used.
    assert not (proxy.app.PACKAGE_DIR / "templates").exists()
    assert assets_dir(make_config()) == REPO
