// Plays a console recording in noVNC with no VNC server: noVNC gets a WebSocket-like channel
// (noVNC 1.7 accepts one instead of a URL) that answers its handshake itself (RFB 3.8, security
// None, SecurityResult OK) and then hands it the recorded stream, which starts at ServerInit.
//
// File format (proxy/recording/format.py): "CPREC1\n", then records of u8 kind, u32 ms, u32
// length (big-endian) and the bytes; kind 0 is what the console sent the browser. A torn last
// record (a crash) is left out.
//
// Seeking forward feeds the records up to the target at once; seeking back starts noVNC again
// and feeds from the start: the server's stream carries zlib state (Tight, ZRLE) from its first
// update, so noVNC cannot start decoding in the middle of it.

import RFB from '../novnc/core/rfb.js';

const $ = (id) => document.getElementById(id);
const TEXT = JSON.parse($('playback-text').textContent);
const ID = document.body.dataset.recording;
const API = `../../api/v1/recordings/${ID}`;
const MAGIC = 'CPREC1\n';
const TO_BROWSER = 0;
const KEYFRAME = 2;
const BATCH_BYTES = 1024 * 1024;  // noVNC's receive queue stops growing at 40 MiB
const HANDSHAKE = [
    new TextEncoder().encode('RFB 003.008\n'),  // on open
    new Uint8Array([1, 1]),                      // after the client's version: None only
    new Uint8Array([0, 0, 0, 0]),                // after its choice: SecurityResult OK
];

const ui = {
    play: $('play'), speed: $('speed'), slider: $('slider'), clock: $('clock'),
    screen: $('screen'), message: $('message'), integrity: $('integrity'), summary: $('summary'),
};

function text(key, values = {}) {
    return TEXT[key].replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ''));
}

function say(element, message) {
    element.textContent = message;
    element.hidden = !message;
}

export function parseRecording(buffer) {
    const bytes = new Uint8Array(buffer);
    const view = new DataView(buffer);
    const magic = new TextDecoder().decode(bytes.subarray(0, MAGIC.length));
    if (magic !== MAGIC) throw new Error('not a console recording');
    const records = [];
    let offset = MAGIC.length;
    while (offset + 9 <= bytes.length) {
        const kind = view.getUint8(offset);
        const ms = view.getUint32(offset + 1);
        const length = view.getUint32(offset + 5);
        if (offset + 9 + length > bytes.length) break;  // torn tail
        records.push({ kind, ms, data: bytes.subarray(offset + 9, offset + 9 + length) });
        offset += 9 + length;
    }
    return records;
}

// What noVNC sees as its WebSocket.
class RecordingChannel {
    constructor(onReady) {
        this.binaryType = 'arraybuffer';
        this.protocol = '';
        this.readyState = 'connecting';
        this.onopen = null;
        this.onmessage = null;
        this.onerror = null;
        this.onclose = null;
        this._sent = 0;
        this._onReady = onReady;
        setTimeout(() => {
            this.readyState = 'open';
            if (this.onopen) this.onopen();
            this.deliver(HANDSHAKE[0]);
        }, 0);
    }

    send(data) {
        // The client's version (12 bytes), its security choice (1), then ClientInit (1).
        const before = this._sent;
        this._sent += data.byteLength;
        if (before < 12 && this._sent >= 12) this._later(HANDSHAKE[1]);
        if (before < 13 && this._sent >= 13) this._later(HANDSHAKE[2]);
        if (before < 14 && this._sent >= 14) setTimeout(this._onReady, 0);
    }

    close() {
        if (this.readyState === 'closed') return;
        this.readyState = 'closed';
        if (this.onclose) this.onclose({ code: 1000, reason: '', wasClean: true });
    }

    deliver(bytes) {
        if (this.readyState === 'open' && this.onmessage) this.onmessage({ data: bytes.slice().buffer });
    }

    _later(bytes) {
        setTimeout(() => this.deliver(bytes), 0);
    }
}

class Player {
    constructor(records) {
        this.records = records.filter((r) => r.kind === TO_BROWSER || r.kind === KEYFRAME);
        this.duration = records.length ? records[records.length - 1].ms : 0;
        this.speed = 1;
        this.playing = false;
        this.position = 0;  // ms of the recording shown
        this.next = 0;      // index of the next record to feed
        this.ready = null;
        this.rfb = null;
        this.channel = null;
        this._last = 0;
        this._frame = null;
    }

    async start() {
        if (this.rfb) {
            this.rfb.disconnect();
            ui.screen.replaceChildren();
        }
        this.next = 0;
        this.position = 0;
        this.ready = new Promise((resolve) => {
            this.channel = new RecordingChannel(resolve);
        });
        this.rfb = new RFB(ui.screen, this.channel, { shared: true });
        this.rfb.viewOnly = true;
        this.rfb.scaleViewport = false;
        await this.ready;
    }

