// Plain-words explanations of the WebSocket close codes the proxy sends.

// The table comes from the server (proxy/closecodes.py PAGE_MESSAGES), rendered into the page.
function loadMessages() {
    const node = document.getElementById('close-messages');
    try {
        return node ? JSON.parse(node.textContent) : {};
    } catch (err) {
        return {};
    }
}

const MESSAGES = loadMessages();

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
        // The proxy's own reason is more precise for the "generic" codes (and says whether a
        // 4502 was unreachable or reset); ours reads better for the rest.
        if ((code === 1000 || code === 1005 || code === 4502) && reason) {
            return 'Disconnected: ' + reason + '.';
        }
        return known;
    }
    if (reason) return 'Disconnected: ' + reason + ' (code ' + code + ').';
    return 'Disconnected (code ' + code + ').';
}
