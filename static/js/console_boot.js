// A classic script that runs before the console page's module. When the browser code the page
// needs (noVNC, spice-html5) or the page's own scripts fail to load, the module never runs; this
// says so, with the fix, instead of leaving "Loading the console…" on the page for ever.
// (The server already answers 503 with an error page when the packages are not installed; this
// covers files that go missing later, or a reverse proxy that does not pass them.)
(function () {
    'use strict';

    var GIVE_UP_MS = 20000;

    function words() {
        var node = document.getElementById('i18n');
        try {
            var data = JSON.parse(node.textContent);
            var hash = new URLSearchParams(window.location.hash.replace(/^#/, ''));
            var asked = (hash.get('lang') || '').toLowerCase();
            var tags = Object.keys(data.tables);
            var tag = tags.filter(function (t) { return t.toLowerCase() === asked; })[0] || data.language;
            return data.tables[tag] || data.tables.en || {};
        } catch (err) {
            return {};
        }
    }

    function packageName() {
        var script = document.querySelector('script[type="module"][data-package]');
        return script ? script.dataset.package : 'noVNC / spice-html5';
    }

    function fail() {
        var body = document.body;
        if (!body || body.dataset.state) return;  // the page's module started after all
        var template = words()['console.assetsMissing']
            || 'The console cannot start: its browser code ({package}) did not load.';
        var text = template.replace('{package}', packageName());
        body.dataset.state = 'disconnected';
        body.dataset.assetsMissing = '1';
        var status = document.getElementById('status-text');
        if (status) status.textContent = text;
        var overlay = document.getElementById('overlay');
        var overlayText = document.getElementById('overlay-text');
        var reconnect = document.getElementById('btn-overlay-reconnect');
        if (overlayText) overlayText.textContent = text;
        if (reconnect) reconnect.hidden = true;  // trying again would not help
        if (overlay) overlay.hidden = false;
    }

    // A module whose file (or any file it imports) fails to load fires "error" at its <script>;
    // such events do not bubble, but the capture phase passes the window.
    window.addEventListener('error', function (event) {
        var target = event.target;
        if (target && target.tagName === 'SCRIPT') {
            if (document.readyState === 'loading') {
                document.addEventListener('DOMContentLoaded', fail);
            } else {
                fail();
            }
        }
    }, true);

    window.addEventListener('load', function () {
        setTimeout(fail, GIVE_UP_MS);
    });
}());
