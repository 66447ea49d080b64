// The operator page's recordings: the newest 50 from <base>/api/v1/recordings, each with a link
// to its playback page. Hidden while recording is off (the API answers 404 RECORDING.DISABLED).

const API = '../api/v1/recordings?limit=50';
const REFRESH_MS = 10000;

const $ = (id) => document.getElementById(id);
const TEXT = JSON.parse($('operator-text').textContent);
const section = $('recordings-section');
const rows = $('recordings');

function cell(row, content, className = '') {
    const td = document.createElement('td');
    if (className) td.className = className;
    if (content instanceof Node) td.append(content); else td.textContent = content;
    row.append(td);
}

function state(recording) {
    if (!recording.playable) return TEXT.recNotPlayable;
    return recording.complete ? TEXT.recComplete : TEXT.recIncomplete;
}

function render(recordings) {
    rows.replaceChildren();
    if (!recordings.length) {
        const row = document.createElement('tr');
        const td = document.createElement('td');
        td.colSpan = 9;
        td.textContent = TEXT.recNone;
        row.append(td);
        rows.append(row);
        return;
    }
    for (const recording of recordings) {
        const row = document.createElement('tr');
        cell(row, new Date(recording.started).toLocaleString());
        cell(row, recording.vmUuid || '');
        // A SPICE console is one recording per channel.
        cell(row, recording.channel ? `${recording.protocol} · ${recording.channel}` : recording.protocol);
        cell(row, recording.account || '');
        cell(row, recording.client || '');
        cell(row, `${Math.round(recording.duration || 0)} s`, 'num');
        cell(row, `${(recording.bytes / 1048576).toFixed(1)} MiB`, 'num');
        cell(row, state(recording));
        if (recording.playable) {
            const link = document.createElement('a');
            link.href = `recordings/${encodeURIComponent(recording.id)}`;
            link.target = '_blank';
            link.rel = 'noopener';
            link.className = 'btn';
            link.textContent = TEXT.recPlay;
            cell(row, link);
        } else {
            cell(row, '');
        }
        rows.append(row);
    }
}

async function refresh() {
    const response = await fetch(API, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
    if (!response.ok) {
        section.hidden = true;  // recording is off, or signed out (the live table says so)
        return;
    }
    section.hidden = false;
    render((await response.json()).recordings);
}

refresh();
setInterval(refresh, REFRESH_MS);
