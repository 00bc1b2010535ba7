// Documents: upload (XMLHttpRequest, the one browser API that reports upload progress), the
// list with live status from document.* events, and a document's report with its gaps, its
// findings and a Markdown export.

import { api, csrfHeaders, failure, isAbort, url } from './api.js';
import {
  badge, bytes, confirmDialog, empty, errorBox, field, h, label, loading, plural, progressBar, randomId,
  replace, stackedBar, table, time, toast,
} from './dom.js';
import { follow } from './events.js';
import { currentFrameworks } from './home.js';
import { controlHref } from './markdown.js';

const ENDED = new Set(['analyzed', 'failed']);
// The frameworks documents are analysed against (the server's pipeline::FRAMEWORKS).
const DOC_FRAMEWORKS = ['hipaa-sr', 'soc2', 'pci-dss', 'gdpr', 'cis-aws', 'aws-fsbp', 'aws-wa-security'];

export async function render(view, ctx) {
  if (ctx.params.length) return renderDocument(view, ctx, ctx.params[0]);
  return renderList(view, ctx);
}

// --- upload and list -------------------------------------------------------------------------

async function renderList(view, ctx) {
  ctx.title('Documents');
  const listBody = h('div', { 'aria-busy': 'true' }, loading('Loading documents…'));
  const uploadBody = h('div');
  view.append(h('h1', null, 'Documents'),
    h('p', { class: 'lead' }, 'Upload a design document (PDF, Word, Markdown, text) or a template (CloudFormation, Terraform, a Terraform plan) to see which controls it meets, contradicts or is silent on.'),
    h('section', { class: 'card', 'aria-labelledby': 'upload-h' }, h('h2', { id: 'upload-h' }, 'Upload'), uploadBody),
    h('section', { class: 'card', 'aria-labelledby': 'doc-list-h' }, h('h2', { id: 'doc-list-h' }, 'Documents'), listBody));

  const loadList = async () => {
    try {
      const page = await api('/documents?limit=50', { signal: ctx.signal });
      listBody.removeAttribute('aria-busy');
      replace(listBody, page.items.length ? documentTable(page.items) : empty('No documents yet. Upload one above.'));
    } catch (err) {
      if (!isAbort(err)) replace(listBody, errorBox(err, loadList));
    }
  };
  // Live status: any document event reloads the list (one reload at a time, and one more if
  // events arrived meanwhile, so the last state is always shown).
  let reloading = null;
  let again = false;
  const reload = () => {
    if (reloading) { again = true; return; }
    reloading = loadList().finally(() => {
      reloading = null;
      if (again) { again = false; reload(); }
    });
  };
  const socket = follow('document.*', { signal: ctx.signal, onEvent: reload, onState: (s) => { if (s === 'live') reload(); } });
  // Without the socket, poll while something is still being analysed.
  const timer = setInterval(() => {
    if (!socket.live && listBody.querySelector('[data-status="received"], [data-status="analyzing"]')) reload();
  }, 4000);
  ctx.signal.addEventListener('abort', () => clearInterval(timer));

  drawUpload(uploadBody, ctx, reload);
  await loadList();
}

function documentTable(docs) {
  return table([
    { label: 'Name', class: 'wrap', cell: (d) => h('a', { href: `#/documents/${d.id}`, class: 'doc-link', dataset: { documentId: d.id } }, d.name) },
    { label: 'Type', cell: (d) => label(d.kind) },
    { label: 'Size', class: 'num', cell: (d) => bytes(d.size_bytes) },
    { label: 'Status', cell: (d) => h('span', { class: 'doc-status', dataset: { status: d.status, documentId: d.id } }, badge(d.status),
      ENDED.has(d.status) ? null : h('span', { class: 'small' }, ` ${d.progress} %`)) },
    { label: 'Findings', cell: (d) => countsText(d.counts) },
    { label: 'Uploaded', cell: (d) => time(d.created_at) },
  ], docs);
}

function countsText(c) {
  const parts = Object.entries(c).filter(([, n]) => n).map(([k, n]) => `${n} ${label(k).toLowerCase()}`);
  return parts.length ? parts.join(', ') : '—';
}

