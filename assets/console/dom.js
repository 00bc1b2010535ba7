// DOM building and small presentation helpers shared by every page.
//
// Pages build their markup with h(): strings become text nodes, never HTML, so an API string
// cannot inject markup. The one place that produces HTML from text is markdown.js, which escapes
// first. The CSP forbids inline style attributes, so nothing here writes `style=`.

/** Creates an element. attrs: plain attributes, plus `class`, `dataset`, `on<Event>` handlers and
 *  boolean/DOM properties (`hidden`, `disabled`, `checked`, `value`, `selected`). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [name, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (name.startsWith('on') && typeof value === 'function') {
        el.addEventListener(name.slice(2).toLowerCase(), value);
      } else if (name === 'class') {
        el.className = Array.isArray(value) ? value.filter(Boolean).join(' ') : value;
      } else if (name === 'dataset') {
        Object.assign(el.dataset, value);
      } else if (name in PROPERTIES) {
        el[name] = value;
      } else {
        el.setAttribute(name, value === true ? '' : String(value));
      }
    }
  }
  append(el, children);
  return el;
}

// Set as properties: their attribute form would be a default, not the live state.
const PROPERTIES = { value: 1, checked: 1, selected: 1, disabled: 1, hidden: 1, indeterminate: 1 };

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Appends children like h() does (arrays flattened, null skipped), unlike Element.append,
 *  which would print "null". */
export function add(el, ...children) {
  append(el, children);
  return el;
}

/** Replaces the children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Escapes text for the few places that build HTML strings (markdown.js). */
export function escapeHtml(text) {
  return String(text)
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

/** A loading line; `aria-busy` on the region tells assistive technology to wait. */
export function loading(label = 'Loading…') {
  return h('p', { class: 'loading', role: 'status' }, label);
}

/** An empty state: says what is missing and, optionally, what to do. */
export function empty(text, action) {
  return h('div', { class: 'empty' }, h('p', null, text), action || null);
}

/** An error box showing the server's `detail` (problem+json) and the request id to quote. */
export function errorBox(err, retry) {
  const detail = err && err.detail ? err.detail : String(err && err.message ? err.message : err);
  return h('div', { class: 'notice error', role: 'alert' },
    h('p', null, h('strong', null, err && err.title ? `${err.title}: ` : 'Error: '), detail),
    err && err.requestId ? h('p', { class: 'muted small' }, `Request id ${err.requestId}`) : null,
    retry ? h('button', { type: 'button', class: 'button secondary', onclick: retry }, 'Try again') : null);
}

/** A status badge; the class picks a colour, the text carries the meaning (not colour alone). */
export function badge(text, kind) {
  return h('span', { class: ['badge', `badge-${kind || text}`] }, String(text).replace(/_/g, ' '));
}

/** A progress bar with a visible percentage. */
export function progressBar(done, total, label) {
  const pct = total > 0 ? Math.min(100, Math.round((done / total) * 100)) : 0;
  return h('div', { class: 'progress' },
    h('progress', { max: 100, value: pct, 'aria-label': label || 'Progress' }),
    h('span', { class: 'progress-text' }, `${pct} %`));
}

/** A horizontal stacked bar (segments: [{value, kind, label}]); widths are set through the
 *  CSSOM, which the CSP allows, not through style attributes, which it does not. */
export function stackedBar(segments, label) {
  const total = segments.reduce((n, s) => n + s.value, 0);
  const bar = h('div', { class: 'stack', role: 'img', 'aria-label': label });
  for (const s of segments) {
    if (!s.value) continue;
    const seg = h('span', { class: ['stack-seg', `seg-${s.kind}`], title: `${s.label}: ${s.value}` });
    seg.style.setProperty('width', `${(100 * s.value) / total}%`);
    bar.appendChild(seg);
  }
  return bar;
}

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

/** A timestamp as a <time> element with the exact value on hover. */
export function time(iso) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return h('span', null, iso);
  return h('time', { datetime: iso, title: iso }, dateFormat.format(d));
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

export function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many || `${one}s`}`;
}

/** A table from column definitions [{label, cell(row) -> node|string, class}]. */
export function table(columns, rows, caption) {
  return h('div', { class: 'table-wrap' },
    h('table', null,
      caption ? h('caption', null, caption) : null,
      h('thead', null, h('tr', null, columns.map((c) => h('th', { scope: 'col', class: c.class }, c.label)))),
      h('tbody', null, rows.map((row) => h('tr', null,
        columns.map((c) => h('td', { class: c.class, 'data-label': c.label }, c.cell(row))))))));
}

/** A labelled form field. `control` is the input/select; its id ties the label to it. */
export function field(label, control, hint) {
  const hintEl = hint ? h('p', { class: 'hint', id: `${control.id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
  return h('div', { class: 'field' }, h('label', { for: control.id }, label), control, hintEl);
}

/** A <select> with options [{value, label}] or strings. */
export function select(id, options, value) {
  return h('select', { id, name: id },
    options.map((o) => {
      const opt = typeof o === 'string' ? { value: o, label: o } : o;
      return h('option', { value: opt.value, selected: opt.value === value }, opt.label);
    }));
}

/** Shows a short message in the polite live region; it leaves by itself. */
export function toast(text, kind = 'info') {
  const box = document.getElementById('toasts');
  if (!box) return;
  const item = h('div', { class: ['toast', `toast-${kind}`] }, text);
  box.appendChild(item);
  setTimeout(() => item.remove(), 6000);
}

/** Asks for confirmation in a modal <dialog> (keyboard and screen-reader friendly, unlike a
 *  custom overlay); resolves true when confirmed. */
export function confirmDialog(title, text, confirmLabel = 'Confirm') {
  return new Promise((resolve) => {
    const cancel = h('button', { type: 'button', class: 'button secondary', value: 'cancel' }, 'Cancel');
    const ok = h('button', { type: 'button', class: 'button danger', value: 'ok' }, confirmLabel);
    const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': 'dialog-title' },
      h('h2', { id: 'dialog-title' }, title),
      h('p', null, text),
      h('div', { class: 'actions' }, cancel, ok));
    let answer = false;
    cancel.addEventListener('click', () => dialog.close());
    ok.addEventListener('click', () => { answer = true; dialog.close(); });
    dialog.addEventListener('close', () => { dialog.remove(); resolve(answer); });
    document.body.appendChild(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

/** A short random id for Idempotency-Key; crypto.randomUUID exists only in secure contexts. */
export function randomId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

/** Title Case for enum words such as `not_applicable`. */
export function label(word) {
  const s = String(word || '').replace(/_/g, ' ');
  return s.charAt(0).toUpperCase() + s.slice(1);
}
