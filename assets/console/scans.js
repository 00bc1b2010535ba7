// Scans: start one, follow it live (scan.* events on the notifications WebSocket, polling only
// while the socket is down), then read its findings, its compliance per framework and its
// difference from an earlier scan of the same account, and export it.

import { all, api, cached, forget, isAbort, query, url } from './api.js';
import {
  badge, confirmDialog, empty, errorBox, field, h, label, loading, plural, progressBar, randomId,
  replace, select, stackedBar, table, time, toast,
} from './dom.js';
import { follow } from './events.js';
import { currentFrameworks } from './home.js';
import { controlHref } from './markdown.js';

const ENDED = new Set(['succeeded', 'failed', 'cancelled', 'interrupted']);
const SEVERITIES = ['critical', 'high', 'medium', 'low', 'informational'];
const FINDING_STATUSES = ['fail', 'error', 'pass', 'not_applicable'];
const PAGE = 50;

export async function render(view, ctx) {
  if (ctx.params.length) return renderScan(view, ctx, ctx.params[0], ctx.params[1] || ctx.extra.tab || 'findings');
  return renderList(view, ctx);
}

// --- list and new scan ---------------------------------------------------------------------

async function renderList(view, ctx) {
  ctx.title('Scans');
  const listBody = h('div', { 'aria-busy': 'true' }, loading('Loading scans…'));
  const formBody = h('div', null, loading('Loading the form…'));
  view.append(h('h1', null, 'Scans'),
    h('p', { class: 'lead' }, 'Scans run the knowledge base’s checks read-only against an AWS account and map every finding to the controls of each framework.'),
    h('section', { class: 'card', 'aria-labelledby': 'new-scan-h' }, h('h2', { id: 'new-scan-h' }, 'Start a scan'), formBody),
    h('section', { class: 'card', 'aria-labelledby': 'scan-list-h' }, h('h2', { id: 'scan-list-h' }, 'Scans'), listBody));

  const loadList = async () => {
    try {
      const page = await api('/scans?limit=50', { signal: ctx.signal });
      listBody.removeAttribute('aria-busy');
      replace(listBody, page.items.length ? scanTable(page.items) : empty('No scans yet. Start one above.'));
    } catch (err) {
      if (isAbort(err)) return;
      replace(listBody, errorBox(err, loadList));
    }
  };
  // The list refreshes itself when a scan starts or ends (throttled: one reload at a time).
  let reloading = null;
  follow('scan.started,scan.finished,scan.failed', {
    signal: ctx.signal,
    onEvent: () => { if (!reloading) reloading = loadList().finally(() => { reloading = null; }); },
  });
  await Promise.all([loadList(), drawForm(formBody, ctx)]);
}

function scanTable(scans) {
  return table([
    { label: 'Scan', cell: (s) => h('a', { href: `#/scans/${s.id}` }, time(s.created_at)) },
    { label: 'Status', cell: (s) => badge(s.status) },
    { label: 'Account', cell: (s) => s.account.account_id || (s.account.role_arn ? 'role' : 'own account') },
    { label: 'Regions', cell: (s) => regionText(s) },
    { label: 'Failing', class: 'num', cell: (s) => String(s.counts.fail) },
    { label: 'Duration', cell: (s) => (ENDED.has(s.status) ? (s.duration_seconds ? `${s.duration_seconds.toFixed(1)} s` : '—') : progressBar(s.progress.done, s.progress.total, 'Scan progress')) },
  ], scans);
}

function regionText(s) {
  if (s.regions && s.regions.length) return s.regions.length > 3 ? `${s.regions.slice(0, 3).join(', ')} +${s.regions.length - 3}` : s.regions.join(', ');
  return Array.isArray(s.regions_requested) ? s.regions_requested.join(', ') : 'all enabled';
}

