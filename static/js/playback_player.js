// Plays a VNC console recording in noVNC with no VNC server, and seeks in it.
//
// noVNC gets a WebSocket-like channel (noVNC 1.7 accepts one instead of a URL) that answers its
// handshake itself (RFB 3.8, security None, SecurityResult OK) and then hands it the recorded
// stream, which starts at ServerInit.
//
// File format (proxy/recording/format.py): "CPREC1\n", then records of u8 kind, u32 ms, u32
// length (big-endian) and the bytes; kind 0 is what the console sent the browser, kind 2 a
// keyframe marker (the proxy asked the VNC server for the whole screen there). A torn last record
// (a crash) is left out. The file is read once into an index: typed arrays of each record's
// offset, length, time, kind and place in the console stream.
//
// Seeking to T: the stream carries zlib state (Tight, ZRLE) from its first update, so noVNC must
// decode every byte before T, but it need not draw them. Up to the last full-screen update that
// ends before T, records go through noVNC's decoders with drawing switched off (no canvas work,
// no JPEG decoding); from there to T they are drawn, and that update repaints every pixel. Forward
// from the position shown, only what lies between is fed; backward, noVNC starts again from the
// first record. Where the full screens are is found once, after the file loads, by a second
// noVNC that decodes the whole stream without drawing (the Scout); the keyframes the proxy asked
// for make sure there is one every few seconds. A full screen comes when the server's next
// refresh runs, which an idle QEMU puts off for up to 3 s, so the markers alone do not say where.

import RFB from '../novnc/core/rfb.js';

const MAGIC = 'CPREC1\n';
export const TO_BROWSER = 0;
export const KEYFRAME = 2;
const BATCH_BYTES = 1024 * 1024;  // noVNC's receive queue stops growing at 40 MiB
// Without the Scout (another noVNC version): a keyframe's full screen is taken to have landed
// this long after its marker (QEMU's slowest refresh, 3 s, and a round trip).
const LANDS_WITHIN_MS = 4000;
const HANDSHAKE = [
    new TextEncoder().encode('RFB 003.008\n'),  // on open
    new Uint8Array([1, 1]),                      // after the client's version: None only
    new Uint8Array([0, 0, 0, 0]),                // after its choice: SecurityResult OK
];
// What noVNC's Display does to the canvas; switched off while records are only decoded.
const DRAWING = ['fillRect', 'copyImage', 'imageRect', 'videoFrame', 'blitImage', 'drawImage', 'flip'];
const TIGHT = 7;
// Encodings that bring new pixels (not CopyRect, not the pseudo-encodings).
const PIXELS = new Set([0, 2, 5, 6, 7, 16, 21, 50, -260]);
const nothing = () => {};

// One pass over the file: where each record is, when, and of what kind. Records the player does
// not feed (kind 1, input) are left out; keyframes lists the record numbers of kind 2.
export function indexRecording(buffer) {
    const bytes = new Uint8Array(buffer);
    const view = new DataView(buffer);
    const magic = new TextDecoder().decode(bytes.subarray(0, MAGIC.length));
    if (magic !== MAGIC) throw new Error('not a console recording');
    let capacity = 1024;
    let offset = new Float64Array(capacity);
    let length = new Uint32Array(capacity);
    let ms = new Float64Array(capacity);
    let kind = new Uint8Array(capacity);
    let stream = new Float64Array(capacity + 1);  // console bytes before each record
    const keyframes = [];
    let count = 0;
    let duration = 0;
    let at = MAGIC.length;
    while (at + 9 <= bytes.length) {
        const k = view.getUint8(at);
        const time = view.getUint32(at + 1);
        const size = view.getUint32(at + 5);
        if (at + 9 + size > bytes.length) break;  // torn tail
        duration = time;
        if (k === TO_BROWSER || k === KEYFRAME) {
            if (count === capacity) {
                capacity *= 2;
                offset = grow(offset, capacity);
                length = grow(length, capacity);
                ms = grow(ms, capacity);
                kind = grow(kind, capacity);
                stream = grow(stream, capacity + 1);
            }
            offset[count] = at + 9;
            length[count] = size;
            ms[count] = time;
            kind[count] = k;
            stream[count + 1] = stream[count] + (k === TO_BROWSER ? size : 0);
            if (k === KEYFRAME) keyframes.push(count);
            count += 1;
        }
        at += 9 + size;
    }
    return {
        bytes, count, duration, keyframes: Uint32Array.from(keyframes),
        offset: offset.subarray(0, count), length: length.subarray(0, count),
        ms: ms.subarray(0, count), kind: kind.subarray(0, count),
        stream: stream.subarray(0, count + 1),
    };
}

