// Knowledge base: frameworks, a framework's control tree, one control (checks, remediation,
// related controls) and search. The KB only changes with a new version, so its lists are kept
// for the session (api.cached) and browsing does not spend the rate limit twice.

import { all, api, cached, isAbort, query } from './api.js';
import { add, badge, empty, errorBox, field, h, label, loading, plural, replace, select, table } from './dom.js';
import { controlHref, snippet } from './markdown.js';

export async function render(view, ctx) {
  const kind = ctx.extra.view;
  if (kind === 'framework') return frameworkPage(view, ctx, ctx.params[0]);
  if (kind === 'control') return controlPage(view, ctx, ctx.params[0]);
  if (kind === 'search') return searchPage(view, ctx);
  return indexPage(view, ctx);
}

function crumbs(...items) {
  return h('p', { class: 'crumbs' }, h('a', { href: '#/kb' }, 'Knowledge base'), items.map((i) => [' › ', i]));
}

async function frameworks() {
  return (await cached('/kb/frameworks?limit=500')).items;
}

function searchForm(ctx, q = '', framework = '') {
  const input = h('input', { id: 'kb-q', name: 'q', type: 'search', value: q, required: true, maxlength: 500,
    placeholder: 'e.g. encryption at rest, MFA for root, PCI DSS 8.4.2' });
  const fwSelect = select('kb-framework', [{ value: '', label: 'All frameworks' }], framework);
  frameworks().then((list) => {
    for (const f of list) fwSelect.append(h('option', { value: f.key, selected: f.key === framework }, `${f.name} (${f.version})`));
  }).catch(() => {});
  const form = h('form', { class: 'search', role: 'search' },
    field('Search the knowledge base', input), field('Framework', fwSelect),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'button' }, 'Search')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (!input.value.trim()) {
      input.focus();
      return;
    }
    location.hash = `#/kb/search${query({ q: input.value.trim(), framework: fwSelect.value })}`;
  });
  return form;
}

// --- index -----------------------------------------------------------------------------------

async function indexPage(view, ctx) {
  ctx.title('Knowledge base');
  const list = h('div', { 'aria-busy': 'true' }, loading('Loading frameworks…'));
  view.append(h('h1', null, 'Knowledge base'), searchForm(ctx),
    h('h2', null, 'Frameworks'), list);
  try {
    const items = await frameworks();
    list.removeAttribute('aria-busy');
    replace(list, items.length ? h('ul', { class: 'cards' }, items.map((f) => h('li', { class: 'card' },
      h('h3', null, h('a', { href: `#/kb/frameworks/${encodeURIComponent(f.key)}` }, `${f.name}`)),
      h('p', { class: 'muted small' }, `${f.publisher} · version ${f.version} · ${plural(f.controls, 'control')} (${f.technical_controls} technical)`),
      h('p', null, f.summary)))) : empty('The knowledge base has no frameworks loaded yet.'));
  } catch (err) {
    if (!isAbort(err)) replace(list, errorBox(err, () => location.reload()));
  }
}

// --- search ----------------------------------------------------------------------------------

async function searchPage(view, ctx) {
  const q = ctx.query.get('q') || '';
  const framework = ctx.query.get('framework') || '';
  const offset = Number(ctx.query.get('offset')) || 0;
  ctx.title(q ? `Search: ${q}` : 'Search');
  const results = h('div', { 'aria-live': 'polite', 'aria-busy': 'true' }, loading('Searching…'));
  view.append(crumbs('Search'), h('h1', null, 'Search'), searchForm(ctx, q, framework), results);
  if (!q) {
    replace(results, empty('Type words or a control id to search.'));
    return;
  }
  try {
    const page = await api(`/kb/search${query({ q, framework, limit: 20, offset })}`, { signal: ctx.signal });
    results.removeAttribute('aria-busy');
    if (!page.items.length) {
      replace(results, empty(`Nothing in the knowledge base matches “${q}”.`));
      return;
    }
    const more = (o) => `#/kb/search${query({ q, framework, offset: o || '' })}`;
    replace(results,
      h('p', null, `${page.total} results`),
      h('ol', { class: 'results', start: page.offset + 1 }, page.items.map((hit) => h('li', null,
        badge(hit.kind, 'kind'), ' ',
        hit.kind === 'control'
          ? h('a', { href: controlHref(hit.id) }, `${hit.native_id || hit.id} ${hit.title}`)
          : h('strong', null, hit.title),
        hit.framework ? h('span', { class: 'muted small' }, ` ${hit.framework}`) : null,
        h('p', { class: 'snippet' }, snippet(hit.snippet))))),
      h('div', { class: 'pager' },
        page.offset > 0 ? h('a', { class: 'button secondary small', href: more(Math.max(0, page.offset - page.limit)) }, 'Previous') : null,
        page.next ? h('a', { class: 'button secondary small', href: more(page.offset + page.limit) }, 'Next') : null));
  } catch (err) {
    if (!isAbort(err)) replace(results, errorBox(err));
  }
}

