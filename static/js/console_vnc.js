// The VNC console page: reads the ticket from the URL fragment, opens the WebSocket to the proxy
// itself (so the close code and reason are ours to show) and hands it to noVNC. The ticket, status
// and portal messages are shared with the SPICE page (console_common.js).

import RFB from '../novnc/core/rfb.js';
import { $, CLOSE_EVENT_GRACE_MS, ConsolePage, websocketUrl } from './console_common.js';
import { say, t } from './i18n.js';
import { KeyControls } from './keys.js';

// Ctrl+V (or Shift+Insert) on the console: the VM gets this computer's clipboard first.
const PASTE_KEYS = [{ code: 'KeyV', ctrl: true }, { code: 'Insert', shift: true }];
const PASTE_WAIT_MS = 1500;

const ui = {
    statusText: $('status-text'),
    screen: $('screen'),
    overlay: $('overlay'),
    overlayText: $('overlay-text'),
    idleWarning: $('idle-warning'),
    cad: $('btn-cad'),
    keys: $('btn-keys'),
    keysMenu: $('keys-menu'),
    extraKeys: $('extra-keys'),
    keyboard: $('btn-keyboard'),
    touchInput: $('touch-input'),
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
let copied = null;              // text the VM copied that is not on the local clipboard yet

const page = new ConsolePage(ui, { connect, connectedText, onStateChange });
const options = page.options;
const keys = new KeyControls(
    { button: ui.keys, menu: ui.keysMenu, bar: ui.extraKeys, keyboardButton: ui.keyboard,
      touchInput: ui.touchInput },
    { key: sendKey, text: sendText },
    page,
    focusConsole,
);

ui.scale.value = options.scale;
wireToolbar();
page.start();

// ----- the connection ---------------------------------------------------------------------

function connect() {
    teardown();
    const ticket = page.takeToken();
    session = { opened: false, closeEvent: null, rfbDone: false, securityReason: null, name: '',
                finished: false, graceTimer: null };
    const current = session;
    page.setState('connecting', say('console.connecting'));

    try {
        // The ticket rides in Sec-WebSocket-Protocol, not in the URL, so no proxy logs it.
        socket = new WebSocket(websocketUrl(), ['binary', 'token.' + ticket]);
    } catch (err) {
        page.disconnected(null, say('console.socketFailed', { reason: err.message }));
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
        page.disconnected(null, say('console.startFailed', { reason: err.message }));
        return;
    }
    applyScale();
    rfb.viewOnly = options.viewOnly;
    rfb.focusOnClick = true;
    // Pinch to zoom and two-finger pan on a touch screen are noVNC's own gestures (1.7);
    // dragging the viewport is for a console larger than the screen ("No scaling").
    rfb.dragViewport = false;
    rfb.background = 'transparent';
    rfb.addEventListener('connect', () => onConnect(current));
    rfb.addEventListener('disconnect', () => onRfbDisconnect(current));
    rfb.addEventListener('desktopname', (e) => {
        current.name = e.detail.name;
        if (session === current && page.isConnected()) page.showConnected();
    });
    rfb.addEventListener('credentialsrequired', (e) => askCredentials(e.detail.types || []));
    rfb.addEventListener('securityfailure', (e) => {
        current.securityReason = (e.detail.reason || '').trim();
    });
    rfb.addEventListener('clipboard', (e) => onVmCopied(e.detail.text));
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
    const name = session && session.name;
    const status = name ? t('console.connectedTo', { name }) : t('console.connected');
    return options.viewOnly ? t('console.viewOnlySuffix', { status }) : status;
}

function onStateChange(state) {
    const connected = state === 'connected';
    ui.cad.disabled = !connected || options.viewOnly;
    ui.clipboardSendButton.disabled = !connected || options.viewOnly;
    keys.setEnabled(connected && !options.viewOnly);
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
    const reason = current.securityReason;
    const text = reason === null || reason === undefined ? ''
        : say('console.loginRefused', { reason: reason || say('console.loginRefusedDefault') });
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
    wireLocalClipboard();
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
    page.setStatus(say('console.askPassword'));
    (types.includes('username') ? ui.username : ui.password).focus();
}

function sendCredentials(event) {
    event.preventDefault();
    if (!rfb) return;
    const creds = { password: ui.password.value };
    if (!ui.usernameRow.hidden) creds.username = ui.username.value;
    ui.password.value = '';         // don't keep the password in the page
    hideCredentials();
    page.setStatus(say('console.checkingPassword'));
    rfb.sendCredentials(creds);
}

function hideCredentials() {
    ui.credentials.hidden = true;
    ui.password.value = '';
}

// ----- keys from the Keys menu, the extra-keys bar and the on-screen keyboard -----------------

function sendKey(name, [keysym, code], down) {
    // With QEMU's extended key events noVNC sends the scancode of ``code``, else the keysym.
    if (rfb && page.isConnected()) rfb.sendKey(keysym, code, down);
}

function sendText(text) {
    if (!rfb || !page.isConnected()) return;
    for (const char of text) {
        if (char === '\n') {
            rfb.sendKey(0xFF0D, 'Enter');
            continue;
        }
        const point = char.codePointAt(0);
        // Latin-1 keysyms are their code points; the rest of Unicode is 0x01000000 + code point.
        rfb.sendKey(point < 0x100 ? point : 0x01000000 + point, null);
    }
}

// ----- the local clipboard ------------------------------------------------------------------
// Where the browser allows it (focus, a user gesture, and inside an iframe the portal's
// allow="clipboard-read; clipboard-write"), text copied in the VM goes to this computer's
// clipboard, and Ctrl+V on the console sends this computer's clipboard to the VM before the
// keystroke. The panel stays for everything the browser refuses.

function onVmCopied(text) {
    ui.clipboardReceived.value = text;
    copied = text;
    writeLocalClipboard();
}

function writeLocalClipboard() {
    if (copied === null || !navigator.clipboard || !document.hasFocus()) return;
    const text = copied;
    navigator.clipboard.writeText(text).then(() => {
        if (copied === text) copied = null;
        document.body.dataset.clipboardSynced = '1';
    }, () => { /* not allowed now: tried again on the next click or key */ });
}

function wireLocalClipboard() {
    // The VM may copy while the page has no focus or no user activation; try again on the next.
    for (const kind of ['pointerdown', 'keydown', 'focus']) {
        window.addEventListener(kind, writeLocalClipboard, { capture: true, passive: true });
    }
    // Before noVNC (capture on the screen, which holds its canvas) sees the paste keystroke.
    ui.screen.addEventListener('keydown', onPasteKey, { capture: true });
}

function onPasteKey(event) {
    const paste = PASTE_KEYS.some((k) => event.code === k.code && Boolean(k.ctrl) === event.ctrlKey
        && Boolean(k.shift) === event.shiftKey && !event.altKey && !event.metaKey);
    if (!paste || !rfb || !page.isConnected() || options.viewOnly || event.repeat) return;
    if (!navigator.clipboard || !navigator.clipboard.readText) return;
    // Hold the keystroke until the VM has the text, then send it: the VM pastes the new text.
    event.preventDefault();
    event.stopImmediatePropagation();
    const keysym = event.code === 'KeyV' ? 0x76 : 0xFF63;
    const current = rfb;
    // A permission prompt the person ignores must not swallow the keystroke.
    const timeout = new Promise((resolve, reject) => setTimeout(reject, PASTE_WAIT_MS));
    Promise.race([navigator.clipboard.readText(), timeout]).then((text) => {
        if (rfb === current && text) rfb.clipboardPasteFrom(text);
    }, () => { /* not allowed: the VM pastes what it has */ }).finally(() => {
        if (rfb === current && page.isConnected()) rfb.sendKey(keysym, event.code);
    });
}
