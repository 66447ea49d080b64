"""Puts noVNC and spice-html5 (from ``npm ci``) into the wheel, or stops the build without them.

The wheel must never ship without the browser packages: a console page without noVNC is a blank
page. Editable installs (``pip install -e .``) serve them from the repository and skip this.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

NPM_PACKAGES = ("@novnc/novnc", "@spice-project/spice-html5")


class NpmAssetsHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        modules = Path(self.root) / "static" / "node_modules"
        for package in NPM_PACKAGES:
            source = modules / package
            if not (source / "package.json").is_file():
                raise RuntimeError(
                    f"{source} is missing: the wheel would ship without {package}. "
                    "Run `npm ci` in static/ first (or `make wheel`)."
                )
            build_data["force_include"][str(source)] = f"proxy/static/node_modules/{package}"
