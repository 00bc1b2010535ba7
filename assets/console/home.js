// Home: license and trial, usage against the trial limits, the last scan's posture per
// framework and the recent notifications. Each card loads on its own, so one slow or failing
// call leaves the others readable.

import { api, cached, isAbort } from './api.js';
import { badge, empty, errorBox, h, loading, plural, progressBar, replace, stackedBar, time } from './dom.js';
import { describeEvent } from './events.js';

const ENDED = new Set(['succeeded', 'failed', 'cancelled', 'interrupted']);

export async function render(view, ctx) {
  ctx.title('Home');
  const license = h('section', { class: 'card', 'aria-labelledby': 'license-h' });
  const usage = h('section', { class: 'card', 'aria-labelledby': 'usage-h' });
  const posture = h('section', { class: 'card wide', 'aria-labelledby': 'posture-h' });
  const feed = h('section', { class: 'card wide', 'aria-labelledby': 'feed-h' });
  const grid = h('div', { class: 'grid home-grid' }, license, usage, posture, feed);
  view.append(h('h1', null, 'Home'), grid);
  await Promise.all([
    card(license, 'license-h', 'License', () => loadLicense(ctx), ctx),
    card(usage, 'usage-h', 'Usage', () => loadUsage(ctx), ctx),
    card(posture, 'posture-h', 'Security posture', () => loadPosture(ctx), ctx),
    card(feed, 'feed-h', 'Recent notifications', () => loadFeed(ctx), ctx),
  ]);
  // Every card has its data (or its error): what bench/console_load.py times as "home ready".
  if (!ctx.signal.aborted) {
    grid.dataset.ready = 'home';
    performance.mark('console:home-ready');
  }
}

/** Draws a card's heading, its loading state, then its content or its error with a retry. */
async function card(section, id, title, load, ctx) {
  const body = h('div', { 'aria-busy': 'true' }, loading());
  replace(section, h('h2', { id }, title), body);
  try {
    const content = await load();
    body.removeAttribute('aria-busy');
    replace(body, content);
  } catch (err) {
    if (isAbort(err) || ctx.signal.aborted) return;
    body.removeAttribute('aria-busy');
    replace(body, errorBox(err, () => card(section, id, title, load, ctx)));
  }
}

async function loadLicense({ signal }) {
  const l = await api('/license', { signal });
  const rows = [
    ['Status', h('span', { id: 'license-status' }, badge(l.status))],
    ['Why', l.reason],
  ];
  if (l.limits_apply || l.status === 'trial') {
    rows.push(['Trial', h('span', { id: 'trial-days' }, `${plural(l.trial_days_left, 'day')} left`)]);
    rows.push(['Trial ends', time(l.trial_ends_at)]);
  }
  rows.push(['AWS Marketplace', l.marketplace_enabled ? `enabled${l.product_code ? ` (${l.product_code})` : ''}` : 'disabled']);
  if (l.last_check_at) rows.push(['Last checked', time(l.last_check_at)]);
  return dl(rows);
}

const DIMENSIONS = { SecurityScans: 'Security scans', ChatQuestions: 'Chat questions', DocumentAnalysis: 'Document analyses' };

async function loadUsage({ signal }) {
  const u = await api('/usage', { signal });
  return h('ul', { class: 'usage-list' }, u.dimensions.map((d) => {
    const name = DIMENSIONS[d.dimension] || d.dimension;
    if (d.limit === null || d.limit === undefined) {
      return h('li', null, h('span', { class: 'usage-name' }, name),
        h('span', null, `${d.used} used`), h('span', { class: 'muted small' }, 'no trial limit applies'));
    }
    const id = `meter-${d.dimension}`;
    return h('li', null,
      h('label', { class: 'usage-name', for: id }, name),
      h('meter', { id, min: 0, max: d.limit, value: Math.min(d.used, d.limit), low: d.limit * 0.75, high: d.limit * 0.9, optimum: 0 }),
      h('span', null, `${d.used} of ${d.limit} used, ${d.remaining} left`));
  }));
}

