// The SPICE console page: spice-html5 (npm @spice-project/spice-html5 0.2.1) with the VNC page's
// toolbar, status line and portal messages (console_common.js).
//
// spice-html5 opens one WebSocket per SPICE channel (main, then display, inputs, cursor, ... to
// the main socket's URL), always asking for the `binary` subprotocol. The page's WebSocket
// wrapper (watchSockets) adds the ticket to each of them as a `token.<ticket>` subprotocol, as
// the VNC page does, so the ticket is in no URL; one SPICE ticket admits a few channel sockets
// for a short while. The page sends no password: the proxy puts the real one into every
// channel's link.
//
// spice-html5 creates those sockets itself and reports only some failures (none for the other
// channels), so the page watches every socket it opens: the first close that the page did not
// ask for ends the session, and its close code says why. spice_auto.html reconnects forever on a
// failure; this page does not (only a proxy restart, 1001, is retried a few times).
//
// Keys: spice-html5 sends only what the browser's key events map to, plus its own Ctrl-Alt-Del.
// The Keys menu and the on-screen keyboard build SPICE key messages themselves (PC scancodes,
// set 1, on the inputs channel), so every combination works as on the VNC page. Text from the
// on-screen keyboard is typed on a US layout; characters it lacks are not sent.
// Clipboard: spice-html5 0.2.1 carries none (no agent clipboard messages); the page says so.

import * as SpiceHtml5 from '../spice/src/main.js';
import * as SpiceMessages from '../spice/src/spicemsg.js';
import { Constants as SpiceConstants } from '../spice/src/enums.js';
import { $, CLOSE_EVENT_GRACE_MS, ConsolePage, websocketUrl } from './console_common.js';
import { say, t } from './i18n.js';
import { KeyControls } from './keys.js';

const RESIZE_DEBOUNCE_MS = 200;
const BLOCKED_IN_VIEW_ONLY = ['keydown', 'keyup', 'keypress', 'mousedown', 'mouseup', 'mousemove',
                              'wheel', 'contextmenu', 'click', 'dblclick'];

const ui = {
    statusText: $('status-text'),
    screen: $('screen'),
    frame: $('spice-frame'),
    spiceScreen: $('spice-screen'),
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
    scale: $('scale'),
    fullscreen: $('btn-fullscreen'),
    reconnect: $('btn-reconnect'),
    overlayReconnect: $('btn-overlay-reconnect'),
};

let sc = null;                  // spice-html5's SpiceMainConn
let session = null;             // what we learn about the current connection
let resizeTimer = null;

const page = new ConsolePage(ui, { connect, connectedText, onStateChange });
const options = page.options;
const keys = new KeyControls(
    { button: ui.keys, menu: ui.keysMenu, bar: ui.extraKeys, keyboardButton: ui.keyboard,
      touchInput: ui.touchInput },
    { key: sendKey, text: sendText },
    page,
    focusConsole,
);

watchSockets();
ui.scale.value = options.scale;
wireToolbar();
new MutationObserver(layout).observe(ui.spiceScreen, { childList: true });
window.addEventListener('resize', onWindowResize);
page.start();

// ----- the connection ---------------------------------------------------------------------

function connect() {
    teardown();
    const url = new URL(websocketUrl());
    session = { opened: false, closeEvent: null, error: '', agent: false, finished: false,
                graceTimer: null, sockets: [], ticket: page.takeToken() };
    const current = session;
    page.setState('connecting', say('console.connecting'));
    try {
        sc = new SpiceHtml5.SpiceMainConn({
            uri: url.href,
            screen_id: ui.spiceScreen.id,
            password: '',           // the proxy knows it; the page never does
            onerror: (err) => onSpiceError(current, err),
            onsuccess: () => onConnect(current),
            onagent: () => onAgent(current),
        });
    } catch (err) {
        sc = null;
        page.disconnected(null, say('console.startFailed', { reason: err.message }));
    }
}

// Every socket spice-html5 opens is created through this subclass, so each channel carries the
// ticket in its subprotocols (never in the URL) and its close code reaches the page. Our
// listeners run before spice-html5's (they are added first).
function watchSockets() {
    const NativeWebSocket = window.WebSocket;
    class ChannelSocket extends NativeWebSocket {
        constructor(url, protocols) {
            super(url, withTicket(protocols, session));
            const current = session;
            if (!current) return;
            const main = current.sockets.length === 0;
            current.sockets.push(this);
            this.addEventListener('open', () => { if (main) current.opened = true; });
            // A failed socket also gets a close event, which says more; spice-html5 would
            // throw from this event on channels other than main (they have no onerror).
            this.addEventListener('error', (event) => event.stopImmediatePropagation());
            this.addEventListener('close', (event) => onSocketClose(current, event));
        }
    }
    window.WebSocket = ChannelSocket;
}