async function drawUpload(body, ctx, onUploaded) {
  const names = new Map();
  try {
    for (const f of await currentFrameworks()) names.set(f.id, f.name);
  } catch (err) {
    // Without KB names the framework ids are shown as they are.
  }
  const file = h('input', { id: 'document-file', name: 'file', type: 'file', required: true,
    accept: '.pdf,.docx,.md,.markdown,.txt,.yaml,.yml,.json,.template,.tf' });
  const fwSet = h('fieldset', null, h('legend', null, 'Frameworks (optional)'),
    h('p', { class: 'hint' }, 'None selected: the frameworks that apply follow from the content.'),
    h('div', { class: 'choices' }, DOC_FRAMEWORKS.map((id) => h('label', { class: 'choice' },
      h('input', { type: 'checkbox', name: 'frameworks', value: id }), ' ', names.get(id) || id))));
  const progress = h('div', { id: 'upload-progress', class: 'upload-progress', hidden: true, dataset: { percent: '0' } });
  const message = h('div', { 'aria-live': 'polite' });
  const submit = h('button', { type: 'submit', class: 'button', id: 'upload' }, 'Upload and analyse');
  const form = h('form', { class: 'form' }, field('File', file, 'Up to 20 MiB. The type is recognised from the content.'), fwSet, progress, message, h('div', { class: 'actions' }, submit));

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    message.replaceChildren();
    if (!file.files.length) {
      message.append(h('p', { class: 'notice error', role: 'alert' }, 'Choose a file to upload.'));
      file.focus();
      return;
    }
    const data = new FormData();
    data.append('file', file.files[0]);
    const chosen = [...fwSet.querySelectorAll('input:checked')].map((i) => i.value);
    if (chosen.length) data.append('frameworks', chosen.join(','));
    submit.disabled = true;
    progress.hidden = false;
    const show = (pct, text) => {
      progress.dataset.percent = String(pct);
      replace(progress, h('progress', { max: 100, value: pct, 'aria-label': 'Upload progress' }), h('span', { class: 'progress-text' }, text || `Uploading… ${pct} %`));
    };
    show(0);
    try {
      const doc = await upload(data, (pct) => show(pct), ctx.signal);
      show(100, `Uploaded ${file.files[0].name} (${bytes(doc.size_bytes)}): 100 %`);
      message.append(h('p', { class: 'notice info', id: 'upload-result', dataset: { documentId: doc.id } },
        `Received as ${label(doc.kind)}; the analysis runs now. `, h('a', { href: `#/documents/${doc.id}` }, 'Open its report')));
      form.reset();
      onUploaded();
    } catch (err) {
      if (isAbort(err)) return;
      progress.hidden = true;
      message.append(errorBox(err));
    } finally {
      submit.disabled = false;
    }
  });
  replace(body, form);
}

/** POSTs the form with upload progress; resolves with the document (202). */
function upload(data, onProgress, signal) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', url('/documents'));
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.setRequestHeader('Idempotency-Key', randomId());
    for (const [k, v] of Object.entries(csrfHeaders())) xhr.setRequestHeader(k, v);
    xhr.upload.addEventListener('progress', (e) => {
      if (e.lengthComputable) onProgress(Math.round((100 * e.loaded) / e.total));
    });
    xhr.addEventListener('load', async () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        try {
          resolve(JSON.parse(xhr.responseText));
        } catch (err) {
          reject(err);
        }
        return;
      }
      // The same error handling as fetch() answers, 401 included.
      const res = new Response(xhr.responseText, { status: xhr.status, statusText: xhr.statusText,
        headers: { 'content-type': xhr.getResponseHeader('content-type') || 'text/plain' } });
      reject(await failure(res));
    });
    xhr.addEventListener('error', () => reject(Object.assign(new Error('The upload failed: the server could not be reached.'), { detail: 'The upload failed: the server could not be reached.' })));
    xhr.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')));
    signal.addEventListener('abort', () => xhr.abort(), { once: true });
    xhr.send(data);
  });
}

// --- one document ----------------------------------------------------------------------------

