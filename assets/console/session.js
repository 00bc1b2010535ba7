// The console session: the API key is exchanged once for an HttpOnly cookie (which JavaScript
// never sees) and a CSRF token (kept in api.js's memory). Nothing is written to localStorage or
// sessionStorage; a reload asks GET /api/v1/session again.

import { api, setCsrfToken, setUnauthorizedHandler } from './api.js';

/** The signed-in key ({key_id, name, scope, expires_at}) or null. */
export const session = { user: null, reason: null };

const listeners = [];
let expiryTimer = null;

/** Called with (user|null) whenever the session starts or ends. */
export function onSessionChange(fn) {
  listeners.push(fn);
}

function set(user) {
  session.user = user;
  setCsrfToken(user ? user.csrf_token : null);
  clearTimeout(expiryTimer);
  if (user && user.expires_at) {
    // At the absolute expiry the next call would fail anyway; asking at once returns the user to
    // sign-in with the server's reason instead of leaving a page that silently stopped working.
    const ms = new Date(user.expires_at).getTime() - Date.now();
    // (Unreachable server at that moment: the next call reports it.)
    if (ms > 0 && ms < 2 ** 31) expiryTimer = setTimeout(() => { restore().catch(() => {}); }, ms + 1000);
  }
  listeners.forEach((fn) => fn(user));
}

// Messages for the codes the API uses when a session stops being valid.
const REASONS = {
  api_key_revoked: 'Your API key was revoked, which ended this session. Sign in with another key.',
  session_expired: 'Your session expired. Sign in again.',
  invalid_api_key: 'The API key of this session is no longer valid. Sign in again.',
};

// Set when this session revokes its own key: whatever code the next 401 carries, that is why.
let ownKeyRevoked = false;

export function revokedOwnKey() {
  ownKeyRevoked = true;
}

function reasonOf(err) {
  if (ownKeyRevoked) {
    ownKeyRevoked = false;
    return { code: 'api_key_revoked', text: 'You revoked the API key this session used, which ended the session. Sign in with another key.', server: err && err.code };
  }
  const known = REASONS[err && err.code];
  return { code: err && err.code, text: known || (err && err.detail) || 'Your session ended. Sign in again.' };
}

/** Ends the session locally after a 401 and keeps the reason for the sign-in page. Several
 *  requests in flight may all fail: the first one says why, the others find no session. */
export function ended(err) {
  if (!session.user) return;
  session.reason = reasonOf(err);
  set(null);
}

setUnauthorizedHandler(ended);

/** Picks up an existing session (page reload). Resolves with the user or null. */
export async function restore() {
  try {
    const user = await api('/session', { auth: false });
    set(user);
    return user;
  } catch (err) {
    if (err.status === 401) {
      // Signed out (no cookie) says nothing; an ended session says why.
      if (err.code && err.code !== 'missing_api_key') session.reason = reasonOf(err);
      set(null);
      return null;
    }
    throw err;
  }
}

/** Exchanges an API key for a session. The key is only in this call's arguments. */
export async function signIn(apiKey) {
  const user = await api('/session', { method: 'POST', body: { api_key: apiKey }, auth: false });
  session.reason = null;
  set(user);
  return user;
}

export async function signOut() {
  try {
    await api('/session', { method: 'DELETE', auth: false });
  } finally {
    // Even if the server is unreachable, this tab forgets the session.
    session.reason = { code: 'signed_out', text: 'You signed out.' };
    set(null);
  }
}

export function isAdmin() {
  return session.user && session.user.scope === 'admin';
}
