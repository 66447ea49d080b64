"""Minting and redeeming console tickets: the proxy's domain logic, free of HTTP.

Failures are :mod:`proxy.consoles.errors`; ``web/`` turns them into HTTP answers.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, replace

from proxy.consoles.errors import (
    BadUpstream,
    InvalidRequest,
    TargetForbidden,
    TicketsFull,
    Unavailable,
)
from proxy.consoles.targets import TargetPolicy
from proxy.observe.metrics import Metrics
from proxy.protocols.spice.link import MAX_TICKET_PLAINTEXT
from proxy.tickets.signed import TicketSigner, is_signed
from proxy.tickets.static import StaticTokens
from proxy.tickets.store import (
    Ticket,
    TicketStore,
    TicketStoreFull,
    TicketStoreUnavailable,
    is_well_formed,
    new_token,
)
from proxy.zstack.client import Account, ConsoleAddress, ZStackClient, ZStackError

log = logging.getLogger(__name__)

VM_UUID = re.compile(r"[0-9a-f]{32}")
PROTOCOLS = ("vnc", "spice")


@dataclass(frozen=True)
class TicketPolicy:
    ttl: float
    spice_channels: int = 8
    spice_window: float = 15.0
    # TLS to hypervisors is configured, so SPICE's TLS port can be used.
    spice_tls: bool = False


def normalize_vm_uuid(value: object) -> str:
    """ZStack UUIDs are 32 lowercase hex digits; accept the dashed form and any case too."""
    if not isinstance(value, str):
        raise InvalidRequest("REQUEST.INVALID_VM_UUID", "vmUuid must be a string.")
    uuid = value.replace("-", "").lower()
    if not VM_UUID.fullmatch(uuid):
        raise InvalidRequest(
            "REQUEST.INVALID_VM_UUID", "vmUuid must be a VM UUID of 32 hexadecimal digits."
        )
    return uuid


def choose_port(
    address: ConsoleAddress, requested: str | None, tls: bool = False
) -> tuple[str, int, bool]:
    """Pick the protocol, the port to dial and whether it is SPICE's TLS port (used only when
    ``tls``, i.e. [tls] is configured; else the plain SPICE port)."""
    offered = ("vnc", "spice") if address.protocol == "vncAndSpice" else (address.protocol,)
    protocol = requested or offered[0]
    if protocol not in offered:
        raise Unavailable(
            "CONSOLE.PROTOCOL_UNAVAILABLE",
            f"This VM offers a {address.protocol} console, not {protocol}.",
        )
    vdi = address.vdi
    if protocol == "spice" and vdi.spice_tls_port and (tls or not vdi.spice_port):
        if not tls:
            raise Unavailable(
                "CONSOLE.TLS_NOT_CONFIGURED",
                "This VM's SPICE console is reachable over TLS only; set [tls] ca_file.",
            )
        return protocol, vdi.spice_tls_port, True
    fallback = address.port if len(offered) == 1 or protocol == "vnc" else None
    port = (vdi.vnc_port if protocol == "vnc" else vdi.spice_port) or fallback
    if port is None:
        raise BadUpstream("ZSTACK.BAD_RESPONSE", f"ZStack gave no {protocol} port for this VM.")
    return protocol, port, False


class ConsoleService:
    def __init__(
        self,
        zstack: ZStackClient,
        store: TicketStore,
        policy: TargetPolicy,
        tickets: TicketPolicy,
        static_tokens: StaticTokens | None = None,
        metrics: Metrics | None = None,
        signer: TicketSigner | None = None,
    ) -> None:
        self.zstack = zstack
        self.store = store
        self.policy = policy
        self.tickets = tickets
        self.static_tokens = static_tokens
        self.metrics = metrics or Metrics()
        self.signer = signer

    async def mint(
        self,
        session_id: str,
        vm_uuid: str,
        protocol: str | None = None,
        view_only: bool = False,
    ) -> tuple[str, Ticket]:
        with self.metrics.zstack_seconds.labels("console-addresses").time():
            address = await self.zstack.get_console_address(session_id, vm_uuid)
        protocol, port, tls = choose_port(address, protocol, self.tickets.spice_tls)
        self._check_target(vm_uuid, address.host, port)
        # The password rides in the ticket and stays in the proxy: the proxy itself answers
        # the hypervisor's authentication, so the browser never needs it.
        password, account = await asyncio.gather(
            self._password(session_id, vm_uuid), self._account(session_id)
        )
        if protocol == "spice" and password and len(password.encode()) + 1 > MAX_TICKET_PLAINTEXT:
            # RSA-OAEP under SPICE's 1024-bit key carries at most 86 bytes with the NUL.
            raise Unavailable(
                "CONSOLE.PASSWORD_TOO_LONG",
                "This VM's console password is longer than a SPICE ticket can carry "
                f"(at most {MAX_TICKET_PLAINTEXT - 1} bytes); set a shorter one in ZStack.",
            )
        ticket = self._ticket(vm_uuid, address.host, port, protocol, password, tls)
        ticket = replace(
            ticket, account_uuid=account.uuid, account_name=account.name, view_only=view_only
        )
        return await self.issue(ticket), ticket

    def watch_ticket(self, ticket: Ticket, account_name: str) -> Ticket:
        """A fresh view-only ticket to the same console as ``ticket``, for an operator."""
        fresh = self._ticket(
            ticket.vm_uuid, ticket.host, ticket.port, ticket.protocol, ticket.password, ticket.tls
        )
        return replace(fresh, account_name=account_name, view_only=True)

    async def issue(self, ticket: Ticket) -> str:
        """Hand out a token for ``ticket``: signed, or stored under a new random token."""
        if self.signer is not None:
            return self.signer.sign(ticket)
        token = new_token()
        try:
            await self.store.put(token, ticket)
        except TicketStoreFull:
            raise TicketsFull(
                "TICKETS.FULL", "Too many unused console tickets; try again soon."
            ) from None
        return token

    async def _password(self, session_id: str, vm_uuid: str) -> str | None:
        with self.metrics.zstack_seconds.labels("console-passwords").time():
            return await self.zstack.get_console_password(session_id, vm_uuid)

    async def _account(self, session_id: str) -> Account:
        """Whose session it is, for the audit; a console is not refused for want of it."""
        try:
            with self.metrics.zstack_seconds.labels("accounts").time():
                return await self.zstack.get_account(session_id)
        except ZStackError as exc:
            log.warning("could not tell the session's ZStack account: %s", exc.code)
            return Account("", "")

    def _check_target(self, vm_uuid: str, host: str, port: int) -> None:
        if self.policy.permits(host, port):
            return
        log.warning("refused console for VM %s: %s:%s outside [targets] allow", vm_uuid, host, port)
        raise TargetForbidden(
            "TARGET.FORBIDDEN",
            "The VM's console address is not in the networks this proxy may connect to.",
            f"{host}:{port} is outside [targets] allow",
        )

    def _ticket(
        self, vm_uuid: str, host: str, port: int, protocol: str, password: str | None, tls: bool
    ) -> Ticket:
        spice = protocol == "spice"
        return Ticket(
            vm_uuid,
            host,
            port,
            protocol,
            time.time() + self.tickets.ttl,
            password,
            uses=self.tickets.spice_channels if spice else 1,
            window=self.tickets.spice_window if spice else 0.0,
            tls=tls,
        )

    async def redeem(self, token: str) -> Ticket | None:
        """The ticket for ``token`` (one use of it), or None when it admits nothing.

        Raises StoreUnavailable when the store cannot answer, or is too full to count a use.
        """
        if not is_well_formed(token):
            return None
        try:
            return await self._redeem(token)
        except TicketStoreFull:
            # A use that cannot be counted must not be admitted (single use), nor crash the
            # handler: the caller answers as for an unreachable store (4503).
            raise TicketStoreUnavailable("the ticket store is full") from None

    async def _redeem(self, token: str) -> Ticket | None:
        if self.signer is not None and is_signed(token):
            return await self._redeem_signed(self.signer, token)
        ticket = await self.store.redeem(token)
        if ticket is None and self.static_tokens is not None:
            target = await self.static_tokens.lookup(token)
            if target is not None:
                # Static targets are reusable, as in websockify; they carry no VM or protocol.
                ticket = Ticket("", target[0], target[1], "raw", time.time() + 60.0)
        return ticket

    async def _redeem_signed(self, signer: TicketSigner, token: str) -> Ticket | None:
        verified = signer.verify(token)
        if verified is None:
            return None
        ticket_id, ticket = verified
        uses = await self.store.count_use(ticket_id, max(1.0, ticket.expires_at - time.time()))
        return ticket if uses <= ticket.uses else None