// --- a framework's control tree -----------------------------------------------------------

async function frameworkPage(view, ctx, key) {
  ctx.title('Framework');
  const heading = h('h1', null, key);
  const body = h('div', { 'aria-busy': 'true' }, loading('Loading the controls…'));
  view.append(crumbs(key), heading, body);
  try {
    const [list, controls] = await Promise.all([
      frameworks(),
      // A framework has a few hundred controls at most: all of them, for a complete tree.
      cached(`/kb/frameworks/${encodeURIComponent(key)}/controls?limit=500`).then(async (first) => {
        if (!first.next) return first.items;
        return first.items.concat(await all(first.next, { signal: ctx.signal }));
      }),
    ]);
    const f = list.find((x) => x.key === key || x.id === key);
    if (f) {
      heading.textContent = `${f.name} ${f.version}`;
      ctx.title(f.name);
      view.querySelector('.crumbs').lastChild.textContent = f.name;
    }
    body.removeAttribute('aria-busy');
    if (!controls.length) {
      replace(body, empty('This framework has no controls.'));
      return;
    }
    const filter = h('input', { id: 'control-filter', type: 'search', placeholder: 'id or words in the title' });
    const tree = controlTree(controls);
    filter.addEventListener('input', () => filterTree(tree, filter.value.trim().toLowerCase()));
    const toggle = (open) => () => tree.querySelectorAll('li:not(.leaf)').forEach((li) => setOpen(li, open));
    const tools = h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'button secondary small', onclick: toggle(true) }, 'Expand all'),
      h('button', { type: 'button', class: 'button secondary small', onclick: toggle(false) }, 'Collapse all'));
    replace(body,
      f ? h('p', { class: 'lead' }, f.summary, ' ', f.url ? h('a', { href: f.url, rel: 'noopener noreferrer', target: '_blank' }, 'Official text') : null) : null,
      h('p', { class: 'muted small' }, `${plural(controls.length, 'control')}. Groups open to show their controls.`),
      h('div', { class: 'card' }, h('div', { class: 'row' }, field('Filter controls', filter), tools), tree));
  } catch (err) {
    if (!isAbort(err)) replace(body, errorBox(err, () => location.reload()));
  }
}

/** Nested lists built from parent_id. A group has a toggle button beside its link (a link
 *  inside a <summary> would be a control nested in a control, which assistive technology cannot
 *  operate reliably). */
function controlTree(controls) {
  const children = new Map();
  const ids = new Set(controls.map((c) => c.id));
  for (const c of controls) {
    const parent = c.parent_id && ids.has(c.parent_id) ? c.parent_id : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(c);
  }
  // Few top-level groups (HIPAA's sections) open at once; many (FSBP's services) start closed,
  // or the page would be thousands of lines long.
  const openTop = (children.get(null) || []).length <= 12;
  const node = (c, depth) => {
    const kids = children.get(c.id) || [];
    const item = h('li', { dataset: { search: `${c.native_id} ${c.title}`.toLowerCase() } });
    const link = h('a', { href: controlHref(c.id), class: 'control-link' }, h('span', { class: 'native-id' }, c.native_id), ' ', c.title);
    const tags = h('span', { class: 'tags' }, badge(c.kind, 'kind'), c.technical ? badge('technical', 'kind') : null);
    if (!kids.length) {
      item.classList.add('leaf');
      item.append(link, ' ', tags);
      return item;
    }
    const list = h('ul', null, kids.map((k) => node(k, depth + 1)));
    const toggle = h('button', { type: 'button', class: 'twisty', 'aria-label': `Sub-controls of ${c.native_id} (${kids.length})` });
    toggle.addEventListener('click', () => setOpen(item, toggle.getAttribute('aria-expanded') !== 'true'));
    item.append(toggle, link, ' ', tags, h('span', { class: 'muted small' }, ` (${kids.length})`), list);
    setOpen(item, openTop && depth === 0 && kids.length < 40);
    return item;
  };
  return h('ul', { class: 'tree', id: 'control-tree' }, (children.get(null) || []).map((c) => node(c, 0)));
}

function setOpen(item, open) {
  const toggle = item.querySelector(':scope > .twisty');
  if (!toggle) return;
  toggle.setAttribute('aria-expanded', String(open));
  item.querySelector(':scope > ul').hidden = !open;
}

/** Shows the controls matching `text` and their ancestors (opened), hides the rest. */
function filterTree(tree, text) {
  const visit = (li) => {
    const kids = [...li.querySelectorAll(':scope > ul > li')];
    let shown = !text || li.dataset.search.includes(text);
    for (const k of kids) if (visit(k)) shown = true;
    li.hidden = !shown;
    if (text && shown && kids.length) setOpen(li, true);
    return shown;
  };
  for (const li of tree.querySelectorAll(':scope > li')) visit(li);
}

