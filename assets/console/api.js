// The one way the console talks to /api/v1: same-origin fetch with the session cookie, the CSRF
// header on every state-changing request, problem+json errors turned into ApiError, and every
// 401 reported to the session so the console goes back to sign-in saying why.

const BASE = '/api/v1';
const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

// Kept in memory only: a reload gets it again from GET /api/v1/session.
let csrfToken = null;
let onUnauthorized = () => {};

export function setCsrfToken(token) {
  csrfToken = token;
}

export function csrfHeaders() {
  return csrfToken ? { 'X-CSRF-Token': csrfToken } : {};
}

/** Registers what to do when any call answers 401 (the session ended). */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

/** An error answer of the API (problem+json) or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.code = problem.code || '';
    this.title = problem.title || '';
    this.detail = problem.detail || this.message;
    this.requestId = problem.request_id || '';
    this.problem = problem;
  }
}

/** True for the rejection of a request the page aborted (navigation): nothing to show. */
export function isAbort(err) {
  return err && (err.name === 'AbortError' || (err.cause && err.cause.name === 'AbortError'));
}

export function url(path) {
  return path.startsWith('/api/') ? path : BASE + path;
}

/** Turns a non-2xx response into an ApiError (and reports a 401 unless told not to). */
export async function failure(res, { auth = true } = {}) {
  let problem = {};
  const type = res.headers.get('content-type') || '';
  if (type.includes('json')) {
    try {
      problem = await res.json();
    } catch {
      problem = {};
    }
  }
  if (!problem.detail) {
    problem = { title: res.statusText || 'Error', detail: `The server answered ${res.status}.`, ...problem };
  }
  const err = new ApiError(res.status, problem);
  if (res.status === 401 && auth) onUnauthorized(err);
  return err;
}

/**
 * Calls the API. Options: method, body (JSON unless FormData/Blob/string), headers, signal,
 * accept, raw (return the Response), auth (false: a 401 is the caller's business, e.g. sign-in).
 * Resolves with the parsed JSON, null for 204, or the Response when `raw`.
 */
export async function api(path, options = {}) {
  const { method = 'GET', body, signal, accept = 'application/json', raw = false, auth = true } = options;
  const headers = { Accept: accept, ...options.headers };
  if (UNSAFE.has(method)) Object.assign(headers, csrfHeaders());
  let payload = body;
  if (body !== undefined && !(body instanceof FormData) && !(body instanceof Blob) && typeof body !== 'string') {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  const send = async () => {
    try {
      return await fetch(url(path), { method, headers, body: payload, signal, credentials: 'same-origin' });
    } catch (err) {
      if (isAbort(err)) throw err;
      throw new ApiError(0, { title: 'Network error', detail: 'The server could not be reached. Check the connection and try again.' });
    }
  };
  let res = await send();
  if (res.status === 403 && UNSAFE.has(method) && auth) {
    // Signing in again in another tab replaces the cookie, and with it the CSRF token: learn the
    // new token and try once more instead of failing a request the user is entitled to make.
    const err = await failure(res.clone(), { auth });
    if (err.code === 'csrf_token_invalid' && await refreshCsrf(signal)) {
      Object.assign(headers, csrfHeaders());
      res = await send();
    }
  }
  if (!res.ok) throw await failure(res, { auth });
  if (raw) return res;
  if (res.status === 204) return null;
  const type = res.headers.get('content-type') || '';
  return type.includes('json') ? res.json() : res.text();
}

async function refreshCsrf(signal) {
  try {
    const res = await fetch(url('/session'), { headers: { Accept: 'application/json' }, signal, credentials: 'same-origin' });
    if (!res.ok) {
      if (res.status === 401) await failure(res);
      return false;
    }
    csrfToken = (await res.json()).csrf_token;
    return true;
  } catch {
    return false;
  }
}

/** Builds a query string from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** Every item of a list, following `next` (for lists that are small but may span pages). */
export async function all(path, { signal, max = 5000 } = {}) {
  const items = [];
  let next = path;
  while (next && items.length < max) {
    const page = await api(next, { signal });
    items.push(...page.items);
    next = page.next;
  }
  return items;
}

// Answers that cannot change while the console is open (the KB of this session, an ended scan's
// compliance) are kept, so moving between pages does not spend the per-key rate limit again.
const memo = new Map();

export function cached(path) {
  if (!memo.has(path)) {
    // No abort signal: several pages may share the answer, and it is worth finishing.
    const p = api(path);
    memo.set(path, p);
    // A failed or aborted request must not be remembered.
    p.catch(() => memo.delete(path));
  }
  return memo.get(path);
}

export function forget(prefix = '') {
  for (const key of [...memo.keys()]) if (key.startsWith(prefix)) memo.delete(key);
}
