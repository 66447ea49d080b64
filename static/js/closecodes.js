// Plain-words explanations of the WebSocket close codes the proxy sends (proxy/closecodes.py).

const MESSAGES = {
    1000: 'The VM\'s console closed the connection.',
    1001: 'The console proxy is restarting; reconnecting…',
    1002: 'The connection broke (WebSocket protocol error).',
    1003: 'The console proxy refused a message from this page (text frames are not accepted).',
    1005: 'The console was disconnected.',
    1009: 'The console proxy refused a message that was too big.',
    1011: 'The console proxy ran into an internal error.',
    4401: 'This console link has expired or was already used. Open the console again from the portal.',
    4403: 'The proxy is not allowed to connect to this VM\'s console (target policy).',
    4408: 'The console was closed after a long time without keyboard or mouse input.',
    4409: 'The console reached its maximum session length and was closed.',
    4410: 'An administrator closed this console.',
    4429: 'Too many consoles are open right now. Try again later.',
    4502: 'Could not reach the VM\'s console: the host is unreachable.',
    4504: 'Timed out connecting to the VM\'s console.',
    4511: 'The hypervisor rejected the console password.',
    4512: 'The VM\'s console answered with an unexpected protocol.',
};

/**
 * A sentence for a person, from a close event.
 * @param {number|null} code  the close code (null when there was no socket)
 * @param {string} reason     the close reason the proxy sent, if any
 * @param {boolean} opened    whether the WebSocket had opened before it closed
 */
export function closeMessage(code, reason, opened) {
    if (code === 1006 || code === null) {
        return opened
            ? 'The connection to the console proxy was lost.'
            : 'The console proxy refused the connection or could not be reached '
              + '(it may not allow this page\'s origin, or it is down).';
    }
    const known = MESSAGES[code];
    if (known) {
        // The proxy's own reason is more precise for the "generic" codes; ours reads better for
        // the rest.
        if ((code === 1000 || code === 1005) && reason) return 'Disconnected: ' + reason + '.';
        return known;
    }
    if (reason) return 'Disconnected: ' + reason + ' (code ' + code + ').';
    return 'Disconnected (code ' + code + ').';
}
