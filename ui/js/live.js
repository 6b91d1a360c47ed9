// One connection to GET /events for the whole page; views subscribe to its state events.
// The header's indicator says whether the page is live.

import { get } from './api.js';
import { subscribe } from './sse.js';

const listeners = new Set();
let stream = null;
let started = 0;

export function onJobEvent(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

// Starts after the newest event at the time of the call: the views read the current
// state themselves, and /events without a Last-Event-ID would replay all history.
export async function startLive(indicator) {
  stop();
  show(indicator, 'connecting', 'Connecting…');
  const generation = ++started;
  const lastEventId = await get('/stats/jobs').then((counts) => counts.last_event_id, () => null);
  if (generation !== started) return; // started again meanwhile
  stream = subscribe('/events', {
    lastEventId,
    onEvent(event) {
      if (event.event !== 'state' || typeof event.data !== 'object') return;
      for (const listener of listeners) listener(event.data);
    },
    onStatus(status, error) {
      if (status === 'live') show(indicator, 'live', 'Live');
      else if (status === 'retrying') show(indicator, 'retrying', 'Reconnecting…');
      else if (status === 'error') show(indicator, 'error', error && error.status === 401 ? 'Not signed in' : 'Offline');
      else show(indicator, 'error', 'Offline');
    },
  });
}

export function stop() {
  if (stream) stream.close();
  stream = null;
}

function show(indicator, state, text) {
  indicator.dataset.state = state;
  indicator.textContent = text;
}

// Calls `task` soon after the last request, at most one run at a time and at most one
// every `gap` ms: a burst of events costs one refresh, not one per event.
export function coalesce(task, gap = 400) {
  let scheduled = false;
  let running = false;
  let again = false;
  let lastRun = 0;
  async function run() {
    scheduled = false;
    running = true;
    lastRun = Date.now();
    try { await task(); } finally {
      running = false;
      if (again) { again = false; request(); }
    }
  }
  function request() {
    if (running) { again = true; return; }
    if (scheduled) return;
    scheduled = true;
    setTimeout(run, Math.max(0, lastRun + gap - Date.now()));
  }
  return request;
}
