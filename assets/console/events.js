// Live events from /api/v1/notifications/ws. The browser sends the session cookie with the
// upgrade request, so no ticket is needed. After any close the socket comes back with
// `since=<last id>`: the server replays what was missed, with no gaps and no duplicates.

import { api, ApiError, isAbort } from './api.js';
import { h } from './dom.js';

/**
 * Follows events of `types` (e.g. 'scan.*') until `signal` aborts.
 * onEvent(event) gets each {id, type, ts, data}; onState('live'|'reconnecting'|'offline') says
 * whether events are flowing (pages poll while they are not); onReset() is called when the
 * missed events are past retention and the page must reload its state.
 * Returns { get live() } for pages that decide whether to poll.
 */
export function follow(types, { signal, onEvent, onState = () => {}, onReset = () => {} }) {
  let lastId = null;
  let socket = null;
  let attempts = 0;
  let timer = null;
  let live = false;

  const setLive = (value, state) => {
    live = value;
    onState(state);
  };

  const open = () => {
    if (signal.aborted) return;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const params = new URLSearchParams({ types });
    if (lastId !== null) params.set('since', String(lastId));
    let opened = false;
    socket = new WebSocket(`${proto}//${location.host}/api/v1/notifications/ws?${params}`);
    socket.addEventListener('open', (e) => {
      // Closed while connecting (see below): finish the job now that it is open.
      if (signal.aborted) {
        e.target.close(1000, 'page closed');
        return;
      }
      opened = true;
      attempts = 0;
      setLive(true, 'live');
    });
    socket.addEventListener('message', (m) => {
      let event;
      try {
        event = JSON.parse(m.data);
      } catch {
        return;
      }
      if (typeof event.id === 'number') lastId = event.id;
      onEvent(event);
    });
    socket.addEventListener('close', (e) => {
      socket = null;
      if (signal.aborted) return;
      setLive(false, 'reconnecting');
      // 1008 may mean the key was revoked, and a refused upgrade (never opened) may be a 401 or
      // an expired `since`: ask the API, which reports a 401 to the session and tells us about
      // retention, before trying again.
      const check = e.code === 1008 || !opened ? diagnose() : Promise.resolve(true);
      check.then((again) => {
        if (!again || signal.aborted) {
          setLive(false, 'offline');
          return;
        }
        attempts += 1;
        const delay = Math.min(30000, 500 * 2 ** Math.min(attempts, 6));
        timer = setTimeout(open, delay);
      });
    });
  };

  // Resolves true when reconnecting makes sense.
  const diagnose = async () => {
    try {
      const since = lastId === null ? '' : `&since=${lastId}`;
      await api(`/notifications?limit=1${since}`, { signal });
      return true;
    } catch (err) {
      if (isAbort(err)) return false;
      if (err instanceof ApiError && err.status === 410) {
        lastId = null;
        onReset();
        return true;
      }
      // 401: the session handler has taken over. Anything else: try again later.
      return err.status !== 401;
    }
  };

  signal.addEventListener('abort', () => {
    clearTimeout(timer);
    // Closing a socket that is still connecting makes Chromium log an error; the open handler
    // closes it instead.
    if (socket && socket.readyState === WebSocket.OPEN) socket.close(1000, 'page closed');
  });
  open();
  return { get live() { return live; } };
}

/** One line saying what a notification means, with a link to what it is about. */
export function describeEvent(e) {
  const d = e.data || {};
  const scan = () => h('a', { href: `#/scans/${d.id}` }, `Scan ${String(d.id).slice(0, 8)}`);
  const doc = () => h('a', { href: `#/documents/${d.id}` }, `Document ${String(d.id).slice(0, 8)}`);
  switch (e.type) {
    case 'scan.started':
      return h('span', null, scan(), ` started (account ${d.account_id || '?'}, ${(d.regions || []).length} regions).`);
    case 'scan.progress':
      return h('span', null, scan(), `: ${d.done} of ${d.total} parts done.`);
    case 'scan.finished':
      return h('span', null, scan(), ` ${d.status}: ${d.counts ? `${d.counts.fail} failing, ${d.counts.pass} passing` : ''}.`);
    case 'scan.failed':
      return h('span', null, scan(), ` ${d.status || 'failed'}: ${d.error || 'no reason given'}.`);
    case 'document.received':
      return h('span', null, doc(), ' received.');
    case 'document.progress':
      return h('span', null, doc(), ` ${d.status} (${d.progress} %).`);
    case 'document.analyzed':
      return h('span', null, doc(), ` analysed: ${d.findings} findings.`);
    case 'document.failed':
      return h('span', null, doc(), ` could not be analysed: ${d.error || d.code}.`);
    case 'usage.threshold':
      return `${d.dimension} reached ${d.percent} % of its trial limit (${d.used} of ${d.limit}).`;
    case 'license.changed':
      return `The license is now ${d.status}: ${d.reason}.`;
    case 'kb.updated':
      return `The knowledge base was updated to ${d.kb_version}.`;
    default:
      return JSON.stringify(d).slice(0, 200);
  }
}