async function drawForm(body, ctx) {
  let frameworks = [];
  try {
    frameworks = await currentFrameworks();
  } catch (err) {
    if (isAbort(err)) return;
    // The form still works without the framework filter.
  }
  const regions = h('input', { id: 'scan-regions', name: 'regions', type: 'text', autocomplete: 'off', spellcheck: 'false', placeholder: 'us-east-1, eu-west-1' });
  const roleArn = h('input', { id: 'scan-role-arn', name: 'role_arn', type: 'text', autocomplete: 'off', spellcheck: 'false', placeholder: 'arn:aws:iam::123456789012:role/CloudOptimizerScan' });
  const externalId = h('input', { id: 'scan-external-id', name: 'external_id', type: 'text', autocomplete: 'off', spellcheck: 'false' });
  const roleFields = h('div', { class: 'role-fields', hidden: true },
    field('Role ARN', roleArn), field('External id (optional)', externalId, 'The external id the role’s trust policy demands; used for this scan only and never stored.'));
  const radio = (value, text, checked) => h('label', { class: 'choice' },
    h('input', { type: 'radio', name: 'account', value, checked, id: `scan-account-${value}` }), ' ', text);
  const accountSet = h('fieldset', null, h('legend', null, 'Account'),
    radio('self', 'This deployment’s own account', true),
    radio('role', 'Another account, through a role', false),
    roleFields);
  accountSet.addEventListener('change', () => {
    const role = accountSet.querySelector('input[value="role"]').checked;
    roleFields.hidden = !role;
    roleArn.required = role;
  });
  const fwSet = h('fieldset', null, h('legend', null, 'Frameworks (optional)'),
    h('p', { class: 'hint' }, 'Only run the checks that evidence these frameworks’ controls. None selected: every check.'),
    h('div', { class: 'choices' }, frameworks.map((f) => h('label', { class: 'choice' },
      h('input', { type: 'checkbox', name: 'frameworks', value: f.id }), ' ', f.name))));
  const message = h('div', { 'aria-live': 'polite' });
  const submit = h('button', { type: 'submit', class: 'button', id: 'start-scan' }, 'Start scan');
  const form = h('form', { class: 'form' },
    field('Regions', regions, 'Comma-separated region names. Empty: every region enabled in the account.'),
    accountSet, fwSet, message, h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    message.replaceChildren();
    const body = {};
    const list = regions.value.split(/[\s,]+/).filter(Boolean);
    body.regions = list.length ? list : 'enabled';
    if (accountSet.querySelector('input[value="role"]').checked) {
      if (!roleArn.value.trim()) {
        message.append(h('p', { class: 'notice error', role: 'alert' }, 'Enter the ARN of the role to assume.'));
        roleArn.focus();
        return;
      }
      body.account = { role_arn: roleArn.value.trim() };
      if (externalId.value.trim()) body.account.external_id = externalId.value.trim();
    } else {
      body.account = 'self';
    }
    const chosen = [...fwSet.querySelectorAll('input:checked')].map((i) => i.value);
    if (chosen.length) body.frameworks = chosen;
    submit.disabled = true;
    try {
      const scan = await api('/scans', { method: 'POST', body, headers: { 'Idempotency-Key': randomId() }, signal: ctx.signal });
      location.hash = `#/scans/${scan.id}`;
    } catch (err) {
      if (isAbort(err)) return;
      message.append(errorBox(err));
      submit.disabled = false;
    }
  });
  replace(body, form);
}

// --- one scan ------------------------------------------------------------------------------

