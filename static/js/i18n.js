// The console page's words in every language the proxy has (proxy/languages/<tag>.json), from the
// #i18n JSON block the server renders: {language, names: {tag: name}, tables: {tag: {key: text}}}.
//
// The page starts in the server's choice (its ?lang=, else Accept-Language) and may switch live:
// to the fragment's lang (from the mint's "language"), to the browser's languages, or when the
// portal asks ({type: 'console-proxy:set-language', language}). Elements name their words with
// data-i18n (text), data-i18n-title, data-i18n-aria-label and data-i18n-placeholder.

const FALLBACK = 'en';

function load() {
    const node = document.getElementById('i18n');
    try {
        const data = node ? JSON.parse(node.textContent) : {};
        return { language: data.language || FALLBACK, names: data.names || {}, tables: data.tables || {} };
    } catch (err) {
        return { language: FALLBACK, names: {}, tables: {} };
    }
}

const DATA = load();
let current = DATA.language;
const listeners = [];

/** Text or a function giving text (so it can be shown again in another language). */
export function render(text) {
    return typeof text === 'function' ? text() : String(text ?? '');
}

/** The sentence ``key`` in the current language, its {placeholders} filled from ``values``. */
export function t(key, values = {}) {
    const own = (DATA.tables[current] || {})[key];
    const sentence = own ?? (DATA.tables[FALLBACK] || {})[key] ?? key;
    return sentence.replace(/\{(\w+)\}/g, (whole, name) => (
        name in values ? render(values[name]) : whole));
}

/** A sentence that renders in whatever language is current when it is shown. */
export function say(key, values = {}) {
    return () => t(key, values);
}

export function has(key) {
    return key in (DATA.tables[current] || {}) || key in (DATA.tables[FALLBACK] || {});
}

export function language() {
    return current;
}

export function available() {
    return Object.keys(DATA.tables);
}

/** The available tag ``tag`` names exactly (ignoring case), else null. */
export function canonical(tag) {
    if (typeof tag !== 'string' || !tag) return null;
    const wanted = tag.trim().replace('_', '-').toLowerCase();
    return available().find((t_) => t_.toLowerCase() === wanted) || null;
}

/** The first preference available exactly, else by its primary subtag, else null. */
export function negotiate(preferences) {
    const wanted = (preferences || []).filter(Boolean);
    for (const tag of wanted) {
        const found = canonical(tag);
        if (found) return found;
    }
    for (const tag of wanted) {
        const primary = tag.split('-')[0].toLowerCase();
        const found = available().find((t_) => t_.split('-')[0].toLowerCase() === primary);
        if (found) return found;
    }
    return null;
}

/**
 * The language to show: the one asked for (the fragment's lang from the mint, then the page's
 * ?lang=), else the browser's languages, else what the server chose.
 */
export function initialLanguage(asked) {
    for (const tag of asked) {
        const found = canonical(tag);
        if (found) return found;
    }
    return negotiate(navigator.languages || [navigator.language]) || DATA.language;
}

/** Switch the page to ``tag``; false when that language is not available. */
export function setLanguage(tag) {
    const found = canonical(tag);
    if (!found) return false;
    const changed = found !== current;
    current = found;
    document.documentElement.lang = found;
    translate(document);
    if (changed) for (const listener of listeners) listener(found);
    return true;
}

export function onLanguageChange(listener) {
    listeners.push(listener);
}

/** Put the current language's words into every element that names them. */
export function translate(root) {
    for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
    for (const el of root.querySelectorAll('[data-i18n-title]')) el.title = t(el.dataset.i18nTitle);
    for (const el of root.querySelectorAll('[data-i18n-aria-label]')) {
        el.setAttribute('aria-label', t(el.dataset.i18nAriaLabel));
    }
    for (const el of root.querySelectorAll('[data-i18n-placeholder]')) {
        el.placeholder = t(el.dataset.i18nPlaceholder);
    }
    const titleKey = document.body && document.body.dataset.i18nTitleKey;
    if (titleKey) document.title = t(titleKey);
}
