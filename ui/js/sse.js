// Server-sent events over fetch(), so the API key travels in the Authorization header
// (EventSource cannot send headers, and a key in the URL would end up in logs).
// Reconnects after a dropped connection with Last-Event-ID: the server resumes after
// the last event we saw, with no gap and no duplicate.

import { ApiError, apiUrl, auth, reportUnauthorized } from './api.js';

const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 10000;

// Opens `path` and calls onEvent({id, event, data}) for each event (data parsed as JSON).
// onStatus('live' | 'retrying' | 'closed' | 'error', detail) tells how the connection is.
// A stream the server ends after an event for which isFinal(event) holds is not reopened.
export function subscribe(path, { onEvent, onStatus = () => {}, isFinal = () => false, lastEventId = null }) {
  const controller = new AbortController();
  let last = lastEventId;
  let finished = false;
  let delay = RETRY_FIRST_MS;

  async function connectOnce() {
    const headers = { Accept: 'text/event-stream', ...auth.headers() };
    if (last !== null) headers['Last-Event-ID'] = String(last);
    const response = await fetch(apiUrl(path), { headers, signal: controller.signal, cache: 'no-store' });
    if (!response.ok) {
      const text = await response.text();
      let body = text;
      try { body = JSON.parse(text); } catch { /* keep the text */ }
      throw new ApiError(response.status, body);
    }
    onStatus('live');
    delay = RETRY_FIRST_MS;
    await readEvents(response.body, (event) => {
      if (event.id !== null) last = event.id;
      if (isFinal(event)) finished = true;
      onEvent(event);
    });
  }

  async function run() {
    while (!controller.signal.aborted && !finished) {
      try {
        await connectOnce();
      } catch (error) {
        if (controller.signal.aborted) return;
        if (error instanceof ApiError && error.status < 500) {
          if (error.status === 401) reportUnauthorized();
          onStatus('error', error);
          return; // a client error will not go away by retrying
        }
      }
      if (finished || controller.signal.aborted) break;
      onStatus('retrying');
      await sleep(delay, controller.signal);
      delay = Math.min(delay * 2, RETRY_MAX_MS);
    }
    if (!controller.signal.aborted) onStatus('closed');
  }

  run();
  return { close: () => controller.abort() };
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

// The text/event-stream format: fields until a blank line; ':' starts a comment.
async function readEvents(body, dispatch) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let event = blankEvent();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === '') {
        if (event.data.length) dispatch(finish(event));
        event = blankEvent();
      } else if (!line.startsWith(':')) {
        addField(event, line);
      }
    }
  }
}

function blankEvent() {
  return { id: null, event: 'message', data: [] };
}

function addField(event, line) {
  const colon = line.indexOf(':');
  const name = colon === -1 ? line : line.slice(0, colon);
  let value = colon === -1 ? '' : line.slice(colon + 1);
  if (value.startsWith(' ')) value = value.slice(1);
  if (name === 'data') event.data.push(value);
  else if (name === 'event') event.event = value;
  else if (name === 'id') event.id = value;
}

function finish(event) {
  const text = event.data.join('\n');
  let data = text;
  try { data = JSON.parse(text); } catch { /* not JSON: pass the text on */ }
  return { id: event.id, event: event.event, data };
}
