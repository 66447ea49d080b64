// Keys the browser keeps for itself or a phone lacks: the Keys menu (Ctrl+Alt+Del, Ctrl+Alt+F1…
// F12, Alt+Tab, ..., and [page] key_combos from the proxy's configuration), modifiers that stay
// pressed (Ctrl, Alt, Shift, Super), the extra-keys bar, and the on-screen keyboard of a touch
// device (a hidden text field whose input is forwarded to the VM as keys).
//
// The menu's keys come from the server (#key-menu, proxy/keynames.py): for each key name its
// X11 keysym, DOM code and PC scancode. The page hands in a sender that knows its protocol:
//   sender.key(name, [keysym, code, scancode], down)   press or release one key
//   sender.text(string)                                type text (the on-screen keyboard)

import { has, onLanguageChange, t } from './i18n.js';

const FUNCTION_KEY = /^F\d+$/;
// Short faces for the extra-keys bar (its buttons keep the full name as their label).
const BAR_FACES = { Left: '←', Up: '↑', Down: '↓', Right: '→', PageUp: 'PgUp', PageDown: 'PgDn' };

function loadMenu() {
    const node = document.getElementById('key-menu');
    try {
        return JSON.parse(node.textContent);
    } catch (err) {
        return { combos: [], configured: 0, modifiers: [], bar: [], keys: {} };
    }
}

/** What a key is called on this page: "Windows" for Super, else its name. */
export function keyLabel(name) {
    return has('keyNames.' + name) ? t('keyNames.' + name) : name;
}

export function comboLabel(combo) {
    return combo.map(keyLabel).join('+');
}

/** Whether this is a touch device, where the keyboard button and the extra-keys bar show. */
export function isTouchDevice() {
    return window.matchMedia('(pointer: coarse)').matches || 'ontouchstart' in window;
}

export class KeyControls {
    /**
     * ui: {button, menu, bar, keyboardButton, touchInput}; page: the ConsolePage (status line);
     * focus(): give the keyboard back to the console.
     */
    constructor(ui, sender, page, focus) {
        this.ui = ui;
        this.sender = sender;
        this.page = page;
        this.focus = focus;
        this.data = loadMenu();
        this.held = new Set();
        this.enabled = false;
        this.buildMenu();
        this.buildBar();
        this.wire();
        onLanguageChange(() => this.relabel());
        if (isTouchDevice() && document.body.dataset.viewOnly !== '1') {
            document.body.dataset.touch = '1';
            this.ui.keyboardButton.hidden = false;
            this.showBar(true);
        }
    }

    // ----- sending ------------------------------------------------------------------------

    press(name, down) {
        const key = this.data.keys[name];
        if (key && this.enabled) this.sender.key(name, key, down);
    }

    /** Press the keys in order, then let go in reverse; held modifiers stay down. */
    sendCombo(combo) {
        if (!this.enabled) return;
        const pressed = combo.filter((name) => !this.held.has(name));
        for (const name of pressed) this.press(name, true);
        for (const name of [...pressed].reverse()) this.press(name, false);
        this.page.setStatus(() => t('console.sent', { combo: comboLabel(combo) }));
    }

    toggleHeld(name) {
        if (!this.enabled) return;
        const down = !this.held.has(name);
        if (down) this.held.add(name); else this.held.delete(name);
        this.press(name, down);
        this.showHeld();
    }

    /** Let go of the held modifiers (on the VM too, unless the connection is gone). */
    releaseAll(send = true) {
        for (const name of this.held) if (send) this.press(name, false);
        this.held.clear();
        this.showHeld();
    }

    setEnabled(enabled) {
        if (!enabled) this.releaseAll(false);
        this.enabled = enabled;
        this.ui.button.disabled = !enabled;
        this.ui.keyboardButton.disabled = !enabled;
        for (const b of this.ui.bar.querySelectorAll('button')) b.disabled = !enabled;
        if (!enabled) this.closeMenu();
    }

    // ----- the menu -----------------------------------------------------------------------

    buildMenu() {
        const menu = this.ui.menu;
        const { combos, configured } = this.data;
        const builtin = combos.slice(0, combos.length - configured);
        const terminals = builtin.filter((c) => c.length === 3 && FUNCTION_KEY.test(c[2]));
        const plain = builtin.filter((c) => !terminals.includes(c));
        for (const combo of plain) menu.append(this.comboItem(combo));
        if (terminals.length) {
            const group = this.group('console.functionKeys', 'menu-grid');
            for (const combo of terminals) group.append(this.comboItem(combo, combo[2]));
        }
        if (configured) {
            menu.append(separator());
            for (const combo of combos.slice(-configured)) menu.append(this.comboItem(combo));
        }
        menu.append(separator());
        const hold = this.group('console.holdGroup', 'menu-row');
        for (const name of this.data.modifiers) {
            const item = menuItem('menuitemcheckbox', keyLabel(name));
            item.dataset.hold = name;
            item.setAttribute('aria-checked', 'false');
            hold.append(item);
        }
        menu.append(separator());
        const bar = menuItem('menuitemcheckbox', t('console.extraKeys'));
        bar.dataset.i18n = 'console.extraKeys';
        bar.dataset.action = 'bar';
        bar.setAttribute('aria-checked', 'false');
        menu.append(bar);
    }

