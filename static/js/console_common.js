// What the console pages (VNC and SPICE) share: the ticket in the URL fragment, the status line,
// the messages to and from the embedding portal, and the toolbar's common buttons.
//
// Messages to and from the embedding portal (window.parent, or window.opener for a new tab):
//   out: {type: 'console-proxy:status', state: 'connecting'|'connected'|'disconnected', code, reason}
//   out: {type: 'console-proxy:need-ticket'}      (tickets are single-use; "Reconnect" needs a new one)
//   in:  {type: 'console-proxy:ticket', token}    (accepted only from that same window)
//   in:  {type: 'console-proxy:set-language', language}   (from that window; e.g. 'zh-CN')
//   out: {type: 'console-proxy:language', language}       (the language the page now shows)
//
// Every sentence the page shows is a key into the page's words (i18n.js); what the status line
// and the overlay show is kept as a function, so a language switch can show it again.

import { closeMessage } from './closecodes.js';
import { initialLanguage, language, onLanguageChange, render, say, setLanguage, t } from './i18n.js';

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
        // The mint's "language" travels here; ?lang= on the page's own URL is the next choice.
        lang: params.get('lang') || '',
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
 *   connectedText()      the status text of a working connection (in the current language)
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
        this.status = '';
        this.overlayMessage = '';
        const query = new URLSearchParams(window.location.search).get('lang');
        setLanguage(initialLanguage([this.options.lang, query]));
        onLanguageChange(() => this.showTextsAgain());
        this.idle = new IdleWatch(this);
        this.peers = new PeerCount($('viewers'));
        window.addEventListener('message', (event) => this.onPortalMessage(event));
        if (this.options.viewOnly) showViewOnly();
        wireToolbarKeys(document.querySelector('.toolbar .tools'));
    }

    /** Connect with the ticket from the URL, else ask the portal for one, else explain. */
    start() {
        if (this.token) {
            this.connect();
        } else if (portal) {
            // Reloaded (the ticket was taken out of the URL) or embedded without one.
            this.requestReconnect();
        } else {
            this.disconnected(null, say('console.standalone'));
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

    /** ``text``: a string, or a function giving one in the current language (i18n.say). */
    setState(state, text, code = null, reason = '') {
        document.body.dataset.state = state;
        if (code === null || code === undefined) {
            delete document.body.dataset.closeCode;
        } else {
            document.body.dataset.closeCode = String(code);
        }
        this.setStatus(text);
        this.ui.overlay.hidden = state !== 'disconnected';
        this.overlayMessage = text;
        this.ui.overlayText.textContent = render(text);
        this.onStateChange(state);
        tellPortal({ type: 'console-proxy:status', state, code, reason });
    }

    setStatus(text) {
        this.status = text;
        const shown = render(text);
        this.ui.statusText.textContent = shown;
        this.ui.statusText.title = shown;
    }

    /** The language changed: the status line and overlay say the same in the new one. */
    showTextsAgain() {
        this.setStatus(this.status);
        this.ui.overlayText.textContent = render(this.overlayMessage);
        this.ui.fullscreen.textContent = t(document.fullscreenElement
            ? 'console.exitFullscreen' : 'console.fullscreen');
        this.peers.show();
        this.idle.showAgain();
        tellPortal({ type: 'console-proxy:language', language: language() });
    }

    showConnected() {
        this.autoReconnects = 0;
        this.setState('connected', this.connectedText);
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
            text = say('console.proxyRestarted');
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
            this.setStatus(say('console.askingTicket'));
        } else {
            this.setState('connecting', say('console.askingTicket'));
        }
        tellPortal({ type: 'console-proxy:need-ticket' });
        this.ticketTimer = setTimeout(() => this.ticketUsed(), TICKET_WAIT_MS);
    }

    /** No new ticket: alone in a tab (no portal), or the portal did not answer in time. */
    ticketUsed() {
        this.ticketTimer = null;
        this.awaitingTicket = false;
        if (this.isConnected()) {
            this.setStatus(say('console.noNewTicket', { status: this.connectedText }));
            return;
        }
        const code = document.body.dataset.closeCode;
        this.disconnected(code ? Number(code) : null,
            say(portal ? 'console.portalSilent' : 'console.standalone'));
    }

    onPortalMessage(event) {
        // Only the window that embedded or opened us may hand us a ticket, and only when asked.
        if (!portal || event.source !== portal) return;
        const data = event.data;
        if (!data || typeof data !== 'object') return;
        if (data.type === 'console-proxy:set-language') {
            if (!setLanguage(data.language)) {
                tellPortal({ type: 'console-proxy:language', language: language() });
            }
            return;
        }
        if (!this.awaitingTicket || data.type !== 'console-proxy:ticket') return;
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
            ui.fullscreen.textContent = t(on ? 'console.exitFullscreen' : 'console.fullscreen');
        });
        if (!document.fullscreenEnabled) {
            ui.fullscreen.disabled = true;
            ui.fullscreen.dataset.i18nTitle = 'console.fullscreenBlocked';
            ui.fullscreen.title = t('console.fullscreenBlocked');
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
            .catch(() => {
                this.setStatus(say('console.fullscreenRefused', { status: this.status }));
            });
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
            this.page.setStatus(this.page.connectedText);
            tellPortal({ type: 'console-proxy:idle-cleared' });
        }
    }

    tick() {
        const left = Math.ceil(this.timeout - (Date.now() - this.lastInput) / 1000);
        if (left > this.warnBefore) return;
        this.secondsLeft = Math.max(0, left);
        if (!this.warning) {
            // Said once (a screen reader reads the live region when it changes); the countdown
            // beside it changes every second for the eyes only (aria-hidden).
            this.warning = true;
            this.page.ui.idleWarning.hidden = false;
            $('idle-announce').textContent = t('console.idleAnnounce');
            this.page.setStatus(say('console.idleAnnounce'));
        }
        $('idle-countdown').textContent = t('console.idleCountdown', { s: this.secondsLeft });
        tellPortal({ type: 'console-proxy:idle-warning', secondsLeft: this.secondsLeft });
    }

    /** The language changed while the warning shows. */
    showAgain() {
        if (!this.warning) return;
        $('idle-countdown').textContent = t('console.idleCountdown', { s: this.secondsLeft });
    }

    clearWarning() {
        this.warning = false;
        this.page.ui.idleWarning.hidden = true;
        $('idle-announce').textContent = '';
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
        this.others = others;
        this.show();
        document.body.dataset.peers = String(others);
    }

    show() {
        const el = this.element;
        if (!el || !this.timer) return;
        const others = this.others || 0;
        el.textContent = others === 1 ? t('console.viewersOne') : t('console.viewersMany', { n: others });
        el.hidden = others < 1;
    }
}

/**
 * Arrow keys move between the toolbar's controls (it is an ARIA toolbar); Tab still works. A
 * select or an open menu keeps its own arrow keys.
 */
function wireToolbarKeys(tools) {
    if (!tools) return;
    tools.addEventListener('keydown', (event) => {
        if (event.key !== 'ArrowLeft' && event.key !== 'ArrowRight') return;
        if (event.target.tagName === 'SELECT' || event.target.closest('[role="menu"]')) return;
        const controls = [...tools.querySelectorAll('button, select')].filter((el) => (
            !el.disabled && !el.closest('[hidden]') && !el.closest('[role="menu"]')
            && el.offsetParent !== null));
        const at = controls.indexOf(event.target);
        if (at < 0) return;
        const step = event.key === 'ArrowRight' ? 1 : -1;
        controls[(at + step + controls.length) % controls.length].focus();
        event.preventDefault();
    });
}

export function tellPortal(message) {
    if (!portal) return;
    try {
        // Status carries no secret, so any embedding origin may read it.
        portal.postMessage(message, '*');
    } catch (err) { /* the portal went away */ }
}
