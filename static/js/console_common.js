// What the console pages (VNC and SPICE) share: the ticket in the URL fragment, the status line,
// the messages to and from the embedding portal, and the toolbar's common buttons.
//
// Messages to and from the embedding portal (window.parent, or window.opener for a new tab):
//   out: {type: 'console-proxy:status', state: 'connecting'|'connected'|'disconnected', code, reason}
//   out: {type: 'console-proxy:need-ticket'}      (tickets are single-use; "Reconnect" needs a new one)
//   in:  {type: 'console-proxy:ticket', token}    (accepted only from that same window)

import { closeMessage } from './closecodes.js';

export const TICKET_WAIT_MS = 3000;
// After the console library gives up, the socket's own close event may still be on its way.
export const CLOSE_EVENT_GRACE_MS = 1500;
export const AUTO_RECONNECT_DELAYS_MS = [1000, 2000, 4000];
export const SCALES = ['fit', 'remote', 'none'];

// The window that gave us the ticket and can mint another: the parent frame, else the opener.
export const portal = window.parent !== window ? window.parent : (window.opener || null);

export const $ = (id) => document.getElementById(id);

/** Options from the URL fragment; the ticket is taken out of the address bar once read. */
export function readFragment() {
    const params = new URLSearchParams(window.location.hash.replace(/^#/, ''));
    const found = {
        token: params.get('token') || '',
        scale: SCALES.includes(params.get('scale')) ? params.get('scale') : 'fit',
        viewOnly: ['1', 'true', 'yes'].includes(params.get('view_only') || params.get('view')),
    };
    // Out of the address bar means out of history, bookmarks and screenshots too.
    params.delete('token');
    const rest = params.toString();
    const url = window.location.pathname + window.location.search + (rest ? '#' + rest : '');
    window.history.replaceState(window.history.state, '', url);
    return found;
}

/** The proxy's WebSocket endpoint, relative to this page (<base>/console/<protocol>). */
export function websocketUrl() {
    const url = new URL('../websockify', window.location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    url.hash = '';
    url.search = '';
    return url.href;
}

/**
 * The page's connection state, status line and ticket handling. The page supplies:
 *   connect()            open a new connection with page.takeToken()
 *   connectedText()      the status text of a working connection
 *   onStateChange(state) enable or disable its own controls
 */
export class ConsolePage {
    constructor(ui, { connect, connectedText, onStateChange }) {
        this.ui = ui;
        this.connectFn = connect;
        this.connectedText = connectedText;
        this.onStateChange = onStateChange || (() => {});
        this.options = readFragment();
        this.token = this.options.token;  // kept in memory only; single-use, cleared once spent
        this.ticketTimer = null;
        this.awaitingTicket = false;
        this.autoReconnects = 0;
        this.idle = new IdleWatch(this);
        this.peers = new PeerCount($('viewers'));
        window.addEventListener('message', (event) => this.onPortalMessage(event));
        if (this.options.viewOnly) showViewOnly();
    }

    /** Connect with the ticket from the URL, else ask the portal for one, else explain. */
    start() {
        if (this.token) {
            this.connect();
        } else if (portal) {
            // Reloaded (the ticket was taken out of the URL) or embedded without one.
            this.requestReconnect();
        } else {
            this.disconnected(null,
                'This page needs a console ticket. Open the console again from the portal.');
        }
    }

    connect() {
        clearTimeout(this.ticketTimer);
        this.awaitingTicket = false;
        this.connectFn();
    }

    /** The ticket for one connection; the next one needs a fresh ticket. */
    takeToken() {
        const ticket = this.token;
        this.token = '';
        // Spent once the socket opens; kept only to ask how many others are on this VM.
        this.peers.ticket = ticket;
        return ticket;
    }

    // ----- state and status --------------------------------------------------------------

    setState(state, text, code = null, reason = '') {
        document.body.dataset.state = state;
        if (code === null || code === undefined) {
            delete document.body.dataset.closeCode;
        } else {
            document.body.dataset.closeCode = String(code);
        }
        this.setStatus(text);
        this.ui.overlay.hidden = state !== 'disconnected';
        this.ui.overlayText.textContent = text;
        this.onStateChange(state);
        tellPortal({ type: 'console-proxy:status', state, code, reason });
    }

    setStatus(text) {
        this.ui.statusText.textContent = text;
        this.ui.statusText.title = text;
    }

    showConnected() {
        this.autoReconnects = 0;
        this.setState('connected', this.connectedText());
        this.idle.start();
        this.peers.start();
    }

    disconnected(code, text, reason = '') {
        this.idle.stop();
        this.peers.stop();
        this.setState('disconnected', text, code, reason);
    }

    isConnected() {
        return document.body.dataset.state === 'connected';
    }

    /**
     * Show why a connection ended, from its close event (or null when there was none), unless
     * the page knows better (``text``). A proxy restart (1001), or a working connection
     * that was lost (1006: an instance behind the balancer died), is retried a few times.
     * ``stillCurrent()`` says whether that connection is still the page's one.
     */
    finished(close, opened, text, stillCurrent) {
        close = close || { code: null, reason: '' };
        const restarting = close.code === 1001 || (close.code === 1006 && opened);
        if (!text && restarting && !portal) {
            text = 'The console proxy restarted. Open the console again from the portal.';
        }
        this.disconnected(close.code, text || closeMessage(close.code, close.reason, opened),
            close.reason);
        if (restarting && portal && this.autoReconnects < AUTO_RECONNECT_DELAYS_MS.length) {
            // The proxy is restarting: get a fresh ticket and try again, a few times, backing off.
            const delay = AUTO_RECONNECT_DELAYS_MS[this.autoReconnects++];
            setTimeout(() => { if (stillCurrent()) this.requestReconnect(); }, delay);
        }
    }

    // ----- reconnecting with a fresh ticket -----------------------------------------------

    requestReconnect() {
        clearTimeout(this.ticketTimer);
        if (this.token) {
            this.connect();
            return;
        }
        if (!portal) {
            this.ticketUsed();
            return;
        }
        this.awaitingTicket = true;
        // A working connection stays up until the new ticket arrives.
        if (this.isConnected()) {
            this.setStatus('Asking the portal for a new console ticket…');
        } else {
            this.setState('connecting', 'Asking the portal for a new console ticket…');
        }
        tellPortal({ type: 'console-proxy:need-ticket' });
        this.ticketTimer = setTimeout(() => this.ticketUsed(), TICKET_WAIT_MS);
    }

    ticketUsed() {
        this.ticketTimer = null;
        if (this.isConnected()) {
            this.setStatus(this.connectedText() + '. (No new ticket: to reconnect, open the '
                + 'console again from the portal.)');
            return;
        }
        const code = document.body.dataset.closeCode;
        this.disconnected(code ? Number(code) : null,
            'This console ticket was already used. Open the console again from the portal.');
    }

    onPortalMessage(event) {
        // Only the window that embedded or opened us may hand us a ticket, and only when asked.
        if (!portal || event.source !== portal || !this.awaitingTicket) return;
        const data = event.data;
        if (!data || typeof data !== 'object' || data.type !== 'console-proxy:ticket') return;
        if (typeof data.token !== 'string' || !data.token) return;
        clearTimeout(this.ticketTimer);
        this.ticketTimer = null;
        this.token = data.token;
        this.connect();
    }

    // ----- the toolbar's common buttons ---------------------------------------------------

    /** Full screen and Reconnect; ``focus`` gives the keyboard back to the console. */
    wireCommonButtons(focus) {
        const ui = this.ui;
        ui.fullscreen.addEventListener('click', () => this.toggleFullscreen(focus));
        document.addEventListener('fullscreenchange', () => {
            const on = Boolean(document.fullscreenElement);
            ui.fullscreen.setAttribute('aria-pressed', String(on));
            ui.fullscreen.textContent = on ? 'Exit full screen' : 'Full screen';
        });
        if (!document.fullscreenEnabled) {
            ui.fullscreen.disabled = true;
            ui.fullscreen.title = 'Full screen is not allowed here (an iframe needs allow="fullscreen")';
        }
        ui.reconnect.addEventListener('click', () => this.requestReconnect());
        ui.overlayReconnect.addEventListener('click', () => this.requestReconnect());
    }

    toggleFullscreen(focus) {
        const request = document.fullscreenElement
            ? document.exitFullscreen()
            : document.documentElement.requestFullscreen();
        Promise.resolve(request)
            .then(() => focus())
            .catch(() => { this.setStatus(this.ui.statusText.textContent
                + ' (full screen was refused by the browser)'); });
    }
}

/**
 * Warns before the proxy closes an idle console. The proxy counts only keyboard and mouse input
 * (not screen updates), and so does this: input on the console resets the countdown. The page
 * shows the countdown and tells the portal ({type: 'console-proxy:idle-warning', secondsLeft},
 * then {type: 'console-proxy:idle-cleared'} on input).
 */
export class IdleWatch {
    constructor(page) {
        this.page = page;
        this.timeout = Number(document.body.dataset.idleTimeout || 0);
        this.warnBefore = Math.min(60, Math.max(5, this.timeout / 5));
        this.timer = null;
        this.warning = false;
        this.lastInput = Date.now();
        const screen = page.ui.screen;
        for (const kind of ['keydown', 'pointerdown', 'pointermove', 'wheel', 'touchstart']) {
            screen.addEventListener(kind, () => this.input(), { capture: true, passive: true });
        }
    }

    start() {
        if (!this.timeout || this.timer) return;
        this.lastInput = Date.now();
        this.timer = setInterval(() => this.tick(), 1000);
    }

    stop() {
        clearInterval(this.timer);
        this.timer = null;
        this.clearWarning();
    }

    input() {
        this.lastInput = Date.now();
        if (this.warning) {
            this.clearWarning();
            this.page.setStatus(this.page.connectedText());
            tellPortal({ type: 'console-proxy:idle-cleared' });
        }
    }

    tick() {
        const left = Math.ceil(this.timeout - (Date.now() - this.lastInput) / 1000);
        if (left > this.warnBefore) return;
        this.warning = true;
        const banner = this.page.ui.idleWarning;
        const text = `No keyboard or mouse input: this console closes in ${Math.max(0, left)} s. `
            + 'Move the mouse or press a key on it to keep it open.';
        if (banner) {
            banner.hidden = false;
            banner.textContent = text;
        }
        this.page.setStatus(text);
        tellPortal({ type: 'console-proxy:idle-warning', secondsLeft: Math.max(0, left) });
    }

    clearWarning() {
        this.warning = false;
        if (this.page.ui.idleWarning) this.page.ui.idleWarning.hidden = true;
    }
}

/** A view-only console hides what would send keys, clicks or text (the proxy drops them anyway). */
function showViewOnly() {
    document.body.dataset.viewOnly = '1';
    const badge = $('view-only-badge');
    if (badge) badge.hidden = false;
    for (const control of document.querySelectorAll('.input-control')) control.hidden = true;
}

/**
 * How many other consoles show this VM (other people, operators watching), asked of the proxy
 * every second with this console's spent ticket in a POST body (never in a URL).
 */
export class PeerCount {
    constructor(element) {
        this.element = element;
        this.ticket = '';
        this.timer = null;
    }

    start() {
        this.stop();
        if (!this.element || !this.ticket) return;
        this.timer = setInterval(() => this.ask(), 1000);
        this.ask();
    }

    stop() {
        clearInterval(this.timer);
        this.timer = null;
        if (this.element) this.element.hidden = true;
    }

    async ask() {
        const current = this.timer;
        let others = 0;
        try {
            const reply = await fetch(new URL('../api/v1/consoles/peers', window.location.href), {
                method: 'POST',
                headers: { 'Content-Type': 'application/json' },
                body: JSON.stringify({ token: this.ticket }),
            });
            if (!reply.ok) return;
            others = (await reply.json()).others;
        } catch (err) {
            return;
        }
        if (current !== this.timer || !current) return;
        const el = this.element;
        el.textContent = others === 1 ? el.dataset.one : el.dataset.many.replace('{n}', String(others));
        el.hidden = others < 1;
        document.body.dataset.peers = String(others);
    }
}

export function tellPortal(message) {
    if (!portal) return;
    try {
        // Status carries no secret, so any embedding origin may read it.
        portal.postMessage(message, '*');
    } catch (err) { /* the portal went away */ }
}
