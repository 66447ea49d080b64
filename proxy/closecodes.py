"""WebSocket close codes: the reason sent in the close frame, and the sentence the console page
shows a person for each code (in proxy/languages/, one table per language). The page receives
its table from the server, so this module and those files are the one place to add a code.

Codes 4000-4999 are private-use (RFC 6455 section 7.4.2). The last three digits echo the HTTP
status that means the same thing, so a log reader can guess them without this table.
"""

from __future__ import annotations

import enum

from proxy.i18n import DEFAULT, close_messages


class Close(enum.Enum):
    """(code, reason). Reasons stay under 123 bytes, the limit of a close frame."""

    HOST_CLOSED = (1000, "the VM's console closed the connection")
    BROWSER_CLOSED = (1000, "console closed by the browser")
    GOING_AWAY = (1001, "proxy restarting, reconnecting")
    TEXT_FRAME = (1003, "text frames are not accepted; send binary frames")
    FRAME_TOO_BIG = (1009, "message too big")
    PROTOCOL_ERROR = (1002, "WebSocket protocol error")
    TICKET_INVALID = (4401, "console ticket is invalid, expired or already used")
    TARGET_REFUSED = (4403, "the console address is not allowed by the proxy's target policy")
    IDLE = (4408, "closed after a period without input (idle)")
    SESSION_LIMIT = (4409, "maximum console session length reached")
    TOO_MANY = (4429, "too many open consoles; try again later")
    TOO_MANY_FOR_VM = (4429, "too many consoles are open for this VM")
    RATE_LIMITED = (4429, "too many requests from your address; try again in a minute")
    HOST_UNREACHABLE = (4502, "could not connect to the VM's console: host unreachable")
    HOST_TIMEOUT = (4504, "timed out connecting to the VM's console")
    HANDSHAKE_TIMEOUT = (4504, "the VM's console did not finish its handshake in time")
    # The host's TCP connection was reset mid-stream (hypervisor, network or VM went away).
    HOST_RESET = (4502, "the connection to the VM's console was reset")
    AUTH_FAILED = (4511, "console password rejected by the hypervisor")
    HOST_PROTOCOL = (4512, "the VM's console spoke an unexpected protocol")
    PASSWORD_UNKNOWN = (4513, "the VM's console asks for a password that ZStack did not provide")
    TLS_UNVERIFIED = (4515, "the VM's console certificate could not be verified")
    TLS_FAILED = (4516, "the TLS handshake with the VM's console failed")
    TLS_REQUIRED = (4517, "the VM's console does not offer TLS, which this proxy requires")
    REVOKED = (4410, "console closed by an administrator")
    STORE_UNAVAILABLE = (4503, "the proxy's ticket store is unavailable; try again shortly")
    # [recording] mode = "required" and the recording cannot be written.
    RECORDING_UNAVAILABLE = (4507, "session recording is unavailable")

    @property
    def code(self) -> int:
        return self.value[0]

    @property
    def reason(self) -> str:
        return self.value[1]


# What the console page says for each code, in English; every language's table is in
# proxy/languages/<tag>.json ("closeCodes"), and the page gets the one it shows. The close reason
# adds detail for 1000, 1005 and 4502. 1005 (no code), 1006 (no close frame) and 1011 come from
# the browser or aiohttp, not from Close.
PAGE_MESSAGES: dict[int, str] = close_messages(DEFAULT)
