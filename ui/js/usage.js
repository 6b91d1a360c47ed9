// Usage: each tenant the key sees (every tenant for admin and operator keys, its own for
// the others), its jobs, tokens and cost, and how much of each quota it uses now.
// From GET /tenants; re-read when job events arrive (one read per burst), or on demand.

import { get } from './api.js';
import { h, replace } from './dom.js';
import { count, usd } from './format.js';
import { coalesce, onJobEvent } from './live.js';

export function showUsage() {
  const view = new UsageView();
  return { element: view.element, leave: () => view.leave() };
}

// The quotas shown against what the tenant uses: [label, use field, quota field, format].
const QUOTAS = [
  ['Running', 'running', 'max_running', count],
  ['Queued', 'queued', 'max_queued', count],
  ['Submits this minute', 'submits_this_minute', 'submits_per_minute', count],
  ['Spent today', 'spend_today_usd', 'spend_per_day_usd', usd],
  ['Spent this month', 'spend_this_month_usd', 'spend_per_month_usd', usd],
];

class UsageView {
  constructor() {
    this.body = h('div');
    this.updated = h('span', { class: 'muted', role: 'status' });
    this.element = h('section', { class: 'view usage-view', 'aria-labelledby': 'usage-title' },
      h('div', { class: 'view-head' }, h('h1', { id: 'usage-title' }, 'Usage'),
        h('div', { class: 'spacer' }), this.updated,
        h('button', { type: 'button', onclick: () => this.load() }, 'Refresh')),
      h('p', { class: 'muted' }, 'Days and months are UTC; jobs count on the day they were submitted. A quota of 0 is no limit.'),
      this.body);
    this.refresh = coalesce(() => this.load(), 2000);
    this.unsubscribe = onJobEvent(() => this.refresh());
    this.load();
  }

  leave() {
    this.unsubscribe();
  }

  async load() {
    try {
      const { tenants } = await get('/tenants');
      replace(this.body, usageTable(tenants), tenants.map(quotaCard));
      this.updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      replace(this.body, h('p', { class: 'form-error' }, error.message));
    }
  }
}

function usageTable(tenants) {
  const columns = ['Tenant', 'Jobs today', 'Jobs this month', 'Input tokens', 'Output tokens', 'Cost this month', 'Share'];
  return h('div', { class: 'table-wrap card' },
    h('table', { class: 'usage-table' },
      h('caption', { class: 'muted' }, 'Jobs, tokens and cost by tenant'),
      h('thead', {}, h('tr', {}, columns.map((name) => h('th', { scope: 'col' }, name)))),
      h('tbody', {}, tenants.map((tenant) => {
        const use = tenant.use || {};
        return h('tr', { dataset: { tenant: tenant.name } },
          h('th', { scope: 'row' }, tenant.name),
          h('td', { class: 'num' }, count(use.jobs_today)),
          h('td', { class: 'num' }, count(use.jobs_this_month)),
          h('td', { class: 'num' }, count(use.input_tokens_this_month)),
          h('td', { class: 'num' }, count(use.output_tokens_this_month)),
          h('td', { class: 'num' }, usd(use.spend_this_month_usd)),
          h('td', { class: 'num' }, String(tenant.effective.share)));
      }))));
}

// One card per tenant: each quota it has, as a meter of what it uses of it.
function quotaCard(tenant) {
  const use = tenant.use || {};
  const rows = QUOTAS.map(([label, used, quota, format]) => {
    const limit = tenant.effective[quota];
    const value = Number(use[used] || 0);
    const limited = Boolean(limit);
    return h('div', { class: 'quota', dataset: { quota } },
      h('span', { class: 'quota-label' }, label),
      limited
        ? h('meter', { min: 0, max: limit, value: Math.min(value, limit), high: limit * 0.8, optimum: 0, 'aria-label': `${label} of ${tenant.name}` })
        : h('span', { class: 'quota-free muted' }, 'no limit'),
      h('span', { class: 'quota-figure' }, limited ? `${format(value)} of ${format(limit)}` : format(value)));
  });
  return h('div', { class: 'card quota-card', dataset: { tenant: tenant.name } },
    h('h2', {}, tenant.name), rows);
}
