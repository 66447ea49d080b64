// The playback page: loads a recording's metadata and file, then plays it with the player of
// playback_player.js (which explains how seeking works), with play/pause, 1×/2×/4×/8× and a
// time slider.

import { Player } from './playback_player.js';
import { indexRecording } from './playback_stream.js';

const $ = (id) => document.getElementById(id);
const TEXT = JSON.parse($('playback-text').textContent);
const ID = document.body.dataset.recording;
const API = `../../api/v1/recordings/${ID}`;

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

// The controls follow the player, except the slider while a person drags it.
let dragging = false;

function show(player) {
    document.body.dataset.position = String(Math.round(player.position));
    if (!dragging) ui.slider.value = String(Math.round(player.position));
    const seeking = document.body.dataset.state === 'seeking';
    ui.clock.textContent = seeking ? TEXT.seeking : `${clock(player.position)} / ${clock(player.duration)}`;
    ui.play.textContent = player.playing ? TEXT.pause : TEXT.play;
}

function clock(ms) {
    const seconds = Math.floor(ms / 1000);
    const two = (n) => String(n).padStart(2, '0');
    const hours = Math.floor(seconds / 3600);
    const minutes = Math.floor(seconds / 60) % 60;
    return hours ? `${hours}:${two(minutes)}:${two(seconds % 60)}` : `${minutes}:${two(seconds % 60)}`;
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
    let index;
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
        index = indexRecording(await file.arrayBuffer());
    } catch (err) {
        document.body.dataset.state = 'failed';
        say(ui.message, text('loadFailed', { reason: err.message }));
        return;
    }
    say(ui.message, '');
    const player = new Player(index, ui.screen, show);
    window.player = player;  // for tests and curious operators
    document.body.dataset.duration = String(player.duration);
    ui.slider.max = String(player.duration);
    await player.start();
    show(player);
    document.body.dataset.state = 'paused';
    for (const control of [ui.play, ui.slider]) control.disabled = false;
    ui.play.addEventListener('click', () => player.toggle());
    ui.speed.addEventListener('change', () => { player.speed = Number(ui.speed.value); });
    // Dragging pauses; letting go seeks there and plays on if it was playing.
    ui.slider.addEventListener('input', () => {
        dragging = true;
        player.hold();
    });
    ui.slider.addEventListener('change', () => {
        dragging = false;
        player.seek(Number(ui.slider.value));
    });
    player.play();
}

main();
