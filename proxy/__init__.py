"""WebSocket console proxy (VNC and SPICE) for ZStack VMs."""

__version__ = "0.1.0"
