"""WebSocket console proxy (VNC and SPICE) for ZStack VMs."""

# The one place the version is written: pyproject.toml reads it from here ([tool.hatch.version]),
# `console-proxy --version` from the installed package's metadata.
__version__ = "0.1.0"