async function renderScan(view, ctx, id, tab) {
  ctx.title('Scan');
  const heading = h('h1', null, `Scan ${id.slice(0, 8)}`);
  const summary = h('section', { class: 'card', 'aria-labelledby': 'scan-summary-h', 'aria-busy': 'true' }, loading('Loading the scan…'));
  const tabBody = h('section', { class: 'tab-body', 'aria-labelledby': 'tab-h' });
  view.append(h('p', { class: 'crumbs' }, h('a', { href: '#/scans' }, 'Scans'), ' › ', `Scan ${id.slice(0, 8)}`), heading, summary);

  let scan;
  try {
    scan = await api(`/scans/${encodeURIComponent(id)}`, { signal: ctx.signal });
  } catch (err) {
    if (isAbort(err)) return;
    replace(summary, errorBox(err, () => { location.reload(); }));
    summary.removeAttribute('aria-busy');
    return;
  }
  summary.removeAttribute('aria-busy');
  const tabs = h('nav', { class: 'tabs', 'aria-label': 'Scan views' },
    ['findings', 'compliance', 'diff'].map((t) => h('a', {
      href: `#/scans/${id}/${t}`, 'aria-current': t === tab ? 'page' : null, id: `tab-${t}`,
    }, { findings: 'Findings', compliance: 'Compliance', diff: 'Difference' }[t])));
  view.append(tabs, tabBody);

  const live = { scan, refreshTab: () => {} };
  drawSummary(summary, live, ctx);
  if (!ENDED.has(scan.status)) watch(summary, live, ctx);

  if (tab === 'compliance') await complianceTab(tabBody, live, ctx);
  else if (tab === 'diff') await diffTab(tabBody, live, ctx);
  else await findingsTab(tabBody, live, ctx);
}

/** Follows a running scan: progress from events, the final state from the API. */
function watch(summary, live, ctx) {
  const id = live.scan.id;
  let refetching = null;
  const refetch = () => {
    if (refetching) return refetching;
    refetching = api(`/scans/${id}`, { signal: ctx.signal }).then((scan) => {
      const ended = ENDED.has(scan.status) && !ENDED.has(live.scan.status);
      live.scan = scan;
      drawSummary(summary, live, ctx);
      if (ended) live.refreshTab();
    }).catch((err) => {
      if (!isAbort(err)) toast(err.detail || err.message, 'error');
    }).finally(() => { refetching = null; });
    return refetching;
  };
  const socket = follow('scan.*', {
    signal: ctx.signal,
    onEvent: (e) => {
      if (!e.data || e.data.id !== id || ENDED.has(live.scan.status)) return;
      if (e.type === 'scan.progress') {
        // Events can overtake each other across replicas: progress only moves forward.
        const p = live.scan.progress;
        if (e.data.done >= p.done) {
          live.scan = { ...live.scan, status: 'running', progress: { done: e.data.done, total: e.data.total } };
          drawSummary(summary, live, ctx);
        }
      } else {
        refetch();
      }
    },
    // Connected (or back): the state may have moved while no event could arrive.
    onState: (state) => { if (state === 'live') refetch(); },
    onReset: refetch,
  });
  // Polling only while the socket is down, so a scan's end is never missed.
  const timer = setInterval(() => {
    if (ENDED.has(live.scan.status)) clearInterval(timer);
    else if (!socket.live) refetch();
  }, 5000);
  ctx.signal.addEventListener('abort', () => clearInterval(timer));
}

function drawSummary(section, live, ctx) {
  // Redrawn on every progress event: a keyboard user on the Cancel button must stay there.
  const focused = section.contains(document.activeElement) ? document.activeElement.id : '';
  drawSummaryContent(section, live, ctx);
  if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
}

