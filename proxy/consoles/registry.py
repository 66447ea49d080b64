"""The consoles open in this process: counted per VM, closable by VM (revocation) or all (drain)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy.closecodes import Close
from proxy.relay.bridge import BridgeStats
from proxy.relay.browser import BrowserSocket
from proxy.tickets.store import Ticket


@dataclass(eq=False, slots=True)
class LiveConsole:
    ws: BrowserSocket
    client_ip: str
    console_id: str = field(default_factory=lambda: secrets.token_hex(6))
    vm_uuid: str = ""
    started: float = field(default_factory=time.time)
    # Set by whoever ends the console from outside (revocation, drain); the handler reports it.
    interrupted: Close | None = None
    # Counted in the cluster-wide per-VM tally (Redis), to be released on close.
    claimed: bool = False
    # Sockets of one console share a group (SPICE: one socket per channel, one ticket).
    group: str = ""
    # A digest of the ticket's token: the console page names its console by it (viewer count).
    token_key: str = ""
    # Once redeemed: what it reaches (kept here, never listed: it may hold a password).
    ticket: Ticket | None = None
    # Once bridged: its live byte counts and last input.
    stats: BridgeStats | None = None
    # Once bridged: closes the host side, which wakes a bridge blocked on a host that stopped
    # reading (else the browser's close handshake would wait out its timeout).
    stop_host: Callable[[Close], None] | None = None

    @property
    def counted_as(self) -> str:
        """What per-VM limits count: the sockets of one SPICE console count once."""
        return self.group or self.console_id

    async def interrupt(self, reason: Close) -> None:
        if self.interrupted is None:
            self.interrupted = reason
        if self.stop_host is not None:
            self.stop_host(reason)
        await self.ws.close(code=reason.code, message=reason.reason.encode())


class ConsoleRegistry:
    def __init__(self) -> None:
        self._all: set[LiveConsole] = set()
        self._by_vm: defaultdict[str, set[LiveConsole]] = defaultdict(set)
        # Per VM, how many open sockets count as each console: a console's sockets are counted
        # without walking every socket of its VM (10,000 consoles of one target made opening
        # and closing each of them cost a walk over all the others).
        self._counted: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._empty = asyncio.Event()
        self._empty.set()
        # Set once the process stops taking consoles (readiness says so).
        self.draining = False

    def __len__(self) -> int:
        return len(self._all)

    def add(self, console: LiveConsole) -> None:
        self._all.add(console)
        self._empty.clear()

    def assign_vm(self, console: LiveConsole, vm_uuid: str) -> int:
        """Record which VM the console shows; return how many consoles that VM now has."""
        console.vm_uuid = vm_uuid
        if console not in self._by_vm[vm_uuid]:
            self._by_vm[vm_uuid].add(console)
            self._counted[vm_uuid][console.counted_as] += 1
        return len(self._counted[vm_uuid])

    def counts(self, console: LiveConsole) -> bool:
        """Whether another open socket here still counts for what ``console`` counted as."""
        counted = self._counted.get(console.vm_uuid)
        sockets = counted[console.counted_as] if counted else 0
        return sockets > (1 if console in self._by_vm.get(console.vm_uuid, ()) else 0)

    def remove(self, console: LiveConsole) -> None:
        self._all.discard(console)
        if console.vm_uuid:
            peers = self._by_vm.get(console.vm_uuid)
            if peers is not None and console in peers:
                peers.discard(console)
                counted = self._counted[console.vm_uuid]
                counted[console.counted_as] -= 1
                if counted[console.counted_as] <= 0:
                    del counted[console.counted_as]
                if not peers:
                    del self._by_vm[console.vm_uuid]
                    del self._counted[console.vm_uuid]
        if not self._all:
            self._empty.set()

    def assigned(self) -> list[tuple[str, str]]:
        """(VM, what it counts as) of every open console that is assigned to a VM."""
        return sorted(
            {(vm, c.counted_as) for vm, consoles in self._by_vm.items() for c in consoles}
        )

    async def close_group(self, group: str, reason: Close) -> int:
        """Close the other sockets of a console (e.g. its SPICE channels) with ``reason``."""
        consoles = [c for c in self._all if group and c.group == group]
        await asyncio.gather(*(c.interrupt(reason) for c in consoles))
        return len(consoles)

    def connected(self) -> list[LiveConsole]:
        """The sockets that redeemed a ticket (the listing's raw material)."""
        return [c for c in self._all if c.ticket is not None]

    def by_token(self, token_key: str) -> LiveConsole | None:
        return next((c for c in self.connected() if token_key and c.token_key == token_key), None)

    def find(self, console_id: str) -> LiveConsole | None:
        """A socket of the console listed as ``console_id`` (its group for SPICE)."""
        return next((c for c in self.connected() if c.counted_as == console_id), None)

    async def close_console(self, console_id: str, reason: Close) -> int:
        """Close every socket of the console listed as ``console_id``; how many there were."""
        consoles = [c for c in self._all if c.counted_as == console_id]
        await asyncio.gather(*(c.interrupt(reason) for c in consoles))
        return len(consoles)

    async def close_vm(self, vm_uuid: str, reason: Close) -> int:
        consoles = list(self._by_vm.get(vm_uuid, ()))
        await asyncio.gather(*(c.interrupt(reason) for c in consoles))
        return len(consoles)

    async def drain(self, timeout: float, reason: Close) -> int:
        """Wait up to ``timeout`` for consoles to end, then close the rest; return that count."""
        self.draining = True
        try:
            await asyncio.wait_for(self._empty.wait(), timeout)
            return 0
        except TimeoutError:
            pass
        consoles = list(self._all)
        await asyncio.gather(*(c.interrupt(reason) for c in consoles))
        return len(consoles)