async function renderDocument(view, ctx, id) {
  ctx.title('Document');
  const heading = h('h1', null, 'Document');
  const summary = h('section', { class: 'card', 'aria-labelledby': 'doc-summary-h', 'aria-busy': 'true' }, loading('Loading the document…'));
  const report = h('section', { class: 'report', 'aria-labelledby': 'report-h' });
  view.append(h('p', { class: 'crumbs' }, h('a', { href: '#/documents' }, 'Documents'), ' › ', 'Document'), heading, summary, report);

  const state = { doc: null, reportShown: false };
  const refresh = async () => {
    try {
      state.doc = await api(`/documents/${encodeURIComponent(id)}`, { signal: ctx.signal });
    } catch (err) {
      if (!isAbort(err)) replace(summary, errorBox(err, refresh));
      summary.removeAttribute('aria-busy');
      return;
    }
    summary.removeAttribute('aria-busy');
    heading.textContent = state.doc.name;
    ctx.title(state.doc.name);
    drawDocSummary(summary, state.doc, ctx);
    if (state.doc.status === 'analyzed' && !state.reportShown) {
      state.reportShown = true;
      await drawReport(report, state.doc, ctx);
    } else if (!ENDED.has(state.doc.status)) {
      replace(report, h('h2', { id: 'report-h' }, 'Report'), h('p', { class: 'loading', role: 'status' }, 'The report appears when the analysis ends.'));
    } else if (state.doc.status === 'failed') {
      replace(report);
    }
  };
  await refresh();
  if (!state.doc || ENDED.has(state.doc.status)) return;

  const socket = follow('document.*', {
    signal: ctx.signal,
    onEvent: (e) => {
      if (!e.data || e.data.id !== id || !state.doc || ENDED.has(state.doc.status)) return;
      if (e.type === 'document.progress') {
        state.doc = { ...state.doc, status: e.data.status, progress: e.data.progress };
        drawDocSummary(summary, state.doc, ctx);
      } else {
        refresh();
      }
    },
    onState: (s) => { if (s === 'live' && !ENDED.has(state.doc.status)) refresh(); },
  });
  const timer = setInterval(() => {
    if (ENDED.has(state.doc.status)) clearInterval(timer);
    else if (!socket.live) refresh();
  }, 4000);
  ctx.signal.addEventListener('abort', () => clearInterval(timer));
}

function drawDocSummary(section, d, ctx) {
  // Redrawn on every progress event: keep the keyboard focus where it was.
  const focused = section.contains(document.activeElement) ? document.activeElement.id : '';
  drawDocSummaryContent(section, d, ctx);
  if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
}

function drawDocSummaryContent(section, d, ctx) {
  const exportButton = h('button', { type: 'button', class: 'button', id: 'export-markdown', disabled: d.status !== 'analyzed' }, 'Export report (Markdown)');
  exportButton.addEventListener('click', () => exportMarkdown(d, exportButton, ctx));
  const del = h('button', { type: 'button', class: 'button danger secondary', id: 'delete-document' }, 'Delete document');
  del.addEventListener('click', async () => {
    if (!(await confirmDialog('Delete this document?', `“${d.name}”, its file and every finding derived from it will be deleted.`, 'Delete'))) return;
    try {
      await api(`/documents/${d.id}`, { method: 'DELETE', signal: ctx.signal });
      toast('Document deleted.');
      location.hash = '#/documents';
    } catch (err) {
      if (!isAbort(err)) toast(err.detail || err.message, 'error');
    }
  });
  const facts = d.facts || {};
  replace(section,
    h('h2', { id: 'doc-summary-h' }, 'Status'),
    h('p', null, h('span', { id: 'doc-status', dataset: { status: d.status } }, badge(d.status))),
    ENDED.has(d.status) ? null : progressBar(d.progress, 100, 'Analysis progress'),
    d.error ? h('p', { class: 'notice error' }, `${d.error.message} (${d.error.code})`) : null,
    h('dl', { class: 'facts' },
      h('dt', null, 'Type'), h('dd', null, label(d.kind)),
      h('dt', null, 'Size'), h('dd', null, bytes(d.size_bytes)),
      h('dt', null, 'Frameworks'), h('dd', null, (d.frameworks.length ? d.frameworks : d.frameworks_requested || ['(decided by the analysis)']).join(', ')),
      h('dt', null, 'Findings'), h('dd', { id: 'doc-counts' }, countsText(d.counts)),
      facts.resources !== undefined ? [h('dt', null, 'Resources read'), h('dd', null, String(facts.resources))] : null,
      facts.services ? [h('dt', null, 'Services named'), h('dd', null, [].concat(facts.services).join(', ') || '—')] : null,
      h('dt', null, 'Uploaded'), h('dd', null, time(d.created_at)),
      d.analyzed_at ? [h('dt', null, 'Analysed'), h('dd', null, time(d.analyzed_at))] : null),
    h('div', { class: 'actions' }, exportButton, del));
}

/** The Markdown report as a download: fetched with Accept: text/markdown (a plain link could not
 *  set that header), then saved through a temporary object URL. */