    comboItem(combo, short = null) {
        const item = menuItem('menuitem', short || comboLabel(combo));
        item.dataset.combo = combo.join('+');
        if (short) item.setAttribute('aria-label', comboLabel(combo));
        return item;
    }

    /** A labelled group of items, added to the menu; the items go in what it returns. */
    group(labelKey, className) {
        const group = document.createElement('div');
        group.setAttribute('role', 'group');
        group.className = 'menu-group ' + className;
        const label = document.createElement('div');
        label.className = 'menu-label';
        label.id = 'menu-label-' + labelKey.replace('.', '-');
        label.dataset.i18n = labelKey;
        label.textContent = t(labelKey);
        group.setAttribute('aria-labelledby', label.id);
        const wrap = document.createElement('div');
        wrap.append(label, group);
        wrap.className = 'menu-section';
        this.ui.menu.append(wrap);
        return group;
    }

    relabel() {
        for (const item of this.ui.menu.querySelectorAll('[data-combo]')) {
            const combo = item.dataset.combo.split('+');
            const label = comboLabel(combo);
            if (item.hasAttribute('aria-label')) item.setAttribute('aria-label', label);
            else item.textContent = label;
        }
        for (const item of document.querySelectorAll('[data-hold]')) {
            item.textContent = keyLabel(item.dataset.hold);
        }
        for (const b of this.ui.bar.querySelectorAll('[data-key]')) {
            const name = b.dataset.key;
            if (BAR_FACES[name]) b.setAttribute('aria-label', keyLabel(name));
            else b.textContent = keyLabel(name);
        }
        this.showHeld();
    }

    items() {
        return [...this.ui.menu.querySelectorAll('[role^="menuitem"]')];
    }

    openMenu(focusLast = false) {
        if (!this.enabled) return;
        this.ui.menu.hidden = false;
        this.ui.button.setAttribute('aria-expanded', 'true');
        const items = this.items();
        (focusLast ? items[items.length - 1] : items[0]).focus();
    }

    closeMenu(refocus = false) {
        if (this.ui.menu.hidden) return;
        this.ui.menu.hidden = true;
        this.ui.button.setAttribute('aria-expanded', 'false');
        if (refocus) this.ui.button.focus();
    }

    choose(item) {
        if (item.dataset.combo) {
            this.closeMenu();
            this.sendCombo(item.dataset.combo.split('+'));
            this.focus();
        } else if (item.dataset.hold) {
            this.toggleHeld(item.dataset.hold);
        } else if (item.dataset.action === 'bar') {
            this.showBar(this.ui.bar.hidden);
        }
    }

