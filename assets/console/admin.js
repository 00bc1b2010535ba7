// Admin (admin keys only; the navigation hides it for user keys and the API refuses them
// anyway): API keys — list, create (the key is shown once), revoke — and the usage report.

import { api, isAbort } from './api.js';
import { badge, confirmDialog, empty, errorBox, field, h, label, loading, replace, select, table, time, toast } from './dom.js';
import { revokedOwnKey, session } from './session.js';

const NIL = '00000000-0000-0000-0000-000000000000';

export async function render(view, ctx) {
  ctx.title('Admin');
  const keys = h('div', { 'aria-busy': 'true' }, loading('Loading API keys…'));
  const created = h('div', { 'aria-live': 'polite' });
  const usage = h('div', { 'aria-busy': 'true' }, loading('Loading usage…'));
  view.append(h('h1', null, 'Admin'),
    h('section', { class: 'card', 'aria-labelledby': 'keys-h' }, h('h2', { id: 'keys-h' }, 'API keys'),
      createForm(ctx, created, () => loadKeys(keys, ctx)), created, keys),
    h('section', { class: 'card', 'aria-labelledby': 'usage-report-h' }, h('h2', { id: 'usage-report-h' }, 'Usage report'), usage));
  await Promise.all([loadKeys(keys, ctx), loadUsage(usage, ctx)]);
}

function createForm(ctx, created, reload) {
  const name = h('input', { id: 'key-name', name: 'name', type: 'text', required: true, maxlength: 100, autocomplete: 'off' });
  const scope = select('key-scope', [{ value: 'user', label: 'User' }, { value: 'admin', label: 'Admin' }], 'user');
  const message = h('div', { 'aria-live': 'polite' });
  const submit = h('button', { type: 'submit', class: 'button', id: 'create-key' }, 'Create key');
  const form = h('form', { class: 'form inline-form' }, field('Name', name), field('Scope', scope, 'Admin keys also manage keys.'), h('div', { class: 'actions' }, submit), message);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    message.replaceChildren();
    if (!name.value.trim()) {
      message.append(h('p', { class: 'notice error', role: 'alert' }, 'Give the key a name.'));
      name.focus();
      return;
    }
    submit.disabled = true;
    try {
      const key = await api('/keys', { method: 'POST', body: { name: name.value.trim(), scope: scope.value }, signal: ctx.signal });
      form.reset();
      showCreated(created, key);
      reload();
    } catch (err) {
      if (!isAbort(err)) message.append(errorBox(err));
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

/** The new key, once: after "Done" (or leaving the page) it is gone from the page. */
function showCreated(box, key) {
  const input = h('input', { id: 'new-key', type: 'text', readonly: true, value: key.key, spellcheck: 'false', class: 'mono' });
  const copy = h('button', { type: 'button', class: 'button', id: 'copy-key' }, 'Copy');
  const done = h('button', { type: 'button', class: 'button secondary' }, 'Done');
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(input.value);
      toast('Key copied to the clipboard.');
    } catch {
      // No clipboard permission (or not a secure context): select it for Ctrl+C.
      input.select();
      toast('Press Ctrl+C (⌘C) to copy the selected key.');
    }
  });
  done.addEventListener('click', () => replace(box));
  replace(box, h('div', { class: 'notice success' },
    h('p', null, h('strong', null, `Key “${key.name}” created (${key.scope}). `), 'Copy it now: it is shown only once and cannot be retrieved later.'),
    field('New API key', input), h('div', { class: 'actions' }, copy, done)));
  input.focus();
  input.select();
}

