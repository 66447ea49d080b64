"""Several worker processes on one port (``serve --workers N``), sharing state without Redis.

The supervisor (:mod:`.supervisor`) reserves the port, runs the hub (:mod:`.hub`: tickets, per-VM
counts, and the messages the workers send each other) on a private Unix socket, and starts the
workers, each with its own listening socket on the port (SO_REUSEPORT: the kernel spreads new
connections over them) and its own descriptor limit. Workers reach the hub through
:mod:`.client` and see it through the same interfaces as Redis (:mod:`.shared`).
"""
