// The demo index page plays a portal. It is also the worked example for portal developers:
//
//  1. The portal holds a ZStack session (here: `POST demo/session` logs in to the simulator).
//  2. It mints a single-use console ticket: `POST api/v1/consoles` with
//     `Authorization: OAuth <session>` and `{"vmUuid": ...}` → `{token, consoleUrl, ...}`.
//  3. It opens `consoleUrl` (the ticket is in its #fragment) in an iframe or a new tab.
//  4. It answers the console page's `console-proxy:need-ticket` message (sent by its Reconnect
//     button) with a fresh `{type: 'console-proxy:ticket', token}`, checking which window asked.

const $ = (id) => document.getElementById(id);
// The page's words in its language (#demo-text, from proxy/languages/).
const TEXT = JSON.parse($('demo-text').textContent);
const STATES = {
    connecting: 'stateConnecting',
    connected: 'stateConnected',
    disconnected: 'stateDisconnected',
};
const say = (key, values = {}) =>
    TEXT[key].replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ''));
const ui = {
    message: $('message'),
    embed: $('embed'),
    embedName: $('embed-name'),
    embedStatus: $('embed-status'),
    embedClose: $('embed-close'),
    frame: $('console-frame'),
};

let zstackSession = null;
// Console windows we opened (iframe or tab) → {vm, origin}, so a ticket request is answered only
// for a window we know, from the proxy's origin, and only with a ticket for its own VM.
const consoles = new Map();

class ApiError extends Error {}

document.querySelectorAll('tr[data-vm-uuid] button[data-open]').forEach((button) => {
    button.addEventListener('click', () => {
        const row = button.closest('tr');
        const vm = { uuid: row.dataset.vmUuid, name: row.dataset.vmName };
        open(vm, button.dataset.open, button).catch(showError);
    });
});
ui.embedClose.addEventListener('click', closeEmbed);
window.addEventListener('message', onConsoleMessage);

async function open(vm, where, button) {
    hideError();
    // A new tab must be opened while the click still counts as a user gesture, before any await.
    const tab = where === 'tab' ? window.open('about:blank', '_blank') : null;
    button.disabled = true;
    try {
        const ticket = await mintTicket(vm.uuid);
        if (where === 'tab') {
            if (!tab) throw new ApiError(say('popupBlocked'));
            tab.location.href = absolute(ticket.consoleUrl);
            consoles.set(tab, { vm, origin: new URL(absolute(ticket.consoleUrl)).origin });
        } else {
            showEmbed(vm, ticket.consoleUrl);
        }
    } catch (err) {
        if (tab) tab.close();
        throw err;
    } finally {
        button.disabled = false;
    }
}

async function session() {
    if (!zstackSession) {
        const body = await postJson('demo/session', {}, {});
        zstackSession = body.session;
    }
    return zstackSession;
}

async function mintTicket(vmUuid) {
    const headers = { Authorization: 'OAuth ' + await session() };
    try {
        return await postJson('api/v1/consoles', headers, { vmUuid });
    } catch (err) {
        if (err.status !== 401) throw err;
        zstackSession = null;   // the simulator's session expired: log in once more
        headers.Authorization = 'OAuth ' + await session();
        return postJson('api/v1/consoles', headers, { vmUuid });
    }
}

async function postJson(url, headers, body) {
    let response;
    try {
        response = await fetch(url, {
            method: 'POST',
            headers: { 'Content-Type': 'application/json', Accept: 'application/json', ...headers },
            body: JSON.stringify(body),
            credentials: 'same-origin',
            cache: 'no-store',
        });
    } catch (err) {
        throw new ApiError(say('unreachable', { reason: err.message }));
    }
    let data = null;
    try {
        data = await response.json();
    } catch (err) {
        data = null;
    }
    if (!response.ok) {
        const error = (data && data.error) || {};
        const text = error.description || say('httpStatus', { status: response.status });
        const e = new ApiError(text + (error.code ? ' (' + error.code + ')' : ''));
        e.status = response.status;
        throw e;
    }
    return data;
}

function absolute(url) {
    return new URL(url, window.location.href).href;
}

// ----- the iframe -------------------------------------------------------------------------

function showEmbed(vm, consoleUrl) {
    consoles.delete(ui.frame.contentWindow);
    ui.embedName.textContent = vm.name;
    ui.embedStatus.textContent = '';
    ui.embedStatus.className = 'embed-status';
    ui.embed.hidden = false;
    ui.frame.src = absolute(consoleUrl);
    consoles.set(ui.frame.contentWindow, { vm, origin: new URL(ui.frame.src).origin });
    ui.embed.scrollIntoView({ behavior: 'smooth', block: 'start', inline: 'nearest' });
}

function closeEmbed() {
    consoles.delete(ui.frame.contentWindow);
    ui.frame.src = 'about:blank';
    ui.embed.hidden = true;
}

// ----- messages from console pages ----------------------------------------------------------

function onConsoleMessage(event) {
    // Accept only windows we opened, showing a page from the proxy's origin.
    const known = consoles.get(event.source);
    if (!known || event.origin !== known.origin) return;
    const data = event.data;
    if (!data || typeof data !== 'object') return;
    if (data.type === 'console-proxy:need-ticket') {
        mintTicket(known.vm.uuid)
            .then((ticket) => {
                // Reply to exactly that window and origin: a ticket is a credential.
                event.source.postMessage(
                    { type: 'console-proxy:ticket', token: ticket.token }, event.origin);
            })
            .catch(showError);
    } else if (data.type === 'console-proxy:status' && event.source === ui.frame.contentWindow) {
        const state = STATES[data.state] ? say(STATES[data.state]) : String(data.state);
        ui.embedStatus.textContent = state + (data.code ? ' (' + data.code + ')' : '');
        ui.embedStatus.className = 'embed-status state-' + data.state;
    }
}

// ----- messages to the person -----------------------------------------------------------------

function showError(err) {
    ui.message.textContent = err instanceof ApiError
        ? err.message
        : say('wentWrong', { reason: err.message });
    ui.message.hidden = false;
}

function hideError() {
    ui.message.hidden = true;
    ui.message.textContent = '';
}