async function exportMarkdown(d, button, ctx) {
  button.disabled = true;
  try {
    const res = await api(`/documents/${d.id}/report`, { accept: 'text/markdown', raw: true, signal: ctx.signal });
    const blob = await res.blob();
    const href = URL.createObjectURL(blob);
    const a = h('a', { href, download: `${d.name.replace(/[^\w.-]+/g, '_')}-report.md`, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    // Long enough for the download to start.
    setTimeout(() => URL.revokeObjectURL(href), 10000);
    toast('Report exported as Markdown.');
  } catch (err) {
    if (!isAbort(err)) toast(err.detail || err.message, 'error');
  } finally {
    button.disabled = false;
  }
}

const VERDICTS = ['contradicted', 'undetermined', 'silent', 'met'];

async function drawReport(section, d, ctx) {
  replace(section, h('h2', { id: 'report-h' }, 'Report'), loading('Loading the report…'));
  let r;
  try {
    r = await api(`/documents/${d.id}/report`, { signal: ctx.signal });
  } catch (err) {
    if (!isAbort(err)) replace(section, h('h2', { id: 'report-h' }, 'Report'), errorBox(err, () => drawReport(section, d, ctx)));
    return;
  }
  const frameworks = r.frameworks.map((f) => {
    const gaps = f.controls.filter((c) => c.verdict !== 'met');
    const met = f.controls.filter((c) => c.verdict === 'met');
    return h('section', { class: 'card framework-report' },
      h('h4', null, `${f.name}${f.version && !f.name.includes(f.version) ? ` ${f.version}` : ''}`),
      h('p', { class: 'small' }, VERDICTS.map((v) => `${f.counts[v]} ${v}`).join(' · ')),
      stackedBar([
        { value: f.counts.met, kind: 'pass', label: 'Met' }, { value: f.counts.contradicted, kind: 'fail', label: 'Contradicted' },
        { value: f.counts.undetermined, kind: 'manual', label: 'Undetermined' }, { value: f.counts.silent, kind: 'not_covered', label: 'Silent' },
      ], `${f.counts.met} met, ${f.counts.contradicted} contradicted, ${f.counts.undetermined} undetermined, ${f.counts.silent} silent`),
      gaps.length ? h('ul', { class: 'gaps' }, gaps.map((c) => h('li', null, badge(c.verdict), ' ', badge(c.severity), ' ',
        h('a', { href: controlHref(c.id) }, c.id), ` ${c.title}`))) : h('p', null, 'No gaps: every control in scope is met.'),
      met.length ? h('details', null, h('summary', null, `${plural(met.length, 'control')} met`),
        h('ul', null, met.map((c) => h('li', null, h('a', { href: controlHref(c.id) }, c.id), ` ${c.title}`)))) : null);
  });
  replace(section,
    h('h2', { id: 'report-h' }, 'Report'),
    h('h3', { id: 'gaps-h' }, 'Gaps by framework'),
    frameworks.length ? h('div', { class: 'grid' }, frameworks) : empty('No framework applies to this document.'),
    h('h3', { id: 'findings-h' }, `Findings (${r.findings.length})`),
    r.findings.length ? table([
      { label: 'Status', cell: (f) => badge(f.status) },
      { label: 'Severity', cell: (f) => badge(f.severity) },
      { label: 'What', class: 'wrap', cell: (f) => (f.source === 'template'
        ? h('span', null, f.title || f.check, h('br'), h('code', { class: 'small' }, f.check))
        : h('span', null, f.control ? h('a', { href: controlHref(f.control) }, f.control) : '', f.measure ? ` (${label(f.measure)})` : '')) },
      { label: 'Where', class: 'wrap', cell: (f) => (f.source === 'template'
        ? h('span', null, h('code', { class: 'small' }, f.resource || '—'), f.line ? ` line ${f.line}` : '')
        : h('span', null, f.quote ? h('q', null, f.quote) : '—', f.page ? ` (page ${f.page})` : '', f.heading ? ` — ${f.heading}` : '')) },
      { label: 'Reason', class: 'wrap', cell: (f) => f.reason },
      { label: 'Controls', class: 'wrap', cell: (f) => h('span', null, (f.controls || []).slice(0, 6).map((c, i) => [i ? ', ' : '', h('a', { href: controlHref(c) }, c)]), (f.controls || []).length > 6 ? ` +${f.controls.length - 6}` : '') },
    ], r.findings, 'Findings of the document') : empty('The analysis produced no findings.'));
}
