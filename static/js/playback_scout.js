// The Scout: a second noVNC, on a hidden element, that decodes the whole recording once without
// drawing, right after it loads, and notes two things for seeking (playback_player.js):
//
// - where each full-screen update starts and ends in the console stream: drawing from the start
//   of one repaints every pixel, so a seek draws from the last one that ends before its target;
// - now and then, at the start of an update, a snapshot of noVNC's decoders (the zlib streams of
//   Tight, ZRLE and Zlib, the screen size, the cursor): a seek restores the last snapshot before
//   that full screen into a fresh noVNC and decodes only from there, so how long it takes does
//   not grow with the recording. A stream that uses an encoding whose state this does not copy
//   (Hextile, JPEG, H.264) gets no snapshots from there on, and seeks decode from the start.
//
// The zlib streams are copied field by field from the inflate state of the pako that noVNC 1.7
// vendors; if noVNC lacks what is watched, the Scout is off (usable false) and the player falls
// back on the keyframe markers.

import { BATCH_BYTES, connect, feed, firstAbove, quiet } from './playback_stream.js';

// Encodings that bring new pixels (not CopyRect, not the pseudo-encodings).
const PIXELS = new Set([0, 2, 5, 6, 7, 16, 21, 50, -260]);
// Encodings whose decoders keep state between rectangles that a snapshot does not copy.
const UNCOPIED = new Set([5, 21, 50]);
const MAX_SNAPSHOTS = 64;
const MIN_SNAPSHOT_EVERY = 1024 * 1024;
// pako's inflate state: the typed arrays it owns, copied; the rest are numbers or shared tables.
const STATE_ARRAYS = ['window', 'lens', 'work', 'lendyn', 'distdyn'];

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

// A copy of a pako z_stream between two inflate calls (no input pending).
function copyStream(strm) {
    const state = strm.state;
    const copy = Object.assign(Object.create(Object.getPrototypeOf(state)), state);
    for (const name of STATE_ARRAYS) {
        if (state[name]) copy[name] = state[name].slice();
    }
    if (state.lencode === state.lendyn) copy.lencode = copy.lendyn;  // else pako's fixed tables
    if (state.distcode === state.distdyn) copy.distcode = copy.distdyn;
    const stream = Object.assign(Object.create(Object.getPrototypeOf(strm)), strm);
    stream.state = copy;
    if ('strm' in state) copy.strm = stream;
    stream.input = null;
    stream.next_in = 0;
    stream.avail_in = 0;
    stream.output = null;
    return stream;
}

// Every Inflator of noVNC's decoders: [encoding, field, position, inflator].
function inflators(rfb) {
    const found = [];
    for (const [encoding, decoder] of Object.entries(rfb._decoders || {})) {
        for (const field of ['_zlibs', '_inflator', '_zlib']) {
            const value = decoder && decoder[field];
            const list = Array.isArray(value) ? value : [value];
            list.forEach((inflator, position) => {
                if (inflator && inflator.strm && inflator.strm.state) {
                    found.push([encoding, field, position, inflator]);
                }
            });
        }
    }
    return found;
}

function snapshot(rfb, at) {
    return {
        at,
        width: rfb._fbWidth,
        height: rfb._fbHeight,
        cursor: rfb._cursorImage,
        zlib: inflators(rfb).map(([encoding, field, position, inflator]) => (
            { encoding, field, position, chunkSize: inflator.chunkSize, strm: copyStream(inflator.strm) }
        )),
    };
}

// Put a snapshot into a noVNC that has just taken ServerInit.
export function restore(rfb, saved) {
    if (rfb._fbWidth !== saved.width || rfb._fbHeight !== saved.height) {
        rfb._resize(saved.width, saved.height);
    }
    for (const { encoding, field, position, chunkSize, strm } of saved.zlib) {
        const value = rfb._decoders[encoding][field];
        const inflator = Array.isArray(value) ? value[position] : value;
        inflator.strm = copyStream(strm);
        inflator.chunkSize = chunkSize;
        inflator.strm.output = new Uint8Array(chunkSize);
    }
    if (saved.cursor && typeof rfb._refreshCursor === 'function') {
        rfb._cursorImage = saved.cursor;
        rfb._refreshCursor();
    }
}

export class Scout {
    constructor(index) {
        this.index = index;
        this.fed = 0;          // stream offset decoded up to
        this.usable = true;
        this.done = false;
        this.starts = [];      // stream offsets where full-screen updates start ...
        this.ends = [];        // ... and end, in order
        this.snapshots = [];   // {at, ...} in order of `at`
        const total = index.stream[index.count];
        this._every = Math.max(MIN_SNAPSHOT_EVERY, Math.ceil(total / MAX_SNAPSHOTS));
        this._copying = true;  // no encoding seen yet whose state a snapshot leaves out
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
        const total = this.index.stream[this.index.count];
        while (this.usable && this.fed < total) {
            const stop = Math.min(total, this.fed + BATCH_BYTES);
            this._delivered = stop;
            feed(channel, this.index, this.fed, stop);
            this.fed = stop;
            this._wake();
            await new Promise((resolve) => setTimeout(resolve, 0));
        }
        this.done = true;
        this._wake();
        rfb.disconnect();
        box.remove();
    }

    // Resolves once the stream before `offset` is decoded (or the Scout gave up).
    reach(offset) {
        if (this.done || !this.usable || this.fed >= offset) return Promise.resolve();
        return new Promise((resolve) => this._waiting.push({ offset, resolve }));
    }

    // Where the last full-screen update that ends by `offset` starts; -1 when there is none.
    landing(offset) {
        const last = firstAbove(this.ends, this.ends.length, offset) - 1;
        return last < 0 ? -1 : this.starts[last];
    }

    // The last snapshot taken at or before `offset`, or null.
    snapshotBefore(offset) {
        const at = this.snapshots.map((s) => s.at);
        const last = firstAbove(at, at.length, offset) - 1;
        return last < 0 ? null : this.snapshots[last];
    }

    _wake() {
        const still = [];
        for (const waiter of this._waiting) {
            if (this.done || !this.usable || this.fed >= waiter.offset) waiter.resolve(); else still.push(waiter);
        }
        this._waiting = still;
    }

    _consumed(rfb) {
        return this._delivered - rfb._sock.rQlen();
    }

    // Wraps noVNC's FramebufferUpdate and rectangle handlers (on this instance) to see where
    // each update starts (its type byte) and ends, and its rectangles.
    _watch(rfb) {
        const update = rfb._framebufferUpdate;
        const rect = rfb._handleRect;
        if (typeof update !== 'function' || typeof rect !== 'function' || !rfb._FBU
            || !rfb._sock || typeof rfb._sock.rQlen !== 'function') return false;
        this._copying = typeof rfb._resize === 'function';
        let start = -1;
        let rects = [];
        rfb._framebufferUpdate = () => {
            if (start < 0) {
                start = this._consumed(rfb) - 1;
                rects = [];
                const last = this.snapshots.length ? this.snapshots[this.snapshots.length - 1].at : -Infinity;
                if (this._copying && start - last >= this._every) this.snapshots.push(snapshot(rfb, start));
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
            if (UNCOPIED.has(encoding)) this._copying = false;
            return done;
        };
        return true;
    }
}