function drawSummaryContent(section, live, ctx) {
  const s = live.scan;
  const ended = ENDED.has(s.status);
  const done = s.status === 'succeeded' ? Math.max(s.progress.total, 1) : s.progress.done;
  const total = s.status === 'succeeded' ? Math.max(s.progress.total, 1) : s.progress.total;
  const actions = h('div', { class: 'actions' });
  if (!ended) {
    const cancel = h('button', { type: 'button', class: 'button secondary', id: 'cancel-scan', disabled: s.cancel_requested }, s.cancel_requested ? 'Cancelling…' : 'Cancel scan');
    cancel.addEventListener('click', async () => {
      cancel.disabled = true;
      try {
        live.scan = await api(`/scans/${s.id}/cancel`, { method: 'POST', signal: ctx.signal });
        drawSummary(section, live, ctx);
        toast('Cancelling: AWS calls stop within a second.');
      } catch (err) {
        if (!isAbort(err)) toast(err.detail || err.message, 'error');
        cancel.disabled = false;
      }
    });
    actions.append(cancel);
  } else {
    const del = h('button', { type: 'button', class: 'button danger secondary', id: 'delete-scan' }, 'Delete scan');
    del.addEventListener('click', async () => {
      if (!(await confirmDialog('Delete this scan?', 'The scan and all its findings will be deleted. This cannot be undone.', 'Delete'))) return;
      try {
        await api(`/scans/${s.id}`, { method: 'DELETE', signal: ctx.signal });
        forget(`/scans/${s.id}/`);
        toast('Scan deleted.');
        location.hash = '#/scans';
      } catch (err) {
        if (!isAbort(err)) toast(err.detail || err.message, 'error');
      }
    });
    actions.append(del);
  }
  const failed = SEVERITIES.filter((k) => s.failed_by_severity[k]).map((k) => `${s.failed_by_severity[k]} ${k}`).join(', ');
  replace(section,
    h('h2', { id: 'scan-summary-h' }, 'Status'),
    h('p', { class: 'scan-state' }, h('span', { id: 'scan-status', dataset: { status: s.status } }, badge(s.status)),
      s.cancel_requested && !ended ? ' cancellation requested' : ''),
    h('div', { id: 'scan-progress', dataset: { done: String(done), total: String(total) } },
      progressBar(done, total, 'Scan progress'),
      h('span', { class: 'muted small' }, total ? ` ${done} of ${total} service × region parts` : (ended ? ' ended before any part ran' : ' starting…'))),
    s.error ? h('p', { class: 'notice error' }, s.error) : null,
    h('dl', { class: 'facts' },
      h('dt', null, 'Account'), h('dd', null, s.account.account_id || (ended ? '(not resolved: the scan ended first)' : '(resolved when the scan starts)'), s.account.role_arn ? ` via ${s.account.role_arn}` : ''),
      h('dt', null, 'Regions'), h('dd', null, regionText(s)),
      s.frameworks ? [h('dt', null, 'Frameworks'), h('dd', null, s.frameworks.join(', '))] : null,
      h('dt', null, 'Findings'), h('dd', { id: 'scan-counts' }, `${s.counts.fail} fail, ${s.counts.pass} pass, ${s.counts.error} error, ${s.counts.not_applicable} not applicable`),
      failed ? [h('dt', null, 'Failing by severity'), h('dd', null, failed)] : null,
      h('dt', null, 'Started'), h('dd', null, time(s.started_at || s.created_at)),
      ended ? [h('dt', null, 'Finished'), h('dd', null, time(s.finished_at), s.duration_seconds ? ` (${s.duration_seconds.toFixed(1)} s, ${plural(s.aws_calls, 'AWS call')})` : '')] : null),
    actions);
}

// --- findings --------------------------------------------------------------------------------