    // Feed every record up to `ms` (in batches), without waiting.
    feedTo(ms) {
        let batch = [];
        let size = 0;
        const flush = () => {
            if (!size) return;
            const joined = new Uint8Array(size);
            let at = 0;
            for (const part of batch) { joined.set(part, at); at += part.length; }
            this.channel.deliver(joined);
            // noVNC takes one handshake step per message: ServerInit and the updates after it
            // may share a batch, and an empty message lets it go on to them.
            this.channel.deliver(new Uint8Array(0));
            batch = [];
            size = 0;
        };
        while (this.next < this.records.length && this.records[this.next].ms <= ms) {
            const record = this.records[this.next++];
            if (record.kind !== TO_BROWSER || !record.data.length) continue;
            batch.push(record.data);
            size += record.data.length;
            if (size >= BATCH_BYTES) flush();
        }
        flush();
        this.position = Math.min(ms, this.duration);
        this.show();
    }

    async seek(ms) {
        const wasPlaying = this.playing;
        this.pause();
        document.body.dataset.state = 'seeking';
        if (ms < this.position) await this.start();
        this.feedTo(ms);
        document.body.dataset.state = 'paused';
        if (wasPlaying) this.play();
    }

    play() {
        if (this.position >= this.duration) return;
        this.playing = true;
        this._last = performance.now();
        document.body.dataset.state = 'playing';
        ui.play.textContent = TEXT.pause;
        this._frame = requestAnimationFrame(() => this._tick());
    }

    pause() {
        this.playing = false;
        cancelAnimationFrame(this._frame);
        if (document.body.dataset.state === 'playing') document.body.dataset.state = 'paused';
        ui.play.textContent = TEXT.play;
    }

    _tick() {
        if (!this.playing) return;
        const now = performance.now();
        const target = this.position + (now - this._last) * this.speed;
        this._last = now;
        this.feedTo(Math.min(target, this.duration));
        if (this.position >= this.duration) {
            this.playing = false;
            ui.play.textContent = TEXT.play;
            document.body.dataset.state = 'ended';
            return;
        }
        this._frame = requestAnimationFrame(() => this._tick());
    }

    show() {
        document.body.dataset.position = String(Math.round(this.position));
        ui.slider.value = String(Math.round(this.position));
        ui.clock.textContent = `${clock(this.position)} / ${clock(this.duration)}`;
    }
}

function clock(ms) {
    const seconds = Math.floor(ms / 1000);
    return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, '0')}`;
}

async function fetchOk(url, kind) {
    const response = await fetch(url, { credentials: 'same-origin', headers: { Accept: kind } });
    if (!response.ok) {
        let reason = `HTTP ${response.status}`;
        try { reason = (await response.json()).error.description; } catch (err) { /* not JSON */ }
        throw new Error(reason);
    }
    return response;
}

async function main() {
    say(ui.message, TEXT.loading);
    let meta;
    let records;
    try {
        meta = await (await fetchOk(API, 'application/json')).json();
        ui.summary.textContent = text('summary', {
            vm: meta.vmUuid || meta.target || '', account: meta.account || '—',
            client: meta.client || '', started: meta.started,
        });
        const integrity = meta.integrity.matches === null ? 'unknown'
            : (meta.integrity.matches ? 'match' : 'mismatch');
        document.body.dataset.integrity = integrity;
        const problem = meta.complete ? '' : ' ' + text('incomplete', { problem: meta.problem || '' });
        say(ui.integrity, text(integrity) + (meta.closed ? problem : ''));
        ui.integrity.classList.toggle('info', integrity !== 'mismatch');
        if (!meta.playable) {
            document.body.dataset.state = 'unplayable';
            say(ui.message, text('notPlayable', { protocol: meta.protocol }));
            return;
        }
        const file = await fetchOk(`${API}/file`, 'application/octet-stream');
        records = parseRecording(await file.arrayBuffer());
    } catch (err) {
        document.body.dataset.state = 'failed';
        say(ui.message, text('loadFailed', { reason: err.message }));
        return;
    }
    say(ui.message, '');
    const player = new Player(records);
    window.player = player;  // for tests and curious operators
    document.body.dataset.duration = String(player.duration);
    ui.slider.max = String(player.duration);
    await player.start();
    player.show();
    document.body.dataset.state = 'paused';
    for (const control of [ui.play, ui.slider]) control.disabled = false;
    ui.play.addEventListener('click', () => (player.playing ? player.pause() : player.play()));
    ui.speed.addEventListener('change', () => { player.speed = Number(ui.speed.value); });
    ui.slider.addEventListener('input', () => player.pause());
    ui.slider.addEventListener('change', () => player.seek(Number(ui.slider.value)));
    player.play();
}

main();
