// Talking to tower: JSON over fetch, the API key from sessionStorage, errors made readable.

const KEY_STORAGE = 'parpaing.apiKey';
const listeners = new Set();

// The API lives one level above the dashboard (/ui/ -> /), whatever prefix a proxy adds.
const API_ROOT = new URL('../', new URL('.', document.baseURI));

export function apiUrl(path, query = {}) {
  const url = new URL(path.replace(/^\//, ''), API_ROOT);
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(name, value);
  }
  return url;
}

export const auth = {
  get key() {
    return sessionStorage.getItem(KEY_STORAGE) || '';
  },
  set(key) {
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
    for (const listener of listeners) listener({ type: 'key-changed' });
  },
  headers() {
    return this.key ? { Authorization: `Bearer ${this.key}` } : {};
  },
};

// Subscribers hear of 'key-changed' and 'unauthorized'.
export function onAuth(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function reportUnauthorized() {
  for (const listener of listeners) listener({ type: 'unauthorized' });
}

export class ApiError extends Error {
  constructor(status, body) {
    super(describe(status, body));
    this.status = status;
    this.body = body;
  }

  // {"prompt_vars.count": "message", ...} for a 422 whose errors name fields.
  get fieldErrors() {
    const detail = this.body && this.body.detail;
    const errors = {};
    if (!Array.isArray(detail)) return errors;
    for (const error of detail) {
      const loc = Array.isArray(error.loc) ? error.loc : [];
      const path = ['body', 'query', 'header', 'path'].includes(loc[0]) ? loc.slice(1) : loc;
      const key = path.join('.');
      if (key && !(key in errors)) errors[key] = error.msg;
    }
    return errors;
  }
}

export const UNAUTHORIZED_MESSAGE =
  'This tower requires an API key, and the request had none or a wrong one. ' +
  'Enter the key (TOWER_API_KEY) in the API key field at the top and sign in.';

function describe(status, body) {
  if (status === 401) return UNAUTHORIZED_MESSAGE;
  const detail = body && typeof body === 'object' ? body.detail : body;
  if (typeof detail === 'string' && detail) return detail;
  if (Array.isArray(detail) && detail.length) {
    return detail.map((e) => `${(e.loc || []).slice(1).join('.') || 'request'}: ${e.msg}`).join('; ');
  }
  return `The server answered ${status}`;
}

export async function api(method, path, { body, query } = {}) {
  const headers = { Accept: 'application/json', ...auth.headers() };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(apiUrl(path, query), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
  });
  const data = await readBody(response);
  if (!response.ok) {
    if (response.status === 401) reportUnauthorized();
    throw new ApiError(response.status, data);
  }
  return data;
}

async function readBody(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

export const get = (path, query) => api('GET', path, { query });