async function loadKeys(box, ctx) {
  try {
    const page = await api('/keys?limit=500', { signal: ctx.signal });
    box.removeAttribute('aria-busy');
    if (!page.items.length) {
      replace(box, empty('No API keys in the database (the bootstrap key is configured, not stored).'));
      return;
    }
    const mine = session.user && session.user.key_id;
    replace(box, table([
      { label: 'Name', class: 'wrap', cell: (k) => h('span', null, k.name, k.id === mine ? h('span', { class: 'muted small' }, ' (this session)') : null) },
      { label: 'Prefix', cell: (k) => h('code', null, k.prefix) },
      { label: 'Scope', cell: (k) => label(k.scope) },
      { label: 'Created', cell: (k) => time(k.created_at) },
      { label: 'Last used', cell: (k) => time(k.last_used_at) },
      { label: 'Status', cell: (k) => (k.revoked_at ? h('span', null, badge('revoked'), ' ', time(k.revoked_at)) : badge('active')) },
      { label: 'Actions', cell: (k) => (k.revoked_at || k.id === NIL ? '' : h('button', {
        type: 'button', class: 'button danger secondary small revoke',
        dataset: { keyId: k.id, current: String(k.id === mine) },
        'aria-label': `Revoke key ${k.name}`,
        onclick: () => revoke(k, box, ctx),
      }, 'Revoke')) },
    ], page.items, 'API keys, revoked ones included'));
  } catch (err) {
    if (isAbort(err)) return;
    box.removeAttribute('aria-busy');
    replace(box, errorBox(err, () => loadKeys(box, ctx)));
  }
}

async function revoke(k, box, ctx) {
  const own = session.user && k.id === session.user.key_id;
  const ok = await confirmDialog(`Revoke “${k.name}”?`,
    own ? 'This is the key this console session uses: revoking it signs you out at once. Every client using it stops working.'
      : 'Every client using this key stops working at once. This cannot be undone.', 'Revoke');
  if (!ok) return;
  try {
    await api(`/keys/${k.id}`, { method: 'DELETE', signal: ctx.signal });
    toast(`Key “${k.name}” revoked.`);
    if (own) revokedOwnKey();
    // For the own key this call is refused, which ends the session with the server's reason.
    await loadKeys(box, ctx);
  } catch (err) {
    if (!isAbort(err)) toast(err.detail || err.message, 'error');
  }
}

const DIMENSIONS = { SecurityScans: 'Security scans', ChatQuestions: 'Chat questions', DocumentAnalysis: 'Document analyses' };

async function loadUsage(box, ctx) {
  try {
    const u = await api('/usage', { signal: ctx.signal });
    box.removeAttribute('aria-busy');
    replace(box,
      h('p', null, 'License: ', badge(u.license_status)),
      table([
        { label: 'Dimension', cell: (d) => DIMENSIONS[d.dimension] || d.dimension },
        { label: 'Used', class: 'num', cell: (d) => String(d.used) },
        { label: 'Trial limit', class: 'num', cell: (d) => (d.limit ?? '—').toString() },
        { label: 'Remaining', class: 'num', cell: (d) => (d.remaining ?? '—').toString() },
        { label: 'This hour', class: 'num', cell: (d) => String(d.current_hour_pending) },
        { label: 'Unreported', class: 'num', cell: (d) => String(d.unreported) },
        { label: 'Reported', class: 'num', cell: (d) => String(d.reported) },
        { label: 'Unconfirmed', class: 'num', cell: (d) => (d.unconfirmed.units ? `${d.unconfirmed.units} (${d.unconfirmed.hours.length} h)` : '0') },
        { label: 'Last report', class: 'wrap', cell: (d) => (d.last_report
          ? h('span', null, `${d.last_report.quantity} units for `, time(d.last_report.hour), ' ', badge(d.last_report.status), d.last_report.last_error ? ` ${d.last_report.last_error}` : '')
          : 'none') },
        { label: 'Reporting', class: 'wrap', cell: (d) => (d.reporting_blocked ? h('span', { class: 'text-error' }, `blocked: ${d.reporting_blocked}`) : 'ok') },
      ], u.dimensions, 'Usage by dimension'),
      h('p', { class: 'muted small' }, 'Unconfirmed units may have been billed by AWS without confirmation; they are never sent again. Compare them with the AWS Marketplace seller reports.'));
  } catch (err) {
    if (isAbort(err)) return;
    box.removeAttribute('aria-busy');
    replace(box, errorBox(err, () => loadUsage(box, ctx)));
  }
}