/** The newest release of each framework (CIS has two), as compliance views want one each. */
export async function currentFrameworks() {
  const page = await cached('/kb/frameworks?limit=500');
  const newest = new Map();
  for (const f of page.items) {
    const seen = newest.get(f.id);
    if (!seen || seen.version.localeCompare(f.version, undefined, { numeric: true }) < 0) newest.set(f.id, f);
  }
  return [...newest.values()];
}

async function loadPosture({ signal }) {
  const scans = await api('/scans?limit=1', { signal });
  if (!scans.items.length) {
    return empty('No scan yet: the posture appears after the first scan of an AWS account.',
      h('a', { class: 'button', href: '#/scans' }, 'Start a scan'));
  }
  const scan = scans.items[0];
  const head = h('p', null, 'Last scan ', h('a', { href: `#/scans/${scan.id}` }, scan.account.account_id || scan.id.slice(0, 8)),
    ', ', time(scan.created_at), ' ', badge(scan.status));
  if (!ENDED.has(scan.status)) {
    return h('div', null, head, progressBar(scan.progress.done, scan.progress.total, 'Scan progress'),
      h('p', null, h('a', { href: `#/scans/${scan.id}` }, 'Follow the scan')));
  }
  if (scan.status !== 'succeeded' && scan.counts.pass + scan.counts.fail === 0) {
    return h('div', null, head, h('p', null, scan.error || 'This scan produced no verdicts.'));
  }
  const frameworks = await currentFrameworks();
  // An ended scan's compliance never changes: cached for the rest of the session.
  const results = await Promise.all(frameworks.map((f) =>
    cached(`/scans/${scan.id}/compliance?framework=${encodeURIComponent(f.key)}`)
      .then((c) => ({ f, c }), (err) => ({ f, err }))));
  return h('div', null, head,
    h('p', { class: 'muted small' }, 'Controls per framework: passing, failing, needing manual evidence, not covered by this scan.'),
    h('ul', { class: 'posture' }, results.map(({ f, c, err }) => {
      const link = h('a', { href: `#/scans/${scan.id}/compliance?framework=${encodeURIComponent(f.key)}` }, f.name);
      if (err) return h('li', null, link, h('span', { class: 'muted' }, err.detail || 'unavailable'));
      const s = c.summary;
      return h('li', null, link,
        stackedBar([
          { value: s.pass || 0, kind: 'pass', label: 'Pass' },
          { value: s.fail || 0, kind: 'fail', label: 'Fail' },
          { value: s.manual || 0, kind: 'manual', label: 'Manual' },
          { value: s.not_covered || 0, kind: 'not_covered', label: 'Not covered' },
        ], `${f.name}: ${s.pass || 0} pass, ${s.fail || 0} fail, ${s.manual || 0} manual, ${s.not_covered || 0} not covered`),
        h('span', { class: 'small' }, `${s.pass || 0} pass · ${s.fail || 0} fail · ${s.manual || 0} manual · ${s.not_covered || 0} not covered`));
    })));
}

async function loadFeed({ signal }) {
  // The feed is oldest first: its total says where the newest page starts. Progress events are
  // left out: they matter while one watches a scan, not in a summary.
  const types = 'scan.started,scan.finished,scan.failed,document.analyzed,document.failed,usage.threshold,license.changed,kb.updated,test';
  const first = await api(`/notifications?limit=1&types=${types}`, { signal });
  if (!first.total) return empty('No notifications in the last 24 hours.');
  const count = 8;
  const page = first.total <= 1 ? first : await api(`/notifications?limit=${count}&offset=${Math.max(0, first.total - count)}&types=${types}`, { signal });
  return h('ul', { class: 'feed' }, page.items.slice().reverse().map((e) =>
    h('li', null, h('code', { class: 'feed-type' }, e.type), ' ', describeEvent(e), ' ', h('span', { class: 'muted small' }, time(e.ts)))));
}

function dl(rows) {
  return h('dl', { class: 'facts' }, rows.map(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
}