function grow(array, capacity) {
    const bigger = new array.constructor(capacity);
    bigger.set(array);
    return bigger;
}

// The first index in sorted `values[0..count)` whose value is above `limit`.
function firstAbove(values, count, limit) {
    let low = 0;
    let high = count;
    while (low < high) {
        const mid = (low + high) >>> 1;
        if (values[mid] <= limit) low = mid + 1; else high = mid;
    }
    return low;
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
        if (this.readyState !== 'open' || !this.onmessage) return;
        const data = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength
            ? bytes.buffer : bytes.slice().buffer;
        this.onmessage({ data });
    }

    _later(bytes) {
        setTimeout(() => this.deliver(bytes), 0);
    }
}

// Decoding without drawing. The Display's drawing calls become no-ops on this one instance;
// Tight's palette rectangles (pure pixel conversion) are skipped too, and its other zlib
// rectangles are inflated (the stream's state must advance) but not converted. Only what this
// noVNC version has is switched off: anything else still runs, which is slower, never wrong.
function quiet(rfb) {
    const display = rfb._display;
    for (const name of DRAWING) {
        if (typeof display[name] === 'function') display[name] = nothing;
    }
    const tight = rfb._decoders && rfb._decoders[TIGHT];
    if (tight && typeof tight._readData === 'function' && Array.isArray(tight._zlibs)) {
        tight._monoRect = nothing;
        tight._paletteRect = nothing;
        tight._copyFilter = tightInflateOnly;
        tight._gradientFilter = tightInflateOnly;
    }
}

function loud(rfb) {
    for (const name of DRAWING) delete rfb._display[name];
    const tight = rfb._decoders && rfb._decoders[TIGHT];
    if (tight) {
        for (const name of ['_monoRect', '_paletteRect', '_copyFilter', '_gradientFilter']) {
            delete tight[name];
        }
    }
}

// Tight's copy and gradient filters (3 bytes a pixel), minus the conversion to RGBA: `this` is
// the TightDecoder.
function tightInflateOnly(streamId, x, y, width, height, sock) {
    const size = width * height * 3;
    if (size === 0) return true;
    if (size < 12) {  // sent raw, not compressed
        if (sock.rQwait('TIGHT', size)) return false;
        sock.rQskipBytes(size);
        return true;
    }
    const data = this._readData(sock);
    if (data === null) return false;
    const zlib = this._zlibs[streamId];
    zlib.setInput(data);
    zlib.inflate(size);
    zlib.setInput(null);
    return true;
}

// Hand noVNC the records numbered [first, stop) as one message.
function deliver(channel, index, first, stop) {
    const { bytes, offset, length, kind } = index;
    let size = 0;
    for (let i = first; i < stop; i++) if (kind[i] === TO_BROWSER) size += length[i];
    if (!size) return;
    const joined = new Uint8Array(size);
    let at = 0;
    for (let i = first; i < stop; i++) {
        if (kind[i] !== TO_BROWSER || !length[i]) continue;
        joined.set(bytes.subarray(offset[i], offset[i] + length[i]), at);
        at += length[i];
    }
    channel.deliver(joined);
    // noVNC takes one handshake step per message: ServerInit and the updates after it may share
    // a batch, and an empty message lets it go on to them.
    channel.deliver(new Uint8Array(0));
}

// Where a batch of about BATCH_BYTES from record `first` stops (at `end` at the latest).
function batchEnd(index, first, end) {
    const { length, kind } = index;
    let size = 0;
    let stop = first;
    while (stop < end && (size === 0 || size + length[stop] <= BATCH_BYTES)) {
        if (kind[stop] === TO_BROWSER) size += length[stop];
        stop += 1;
    }
    return stop;
}

// A noVNC answered by a RecordingChannel, in `target`; resolves once it waits for ServerInit.
async function connect(target) {
    let channel;
    const ready = new Promise((resolve) => {
        channel = new RecordingChannel(resolve);
    });
    const rfb = new RFB(target, channel, { shared: true });
    rfb.viewOnly = true;
    rfb.scaleViewport = false;
    await ready;
    return { rfb, channel };
}

// Whether the rectangles cover a width x height screen.
function covers(rects, width, height) {
    let area = 0;
    for (const [, , w, h] of rects) area += w * h;
    if (!width || !height || area < width * height) return false;
    const seen = new Uint8Array(width * height);
    for (const [x, y, w, h] of rects) {
        const right = Math.min(x + w, width);
        for (let row = y; row < Math.min(y + h, height); row++) {
            seen.fill(1, row * width + x, row * width + right);
        }
    }
    return seen.indexOf(0) === -1;
}