async function findingsTab(body, live, ctx) {
  const id = live.scan.id;
  const q = ctx.query;
  const filters = { status: q.get('status') || '', severity: q.get('severity') || '', service: q.get('service') || '', region: q.get('region') || '', framework: q.get('framework') || '' };
  let offset = Number(q.get('offset')) || 0;
  const exportLinks = h('p', { class: 'exports' });
  const results = h('div', { 'aria-live': 'polite' });
  replace(body, h('h2', { id: 'tab-h' }, 'Findings'), loading('Loading findings…'));
  const frameworks = await currentFrameworks().catch(() => []);
  const services = await cached('/kb/services?limit=500').then((p) => p.items.map((s) => s.id)).catch(() => []);

  const any = { value: '', label: 'Any' };
  const controls = {
    status: select('f-status', [any, ...FINDING_STATUSES.map((s) => ({ value: s, label: label(s) }))], filters.status),
    severity: select('f-severity', [any, ...SEVERITIES.map((s) => ({ value: s, label: label(s) }))], filters.severity),
    service: select('f-service', [any, ...services.map((s) => ({ value: s, label: s }))], filters.service),
    region: select('f-region', [any, ...(live.scan.regions || []).map((r) => ({ value: r, label: r }))], filters.region),
    framework: select('f-framework', [any, ...frameworks.map((f) => ({ value: f.id, label: f.name }))], filters.framework),
  };
  const form = h('form', { class: 'filters', 'aria-label': 'Filter findings' },
    field('Status', controls.status), field('Severity', controls.severity), field('Service', controls.service),
    field('Region', controls.region), field('Framework', controls.framework));

  const load = async () => {
    replace(results, loading('Loading findings…'));
    const params = { ...filters, limit: PAGE, offset };
    // The address keeps the filters (shareable, survives a reload) without a re-render.
    history.replaceState(null, '', `#/scans/${id}/findings${query({ ...filters, offset: offset || '' })}`);
    replace(exportLinks, 'Export these findings: ', ['json', 'csv', 'ocsf', 'asff'].map((format, i) => [i ? ' · ' : '',
      h('a', { href: url(`/scans/${id}/export${query({ ...filters, format })}`), download: '', class: 'export', dataset: { format } }, format.toUpperCase())]));
    try {
      const page = await api(`/scans/${id}/findings${query(params)}`, { signal: ctx.signal });
      replace(results, findingsTable(page, (next) => { offset = next; load(); }));
    } catch (err) {
      if (!isAbort(err)) replace(results, errorBox(err, load));
    }
  };
  form.addEventListener('change', (e) => {
    const key = e.target.id.replace('f-', '');
    filters[key] = e.target.value;
    offset = 0;
    load();
  });
  live.refreshTab = load;
  replace(body, h('h2', { id: 'tab-h' }, 'Findings'), form, exportLinks, results);
  await load();
}

function findingsTable(page, go) {
  if (!page.items.length) {
    return empty(page.total === 0 && page.offset === 0 ? 'No findings match these filters (yet).' : 'No more findings.');
  }
  const from = page.offset + 1;
  const to = page.offset + page.items.length;
  const pager = h('div', { class: 'pager' },
    h('span', null, `Findings ${from}–${to} of ${page.total}`),
    h('button', { type: 'button', class: 'button secondary small', disabled: page.offset === 0, onclick: () => go(Math.max(0, page.offset - page.limit)) }, 'Previous'),
    h('button', { type: 'button', class: 'button secondary small', disabled: !page.next, onclick: () => go(page.offset + page.limit) }, 'Next'));
  return h('div', null, table([
    { label: 'Severity', cell: (f) => badge(f.severity) },
    { label: 'Status', cell: (f) => badge(f.status) },
    { label: 'Check', cell: (f) => h('span', null, f.title, h('br'), h('code', { class: 'small' }, f.check)) },
    { label: 'Resource', class: 'wrap', cell: (f) => h('span', null, h('code', { class: 'small' }, f.resource), f.resource_type ? h('span', { class: 'muted small' }, ` ${f.resource_type}`) : null) },
    { label: 'Region', class: 'nowrap', cell: (f) => f.region },
    { label: 'Reason', class: 'wrap', cell: (f) => h('div', null, f.reason, evidence(f.evidence)) },
  ], page.items, 'Findings of this scan'), pager);
}

function evidence(ev) {
  if (!ev || (typeof ev === 'object' && !Object.keys(ev).length)) return null;
  return h('details', null, h('summary', null, 'Evidence'), h('pre', null, JSON.stringify(ev, null, 2)));
}

