// One job: its facts, the live log from GET /jobs/{id}/events, the result (the final text
// as Markdown, and the raw record as JSON), usage and cost, what it reached through the
// egress proxy, its workspace (inputs, repository, artifacts, diff, what was published),
// its session's turns and a box to continue it, webhook deliveries, cancel.

import { ApiError, api, get } from './api.js';
import { h, replace, statusBadge } from './dom.js';
import { EgressView } from './egress.js';
import { TERMINAL, between, count, dateTime, duration, usd } from './format.js';
import { renderMarkdown } from './markdown.js';
import { SessionView } from './session.js';
import { subscribe } from './sse.js';
import { tabs } from './tabs.js';
import { ArtifactsView, DiffView, renderWorkspace } from './workspace.js';

// A result larger than this is shown as plain text, not rendered: Markdown makes a node per
// span, and a page holding megabytes of them is slow to build, lay out and scroll.
const MARKDOWN_MAX_BYTES = 200 * 1024;

// How long after a delivery's due time to look at its outcome (an attempt takes a moment).
const DELIVERY_GRACE_MS = 1000;

export function showJob(jobId) {
  const view = new JobView(jobId);
  return { element: view.element, leave: () => view.leave() };
}

class JobView {
  constructor(jobId) {
    this.jobId = jobId;
    this.status = null;
    this.badge = h('span', { class: 'job-status', role: 'status', 'aria-live': 'polite' });
    this.cancelButton = h('button', { type: 'button', class: 'danger', hidden: true, onclick: () => this.cancel() }, 'Cancel job');
    this.notice = h('p', { class: 'notice', role: 'alert', hidden: true });
    this.facts = h('div', { class: 'card facts' });
    this.usage = h('div', { class: 'card usage' });
    this.log = h('pre', { class: 'log', id: 'job-log', tabindex: '0', 'aria-label': 'Job log' });
    this.logState = h('span', { class: 'log-state', role: 'status' }, 'Connecting…');
    this.result = h('div', { class: 'card result' });
    this.webhooks = h('div', { class: 'card webhooks', hidden: true });
    this.workspace = h('div', { class: 'card workspace', hidden: true });
    this.egress = new EgressView();
    this.artifacts = new ArtifactsView(jobId, (message) => this.showNotice(message));
    this.diff = new DiffView(jobId, (message) => this.showNotice(message));
    this.session = new SessionView(jobId, (message) => this.showNotice(message));
    this.element = h('section', { class: 'view job-view', 'aria-labelledby': 'job-title' },
      h('p', { class: 'crumbs' }, h('a', { href: '#/jobs' }, '← Jobs')),
      h('div', { class: 'view-head' },
        h('h1', { id: 'job-title', class: 'mono' }, jobId), this.badge,
        h('div', { class: 'spacer' }), this.cancelButton),
      this.notice,
      h('div', { class: 'job-grid' }, this.facts, this.usage),
      h('div', { class: 'card' },
        h('div', { class: 'card-head' }, h('h2', {}, 'Log'), this.logState),
        this.log),
      this.egress.element,
      this.workspace,
      this.result,
      this.session.element,
      this.artifacts.element,
      this.diff.element,
      this.webhooks);
    this.stream = subscribe(`/jobs/${encodeURIComponent(jobId)}/events`, {
      onEvent: (event) => this.onEvent(event),
      onStatus: (status, error) => this.onStreamStatus(status, error),
      isFinal: (event) => event.event === 'state' && TERMINAL.has(event.data.status),
    });
    this.load();
  }

  leave() {
    this.stream.close();
    clearTimeout(this.deliveryTimer);
  }

  async load() {
    try {
      this.render(await get(`/jobs/${encodeURIComponent(this.jobId)}`));
    } catch (error) {
      this.showNotice(error instanceof ApiError && error.status === 404
        ? `There is no job ${this.jobId} (it may have been deleted by retention).` : error.message);
    }
  }

  onEvent(event) {
    if (event.event === 'log') {
      this.appendLog(event.data);
    } else if (event.event === 'egress') {
      this.egress.add(event.data);
    } else if (event.event === 'state') {
      this.setStatus(event.data.status);
      if (TERMINAL.has(event.data.status)) this.load();
    }
  }

