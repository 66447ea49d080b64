"""The console protocols the proxy takes part in: RFB (VNC) and SPICE, each a sans-IO core and a
driver that runs it over the browser's WebSocket and the host's streams."""

# One read while a handshake runs: the largest handshake or link message fits (RFB reasons are
# capped at 64 KiB, SPICE link messages at 4 KiB), and what follows stays small.
HANDSHAKE_READ = 64 * 1024