    onMenuKey(event) {
        const items = this.items();
        const at = items.indexOf(document.activeElement);
        const move = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1 }[event.key];
        if (move) {
            items[(at + move + items.length) % items.length].focus();
        } else if (event.key === 'Home' || event.key === 'End') {
            items[event.key === 'Home' ? 0 : items.length - 1].focus();
        } else if (event.key === 'Escape') {
            this.closeMenu(true);
        } else if (event.key === 'Tab') {
            this.closeMenu();
            return;
        } else {
            return;
        }
        event.preventDefault();
        event.stopPropagation();
    }

    // ----- the extra-keys bar and the on-screen keyboard ------------------------------------

    buildBar() {
        const bar = this.ui.bar;
        for (const name of this.data.bar.slice(0, 2)) bar.append(barButton(name, 'key'));
        for (const name of this.data.modifiers) bar.append(barButton(name, 'hold'));
        for (const name of this.data.bar.slice(2)) bar.append(barButton(name, 'key'));
    }

    showBar(show) {
        this.ui.bar.hidden = !show || document.body.dataset.viewOnly === '1';
        const item = this.ui.menu.querySelector('[data-action="bar"]');
        if (item) item.setAttribute('aria-checked', String(!this.ui.bar.hidden));
    }

    showHeld() {
        for (const el of document.querySelectorAll('[data-hold]')) {
            const on = this.held.has(el.dataset.hold);
            if (el.getAttribute('role') === 'menuitemcheckbox') el.setAttribute('aria-checked', String(on));
            else el.setAttribute('aria-pressed', String(on));
            el.classList.toggle('active', on);
            el.title = t('console.holdTitle', { key: keyLabel(el.dataset.hold) });
        }
        document.body.dataset.heldKeys = [...this.held].join('+');
    }

    openKeyboard() {
        const input = this.ui.touchInput;
        input.value = '';
        // Focusing a text field inside the tap is what raises a phone's keyboard.
        input.focus({ preventScroll: true });
        this.ui.keyboardButton.setAttribute('aria-pressed', 'true');
    }

    onTouchInput(event) {
        const input = this.ui.touchInput;
        if (event.isComposing) return;  // an input method is still composing: wait for its end
        if (event.inputType === 'deleteContentBackward') {
            this.tap('Backspace');
        } else if (event.inputType === 'insertLineBreak') {
            this.tap('Enter');
        } else if (event.data) {
            this.type(event.data);
        }
        input.value = '';
    }

    onTouchKey(event) {
        // Keys that change no text (Enter, Backspace on an empty field, arrows) come as keydown.
        const names = { Enter: 'Enter', Backspace: 'Backspace', Tab: 'Tab', Escape: 'Esc',
                        ArrowUp: 'Up', ArrowDown: 'Down', ArrowLeft: 'Left', ArrowRight: 'Right',
                        Delete: 'Del', Home: 'Home', End: 'End' };
        const name = names[event.key];
        if (!name || event.isComposing || event.keyCode === 229) return;
        event.preventDefault();
        this.tap(name);
    }

    tap(name) {
        if (!this.enabled) return;
        this.press(name, true);
        this.press(name, false);
    }

    type(text) {
        if (this.enabled) this.sender.text(text);
    }

    // ----- wiring -------------------------------------------------------------------------

    wire() {
        const ui = this.ui;
        ui.button.addEventListener('click', () => {
            if (ui.menu.hidden) this.openMenu(); else this.closeMenu();
        });
        ui.button.addEventListener('keydown', (event) => {
            if (event.key === 'ArrowDown' || event.key === 'ArrowUp') {
                event.preventDefault();
                this.openMenu(event.key === 'ArrowUp');
            }
        });
        ui.menu.addEventListener('click', (event) => {
            const item = event.target.closest('[role^="menuitem"]');
            if (item) this.choose(item);
        });
        ui.menu.addEventListener('keydown', (event) => this.onMenuKey(event));
        document.addEventListener('pointerdown', (event) => {
            if (!ui.menu.hidden && !event.target.closest('.menu-wrap')) this.closeMenu();
        });
        ui.bar.addEventListener('click', (event) => {
            const b = event.target.closest('button');
            if (!b) return;
            if (b.dataset.hold) this.toggleHeld(b.dataset.hold); else this.tap(b.dataset.key);
            // On a phone the keyboard stays up; elsewhere the console gets the keys back.
            if (document.activeElement !== ui.touchInput && document.body.dataset.touch !== '1') {
                this.focus();
            }
        });
        // A button in the bar must not take the focus from the on-screen keyboard's field.
        ui.bar.addEventListener('pointerdown', (event) => {
            if (document.activeElement === ui.touchInput) event.preventDefault();
        });
        ui.keyboardButton.addEventListener('click', () => this.openKeyboard());
        ui.touchInput.addEventListener('input', (event) => this.onTouchInput(event));
        ui.touchInput.addEventListener('compositionend', (event) => {
            if (event.data) this.type(event.data);
            ui.touchInput.value = '';
        });
        ui.touchInput.addEventListener('keydown', (event) => this.onTouchKey(event));
        ui.touchInput.addEventListener('blur', () => {
            ui.keyboardButton.setAttribute('aria-pressed', 'false');
        });
    }
}

function menuItem(role, label) {
    const item = document.createElement('button');
    item.type = 'button';
    item.className = 'menu-item';
    item.setAttribute('role', role);
    item.tabIndex = -1;
    item.textContent = label;
    return item;
}

function separator() {
    const line = document.createElement('div');
    line.setAttribute('role', 'separator');
    line.className = 'menu-separator';
    return line;
}

function barButton(name, kind) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'btn btn-key';
    b.disabled = true;
    b.textContent = BAR_FACES[name] || keyLabel(name);
    if (BAR_FACES[name]) b.setAttribute('aria-label', keyLabel(name));
    if (kind === 'hold') {
        b.dataset.hold = name;
        b.setAttribute('aria-pressed', 'false');
    } else {
        b.dataset.key = name;
    }
    return b;
}
