// The VNC console page: reads the ticket from the URL fragment, opens the WebSocket to the proxy
// itself (so the close code and reason are ours to show) and hands it to noVNC.
//
// Messages to and from the embedding portal (window.parent, or window.opener for a new tab):
//   out: {type: 'console-proxy:status', state: 'connecting'|'connected'|'disconnected', code, reason}
//   out: {type: 'console-proxy:need-ticket'}      (tickets are single-use; "Reconnect" needs a new one)
//   in:  {type: 'console-proxy:ticket', token}    (accepted only from that same window)

import RFB from '../novnc/core/rfb.js';
import { closeMessage } from './closecodes.js';

const TICKET_WAIT_MS = 3000;
// After noVNC gives up, the socket's own close event may still be on its way.
const CLOSE_EVENT_GRACE_MS = 1500;
const AUTO_RECONNECT_DELAYS_MS = [1000, 2000, 4000];

const $ = (id) => document.getElementById(id);
const ui = {
    statusText: $('status-text'),
    screen: $('screen'),
    overlay: $('overlay'),
    overlayText: $('overlay-text'),
    cad: $('btn-cad'),
    clipboardToggle: $('btn-clipboard'),
    clipboardPanel: $('clipboard-panel'),
    clipboardForm: $('clipboard-form'),
    clipboardSend: $('clipboard-send'),
    clipboardSendButton: $('btn-clipboard-send'),
    clipboardReceived: $('clipboard-received'),
    scale: $('scale'),
    fullscreen: $('btn-fullscreen'),
    reconnect: $('btn-reconnect'),
    overlayReconnect: $('btn-overlay-reconnect'),
    credentials: $('credentials'),
    credentialsForm: $('credentials-form'),
    usernameRow: $('credentials-username-row'),
    username: $('credentials-username'),
    password: $('credentials-password'),
};

// The window that gave us the ticket and can mint another: the parent frame, else the opener.
const portal = window.parent !== window ? window.parent : (window.opener || null);

const options = readFragment();
let token = options.token;      // kept in memory only; single-use, cleared once spent
let rfb = null;
let socket = null;
let session = null;             // what we learn about the current connection
let ticketTimer = null;
let awaitingTicket = false;
let autoReconnects = 0;

ui.scale.value = options.scale;
wireToolbar();
window.addEventListener('message', onPortalMessage);

if (token) {
    connect();
} else if (portal) {
    // Reloaded (the ticket was taken out of the URL) or embedded without one: ask for one.
    requestReconnect();
} else {
    disconnected(null, 'This page needs a console ticket. Open the console again from the portal.');
}

// ----- the connection ---------------------------------------------------------------------