  onStreamStatus(status, error) {
    const text = { live: 'Streaming', retrying: 'Reconnecting…', closed: 'Finished' }[status];
    this.logState.textContent = text || (error ? `Stream unavailable: ${error.message}` : 'Stream unavailable');
    this.logState.dataset.state = status;
  }

  appendLog({ stream, text }) {
    const atBottom = this.log.scrollTop + this.log.clientHeight >= this.log.scrollHeight - 4;
    this.log.append(stream === 'stderr' ? h('span', { class: 'stderr' }, text) : document.createTextNode(text));
    if (atBottom) this.log.scrollTop = this.log.scrollHeight;
  }

  setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    replace(this.badge, statusBadge(status));
    this.cancelButton.hidden = TERMINAL.has(status);
  }

  async cancel() {
    this.cancelButton.disabled = true;
    try {
      await api('DELETE', `/jobs/${encodeURIComponent(this.jobId)}`);
      this.setStatus('cancelled');
      this.load();
    } catch (error) {
      this.showNotice(error.message);
    } finally {
      this.cancelButton.disabled = false;
    }
  }

  showNotice(message) {
    this.notice.textContent = message;
    this.notice.hidden = !message;
  }

  render(job) {
    this.setStatus(job.status);
    renderFacts(this.facts, job);
    renderUsage(this.usage, job.usage);
    this.egress.update(job);
    renderWorkspace(this.workspace, job);
    renderResult(this.result, job);
    this.artifacts.update(job);
    this.diff.update(job);
    this.session.update(job);
    renderWebhooks(this.webhooks, job, () => this.redeliver());
    this.followDeliveries(job);
  }

  // Webhook attempts make no job event: while a delivery is pending, read the job again
  // once its next attempt is due (30 s or more apart with the default backoff).
  followDeliveries(job) {
    clearTimeout(this.deliveryTimer);
    const pending = (job.webhook_deliveries || []).filter((d) => d.status === 'pending');
    if (!pending.length) return;
    const due = Math.min(...pending.map((d) => new Date(d.next_attempt_at || Date.now()).getTime()));
    this.deliveryTimer = setTimeout(() => this.load(), Math.max(0, due - Date.now()) + DELIVERY_GRACE_MS);
  }

  async redeliver() {
    try {
      await api('POST', `/jobs/${encodeURIComponent(this.jobId)}/webhook/redeliver`);
      this.load();
    } catch (error) {
      this.showNotice(error.message);
    }
  }
}

function renderFacts(card, job) {
  const facts = [
    ['Agent', job.agent_id], ['Engine', job.engine], ['Profile', job.profile],
    ['Model', job.model || 'profile default'], ['Dry run', job.dry_run ? 'yes' : 'no'],
    ['Created', dateTime(job.created_at)], ['Started', dateTime(job.started_at)],
    ['Finished', dateTime(job.finished_at)],
    ['Queued for', duration(between(job.created_at, job.started_at))],
    ['Ran for', duration(job.duration_ms)],
    ['Attempt', `${job.attempt} of ${job.max_attempts}`],
    ['Exit code', job.exit_code ?? '—'], ['Failure', job.failure_reason || '—'],
    ['Priority', job.priority], ['Output format', job.output_format],
    ['Prompt', `${count(job.prompt_chars)} characters`],
  ];
  replace(card, h('h2', {}, 'Details'), h('dl', { class: 'facts-list' },
    facts.map(([name, value]) => [h('dt', {}, name), h('dd', {}, String(value))])));
}

const USAGE_LABELS = {
  input_tokens: 'Input tokens', output_tokens: 'Output tokens',
  cache_read_input_tokens: 'Cache read tokens', cache_creation_input_tokens: 'Cache write tokens',
  cost_usd: 'Cost',
};

