// Operations: each health check, the queue, the warm pool, and the last hour in charts.
// Re-read when job events arrive (one read per burst), or on demand.

import { apiUrl, get } from './api.js';
import { h, replace } from './dom.js';
import { STATUSES, count, duration } from './format.js';
import { barChart, lineChart } from './charts.js';
import { coalesce, onJobEvent } from './live.js';

export function showOps() {
  const view = new OpsView();
  return { element: view.element, leave: () => view.leave() };
}

class OpsView {
  constructor() {
    this.health = h('div', { class: 'card' });
    this.queue = h('div', { class: 'card' });
    this.pool = h('div', { class: 'card' });
    this.webhooks = h('div', { class: 'card' });
    this.charts = h('div', { class: 'card charts' });
    this.updated = h('span', { class: 'muted', role: 'status' });
    this.element = h('section', { class: 'view ops-view', 'aria-labelledby': 'ops-title' },
      h('div', { class: 'view-head' }, h('h1', { id: 'ops-title' }, 'Operations'),
        h('div', { class: 'spacer' }), this.updated,
        h('button', { type: 'button', onclick: () => this.load() }, 'Refresh')),
      h('div', { class: 'ops-grid' }, this.health, this.queue, this.pool, this.webhooks),
      this.charts);
    this.refresh = coalesce(() => this.load(), 2000);
    this.unsubscribe = onJobEvent(() => this.refresh());
    this.load();
  }

  leave() {
    this.unsubscribe();
  }

  async load() {
    await Promise.all([this.loadHealth(), this.loadActivity()]);
    this.updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  }

  // /health answers 503 with the same body when degraded: read it either way.
  async loadHealth() {
    try {
      const response = await fetch(apiUrl('/health'), { cache: 'no-store' });
      const body = await response.json();
      const checks = Object.entries(body.checks || {});
      replace(this.health, h('h2', {}, 'Health ', h('span', { class: `badge health-${body.status}` }, body.status)),
        h('ul', { class: 'checks' }, checks.map(([name, detail]) => h('li', { class: `check ${checkClass(detail)}` },
          h('span', { class: 'check-name' }, name), h('span', { class: 'check-detail' }, detail)))));
    } catch (error) {
      replace(this.health, h('h2', {}, 'Health'), h('p', { class: 'form-error' }, `No answer from /health: ${error.message}`));
    }
  }

  async loadActivity() {
    try {
      const activity = await get('/stats/activity');
      this.renderQueue(activity);
      this.renderPool(activity.pool);
      this.renderWebhooks(activity.webhook_deliveries || {});
      this.renderCharts(activity.minutes);
    } catch (error) {
      replace(this.queue, h('h2', {}, 'Queue'), h('p', { class: 'form-error' }, error.message));
      replace(this.pool, h('h2', {}, 'Warm pool'));
      replace(this.charts, h('h2', {}, 'Last hour'));
    }
  }

  renderQueue({ queue, jobs_by_status: jobs }) {
    replace(this.queue, h('h2', {}, 'Queue'),
      h('div', { class: 'stats' },
        stat('Waiting', count(queue.depth)),
        stat('Oldest waiting', queue.depth ? duration(queue.oldest_age_seconds * 1000) : '—'),
        stat('Running', count(jobs.running))),
      h('p', { class: 'muted' }, STATUSES.map((s) => `${s} ${count(jobs[s])}`).join(' · ')));
  }

  renderPool(pool) {
    replace(this.pool, h('h2', {}, 'Warm pool'),
      h('div', { class: 'stats' },
        stat('Ready', count(pool.ready)), stat('Busy', count(pool.busy)), stat('Starting', count(pool.starting))));
  }

  renderWebhooks(deliveries) {
    replace(this.webhooks, h('h2', {}, 'Webhook outbox'),
      h('div', { class: 'stats' },
        stat('To deliver', count(deliveries.pending)), stat('Delivered', count(deliveries.delivered)),
        stat('Failed', count(deliveries.failed)), stat('Stopped', count(deliveries.stopped))));
  }

  renderCharts(minutes) {
    replace(this.charts, h('h2', {}, 'Last hour'),
      h('div', { class: 'chart-grid' },
        barChart('Finished per minute', minutes, [
          { key: 'completed', label: 'completed', className: 's-completed' },
          { key: 'failed', label: 'failed', className: 's-failed' },
          { key: 'cancelled', label: 'cancelled', className: 's-cancelled' },
        ], perMinute),
        barChart('Submitted per minute', minutes, [
          { key: 'submitted', label: 'submitted', className: 's-submitted' },
        ], perMinute),
        lineChart('Run duration', minutes, [
          { key: 'mean_duration_ms', label: 'mean', className: 's-mean' },
          { key: 'max_duration_ms', label: 'max', className: 's-max' },
        ], (v) => duration(v))));
  }
}

function perMinute(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}

function stat(label, value) {
  return h('div', { class: 'stat' }, h('span', { class: 'stat-value' }, value), h('span', { class: 'stat-label' }, label));
}

function checkClass(detail) {
  if (detail === 'ok') return 'ok';
  if (String(detail).startsWith('error')) return 'bad';
  return 'neutral';
}