function readFragment() {
    const params = new URLSearchParams(window.location.hash.replace(/^#/, ''));
    const found = {
        token: params.get('token') || '',
        scale: ['fit', 'remote', 'none'].includes(params.get('scale')) ? params.get('scale') : 'fit',
        viewOnly: ['1', 'true', 'yes'].includes(params.get('view_only')),
    };
    // Take the ticket out of the address bar (and so out of history, bookmarks, screenshots).
    params.delete('token');
    const rest = params.toString();
    const url = window.location.pathname + window.location.search + (rest ? '#' + rest : '');
    window.history.replaceState(window.history.state, '', url);
    return found;
}

function websocketUrl() {
    const url = new URL('../websockify', window.location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    url.hash = '';
    url.search = '';
    return url.href;
}

function connect() {
    teardown();
    clearTimeout(ticketTimer);
    awaitingTicket = false;
    const ticket = token;
    token = '';     // a ticket opens one connection; the next one needs a fresh ticket
    session = { opened: false, closeEvent: null, rfbDone: false, securityReason: '', name: '',
                finished: false, graceTimer: null };
    const current = session;
    setState('connecting', 'Connecting…');

    try {
        // The ticket rides in Sec-WebSocket-Protocol, not in the URL, so no proxy logs it.
        socket = new WebSocket(websocketUrl(), ['binary', 'token.' + ticket]);
    } catch (err) {
        disconnected(null, 'Could not open a connection to the console proxy: ' + err.message);
        return;
    }
    socket.binaryType = 'arraybuffer';
    // Registered before noVNC attaches its handlers, so we see the close code first.
    socket.addEventListener('open', () => { current.opened = true; });
    socket.addEventListener('close', (event) => {
        current.closeEvent = { code: event.code, reason: event.reason };
        if (current.rfbDone) finish(current);
    });

    try {
        rfb = new RFB(ui.screen, socket, { shared: true });
    } catch (err) {
        socket.close();
        disconnected(null, 'The console could not start in this browser: ' + err.message);
        return;
    }
    applyScale();
    rfb.viewOnly = options.viewOnly;
    rfb.focusOnClick = true;
    rfb.background = 'transparent';
    rfb.addEventListener('connect', () => onConnect(current));
    rfb.addEventListener('disconnect', () => onRfbDisconnect(current));
    rfb.addEventListener('desktopname', (e) => {
        current.name = e.detail.name;
        if (session === current && isConnected()) showConnected();
    });
    rfb.addEventListener('credentialsrequired', (e) => askCredentials(e.detail.types || []));
    rfb.addEventListener('securityfailure', (e) => {
        current.securityReason = (e.detail.reason || '').trim() || 'wrong password or user name';
    });
    rfb.addEventListener('clipboard', (e) => { ui.clipboardReceived.value = e.detail.text; });
    rfb.addEventListener('bell', () => {
        ui.screen.classList.add('bell');
        setTimeout(() => ui.screen.classList.remove('bell'), 300);
    });
}

function onConnect(current) {
    if (session !== current) return;
    autoReconnects = 0;
    hideCredentials();
    showConnected();
    if (!options.viewOnly) rfb.focus({ preventScroll: true });
}

function showConnected() {
    const name = session.name ? ' to ' + session.name : '';
    setState('connected', 'Connected' + name + (options.viewOnly ? ' (view only)' : ''));
}

function onRfbDisconnect(current) {
    current.rfbDone = true;
    hideCredentials();
    if (current.closeEvent) {
        finish(current);
    } else {
        // noVNC gave up on its own (e.g. a failed login) and closed the socket; wait briefly
        // for the close frame so we can show the proxy's reason if it sent one.
        current.graceTimer = setTimeout(() => finish(current), CLOSE_EVENT_GRACE_MS);
    }
}

function finish(current) {
    if (current.finished || session !== current) return;
    current.finished = true;
    clearTimeout(current.graceTimer);
    const close = current.closeEvent || { code: null, reason: '' };
    const restarting = close.code === 1001;
    let text;
    if (current.securityReason) {
        text = 'The console refused the login: ' + current.securityReason + '.';
    } else if (restarting && !portal) {
        text = 'The console proxy restarted. Open the console again from the portal.';
    } else {
        text = closeMessage(close.code, close.reason, current.opened);
    }
    disconnected(close.code, text, close.reason);
    if (restarting && portal && autoReconnects < AUTO_RECONNECT_DELAYS_MS.length) {
        // The proxy is restarting: get a fresh ticket and try again, a few times, backing off.
        const delay = AUTO_RECONNECT_DELAYS_MS[autoReconnects++];
        setTimeout(() => { if (session === current) requestReconnect(); }, delay);
    }
}

function teardown() {
    const live = session && !session.rfbDone;
    if (session) session.finished = true;
    if (rfb && live) {
        try { rfb.disconnect(); } catch (err) { /* already gone */ }
    }
    rfb = null;
    socket = null;
}

// ----- state and status ------------------------------------------------------------------

function setState(state, text, code = null, reason = '') {
    document.body.dataset.state = state;
    if (code === null || code === undefined) {
        delete document.body.dataset.closeCode;
    } else {
        document.body.dataset.closeCode = String(code);
    }
    ui.statusText.textContent = text;
    ui.statusText.title = text;
    const connected = state === 'connected';
    ui.cad.disabled = !connected || options.viewOnly;
    ui.clipboardSendButton.disabled = !connected || options.viewOnly;
    ui.overlay.hidden = state !== 'disconnected';
    ui.overlayText.textContent = text;
    tellPortal({ type: 'console-proxy:status', state, code, reason });
}

function disconnected(code, text, reason = '') {
    setState('disconnected', text, code, reason);
}

function tellPortal(message) {
    if (!portal) return;
    try {
        // Status carries no secret, so any embedding origin may read it.
        portal.postMessage(message, '*');
    } catch (err) { /* the portal went away */ }
}

// ----- reconnecting with a fresh ticket ---------------------------------------------------

function requestReconnect() {
    clearTimeout(ticketTimer);
    if (token) {
        connect();
        return;
    }
    if (!portal) {
        ticketUsed();
        return;
    }
    awaitingTicket = true;
    // A working connection stays up until the new ticket arrives.
    if (isConnected()) {
        ui.statusText.textContent = 'Asking the portal for a new console ticket…';
    } else {
        setState('connecting', 'Asking the portal for a new console ticket…');
    }
    tellPortal({ type: 'console-proxy:need-ticket' });
    ticketTimer = setTimeout(ticketUsed, TICKET_WAIT_MS);
}

function ticketUsed() {
    ticketTimer = null;
    if (isConnected()) {
        showConnected();
        ui.statusText.textContent += '. (No new ticket: to reconnect, open the console again '
            + 'from the portal.)';
        return;
    }
    const code = document.body.dataset.closeCode;
    disconnected(code ? Number(code) : null,
        'This console ticket was already used. Open the console again from the portal.');
}

function isConnected() {
    return document.body.dataset.state === 'connected';
}

function onPortalMessage(event) {
    // Only the window that embedded or opened us may hand us a ticket, and only when asked.
    if (!portal || event.source !== portal || !awaitingTicket) return;
    const data = event.data;
    if (!data || typeof data !== 'object' || data.type !== 'console-proxy:ticket') return;
    if (typeof data.token !== 'string' || !data.token) return;
    clearTimeout(ticketTimer);
    ticketTimer = null;
    awaitingTicket = false;
    token = data.token;
    connect();
}

// ----- toolbar ----------------------------------------------------------------------------

function wireToolbar() {
    ui.cad.addEventListener('click', () => {
        if (rfb) {
            rfb.sendCtrlAltDel();
            rfb.focus({ preventScroll: true });
        }
    });
    ui.clipboardToggle.addEventListener('click', () => {
        const open = ui.clipboardPanel.hidden;
        ui.clipboardPanel.hidden = !open;
        ui.clipboardToggle.setAttribute('aria-expanded', String(open));
        ui.clipboardToggle.classList.toggle('active', open);
        if (open) ui.clipboardSend.focus();
    });
    ui.clipboardForm.addEventListener('submit', (e) => {
        e.preventDefault();
        if (!rfb || !isConnected()) return;
        rfb.clipboardPasteFrom(ui.clipboardSend.value);
        rfb.focus({ preventScroll: true });
    });
    ui.scale.addEventListener('change', () => {
        options.scale = ui.scale.value;
        applyScale();
        if (rfb) rfb.focus({ preventScroll: true });
    });
    ui.fullscreen.addEventListener('click', toggleFullscreen);
    document.addEventListener('fullscreenchange', () => {
        const on = Boolean(document.fullscreenElement);
        ui.fullscreen.setAttribute('aria-pressed', String(on));
        ui.fullscreen.textContent = on ? 'Exit full screen' : 'Full screen';
    });
    if (!document.fullscreenEnabled) {
        ui.fullscreen.disabled = true;
        ui.fullscreen.title = 'Full screen is not allowed here (an iframe needs allow="fullscreen")';
    }
    ui.reconnect.addEventListener('click', requestReconnect);
    ui.overlayReconnect.addEventListener('click', requestReconnect);
    ui.credentialsForm.addEventListener('submit', sendCredentials);
    // Inside an iframe the page only gets keys once it has focus: a click on the console
    // area (not only on the canvas) hands the keyboard to the VM.
    ui.screen.addEventListener('mousedown', () => {
        if (rfb && ui.credentials.hidden && isConnected()) {
            rfb.focus({ preventScroll: true });
        }
    });
}

function applyScale() {
    if (!rfb) return;
    rfb.scaleViewport = options.scale === 'fit';
    rfb.resizeSession = options.scale === 'remote';
    rfb.clipViewport = false;
    ui.screen.dataset.scale = options.scale;
}

function toggleFullscreen() {
    const request = document.fullscreenElement
        ? document.exitFullscreen()
        : document.documentElement.requestFullscreen();
    Promise.resolve(request)
        .then(() => { if (rfb) rfb.focus({ preventScroll: true }); })
        .catch(() => { ui.statusText.textContent += ' (full screen was refused by the browser)'; });
}

// ----- credentials (only when the proxy does not know the console password) ---------------

function askCredentials(types) {
    ui.usernameRow.hidden = !types.includes('username');
    ui.credentials.hidden = false;
    ui.overlay.hidden = true;
    ui.statusText.textContent = 'The console asks for a password.';
    (types.includes('username') ? ui.username : ui.password).focus();
}

function sendCredentials(event) {
    event.preventDefault();
    if (!rfb) return;
    const creds = { password: ui.password.value };
    if (!ui.usernameRow.hidden) creds.username = ui.username.value;
    ui.password.value = '';         // don't keep the password in the page
    hideCredentials();
    ui.statusText.textContent = 'Checking the password…';
    rfb.sendCredentials(creds);
}

function hideCredentials() {
    ui.credentials.hidden = true;
    ui.password.value = '';
}