// spice-html5 asks for 'binary' only; the proxy echoes that and reads the ticket from the rest.
function withTicket(protocols, current) {
    const list = protocols === undefined ? [] : [].concat(protocols);
    return current && current.ticket ? [...list, 'token.' + current.ticket] : list;
}

function onSocketClose(current, event) {
    if (current.finished || session !== current) return;
    current.closeEvent = { code: event.code, reason: event.reason };
    finish(current);
}

function onConnect(current) {
    if (session !== current) return;
    page.showConnected();
    focusConsole();
}

function onAgent(current) {
    if (session !== current) return;
    current.agent = true;
    if (options.scale === 'remote') resizeRemote();
}

function onSpiceError(current, err) {
    if (current.finished || session !== current) return;
    current.error = (err && err.message) || String(err);
    // A refused login or a link error arrives before the proxy's close frame, which explains it
    // better: wait for that a moment.
    clearTimeout(current.graceTimer);
    current.graceTimer = setTimeout(() => finish(current), CLOSE_EVENT_GRACE_MS);
}

function finish(current) {
    if (current.finished || session !== current) return;
    clearTimeout(current.graceTimer);
    const text = !current.closeEvent && current.error
        ? say('console.spiceStopped', { reason: current.error.replace(/\.$/, '') })
        : '';
    teardown();
    page.finished(current.closeEvent, current.opened, text, () => session === current);
}

function teardown() {
    if (session) {
        session.finished = true;
        clearTimeout(session.graceTimer);
    }
    if (sc) {
        try { sc.stop(); } catch (err) { /* already gone */ }
        sc = null;
    }
    ui.spiceScreen.replaceChildren();
}

function connectedText() {
    const status = t('console.connected');
    return options.viewOnly ? t('console.viewOnlySuffix', { status }) : status;
}

function onStateChange(state) {
    ui.cad.disabled = state !== 'connected' || options.viewOnly;
    keys.setEnabled(state === 'connected' && !options.viewOnly);
}

// ----- toolbar ----------------------------------------------------------------------------

function canvas() {
    return ui.spiceScreen.querySelector('canvas');
}

function focusConsole() {
    const target = canvas();
    if (target && !options.viewOnly) target.focus({ preventScroll: true });
}

function sendCtrlAltDel() {
    if (!sc || !page.isConnected()) return;
    // spice-html5 0.2.1's sendCtrlAltDel reads the connection from a global named `sc`.
    window.sc = sc;
    try {
        SpiceHtml5.sendCtrlAltDel();
    } finally {
        delete window.sc;
    }
    focusConsole();
}

function wireToolbar() {
    ui.cad.addEventListener('click', sendCtrlAltDel);
    ui.clipboardToggle.addEventListener('click', () => {
        const open = ui.clipboardPanel.hidden;
        ui.clipboardPanel.hidden = !open;
        ui.clipboardToggle.setAttribute('aria-expanded', String(open));
        ui.clipboardToggle.classList.toggle('active', open);
    });
    ui.scale.addEventListener('change', () => {
        options.scale = ui.scale.value;
        layout();
        if (options.scale === 'remote') resizeRemote();
        focusConsole();
    });
    page.wireCommonButtons(focusConsole);
    // Inside an iframe the page only gets keys once it has focus: a click anywhere on the
    // console area hands the keyboard to the VM.
    ui.screen.addEventListener('mousedown', (event) => {
        if (page.isConnected() && !event.target.closest('.overlay')) focusConsole();
    });
    if (options.viewOnly) {
        // spice-html5 listens on its canvas; stopping the events on the way down keeps them
        // from the VM.
        for (const type of BLOCKED_IN_VIEW_ONLY) {
            ui.frame.addEventListener(type, (event) => {
                event.stopPropagation();
                event.preventDefault();
            }, { capture: true });
        }
    }
}

// ----- scaling ----------------------------------------------------------------------------

