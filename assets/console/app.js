// The console's entry point: hash routing (the server serves one document at `/`), the
// navigation, and the session gate. Each page module exports `render(view, ctx)`; a page gets an
// AbortSignal in ctx that fires when the user leaves it, which cancels its requests, sockets and
// timers, so nothing from an old page can write into the new one.

import { forget, isAbort } from './api.js';
import { errorBox, h, replace, toast } from './dom.js';
import { session, onSessionChange, restore, signOut, isAdmin } from './session.js';
import * as signin from './signin.js';
import * as home from './home.js';
import * as chat from './chat.js';
import * as scans from './scans.js';
import * as documents from './documents.js';
import * as kb from './kb.js';
import * as admin from './admin.js';

// [pattern, page, nav key, extra]: the first match wins; captures become ctx.params.
const ROUTES = [
  [/^\/$/, home, 'home'],
  [/^\/chat$/, chat, 'chat'],
  [/^\/chat\/([^/]+)$/, chat, 'chat'],
  [/^\/scans$/, scans, 'scans'],
  [/^\/scans\/([^/]+)$/, scans, 'scans', { tab: 'findings' }],
  [/^\/scans\/([^/]+)\/(findings|compliance|diff)$/, scans, 'scans'],
  [/^\/documents$/, documents, 'documents'],
  [/^\/documents\/([^/]+)$/, documents, 'documents'],
  [/^\/kb$/, kb, 'kb', { view: 'index' }],
  [/^\/kb\/search$/, kb, 'kb', { view: 'search' }],
  [/^\/kb\/frameworks\/([^/]+)$/, kb, 'kb', { view: 'framework' }],
  [/^\/kb\/controls\/([^/]+)$/, kb, 'kb', { view: 'control' }],
  [/^\/admin$/, admin, 'admin', { admin: true }],
];

const main = document.getElementById('main');
let current = null; // AbortController of the page on screen
let firstRender = true;

/** `#/scans/abc?status=fail` → { path: '/scans/abc', query: URLSearchParams } */
function parseHash() {
  const raw = location.hash.startsWith('#/') ? location.hash.slice(1) : '/';
  const [path, q = ''] = raw.split('?');
  return { path: path.replace(/\/+$/, '') || '/', query: new URLSearchParams(q) };
}

function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function setActiveNav(key) {
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === key) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

async function route() {
  if (current) current.abort();
  current = new AbortController();
  const { signal } = current;
  closeMenu();
  const { path, query } = parseHash();

  if (!session.user) {
    setActiveNav(null);
    document.title = 'Sign in · Cloud Optimizer';
    replace(main);
    // The sign-in page focuses its key field itself.
    signin.render(main, { signal, reason: session.reason, query });
    firstRender = false;
    return;
  }

  let match = null;
  for (const [pattern, page, nav, extra] of ROUTES) {
    const m = path.match(pattern);
    if (m) {
      try {
        match = { page, nav, extra: extra || {}, params: m.slice(1).map(decodeURIComponent) };
      } catch {
        // A malformed %-escape in a hand-edited address: treated as no such page.
      }
      break;
    }
  }
  replace(main);
  if (!match || (match.extra.admin && !isAdmin())) {
    setActiveNav(null);
    document.title = 'Not found · Cloud Optimizer';
    main.append(h('h1', { tabindex: '-1' }, 'Page not found'),
      h('p', null, 'There is no console page at this address. ', h('a', { href: '#/' }, 'Go to the home page'), '.'));
    focusHeading();
    return;
  }
  setActiveNav(match.nav);
  const ctx = {
    signal,
    params: match.params,
    query,
    extra: match.extra,
    path,
    title: (text) => { document.title = `${text} · Cloud Optimizer`; },
  };
  // Pages draw their heading before their first request: focus moves there at once, not when
  // the data arrives (by then the user may be typing somewhere on the page).
  const rendering = match.page.render(main, ctx);
  focusHeading();
  try {
    await rendering;
  } catch (err) {
    if (isAbort(err) || signal.aborted) return;
    // A page that failed before drawing its own error state still tells the user.
    main.append(errorBox(err, () => route()));
  }
}

/** Moves focus to the page heading after navigation, so keyboard and screen-reader users start
 *  at the new content; not on the first load, where focus belongs to the document. */
function focusHeading() {
  if (firstRender) {
    firstRender = false;
    return;
  }
  const heading = main.querySelector('h1');
  if (heading) {
    heading.setAttribute('tabindex', '-1');
    heading.focus({ preventScroll: false });
  }
}

// --- navigation chrome ---------------------------------------------------------------------

const nav = document.getElementById('nav');
const menuButton = document.getElementById('menu-button');
const account = document.getElementById('account');

function closeMenu() {
  nav.classList.remove('open');
  menuButton.setAttribute('aria-expanded', 'false');
}

menuButton.addEventListener('click', () => {
  const open = !nav.classList.contains('open');
  nav.classList.toggle('open', open);
  menuButton.setAttribute('aria-expanded', String(open));
});

// Escape closes the phone menu and gives focus back to its button.
nav.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && nav.classList.contains('open')) {
    closeMenu();
    menuButton.focus();
  }
});

// The skip link would otherwise change the hash, which is the router's.
document.getElementById('skip-link').addEventListener('click', (e) => {
  e.preventDefault();
  main.focus();
});

document.getElementById('sign-out').addEventListener('click', async (e) => {
  const button = e.currentTarget;
  button.disabled = true;
  try {
    await signOut();
  } catch (err) {
    toast(`Signed out here, but the server said: ${err.detail || err.message}`, 'error');
  } finally {
    button.disabled = false;
  }
});

function showChrome(user) {
  nav.hidden = !user;
  menuButton.hidden = !user;
  account.hidden = !user;
  for (const el of document.querySelectorAll('[data-admin-only]')) el.hidden = !(user && user.scope === 'admin');
  document.getElementById('account-name').textContent = user ? `${user.name} (${user.scope})` : '';
}

onSessionChange((user) => {
  showChrome(user);
  // The next key may see other things (documents are per key): start from nothing.
  if (!user) forget();
  // Signed in: go where the address says (sign-in itself leads home). Signed out: the router
  // shows the sign-in page whatever the address.
  if (user && parseHash().path === '/signin') navigate('#/');
  else route();
});

window.addEventListener('hashchange', route);

// Errors that escape a page still reach the user, not only the console.
window.addEventListener('unhandledrejection', (e) => {
  if (isAbort(e.reason)) {
    e.preventDefault();
    return;
  }
  toast(`Something went wrong: ${(e.reason && (e.reason.detail || e.reason.message)) || e.reason}`, 'error');
});

// --- start -------------------------------------------------------------------------------

// restore() reports the outcome through onSessionChange, which draws the first page.
(async () => {
  try {
    await restore();
  } catch (err) {
    replace(main, h('h1', null, 'Cloud Optimizer'), errorBox(err, () => location.reload()));
  }
})();
