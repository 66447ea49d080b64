// Plays a VNC console recording in noVNC with no VNC server, and seeks in it.
//
// noVNC gets a WebSocket-like channel (noVNC 1.7 accepts one instead of a URL) that answers its
// handshake itself (RFB 3.8, security None, SecurityResult OK) and then hands it the recorded
// stream, which starts at ServerInit (playback_stream.js).
//
// Seeking to T: the stream carries zlib state (Tight, ZRLE) from its first update, so noVNC must
// have decoded every byte before T, but it need not draw them. The last full-screen update that
// ends before T repaints every pixel: the stream before it is decoded with drawing switched off
// (no canvas work, no JPEG decoding), and from its start to T it is drawn. Where the full screens
// are, and snapshots of the decoders to start from, come from the Scout (playback_scout.js), which
// decodes the whole recording once after it loads; the keyframes the proxy asked for make sure
// there is a full screen every few seconds. Forward from the position shown, only what lies
// between is decoded; backward (or far forward), a fresh noVNC starts from the last snapshot
// before that full screen, or from the first byte.

import { Scout, restore } from './playback_scout.js';
import {
    connect, feed, firstAbove, loud, nothing, quiet, serverInitLength,
} from './playback_stream.js';

// Without the Scout (another noVNC version), the keyframe markers say where to draw from. A
// marker's full screen comes with the server's next refresh, which an idle QEMU puts off for up
// to 3 s, and QEMU answers two requests before one refresh with one full screen: so the seek
// draws from the marker before the last one that is this far before its target.
const LANDS_WITHIN_MS = 4000;

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
        this.shownAt = 0;   // performance.now() when it was reached while playing
        this.fed = 0;       // stream offset fed to noVNC so far
        this.rfb = null;
        this.channel = null;
        this.lastSeek = null;  // what the last seek did (stream offsets, milliseconds)
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

    // (Re)start noVNC before the first byte; the first call also sends the Scout out.
    async start() {
        if (this.rfb) {
            this.rfb.disconnect();
            this.screen.replaceChildren();
        } else {
            this.scout.run();
        }
        this.fed = 0;
        this.position = 0;
        ({ rfb: this.rfb, channel: this.channel } = await connect(this.screen));
    }

    // Feed (and draw, unless quiet) the stream up to `offset`.
    _feed(offset) {
        if (offset > this.fed) feed(this.channel, this.index, this.fed, offset);
        this.fed = Math.max(this.fed, offset);
    }

    _quietly(offset) {
        if (offset <= this.fed) return;
        quiet(this.rfb);
        try {
            this._feed(offset);
        } finally {
            loud(this.rfb);
        }
    }

    // Feed (and draw) everything up to `ms`, without waiting.
    feedTo(ms) {
        const { ms: times, count, stream } = this.index;
        this._feed(stream[firstAbove(times, count, ms)]);
        this.position = Math.min(ms, this.duration);
        this.onChange(this);
    }

    // Without the Scout: the record number of the keyframe to draw from for `ms`, or -1.
    keyframeFor(ms) {
        const { keyframes, ms: times } = this.index;
        let low = 0;
        let high = keyframes.length;
        while (low < high) {
            const mid = (low + high) >>> 1;
            if (times[keyframes[mid]] + LANDS_WITHIN_MS <= ms) low = mid + 1; else high = mid;
        }
        return low > 1 ? keyframes[low - 2] : -1;
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

    // Where to draw from for a seek to `ms` that feeds up to `target` (-1: the first byte).
    async drawFrom(target, ms) {
        await this.scout.reach(target);
        if (this.scout.usable) return this.scout.landing(target);
        const key = this.keyframeFor(ms);
        return key < 0 ? -1 : this.index.stream[key];
    }

    async _seekTo(ms) {
        const started = performance.now();
        document.body.dataset.state = 'seeking';
        this.onChange(this);
        const { ms: times, count, stream } = this.index;
        const target = stream[firstAbove(times, count, ms)];
        const draw = await this.drawFrom(target, ms);
        const saved = draw < 0 || !this.scout.usable ? null : this.scout.snapshotBefore(draw);
        const from = this.fed;
        let restored = null;
        if (target < this.fed || (saved && saved.at > this.fed)) {
            // noVNC's canvas may still be drawing the last JPEG: start again after it.
            await this.settled();
            await this.start();
            if (saved) {
                this._quietly(serverInitLength(this.index));
                restore(this.rfb, saved);
                this.fed = restored = saved.at;
            }
        }
        const resumed = this.fed;
        if (draw > this.fed) {
            await this.settled();
            this._quietly(draw);
        }
        const quietBytes = this.fed - resumed;
        this._feed(target);
        await this.settled();
        this.position = ms;
        this.lastSeek = {
            from, to: target, restored, quietBytes, drawnBytes: target - resumed - quietBytes,
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
        this._last = this.shownAt = now;
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