// Fits the console into the window with a CSS transform (see console_spice.css); "none" and
// "remote" show it at its own size.
function layout() {
    ui.screen.dataset.scale = options.scale;
    const surface = canvas();
    if (!surface) return;
    const width = surface.width;
    const height = surface.height;
    let factor = 1;
    if (options.scale === 'fit') {
        const area = ui.screen.getBoundingClientRect();
        factor = Math.min(area.width / width, area.height / height) || 1;
    }
    ui.spiceScreen.style.width = width + 'px';
    ui.spiceScreen.style.transform = factor === 1 ? '' : 'scale(' + factor + ')';
    ui.frame.style.width = Math.floor(width * factor) + 'px';
    ui.frame.style.height = Math.floor(height * factor) + 'px';
}

// Asks the guest to change its resolution to the window's size; needs the SPICE guest agent.
function resizeRemote() {
    if (!sc || !session || !session.agent) return;
    const area = ui.screen.getBoundingClientRect();
    // Xorg wants multiples of 8 (spice-html5's resize.js does the same).
    const width = Math.floor(area.width / 8) * 8;
    const height = Math.floor(area.height / 8) * 8;
    if (width > 0 && height > 0) sc.resize_window(0, width, height, 32, 0, 0);
}

function onWindowResize() {
    layout();
    if (options.scale !== 'remote') return;
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(resizeRemote, RESIZE_DEBOUNCE_MS);
}

// ----- keys from the Keys menu, the extra-keys bar and the on-screen keyboard -----------------

// A US layout's characters that are not letters or digits: [scancode, with Shift].
const US_CHARS = {
    ' ': [0x39, false], '-': [0x0C, false], '=': [0x0D, false], '[': [0x1A, false],
    ']': [0x1B, false], ';': [0x27, false], "'": [0x28, false], '`': [0x29, false],
    '\\': [0x2B, false], ',': [0x33, false], '.': [0x34, false], '/': [0x35, false],
    '!': [0x02, true], '@': [0x03, true], '#': [0x04, true], '$': [0x05, true],
    '%': [0x06, true], '^': [0x07, true], '&': [0x08, true], '*': [0x09, true],
    '(': [0x0A, true], ')': [0x0B, true], '_': [0x0C, true], '+': [0x0D, true],
    '{': [0x1A, true], '}': [0x1B, true], ':': [0x27, true], '"': [0x28, true],
    '~': [0x29, true], '|': [0x2B, true], '<': [0x33, true], '>': [0x34, true],
    '?': [0x35, true], '\n': [0x1C, false], '\t': [0x0F, false],
};
const SHIFT_SCANCODE = 0x2A;

// spice-html5's encoding of a scancode in a key message: 0xE0-prefixed keys carry the prefix in
// the low byte; a release sets bit 7 of the key's byte.
function spiceKeyCode(scancode, down) {
    if (scancode < 0x100) return down ? scancode : scancode | 0x80;
    const low = (scancode & 0xFF) << 8;
    return down ? 0xE0 | low : 0x80E0 | low;
}

function sendScancode(scancode, down) {
    if (!sc || !sc.inputs || sc.inputs.state !== 'ready' || !page.isConnected()) return;
    const key = down ? new SpiceMessages.SpiceMsgcKeyDown() : new SpiceMessages.SpiceMsgcKeyUp();
    key.code = spiceKeyCode(scancode, down);
    const message = new SpiceMessages.SpiceMiniData();
    message.build_msg(down ? SpiceConstants.SPICE_MSGC_INPUTS_KEY_DOWN
        : SpiceConstants.SPICE_MSGC_INPUTS_KEY_UP, key);
    sc.inputs.send_msg(message);
}

function sendKey(name, [, , scancode], down) {
    sendScancode(scancode, down);
}

function charScancode(char) {
    const upper = char.toUpperCase();
    const entry = keys.data.keys[upper];
    if (entry && /^[A-Z0-9]$/.test(upper)) return [entry[2], char !== char.toLowerCase()];
    return US_CHARS[char] || null;
}

function sendText(text) {
    for (const char of text) {
        const found = charScancode(char);
        if (!found) continue;  // not on a US keyboard: SPICE sends keys, not characters
        const [scancode, shift] = found;
        const shiftHeld = keys.held.has('Shift');
        if (shift && !shiftHeld) sendScancode(SHIFT_SCANCODE, true);
        sendScancode(scancode, true);
        sendScancode(scancode, false);
        if (shift && !shiftHeld) sendScancode(SHIFT_SCANCODE, false);
    }
}