// --- compliance ------------------------------------------------------------------------------

async function complianceTab(body, live, ctx) {
  const id = live.scan.id;
  replace(body, h('h2', { id: 'tab-h' }, 'Compliance'), loading('Loading compliance…'));
  const frameworks = await currentFrameworks();
  const wanted = ctx.query.get('framework') || (live.scan.frameworks && live.scan.frameworks[0]) || (frameworks[0] && frameworks[0].key);
  const fw = frameworks.find((f) => f.key === wanted || f.id === wanted) || frameworks[0];
  let statusFilter = ctx.query.get('status') || '';
  const fwSelect = select('c-framework', frameworks.map((f) => ({ value: f.key, label: `${f.name} (${f.version})` })), fw && fw.key);
  const stSelect = select('c-status', [{ value: '', label: 'Any' }, ...['fail', 'pass', 'manual', 'not_covered'].map((s) => ({ value: s, label: label(s) }))], statusFilter);
  const results = h('div', { 'aria-live': 'polite' });
  const form = h('form', { class: 'filters', 'aria-label': 'Compliance view' }, field('Framework', fwSelect), field('Control status', stSelect));

  const load = async () => {
    replace(results, loading('Loading compliance…'));
    const key = fwSelect.value;
    history.replaceState(null, '', `#/scans/${id}/compliance${query({ framework: key, status: statusFilter })}`);
    try {
      const path = `/scans/${id}/compliance?framework=${encodeURIComponent(key)}`;
      // An ended scan's compliance is final and can be kept; a running one's is not.
      const c = ENDED.has(live.scan.status) ? await cached(path) : await api(path, { signal: ctx.signal });
      replace(results, complianceView(c, statusFilter));
    } catch (err) {
      if (!isAbort(err)) replace(results, errorBox(err, load));
    }
  };
  fwSelect.addEventListener('change', load);
  stSelect.addEventListener('change', () => { statusFilter = stSelect.value; load(); });
  live.refreshTab = load;
  replace(body, h('h2', { id: 'tab-h' }, 'Compliance'), form, results);
  await load();
}

// Failures first: they are what to act on; controls keep the framework's order within a status.
const CONTROL_ORDER = { fail: 0, pass: 1, not_covered: 2, manual: 3 };
const CONTROLS_SHOWN = 100;

function complianceView(c, statusFilter, showAll = false) {
  const s = c.summary;
  const matching = (statusFilter ? c.controls.filter((x) => x.status === statusFilter) : c.controls)
    .map((x, i) => [x, i])
    .sort((a, b) => (CONTROL_ORDER[a[0].status] ?? 9) - (CONTROL_ORDER[b[0].status] ?? 9) || a[1] - b[1])
    .map(([x]) => x);
  const controls = showAll ? matching : matching.slice(0, CONTROLS_SHOWN);
  let more = null;
  if (controls.length < matching.length) {
    more = h('button', { type: 'button', class: 'button secondary' }, `Show all ${matching.length} controls`);
    more.addEventListener('click', () => {
      const view = complianceView(c, statusFilter, true);
      more.closest('#compliance').replaceWith(view);
    });
  }
  return h('div', { id: 'compliance' },
    h('p', { class: 'compliance-summary' }, `${s.pass} pass · ${s.fail} fail · ${s.manual} manual · ${s.not_covered} not covered`),
    stackedBar([
      { value: s.pass, kind: 'pass', label: 'Pass' }, { value: s.fail, kind: 'fail', label: 'Fail' },
      { value: s.manual, kind: 'manual', label: 'Manual' }, { value: s.not_covered, kind: 'not_covered', label: 'Not covered' },
    ], `${s.pass} pass, ${s.fail} fail, ${s.manual} manual, ${s.not_covered} not covered`),
    controls.length ? table([
      { label: 'Control', class: 'nowrap', cell: (x) => h('a', { href: controlHref(x.id) }, x.native_id) },
      { label: 'Title', class: 'wrap', cell: (x) => x.title },
      { label: 'Status', cell: (x) => badge(x.status) },
      { label: 'Checks', class: 'wrap', cell: (x) => (x.checks.length ? `${x.checks.reduce((n, k) => n + k.pass, 0)} pass, ${x.checks.reduce((n, k) => n + k.fail, 0)} fail (${plural(x.checks.length, 'check')})` : 'no automated check') },
      { label: 'Failing resources', class: 'wrap', cell: (x) => (x.findings.length ? h('details', null, h('summary', null, plural(x.findings.length, 'resource')),
        h('ul', null, x.findings.map((f) => h('li', null, badge(f.severity), ' ', h('code', { class: 'small' }, f.resource), ` (${f.region}) — ${f.reason}`)))) : '—') },
    ], controls, `Controls of ${c.framework}${controls.length < matching.length ? `: the first ${controls.length} of ${matching.length}` : ''}`) : empty('No control has this status.'),
    more);
}

