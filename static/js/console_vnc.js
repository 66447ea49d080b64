// The VNC console page: reads the ticket from the URL fragment, opens the WebSocket to the proxy
// itself (so the close code and reason are ours to show) and hands it to noVNC. The ticket, status
// and portal messages are shared with the SPICE page (console_common.js).

import RFB from '../novnc/core/rfb.js';
import { $, CLOSE_EVENT_GRACE_MS, ConsolePage, websocketUrl } from './console_common.js';

const ui = {
    statusText: $('status-text'),
    screen: $('screen'),
    overlay: $('overlay'),
    overlayText: $('overlay-text'),
    idleWarning: $('idle-warning'),
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

let rfb = null;
let socket = null;
let session = null;             // what we learn about the current connection

const page = new ConsolePage(ui, { connect, connectedText, onStateChange });
const options = page.options;

ui.scale.value = options.scale;
wireToolbar();
page.start();

// ----- the connection ---------------------------------------------------------------------

function connect() {
    teardown();
    const ticket = page.takeToken();
    session = { opened: false, closeEvent: null, rfbDone: false, securityReason: '', name: '',
                finished: false, graceTimer: null };
    const current = session;
    page.setState('connecting', 'Connecting…');

    try {
        // The ticket rides in Sec-WebSocket-Protocol, not in the URL, so no proxy logs it.
        socket = new WebSocket(websocketUrl(), ['binary', 'token.' + ticket]);
    } catch (err) {
        page.disconnected(null, 'Could not open a connection to the console proxy: ' + err.message);
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
        page.disconnected(null, 'The console could not start in this browser: ' + err.message);
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
        if (session === current && page.isConnected()) page.showConnected();
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
    hideCredentials();
    page.showConnected();
    if (!options.viewOnly) rfb.focus({ preventScroll: true });
}

function connectedText() {
    const name = session && session.name ? ' to ' + session.name : '';
    return 'Connected' + name + (options.viewOnly ? ' (view only)' : '');
}

function onStateChange(state) {
    const connected = state === 'connected';
    ui.cad.disabled = !connected || options.viewOnly;
    ui.clipboardSendButton.disabled = !connected || options.viewOnly;
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
    const text = current.securityReason
        ? 'The console refused the login: ' + current.securityReason + '.'
        : '';
    page.finished(current.closeEvent, current.opened, text, () => session === current);
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

// ----- toolbar ----------------------------------------------------------------------------

function focusConsole() {
    if (rfb) rfb.focus({ preventScroll: true });
}

function wireToolbar() {
    ui.cad.addEventListener('click', () => {
        if (rfb) {
            rfb.sendCtrlAltDel();
            focusConsole();
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
        if (!rfb || !page.isConnected()) return;
        rfb.clipboardPasteFrom(ui.clipboardSend.value);
        focusConsole();
    });
    ui.scale.addEventListener('change', () => {
        options.scale = ui.scale.value;
        applyScale();
        focusConsole();
    });
    page.wireCommonButtons(focusConsole);
    ui.credentialsForm.addEventListener('submit', sendCredentials);
    // Inside an iframe the page only gets keys once it has focus: a click on the console
    // area (not only on the canvas) hands the keyboard to the VM.
    ui.screen.addEventListener('mousedown', () => {
        if (rfb && ui.credentials.hidden && page.isConnected()) focusConsole();
    });
}

function applyScale() {
    if (!rfb) return;
    rfb.scaleViewport = options.scale === 'fit';
    rfb.resizeSession = options.scale === 'remote';
    rfb.clipViewport = false;
    ui.screen.dataset.scale = options.scale;
}

// ----- credentials (only when the proxy does not know the console password) ---------------

function askCredentials(types) {
    ui.usernameRow.hidden = !types.includes('username');
    ui.credentials.hidden = false;
    ui.overlay.hidden = true;
    page.setStatus('The console asks for a password.');
    (types.includes('username') ? ui.username : ui.password).focus();
}

function sendCredentials(event) {
    event.preventDefault();
    if (!rfb) return;
    const creds = { password: ui.password.value };
    if (!ui.usernameRow.hidden) creds.username = ui.username.value;
    ui.password.value = '';         // don't keep the password in the page
    hideCredentials();
    page.setStatus('Checking the password…');
    rfb.sendCredentials(creds);
}

function hideCredentials() {
    ui.credentials.hidden = true;
    ui.password.value = '';
}
