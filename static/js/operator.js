// The operator's table of live consoles: polls <base>/api/v1/admin/consoles every second (with
// the session cookie), filters it, and acts on a console: Watch (a view-only console of that VM
// in a new tab), Close, Close all on this VM. The words come from #operator-text (the template).

const REFRESH_MS = 1000;
const API = '../api/v1/admin/';

const $ = (id) => document.getElementById(id);
const TEXT = JSON.parse($('operator-text').textContent);
const ui = { rows: $('consoles'), filter: $('filter'), summary: $('summary'), message: $('message') };

let consoles = [];
let timer = null;

function text(key, values = {}) {
    return TEXT[key].replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ''));
}

function say(message, info = false) {
    ui.message.textContent = message;
    ui.message.classList.toggle('info', info);
    ui.message.hidden = !message;
}

async function call(path, method = 'GET') {
    const response = await fetch(API + path, {
        method,
        credentials: 'same-origin',
        referrerPolicy: 'same-origin',  // keeps the real Origin on POSTs (no-referrer sends null)
        headers: { Accept: 'application/json' },
    });
    let body = null;
    try { body = await response.json(); } catch (err) { /* not JSON */ }
    if (response.status === 401) {
        stop();
        say(text('signedOut'));
        throw new Error(text('signedOut'));
    }
    if (!response.ok) {
        const reason = body && body.error ? body.error.description : `HTTP ${response.status}`;
        throw new Error(reason);
    }
    return body;
}

async function refresh() {
    try {
        const body = await call('consoles');
        consoles = body.consoles;
        render();
        if (ui.message.dataset.kind === 'load') say('');
    } catch (err) {
        if (timer === null) return;
        say(text('loadFailed', { reason: err.message }));
        ui.message.dataset.kind = 'load';
    }
}

function stop() {
    clearInterval(timer);
    timer = null;
}

function matches(console_, filter) {
    if (!filter) return true;
    return [console_.vmUuid, console_.account, console_.client]
        .some((value) => String(value || '').toLowerCase().includes(filter));
}

function duration(seconds) {
    if (seconds < 90) return text('seconds', { n: Math.round(seconds) });
    if (seconds < 5400) return text('minutes', { n: Math.round(seconds / 60) });
    return text('hours', { n: (seconds / 3600).toFixed(1) });
}

function bytes(count) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let value = count;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
        value /= 1024;
        unit += 1;
    }
    return (unit ? value.toFixed(1) : String(value)) + ' ' + units[unit];
}

function cell(row, content, className = '') {
    const td = document.createElement('td');
    td.textContent = content;
    if (className) td.className = className;
    row.append(td);
    return td;
}

function button(label, action, className = 'btn') {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = className;
    b.textContent = label;
    b.dataset.action = action;
    return b;
}

// Rows are kept by console id and only their changed cells rewritten, so a button stays the same
// element while its console lives: a click is never lost to the once-a-second refresh.
const rowsById = new Map();

function values(c) {
    return [
        c.vmUuid,
        c.protocol.toUpperCase(),
        c.account || '—',
        c.client,
        c.instance,
        new Date(c.started * 1000).toLocaleString(),
        bytes(c.bytesToHost),
        bytes(c.bytesToBrowser),
        c.idleSeconds === null ? text('never') : duration(c.idleSeconds),
        c.viewOnly ? text('yes') : text('no'),
    ];
}

const CLASSES = ['mono vm', '', 'account', 'mono client', 'mono', '', 'num to-host', 'num to-browser',
    'num', 'view-only'];

function newRow(c) {
    const row = document.createElement('tr');
    row.dataset.id = c.id;
    row.dataset.vm = c.vmUuid;
    values(c).forEach((value, i) => cell(row, value, CLASSES[i]));
    const actions = cell(row, '', 'actions');
    if (c.protocol === 'vnc' || c.protocol === 'spice') actions.append(button(text('watch'), 'watch'));
    actions.append(button(text('close'), 'close', 'btn btn-danger'));
    if (c.vmUuid) actions.append(button(text('closeVm'), 'close-vm', 'btn btn-danger'));
    return row;
}

function updateRow(row, c) {
    values(c).forEach((value, i) => {
        const td = row.cells[i];
        if (td.textContent !== value) td.textContent = value;
    });
}

function render() {
    const filter = ui.filter.value.trim().toLowerCase();
    const shown = consoles.filter((c) => matches(c, filter));
    ui.summary.textContent = text('count', { n: consoles.length });
    const live = new Set(consoles.map((c) => c.id));
    for (const id of rowsById.keys()) if (!live.has(id)) rowsById.delete(id);
    const rows = shown.map((c) => {
        let row = rowsById.get(c.id);
        if (row) updateRow(row, c); else rowsById.set(c.id, (row = newRow(c)));
        return row;
    });
    if (!rows.length) {
        const row = document.createElement('tr');
        const td = cell(row, consoles.length ? text('noMatch') : text('empty'), 'empty');
        td.colSpan = 11;
        rows.push(row);
    }
    const current = Array.from(ui.rows.children);
    if (current.length !== rows.length || current.some((row, i) => row !== rows[i])) {
        ui.rows.replaceChildren(...rows);
    }
}

async function act(event) {
    const target = event.target.closest('button[data-action]');
    if (!target) return;
    const row = target.closest('tr');
    const { id, vm } = row.dataset;
    const action = target.dataset.action;
    if (action === 'watch') {
        // Opened now, inside the click, so no pop-up blocker stops it; the address follows.
        const tab = window.open('', '_blank');
        if (!tab) {
            say(text('popupBlocked'));
            return;
        }
        tab.opener = null;
        try {
            const ticket = await call(`consoles/${encodeURIComponent(id)}/watch`, 'POST');
            tab.location.href = new URL(ticket.consoleUrl, window.location.href).href;
        } catch (err) {
            tab.close();
            say(text('watchFailed', { reason: err.message }));
        }
        return;
    }
    try {
        if (action === 'close') {
            await call(`consoles/${encodeURIComponent(id)}/close`, 'POST');
            say(text('closed', { id }), true);
        } else if (action === 'close-vm') {
            const body = await call(`vms/${encodeURIComponent(vm)}/close-consoles`, 'POST');
            say(text('closedVm', { n: body.closedHere, vm }), true);
        }
        ui.message.dataset.kind = 'action';
    } catch (err) {
        say(text('closeFailed', { reason: err.message }));
    }
    refresh();
}

ui.filter.addEventListener('input', render);
ui.rows.addEventListener('click', act);
timer = setInterval(refresh, REFRESH_MS);
refresh();
