"""The package layout's rules, checked on the source: which folders may import what, and size.

See the README's "Layout" section: web/ is the only place that knows aiohttp's web layer, the
sans-IO protocol cores import neither asyncio nor aiohttp, only the CLI imports the demo, and no
module outside demo/ grows past 450 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "proxy"
LOWER_FOLDERS = (
    "consoles",
    "tickets",
    "protocols",
    "relay",
    "zstack",
    "observe",
    "recording",
    "workers",
)
SANS_IO = (
    "protocols/rfb/events.py",
    "protocols/rfb/common.py",
    "protocols/rfb/upstream.py",
    "protocols/rfb/downstream.py",
    "protocols/rfb/input.py",
    "protocols/rfb/vncauth.py",
    "protocols/spice/link.py",
    "recording/format.py",
    "recording/keyframes.py",
)
MAX_LINES = 450


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def relative(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def test_the_rules_see_every_folder() -> None:
    folders = {relative(p).split("/")[0] for p in modules() if "/" in relative(p)}
    assert set(LOWER_FOLDERS) | {"web", "demo", "config"} == folders


@pytest.mark.parametrize("folder", LOWER_FOLDERS)
def test_lower_folders_do_not_know_the_web_layer(folder: str) -> None:
    for path in (PACKAGE / folder).rglob("*.py"):
        names = imported(path)
        web = {n for n in names if n == "aiohttp.web" or n.startswith(("aiohttp.web", "proxy.web"))}
        assert not web, f"{relative(path)} imports {sorted(web)}"
        assert not {n for n in names if n.startswith("proxy.demo")}, relative(path)


@pytest.mark.parametrize("module", SANS_IO)
def test_sans_io_modules_do_no_io(module: str) -> None:
    names = imported(PACKAGE / module)
    io = {n for n in names if n.split(".")[0] in ("asyncio", "aiohttp", "socket", "ssl")}
    assert not io, f"{module} imports {sorted(io)}"


def test_only_the_cli_imports_the_demo() -> None:
    for path in modules():
        if relative(path).startswith("demo/") or relative(path) == "cli.py":
            continue
        demo = {n for n in imported(path) if n.startswith("proxy.demo")}
        assert not demo, f"{relative(path)} imports {sorted(demo)}"


def test_config_imports_no_ticket_backend_or_service() -> None:
    for path in (PACKAGE / "config").rglob("*.py"):
        names = imported(path)
        backends = {n for n in names if n.startswith(("proxy.tickets", "proxy.consoles.service"))}
        assert not backends, f"{relative(path)} imports {sorted(backends)}"
        assert not {n for n in names if n.startswith(("aiohttp", "proxy.web"))}, relative(path)


def test_no_module_outside_demo_is_too_long() -> None:
    long = {
        relative(p): n
        for p in modules()
        if not relative(p).startswith("demo/")
        and (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"
