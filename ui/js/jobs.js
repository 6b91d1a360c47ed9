// The job list: filters by status (with counts), search by agent id, pages; kept live by
// GET /events: a state event updates its row at once, then the page and the counts are
// re-read (one read for a burst of events), so new jobs appear as they are submitted.

import { ApiError, get } from './api.js';
import { h, replace, statusBadge } from './dom.js';
import { STATUSES, ago, count, dateTime, duration, usd } from './format.js';
import { coalesce, onJobEvent } from './live.js';

const PAGE_SIZE = 25;

export function showJobs(params) {
  const filter = {
    status: STATUSES.includes(params.get('status')) ? params.get('status') : '',
    agent: params.get('agent') || '',
    page: Math.max(1, parseInt(params.get('page') || '1', 10) || 1),
  };
  const view = new JobList(filter);
  return { element: view.element, leave: () => view.leave() };
}

class JobList {
  constructor(filter) {
    this.filter = filter;
    this.rows = new Map();
    this.counts = h('div', { class: 'status-filter', role: 'group', 'aria-label': 'Filter by status' });
    this.search = h('input', { id: 'agent-search', type: 'search', value: filter.agent, placeholder: 'any agent', spellcheck: 'false' });
    this.body = h('tbody');
    this.message = h('p', { class: 'empty', role: 'status' });
    this.pager = h('nav', { class: 'pager', 'aria-label': 'Pages' });
    this.element = h('section', { class: 'view jobs-view', 'aria-labelledby': 'jobs-title' },
      h('div', { class: 'view-head' },
        h('h1', { id: 'jobs-title' }, 'Jobs'),
        h('a', { class: 'button primary', href: '#/submit' }, 'New job')),
      h('div', { class: 'toolbar' }, this.counts, this.searchForm()),
      h('div', { class: 'table-wrap card' },
        h('table', { class: 'jobs-table' },
          h('caption', { class: 'visually-hidden' }, 'Jobs, newest first'),
          h('thead', {}, h('tr', {}, ['Job', 'Status', 'Agent', 'Engine', 'Profile', 'Created', 'Duration', 'Cost']
            .map((name) => h('th', { scope: 'col' }, name)))),
          this.body),
        this.message),
      this.pager);
    this.refresh = coalesce(() => this.load());
    this.unsubscribe = onJobEvent((event) => this.onEvent(event));
    this.renderCounts(null);
    this.load();
  }

  leave() {
    this.unsubscribe();
  }

  searchForm() {
    const form = h('form', { class: 'search', role: 'search', onsubmit: (event) => {
      event.preventDefault();
      this.navigate({ agent: this.search.value.trim(), page: 1 });
    } },
    h('label', { for: 'agent-search' }, 'Agent id'), this.search,
    h('button', { type: 'submit' }, 'Search'));
    return form;
  }

  navigate(change) {
    const next = { ...this.filter, ...change };
    const query = new URLSearchParams();
    if (next.status) query.set('status', next.status);
    if (next.agent) query.set('agent', next.agent);
    if (next.page > 1) query.set('page', String(next.page));
    const text = query.toString();
    location.hash = `#/jobs${text ? `?${text}` : ''}`;
  }

  async load() {
    const { status, agent, page } = this.filter;
    try {
      const [list, counts] = await Promise.all([
        get('/jobs', { status, agent_id: agent, limit: PAGE_SIZE, offset: (page - 1) * PAGE_SIZE }),
        get('/stats/jobs', { agent_id: agent }),
      ]);
      this.renderRows(list.jobs);
      this.renderCounts(counts);
      this.renderPager(list.total);
      this.message.textContent = list.jobs.length ? '' : emptyText(this.filter);
    } catch (error) {
      this.message.textContent = listError(error);
    }
  }

  // Any state change of a job in the current search changes its counts, maybe its page.
  onEvent(event) {
    const row = this.rows.get(event.job_id);
    if (row) updateRow(row, { status: event.status });
    if (!this.filter.agent || event.agent_id === this.filter.agent) this.refresh();
  }

  renderCounts(counts) {
    const byStatus = counts ? counts.by_status : {};
    const total = counts ? counts.total : null;
    const options = [['', 'All', total], ...STATUSES.map((s) => [s, s[0].toUpperCase() + s.slice(1), byStatus[s]])];
    replace(this.counts, options.map(([value, label, n]) => h('button', {
      type: 'button',
      class: `filter status-${value || 'all'}`,
      'aria-pressed': String(this.filter.status === value),
      dataset: { status: value || 'all' },
      onclick: () => this.navigate({ status: value, page: 1 }),
    }, label, ' ', h('span', { class: 'count' }, n === null || n === undefined ? '…' : count(n)))));
  }

  renderRows(jobs) {
    const seen = new Map();
    const rows = jobs.map((job) => {
      const row = this.rows.get(job.job_id) || newRow(job.job_id);
      updateRow(row, job);
      seen.set(job.job_id, row);
      return row;
    });
    const same = rows.length === this.body.children.length
      && rows.every((row, index) => this.body.children[index] === row);
    if (!same) this.body.replaceChildren(...rows);
    this.rows = seen;
  }

  renderPager(total) {
    const { page } = this.filter;
    const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
    const first = total ? (page - 1) * PAGE_SIZE + 1 : 0;
    const last = Math.min(total, page * PAGE_SIZE);
    replace(this.pager,
      h('button', { type: 'button', disabled: page <= 1, onclick: () => this.navigate({ page: page - 1 }) }, '← Newer'),
      h('span', { class: 'range' }, `${count(first)}–${count(last)} of ${count(total)}`),
      h('button', { type: 'button', disabled: page >= pages, onclick: () => this.navigate({ page: page + 1 }) }, 'Older →'));
  }
}

function newRow(jobId) {
  const cells = {};
  const row = h('tr', { dataset: { jobId } });
  for (const name of ['job', 'status', 'agent', 'engine', 'profile', 'created', 'duration', 'cost']) {
    cells[name] = h('td', { class: `col-${name}` });
    row.append(cells[name]);
  }
  replace(cells.job, h('a', { href: `#/jobs/${encodeURIComponent(jobId)}`, class: 'mono' }, jobId));
  row.cells_ = cells;
  return row;
}

function updateRow(row, job) {
  const cells = row.cells_;
  if (job.status && cells.status.dataset.status !== job.status) {
    cells.status.dataset.status = job.status;
    row.dataset.status = job.status;
    replace(cells.status, statusBadge(job.status));
  }
  if (job.agent_id === undefined) return;
  cells.agent.textContent = job.agent_id;
  cells.engine.textContent = job.engine;
  cells.profile.textContent = job.profile;
  replace(cells.created, h('time', { datetime: job.created_at, title: dateTime(job.created_at) }, ago(job.created_at)));
  cells.duration.textContent = duration(job.duration_ms);
  cells.cost.textContent = job.usage && job.usage.cost_usd !== undefined ? usd(job.usage.cost_usd) : '—';
}

function listError(error) {
  if (!(error instanceof ApiError)) return `Cannot reach the tower: ${error.message}`;
  if (error.status === 401) return 'Sign in with the API key to see the jobs.';
  if (error.status === 422) return `Cannot search for that: ${error.message}`;
  return error.message;
}

function emptyText({ status, agent }) {
  if (status || agent) return 'No job matches these filters.';
  return 'No jobs yet. Submit one with “New job”.';
}
