"""RFB (VNC): the handshake on both sides of the proxy, RFC 6143 §7.1–§7.2.

The proxy authenticates to the VM's VNC server itself (:mod:`.upstream`, the proxy as an RFB
client) and offers the browser security type None only (:mod:`.downstream`, the proxy as an RFB
server), so the console password never reaches the browser. After security the protocol
(ClientInit, ServerInit and beyond, §7.3) is the same in 3.3, 3.7 and 3.8, so the two sides may
settle on different versions and the bridge then pumps bytes untouched, starting with each side's
``trailing_data``.

``events``, ``common``, ``upstream`` and ``downstream`` do no I/O, in the manner of h11: feed
what the peer sent to ``receive_data()``, call ``next_event()`` until it returns ``NEED_DATA`` or
the final ``SecurityComplete``, and write ``bytes_to_send()`` to the peer after every event.
Upstream, with ``tls=True``, the proxy also speaks VeNCrypt (security type 19, community rfbproto
"VeNCrypt") with the x509 sub-types only: when ``StartTls`` comes out, the caller upgrades the
connection to TLS, calls ``tls_established()``, and goes on feeding what arrives over TLS.

``driver`` and ``security`` run the handshakes over asyncio streams and the browser's WebSocket;
``input`` tells a person's input from other client messages; ``vncauth`` is VNC Authentication.
"""