// --- difference --------------------------------------------------------------------------------

async function diffTab(body, live, ctx) {
  const scan = live.scan;
  replace(body, h('h2', { id: 'tab-h' }, 'Difference from an earlier scan'), loading('Looking for earlier scans…'));
  const earlier = (await all('/scans?limit=200', { signal: ctx.signal, max: 200 })).filter((s) =>
    s.id !== scan.id && ENDED.has(s.status) && s.account.account_id && s.account.account_id === scan.account.account_id
    && s.created_at < scan.created_at);
  if (!earlier.length) {
    replace(body, h('h2', { id: 'tab-h' }, 'Difference from an earlier scan'),
      empty('There is no earlier ended scan of this account to compare with.'));
    return;
  }
  const against = ctx.query.get('against') || earlier[0].id;
  const choose = select('d-against', earlier.map((s) => ({ value: s.id, label: `${new Date(s.created_at).toLocaleString()} (${s.status}, ${s.counts.fail} failing)` })), against);
  const results = h('div', { 'aria-live': 'polite' });
  const load = async () => {
    replace(results, loading('Comparing…'));
    history.replaceState(null, '', `#/scans/${scan.id}/diff${query({ against: choose.value })}`);
    try {
      const d = await api(`/scans/${scan.id}/diff?against=${encodeURIComponent(choose.value)}`, { signal: ctx.signal });
      const part = (title, items, empty_) => h('section', null, h('h3', null, `${title} (${items.length})`),
        items.length ? table([
          { label: 'Severity', cell: (x) => badge(x.severity) },
          { label: 'Check', cell: (x) => h('code', { class: 'small' }, x.check) },
          { label: 'Resource', class: 'wrap', cell: (x) => h('code', { class: 'small' }, x.resource) },
          { label: 'Region', class: 'nowrap', cell: (x) => x.region },
          { label: 'Now / before', cell: (x) => `${x.status || 'not evaluated'} / ${x.previous_status || 'not evaluated'}` },
          { label: 'Reason', class: 'wrap', cell: (x) => x.reason },
        ], items) : h('p', { class: 'muted' }, empty_));
      // What changed comes first; what stayed the same is there on request.
      replace(results,
        part('New failures', d.new, 'No new failures.'),
        part('Resolved', d.resolved, 'Nothing resolved.'),
        h('details', { class: 'unchanged' }, h('summary', null, `Still failing (${d.unchanged.length})`),
          part('Still failing', d.unchanged, 'Nothing still failing.')));
    } catch (err) {
      if (!isAbort(err)) replace(results, errorBox(err, load));
    }
  };
  choose.addEventListener('change', load);
  replace(body, h('h2', { id: 'tab-h' }, 'Difference from an earlier scan'),
    h('form', { class: 'filters', 'aria-label': 'Compare' }, field('Compare with', choose)), results);
  await load();
}