// Decodes the whole stream once, without drawing, in its own noVNC, and notes where each
// full-screen update starts and ends in the console stream. Seeks wait for it to get past
// their target. Off (usable false) if this noVNC lacks what it watches.
class Scout {
    constructor(index) {
        this.index = index;
        this.next = 0;
        this.usable = true;
        this.done = false;
        this.starts = [];
        this.ends = [];
        this._delivered = 0;
        this._waiting = [];
    }

    async run() {
        const box = document.createElement('div');
        box.hidden = true;
        document.body.append(box);
        const { rfb, channel } = await connect(box);
        this.usable = this._watch(rfb);
        quiet(rfb);
        const { count, stream } = this.index;
        while (this.usable && this.next < count) {
            const stop = batchEnd(this.index, this.next, count);
            this._delivered = stream[stop];
            deliver(channel, this.index, this.next, stop);
            this.next = stop;
            this._wake();
            await new Promise((resolve) => setTimeout(resolve, 0));
        }
        this.done = true;
        this._wake();
        rfb.disconnect();
        box.remove();
    }

    // Resolves once the records before `end` are decoded (or the Scout gave up).
    reach(end) {
        if (this.done || !this.usable || this.next >= end) return Promise.resolve();
        return new Promise((resolve) => this._waiting.push({ end, resolve }));
    }

    // The record holding the start of the last full screen that ends within the records before
    // `end`; -1 when there is none.
    landing(end) {
        const { stream, count } = this.index;
        const last = firstAbove(this.ends, this.ends.length, stream[end]) - 1;
        if (last < 0) return -1;
        return firstAbove(stream, count, this.starts[last]) - 1;
    }

    _wake() {
        const still = [];
        for (const waiter of this._waiting) {
            if (this.done || !this.usable || this.next >= waiter.end) waiter.resolve(); else still.push(waiter);
        }
        this._waiting = still;
    }

    _consumed(rfb) {
        return this._delivered - rfb._sock.rQlen();
    }

    // Wraps noVNC's FramebufferUpdate and rectangle handlers (on this instance) to see each
    // update's rectangles and where it starts (its type byte) and ends.
    _watch(rfb) {
        const update = rfb._framebufferUpdate;
        const rect = rfb._handleRect;
        if (typeof update !== 'function' || typeof rect !== 'function' || !rfb._FBU
            || !rfb._sock || typeof rfb._sock.rQlen !== 'function') return false;
        let start = -1;
        let rects = [];
        rfb._framebufferUpdate = () => {
            if (start < 0) {
                start = this._consumed(rfb) - 1;
                rects = [];
            }
            const done = update.call(rfb);
            if (done) {
                if (covers(rects, rfb._fbWidth, rfb._fbHeight)) {
                    this.starts.push(start);
                    this.ends.push(this._consumed(rfb));
                }
                start = -1;
            }
            return done;
        };
        rfb._handleRect = () => {
            const { x, y, width, height, encoding } = rfb._FBU;
            const done = rect.call(rfb);
            if (done && PIXELS.has(encoding)) rects.push([x, y, width, height]);
            return done;
        };
        return true;
    }
}

export class Player {
    constructor(index, screen, onChange = nothing) {
        this.index = index;
        this.scout = new Scout(index);
        this.duration = index.duration;
        this.screen = screen;
        this.onChange = onChange;  // called with the player after every move
        this.speed = 1;
        this.playing = false;
        this.position = 0;  // ms of the recording shown
        this.next = 0;      // number of the next record to feed
        this.rfb = null;
        this.channel = null;
        this.lastSeek = null;  // {from, to, quiet, drawn, ms}: what the last seek did
        this._last = 0;
        this._frame = null;
        this._wanted = null;   // the latest seek target not yet begun
        this._seeking = null;  // the promise of the seeks running
        this._resume = false;  // play again once they are done
    }

    // The records as {kind, ms, length}, for tests and curious operators.
    get records() {
        const { count, kind, ms, length } = this.index;
        return Array.from({ length: count }, (_, i) => ({ kind: kind[i], ms: ms[i], length: length[i] }));
    }

    // (Re)start noVNC before the first record; the first call also sends the Scout out.
    async start() {
        if (this.rfb) {
            this.rfb.disconnect();
            this.screen.replaceChildren();
        } else {
            this.scout.run();
        }
        this.next = 0;
        this.position = 0;
        ({ rfb: this.rfb, channel: this.channel } = await connect(this.screen));
    }

