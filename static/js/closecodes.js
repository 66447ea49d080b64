// Plain-words explanations of the WebSocket close codes the proxy sends, in the page's language.
// The sentences come from the server (proxy/languages/<tag>.json, "closeCodes"), rendered into
// the page with the rest of its words (i18n.js).

import { has, t } from './i18n.js';

/**
 * A sentence for a person, from a close event: a function that renders it in the current
 * language (the page may switch language while it is shown).
 * @param {number|null} code  the close code (null when there was no socket)
 * @param {string} reason     the close reason the proxy sent, if any
 * @param {boolean} opened    whether the WebSocket had opened before it closed
 */
export function closeMessage(code, reason, opened) {
    return () => closeSentence(code, reason, opened);
}

function closeSentence(code, reason, opened) {
    if (code === 1006 || code === null || code === undefined) {
        return opened ? t('console.lost') : t('console.refused');
    }
    const key = 'closeCodes.' + code;
    if (has(key)) {
        // The proxy's own reason is more precise for the "generic" codes (and says whether a
        // 4502 was unreachable or reset); ours reads better for the rest.
        if ((code === 1000 || code === 1005 || code === 4502) && reason) {
            return t('console.withReason', { message: t(key), reason });
        }
        return t(key);
    }
    if (reason) return t('console.unknownWithReason', { reason, code });
    return t('console.unknownCode', { code });
}