// --- one control -----------------------------------------------------------------------------

async function controlPage(view, ctx, id) {
  ctx.title('Control');
  const body = h('div', { 'aria-busy': 'true' }, loading('Loading the control…'));
  const crumb = h('p', { class: 'crumbs' }, h('a', { href: '#/kb' }, 'Knowledge base'));
  view.append(crumb, h('h1', { id: 'control-title' }, id), body);
  let c;
  try {
    c = await cached(`/kb/controls/${encodeURIComponent(id)}`);
  } catch (err) {
    if (isAbort(err)) return;
    body.removeAttribute('aria-busy');
    const candidates = err.problem && err.problem.candidates;
    replace(body, errorBox(err), candidates ? h('ul', null, candidates.map((x) => h('li', null, h('a', { href: controlHref(x) }, x)))) : null);
    return;
  }
  body.removeAttribute('aria-busy');
  const fw = (await frameworks().catch(() => [])).find((f) => f.key === c.framework);
  ctx.title(`${c.native_id} ${c.title}`);
  view.querySelector('#control-title').textContent = `${c.native_id} ${c.title}`;
  add(crumb, ' › ', h('a', { href: `#/kb/frameworks/${encodeURIComponent(c.framework)}` }, fw ? fw.name : c.framework),
    c.parent ? [' › ', h('a', { href: controlHref(c.parent.id) }, c.parent.native_id)] : null);

  const attrs = Object.entries(c.attributes || {}).filter(([, v]) => ['string', 'number', 'boolean'].includes(typeof v));
  replace(body,
    h('p', { class: 'lead' }, c.summary),
    h('dl', { class: 'facts' },
      h('dt', null, 'Framework'), h('dd', null, fw ? `${fw.name} ${fw.version}` : c.framework),
      h('dt', null, 'Id'), h('dd', null, h('code', null, c.id)),
      h('dt', null, 'Kind'), h('dd', null, label(c.kind), c.technical ? ' · technical (AWS configuration can evidence it)' : ''),
      attrs.map(([k, v]) => [h('dt', null, label(k)), h('dd', null, typeof v === 'string' ? v.replace(/_/g, ' ') : String(v))]),
      c.services && c.services.length ? [h('dt', null, 'AWS services'), h('dd', null, c.services.join(', '))] : null,
      c.url ? [h('dt', null, 'Official text'), h('dd', null, h('a', { href: c.url, rel: 'noopener noreferrer', target: '_blank' }, c.url))] : null),
    c.children && c.children.length ? h('section', null, h('h2', null, 'Sub-controls'),
      h('ul', null, c.children.map((k) => h('li', null, h('a', { href: controlHref(k.id) }, `${k.native_id} ${k.title}`))))) : null,
    h('section', { 'aria-labelledby': 'checks-h' }, h('h2', { id: 'checks-h' }, `Checks (${c.checks.length})`),
      c.checks.length ? table([
        { label: 'Check', class: 'wrap', cell: (k) => h('span', null, k.title, h('br'), h('code', { class: 'small' }, k.id.replace(/^check:kb:/, ''))) },
        { label: 'Severity', cell: (k) => badge(k.severity) },
        { label: 'Evidence', cell: (k) => label(k.strength || k.basis) },
        { label: 'Why', class: 'wrap', cell: (k) => k.rationale || '—' },
      ], c.checks, 'Checks that evidence this control') : h('p', { class: 'muted' }, c.children && c.children.length
        ? 'No check maps to this group itself; see its sub-controls.'
        : 'No AWS check evidences this control: it is met by process and documentation.')),
    h('section', { 'aria-labelledby': 'remediation-h' }, h('h2', { id: 'remediation-h' }, 'Remediation'),
      c.remediations.length ? c.remediations.map(remediation) : h('p', { class: 'muted' }, 'No remediation is attached to this control’s checks.')),
    h('section', { 'aria-labelledby': 'related-h' }, h('h2', { id: 'related-h' }, 'Related controls'),
      c.related.length ? h('ul', { class: 'related' }, c.related.map((r) => h('li', null,
        h('a', { href: controlHref(r.id) }, `${r.native_id} ${r.title}`),
        h('span', { class: 'muted small' }, ` ${r.framework} · ${r.basis === 'shared-checks' ? `${plural(r.shared_checks, 'shared check')}` : label(r.basis)}`)))) : h('p', { class: 'muted' }, 'No related controls in other frameworks.')));
}

function remediation(r) {
  const code = (title, text) => (text ? h('details', null, h('summary', null, title), h('pre', null, h('code', null, text))) : null);
  return h('article', { class: 'remediation' },
    h('h3', null, r.title),
    r.steps && r.steps.length ? h('ol', null, r.steps.map((s) => h('li', null, s))) : null,
    code('AWS CLI', r.cli), code('CloudFormation', r.cloudformation), code('Terraform', r.terraform));
}
