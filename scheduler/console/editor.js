// The JSON editor of script mode: a textarea with a line-number gutter. Before anything is
// sent, the text is parsed in the browser and a syntax error is shown as line:column (browsers
// report either a line and column or an offset; both are turned into line:column); errors the
// scheduler finds (which name line and column for job JSON) are shown the same way.

import { h, fill } from './ui.js';

/// Line and column (1-based) of a character offset in `text`.
export function lineCol(text, offset) {
  const before = text.slice(0, Math.max(0, Math.min(offset, text.length)));
  const lines = before.split('\n');
  return { line: lines.length, column: lines[lines.length - 1].length + 1 };
}

/// The offset of a line:column in `text`.
function offsetOf(text, line, column) {
  const lines = text.split('\n');
  let off = 0;
  for (let i = 0; i < Math.min(line - 1, lines.length); i++) off += lines[i].length + 1;
  return off + Math.max(0, column - 1);
}

/// Where a message says the problem is: "line 3 column 5" (V8, Firefox, the scheduler) or
/// "position 42" (older V8); null when it names neither.
export function errorPosition(text, message) {
  const lc = /line (\d+)[, ]+column (\d+)/i.exec(message);
  if (lc) return { line: Number(lc[1]), column: Number(lc[2]) };
  const pos = /position (\d+)/i.exec(message);
  if (pos) return lineCol(text, Number(pos[1]));
  if (/unexpected end/i.test(message)) return lineCol(text, text.length);
  return null;
}

/// The offset of the first syntax error of `text` and what was expected there, by a small
/// scanner of the JSON grammar: some browsers' messages name no position ("Unexpected token
/// '}'"), so the position is always found here and the browser's words kept.
export function locate(text) {
  let i = 0;
  const fail = (what) => {
    throw { offset: i, what };
  };
  const ws = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i])) i++;
  };
  const lit = (word) => {
    if (text.startsWith(word, i)) i += word.length;
    else fail('a value');
  };
  const str = () => {
    i++;
    while (i < text.length && text[i] !== '"') {
      if (text[i] === '\\') {
        i++;
        if (text[i] === 'u') {
          if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 1, i + 5))) fail('4 hex digits after \\u');
          i += 4;
        } else if (!'"\\/bfnrt'.includes(text[i] ?? '')) fail('an escape (\\n, \\", \\\\ …)');
      } else if (text.charCodeAt(i) < 0x20) fail('no control character in a string (write \\n)');
      i++;
    }
    if (i >= text.length) fail('the closing quote of the string');
    i++;
  };
  const number = () => {
    const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i));
    if (!m || !m[0] || m[0] === '-') fail('a value');
    i += m[0].length;
  };
  const value = () => {
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      ws();
      if (text[i] === '}') return void i++;
      for (;;) {
        ws();
        if (text[i] !== '"') fail('a property name in double quotes');
        str();
        ws();
        if (text[i] !== ':') fail("':' after the property name");
        i++;
        value();
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === '}') return void i++;
        fail("',' or '}' after a property value");
      }
    } else if (c === '[') {
      i++;
      ws();
      if (text[i] === ']') return void i++;
      for (;;) {
        value();
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === ']') return void i++;
        fail("',' or ']' after an array element");
      }
    } else if (c === '"') str();
    else if (c === 't') lit('true');
    else if (c === 'f') lit('false');
    else if (c === 'n') lit('null');
    else number();
  };
  try {
    value();
    ws();
    if (i < text.length) fail('the end of the text');
    return null;
  } catch (e) {
    if (e && typeof e.offset === 'number') return e;
    throw e;
  }
}

/// Parses `text`; null when it is valid JSON, else { line, column, message }.
export function checkJson(text) {
  try {
    JSON.parse(text);
    return null;
  } catch (e) {
    const found = locate(text);
    const at = found ? lineCol(text, found.offset) : errorPosition(text, e.message) || { line: 1, column: 1 };
    const expected = found ? `expected ${found.what}` : '';
    const said = e.message.replace(/^JSON\.parse: /, '').replace(/ (in JSON )?at position \d+( \(line \d+ column \d+\))?/, '')
      .replace(/ at line \d+ column \d+ of the JSON data/, '').replace(/, (\.\.\.)?".*" is not valid JSON$/s, '');
    return { ...at, message: expected ? `${expected} (${said})` : said };
  }
}

/// A JSON editor; `value()` gives the text, `showError(message, source)` marks a line.
export function jsonEditor(initial, { id = 'json-editor', rows = 24 } = {}) {
  const gutter = h('pre.gutter', { 'aria-hidden': 'true' });
  const area = h('textarea.code', { id, rows, spellcheck: 'false', autocomplete: 'off', wrap: 'off' });
  area.value = initial || '';
  const status = h('div.editor-status', { id: id + '-status' });
  let marked = 0;

  function numbers() {
    const n = area.value.split('\n').length;
    const parts = [];
    for (let i = 1; i <= n; i++) parts.push(h('span', { class: i === marked ? 'err' : '' }, String(i)));
    fill(gutter, parts.map((p, i) => (i ? ['\n', p] : p)));
    gutter.scrollTop = area.scrollTop;
  }
  area.addEventListener('input', () => {
    marked = 0;
    status.replaceChildren();
    status.className = 'editor-status';
    numbers();
  });
  area.addEventListener('scroll', () => (gutter.scrollTop = area.scrollTop));
  area.addEventListener('keydown', (e) => {
    if (e.key === 'Tab') {
      e.preventDefault();
      area.setRangeText('  ', area.selectionStart, area.selectionEnd, 'end');
      numbers();
    }
  });

  function showError(message, source) {
    const at = errorPosition(area.value, message);
    marked = at ? at.line : 0;
    status.className = 'editor-status error';
    fill(status, h('b', source === 'server' ? 'The scheduler refused the job' : 'Not valid JSON'),
      at ? h('span.pos', { id: id + '-pos' }, ` at line ${at.line}, column ${at.column}`) : null, ': ', message);
    numbers();
    if (at) {
      const off = offsetOf(area.value, at.line, at.column);
      area.focus();
      area.setSelectionRange(off, Math.min(off + 1, area.value.length));
      // Bring the line into view: about one line height per line.
      const lh = parseFloat(getComputedStyle(area).lineHeight) || 18;
      area.scrollTop = Math.max(0, (at.line - 5) * lh);
      gutter.scrollTop = area.scrollTop;
    }
  }

  function showOk(message) {
    marked = 0;
    status.className = 'editor-status ok';
    fill(status, message);
    numbers();
  }

  /// Checks the text locally; true when it parses (errors are shown).
  function validate() {
    const err = checkJson(area.value);
    if (!err) return true;
    showError(`line ${err.line}, column ${err.column}: ${err.message}`, 'browser');
    return false;
  }

  numbers();
  const el = h('div.editor', h('div.editor-body', gutter, area), status);
  return {
    el,
    value: () => area.value,
    setValue: (v) => {
      area.value = v;
      numbers();
    },
    validate,
    showError,
    showOk,
  };
}