    // Feed the records numbered [this.next, end) to noVNC in batches.
    _feed(end) {
        while (this.next < end) {
            const stop = batchEnd(this.index, this.next, end);
            deliver(this.channel, this.index, this.next, stop);
            this.next = stop;
        }
    }

    // Feed (and draw) everything up to `ms`, without waiting.
    feedTo(ms) {
        this._feed(firstAbove(this.index.ms, this.index.count, ms));
        this.position = Math.min(ms, this.duration);
        this.onChange(this);
    }

    // The record number of the keyframe to draw from for a seek to `ms`, or -1.
    keyframeFor(ms) {
        const { keyframes, ms: times } = this.index;
        let low = 0;
        let high = keyframes.length;
        while (low < high) {
            const mid = (low + high) >>> 1;
            if (times[keyframes[mid]] + LANDS_WITHIN_MS <= ms) low = mid + 1; else high = mid;
        }
        return low ? keyframes[low - 1] : -1;
    }

    // Show the screen at `ms`; seeks asked for while one runs coalesce into the latest.
    seek(ms) {
        this._wanted = ms;
        if (this.playing) this._resume = true;
        this.pause();
        if (!this._seeking) {
            this._seeking = this._seekLatest().finally(() => { this._seeking = null; });
        }
        return this._seeking;
    }

    async _seekLatest() {
        while (this._wanted !== null) {
            const ms = this._wanted;
            this._wanted = null;
            await this._seekTo(Math.max(0, Math.min(ms, this.duration)));
        }
        if (this._resume) {
            this._resume = false;
            this.play();
        }
    }

    // The record to draw from for a seek whose last record is `end` - 1 (-1: the first).
    async drawFrom(end, ms) {
        await this.scout.reach(end);
        return this.scout.usable ? this.scout.landing(end) : this.keyframeFor(ms);
    }

    async _seekTo(ms) {
        const started = performance.now();
        document.body.dataset.state = 'seeking';
        this.onChange(this);
        const end = firstAbove(this.index.ms, this.index.count, ms);
        const draw = await this.drawFrom(end, ms);
        if (end < this.next) {
            // noVNC's canvas may still be drawing the last JPEG: start again after it.
            await this.settled();
            await this.start();
        }
        const from = this.next;
        if (draw > this.next) {
            await this.settled();
            quiet(this.rfb);
            try {
                this._feed(draw);
            } finally {
                loud(this.rfb);
            }
        }
        const quietTo = this.next;
        this._feed(end);
        await this.settled();
        this.position = ms;
        this.lastSeek = {
            from, to: end, quiet: quietTo - from, drawn: end - quietTo,
            ms: Math.round(performance.now() - started),
        };
        document.body.dataset.seekMs = String(this.lastSeek.ms);
        document.body.dataset.state = 'paused';
        this.onChange(this);
    }

    // Until noVNC has decoded everything fed and drawn it (JPEG rectangles decode
    // asynchronously, and noVNC waits for them before the next update).
    async settled() {
        const rfb = this.rfb;
        for (let round = 0; round < 10000; round++) {
            await rfb._display.flush();
            if (!rfb._flushing && !rfb._display.pending()) return;
            await new Promise((resolve) => setTimeout(resolve, 0));
        }
    }

    // The play/pause button: during a seek it says whether to play once it is done.
    toggle() {
        if (this._seeking) this._resume = !this._resume;
        else if (this.playing) this.pause();
        else this.play();
    }

    // Pause while the slider is dragged; the seek that follows plays on if this was playing.
    hold() {
        if (this.playing) this._resume = true;
        this.pause();
    }

    play() {
        if (this.position >= this.duration) return;
        this.playing = true;
        this._last = performance.now();
        document.body.dataset.state = 'playing';
        this.onChange(this);
        this._frame = requestAnimationFrame(() => this._tick());
    }

    pause() {
        this.playing = false;
        cancelAnimationFrame(this._frame);
        if (document.body.dataset.state === 'playing') document.body.dataset.state = 'paused';
        this.onChange(this);
    }

    _tick() {
        if (!this.playing) return;
        const now = performance.now();
        const target = this.position + (now - this._last) * this.speed;
        this._last = now;
        this.feedTo(Math.min(target, this.duration));
        if (this.position >= this.duration) {
            this.playing = false;
            document.body.dataset.state = 'ended';
            this.onChange(this);
            return;
        }
        this._frame = requestAnimationFrame(() => this._tick());
    }
}
