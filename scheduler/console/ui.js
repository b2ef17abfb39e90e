// Small DOM helpers shared by the pages. Everything is built with createElement and
// textContent, never innerHTML, so names, messages and log lines are always shown as text.

/// h('tag.class#id', {attrs, on: {event: fn}}, ...children)
export function h(spec, attrs, ...children) {
  const m = /^([a-z0-9]+)?((?:[.#][\w-]+)*)$/i.exec(spec) || [null, spec, ''];
  const el = document.createElement(m[1] || 'div');
  for (const part of (m[2] || '').match(/[.#][\w-]+/g) || []) {
    if (part[0] === '.') el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'on') {
      for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    } else if (k === 'class') {
      for (const c of String(v).split(/\s+/).filter(Boolean)) el.classList.add(c);
    } else if (v === true) {
      el.setAttribute(k, '');
    } else if (v !== false && v !== null && v !== undefined) {
      if (k === 'value' && 'value' in el) el.value = v;
      else el.setAttribute(k, String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/// Replaces the children of `el`.
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/// Numbers of the API may come as strings (64-bit integers in JSON); missing means 0.
export function num(v) {
  const n = Number(v ?? 0);
  return Number.isFinite(n) ? n : 0;
}

export function fmtTime(ms) {
  const n = num(ms);
  if (!n) return '-';
  const d = new Date(n);
  const pad = (x) => String(x).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtDuration(ms) {
  let s = Math.round(num(ms) / 1000);
  if (s < 60) return s + 's';
  const m = Math.floor(s / 60);
  s %= 60;
  if (m < 60) return `${m}m${String(s).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

export function fmtCount(v) {
  return num(v).toLocaleString('en-US');
}

/// yyyymmdd of a Date (local calendar).
export function ymd(d) {
  return `${d.getFullYear()}${String(d.getMonth() + 1).padStart(2, '0')}${String(d.getDate()).padStart(2, '0')}`;
}

/// The business date of today's runs: yesterday.
export function yesterday() {
  const d = new Date();
  d.setDate(d.getDate() - 1);
  return ymd(d);
}

/// yyyymmdd -> yyyy-mm-dd for <input type=date>, and back.
export const toDateInput = (b) => (b && b.length === 8 ? `${b.slice(0, 4)}-${b.slice(4, 6)}-${b.slice(6)}` : b || '');
export const fromDateInput = (v) => (v || '').replaceAll('-', '');

export const FINAL = new Set(['success', 'failed', 'killed', 'dry_run']);

/// The states in the order the overview lists them: what needs a person first.
export const STATE_ORDER = [
  'failed', 'killed', 'running', 'dispatched', 'waiting_resources', 'waiting_time',
  'waiting_upstream', 'frozen', 'success', 'dry_run',
];

export function stateRank(s) {
  const i = STATE_ORDER.indexOf(s);
  return i < 0 ? STATE_ORDER.length : i;
}

/// An instance id without the workspace part (`default/orders@run-20261125` ->
/// `orders@run-20261125`; a backfill's `bf-…:default/orders@…` keeps its prefix).
export function shortId(id) {
  return String(id || '').replace(/(^|:)[^/:@]+\//g, '$1');
}

export function badge(state) {
  return h('span', { class: 'badge state-' + (state || 'unknown'), 'data-state': state || '' }, state || '?');
}

/// A table from headers and rows of cells (strings or nodes).
export function table(headers, rows, { empty = 'Nothing here yet.', cls = '' } = {}) {
  if (!rows.length) return h('p.muted.empty', empty);
  return h('table', { class: 'grid ' + cls },
    h('thead', h('tr', headers.map((x) => h('th', x)))),
    h('tbody', rows.map((r) => (r instanceof Node ? r : h('tr', r.map((c) => h('td', c)))))));
}

let flashTimer = null;

/// A message at the top of the page; errors stay until the next one.
export function flash(message, kind = 'ok') {
  const el = document.getElementById('flash');
  if (!el) return;
  fill(el, h('div', { class: 'flash ' + kind }, message));
  clearTimeout(flashTimer);
  if (kind !== 'error') flashTimer = setTimeout(() => el.replaceChildren(), 5000);
}

/// Runs `fn` for a button: disabled while it runs, errors shown, result returned.
export async function busy(button, fn) {
  if (button) button.disabled = true;
  try {
    return await fn();
  } catch (e) {
    flash(e.message || String(e), 'error');
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

export function field(label, input, hint) {
  return h('label.field', h('span.label', label), input, hint ? h('span.hint', hint) : null);
}

export function link(href, text) {
  return h('a', { href }, text);
}

/// The query part of the hash (`#/instances?task=x`) as an object.
export function hashQuery() {
  const q = location.hash.split('?')[1] || '';
  return Object.fromEntries(new URLSearchParams(q));
}

/// A hash with a query from an object (empty values left out).
export function hashWith(path, query) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(query || {})) if (v !== undefined && v !== '' && v !== null) p.set(k, v);
  const q = p.toString();
  return '#' + path + (q ? '?' + q : '');
}

export function copyButton(text) {
  return h('button.small', {
    type: 'button',
    on: { click: () => navigator.clipboard?.writeText(text).then(() => flash('copied')) },
  }, 'Copy');
}