function renderUsage(card, usage) {
  const entries = usage && typeof usage === 'object' ? Object.entries(usage) : [];
  const rows = entries.filter(([, value]) => typeof value !== 'object').map(([name, value]) => [
    h('dt', {}, USAGE_LABELS[name] || name.replace(/_/g, ' ')),
    h('dd', {}, name === 'cost_usd' ? usd(value) : typeof value === 'number' ? count(value) : String(value)),
  ]);
  replace(card, h('h2', {}, 'Usage and cost'), rows.length
    ? h('dl', { class: 'facts-list' }, rows)
    : h('p', { class: 'muted' }, 'No usage reported (yet) for this job.'));
}

function renderResult(card, job) {
  const rendered = h('div', { class: 'result-body' });
  if (job.error) rendered.append(h('div', { class: 'error-box' }, h('h3', {}, 'Error'), h('pre', {}, job.error)));
  if (job.result) rendered.append(resultView(job.result));
  if (!job.result && !job.error) {
    rendered.append(h('p', { class: 'muted' }, TERMINAL.has(job.status) ? 'No output.' : 'The result appears here when the job ends.'));
  }
  const raw = h('pre', { class: 'json' }, JSON.stringify(job, null, 2));
  replace(card, h('h2', {}, 'Result'), tabs('Result views', [['Result', rendered], ['Raw JSON', raw]]));
}

// The final text is Markdown; a JSON document (a dry run's report, say) is shown as JSON.
function resultView(text) {
  if (new TextEncoder().encode(text).length > MARKDOWN_MAX_BYTES) return plainResult(text);
  const trimmed = text.trim();
  if (/^[[{]/.test(trimmed)) {
    try {
      return h('pre', { class: 'json' }, JSON.stringify(JSON.parse(trimmed), null, 2));
    } catch { /* not JSON after all */ }
  }
  return renderMarkdown(text);
}

function plainResult(text) {
  return h('div', { class: 'plain-result' },
    h('p', { class: 'muted result-note' }, 'Shown as plain text: larger than 200 KB.'),
    h('pre', { class: 'plain-text' }, text));
}

function renderWebhooks(card, job, redeliver) {
  const deliveries = job.webhook_deliveries || [];
  card.hidden = !job.webhook_url && !deliveries.length;
  if (card.hidden) return;
  const head = h('div', { class: 'card-head' }, h('h2', {}, 'Webhook deliveries'),
    job.webhook_url && TERMINAL.has(job.status) ? h('button', { type: 'button', onclick: redeliver }, 'Redeliver') : null);
  const target = h('p', { class: 'muted' }, 'To ', h('span', { class: 'mono' }, job.webhook_url || '—'));
  if (!deliveries.length) {
    replace(card, head, target, h('p', { class: 'muted' }, 'No delivery yet: one is made when the job ends.'));
    return;
  }
  const rows = deliveries.flatMap((delivery) => {
    const attempts = delivery.attempts.length ? delivery.attempts : [null];
    return attempts.map((attempt, index) => h('tr', { dataset: index ? {} : { deliveryId: delivery.delivery_id } },
      h('td', { class: 'mono' }, index ? '' : delivery.delivery_id),
      h('td', {}, index ? '' : delivery.event_type),
      h('td', {}, index ? '' : statusBadge(delivery.status)),
      h('td', {}, attempt ? attempt.attempt : '—'),
      h('td', {}, attempt ? dateTime(attempt.attempted_at) : delivery.status === 'pending' ? `due ${dateTime(delivery.next_attempt_at)}` : '—'),
      h('td', {}, attempt ? attemptAnswer(attempt) : '—'),
      h('td', {}, attempt ? duration(attempt.duration_ms) : '—')));
  });
  replace(card, head, target, h('div', { class: 'table-wrap' }, h('table', { class: 'deliveries' },
    h('thead', {}, h('tr', {}, ['Delivery', 'Event', 'Status', 'Attempt', 'When', 'Answer', 'Took']
      .map((name) => h('th', { scope: 'col' }, name)))),
    h('tbody', {}, rows))));
}

function attemptAnswer(attempt) {
  if (attempt.status_code !== null && attempt.status_code !== undefined) {
    const answer = `HTTP ${attempt.status_code}`;
    return attempt.error && attempt.error !== answer ? `${answer} (${attempt.error})` : answer;
  }
  return attempt.error || '—';
}
