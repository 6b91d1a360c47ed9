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

// A GET whose body is not JSON (a file, a diff): the Response, once it answered 2xx.
export async function fetchOk(path) {
  const response = await fetch(apiUrl(path), { headers: auth.headers(), cache: 'no-store' });
  if (!response.ok) {
    if (response.status === 401) reportUnauthorized();
    throw new ApiError(response.status, await readBody(response));
  }
  return response;
}

// At most `limit` bytes of a text body, read as it streams: a huge diff is never held
// whole. Returns {text, truncated}; a truncated text is cut at its last whole line.
export async function fetchTextPrefix(path, limit) {
  const response = await fetchOk(path);
  const reader = response.body.getReader();
  const parts = [];
  let size = 0;
  let truncated = false;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (size + value.length > limit) {
      parts.push(value.subarray(0, limit - size));
      size = limit;
      truncated = true;
      break;
    }
    parts.push(value);
    size += value.length;
  }
  if (truncated) await reader.cancel();
  let text = new TextDecoder().decode(concat(parts, size));
  if (truncated && text.includes('\n')) text = text.slice(0, text.lastIndexOf('\n') + 1);
  return { text, truncated };
}

function concat(parts, size) {
  const whole = new Uint8Array(size);
  let at = 0;
  for (const part of parts) {
    whole.set(part, at);
    at += part.length;
  }
  return whole;
}

// Saves what `path` answers as a file named `filename`: fetched with the key (never in a
// URL), then handed to the browser as an object URL.
export async function download(path, filename) {
  const blob = await (await fetchOk(path)).blob();
  const url = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = url;
  link.download = filename;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  // The browser has taken the blob's URL once the click's download started.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// POST /uploads with the file as the body, its Content-Type from its name; progress
// comes from XMLHttpRequest (fetch reports none for a request body).
// `signal` aborts it (the file was removed from the form while it went up).
export function uploadFile(file, onProgress, signal) {
  const type = archiveType(file.name);
  const query = type === FILE_TYPE ? { filename: file.name } : {};
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open('POST', apiUrl('/uploads', query));
    for (const [name, value] of Object.entries(auth.headers())) request.setRequestHeader(name, value);
    request.setRequestHeader('Content-Type', type);
    request.setRequestHeader('Accept', 'application/json');
    request.upload.addEventListener('progress', (event) => onProgress(event.loaded, event.total || file.size));
    request.addEventListener('load', () => {
      let body = request.responseText;
      try { body = JSON.parse(body); } catch { /* kept as text */ }
      if (request.status === 201) { resolve(body); return; }
      if (request.status === 401) reportUnauthorized();
      reject(new ApiError(request.status, body));
    });
    request.addEventListener('abort', () => reject(new Error('The upload was stopped.')));
    signal?.addEventListener('abort', () => request.abort());
    request.addEventListener('error', () => reject(new Error(
      'The upload was cut off (the tower closed the connection: the file may be larger than it accepts).')));
    request.send(file);
  });
}

const FILE_TYPE = 'application/octet-stream';
const ARCHIVE_TYPES = [['.tar.gz', 'application/gzip'], ['.tgz', 'application/gzip'],
  ['.tar', 'application/x-tar'], ['.zip', 'application/zip']];

export function archiveType(name) {
  const lower = name.toLowerCase();
  const found = ARCHIVE_TYPES.find(([suffix]) => lower.endsWith(suffix));
  return found ? found[1] : FILE_TYPE;
}
