// The recording file as noVNC is fed it: the index of its records, the WebSocket-like channel
// that stands in for a VNC server, and decoding without drawing. Used by playback_player.js and
// playback_scout.js.
//
// File format (proxy/recording/format.py): "CPREC1\n", then records of u8 kind, u32 ms, u32
// length (big-endian) and the bytes; kind 0 is what the console sent the browser, kind 2 a
// keyframe marker (the proxy asked the VNC server for the whole screen there). A torn last record
// (a crash) is left out. The console stream is the kind-0 bytes end to end; positions in it are
// "stream offsets".

import RFB from '../novnc/core/rfb.js';

const MAGIC = 'CPREC1\n';
export const TO_BROWSER = 0;
export const KEYFRAME = 2;
export const BATCH_BYTES = 1024 * 1024;  // noVNC's receive queue stops growing at 40 MiB
const HANDSHAKE = [
    new TextEncoder().encode('RFB 003.008\n'),  // on open
    new Uint8Array([1, 1]),                      // after the client's version: None only
    new Uint8Array([0, 0, 0, 0]),                // after its choice: SecurityResult OK
];
// What noVNC's Display does to the canvas; switched off while records are only decoded.
const DRAWING = ['fillRect', 'copyImage', 'imageRect', 'videoFrame', 'blitImage', 'drawImage', 'flip'];
const TIGHT = 7;
export const nothing = () => {};

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
export function firstAbove(values, count, limit) {
    let low = 0;
    let high = count;
    while (low < high) {
        const mid = (low + high) >>> 1;
        if (values[mid] <= limit) low = mid + 1; else high = mid;
    }
    return low;
}

// The console stream's bytes [from, to) (stream offsets), copied out of the records.
export function streamBytes(index, from, to) {
    const { bytes, offset, length, kind, stream, count } = index;
    const out = new Uint8Array(Math.max(0, to - from));
    let record = Math.max(0, firstAbove(stream, count, from) - 1);
    let at = from;
    while (at < to) {
        const end = stream[record] + length[record];
        if (kind[record] === TO_BROWSER && at < end) {
            const size = Math.min(to, end) - at;
            const begin = offset[record] + at - stream[record];
            out.set(bytes.subarray(begin, begin + size), at - from);
            at += size;
        }
        record += 1;
    }
    return out;
}

// Hand noVNC the stream's bytes [from, to) in messages of about BATCH_BYTES.
export function feed(channel, index, from, to) {
    for (let at = from; at < to; at += BATCH_BYTES) {
        channel.deliver(streamBytes(index, at, Math.min(to, at + BATCH_BYTES)));
        // noVNC takes one handshake step per message: ServerInit and the updates after it may
        // share a batch, and an empty message lets it go on to them.
        channel.deliver(new Uint8Array(0));
    }
}

// How many bytes ServerInit takes at the start of the stream (24 and the desktop name).
export function serverInitLength(index) {
    const head = streamBytes(index, 0, Math.min(24, index.stream[index.count]));
    if (head.length < 24) return head.length;
    return 24 + new DataView(head.buffer).getUint32(20);
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

// A noVNC answered by a RecordingChannel, in `target`; resolves once it waits for ServerInit.
export async function connect(target) {
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

// Decoding without drawing. The Display's drawing calls become no-ops on this one instance;
// Tight's palette rectangles (pure pixel conversion) are skipped too, and its other zlib
// rectangles are inflated (the stream's state must advance) but not converted. Only what this
// noVNC version has is switched off: anything else still runs, which is slower, never wrong.
export function quiet(rfb) {
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

export function loud(rfb) {
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
