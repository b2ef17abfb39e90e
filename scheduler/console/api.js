// The REST API client. The API token and the workspace live in sessionStorage (gone when the
// tab closes); every call sends them, and a 401 sends the user back to the login page.

const BASE = '/api/v1';
const TOKEN = 'ferry.token';
const WORKSPACE = 'ferry.workspace';
const SESSION = 'ferry.session';

/// An answer of the API that is not a success: HTTP status, the API's code and message.
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN) || '';
}

export function workspace() {
  return sessionStorage.getItem(WORKSPACE) || 'default';
}

/// Keeps the token (and, for a password login, the id of its session token, revoked at logout).
export function setSession(tok, ws, sessionId) {
  sessionStorage.setItem(TOKEN, tok);
  sessionStorage.setItem(WORKSPACE, ws || 'default');
  if (sessionId) sessionStorage.setItem(SESSION, sessionId);
  else sessionStorage.removeItem(SESSION);
}

export function sessionTokenId() {
  return sessionStorage.getItem(SESSION) || '';
}

export function setWorkspace(ws) {
  sessionStorage.setItem(WORKSPACE, ws || 'default');
}

export function logout() {
  sessionStorage.removeItem(TOKEN);
  sessionStorage.removeItem(SESSION);
}

function url(path, query) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== '') params.set(k, String(v));
  }
  const q = params.toString();
  return BASE + path + (q ? '?' + q : '');
}

/// One call; resolves with the parsed JSON answer (or {} when empty), rejects with ApiError.
export async function call(method, path, { query, body, tok, ws } = {}) {
  const bearer = tok ?? token();
  const headers = { 'X-Ferry-Workspace': ws ?? workspace(), Accept: 'application/json' };
  if (bearer) headers.Authorization = 'Bearer ' + bearer;
  const init = { method, headers };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(url(path, query), init);
  } catch (e) {
    throw new ApiError(0, 'unavailable', 'the scheduler cannot be reached: ' + e.message);
  }
  const text = await res.text();
  let data = {};
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { error: { code: 'internal', message: text.slice(0, 500) } };
    }
  }
  if (!res.ok) {
    const err = (data && data.error) || {};
    const e = new ApiError(res.status, err.code || String(res.status), err.message || res.statusText);
    if (res.status === 401 && tok === undefined) {
      logout();
      sessionStorage.setItem('ferry.after', location.hash);
      location.hash = '#/login';
    }
    throw e;
  }
  return data;
}

export const get = (path, query) => call('GET', path, { query });
export const post = (path, body) => call('POST', path, { body: body || {} });
export const del = (path) => call('DELETE', path);
export const enc = encodeURIComponent;
