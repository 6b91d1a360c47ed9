// A job's way out through the egress proxy (docs/egress.md), on its page: the allow-list
// it ran with and what its record counts (requests allowed and refused, bytes moved, the
// bound that refused it, each refused host once with why), and every decision as it is
// made, from the job's `egress` events. Hidden for a job without an allow-list.

import { h, replace } from './dom.js';
import { bytes, count } from './format.js';

// Decisions listed at most: a job may make thousands of requests, and the record keeps
// the counts of them all.
export const EGRESS_ROWS_MAX = 500;

const BOUNDS = {
  bytes: 'bytes in total (EGRESS_MAX_BYTES)',
  connections: 'requests at once (EGRESS_MAX_CONNECTIONS)',
};

export class EgressView {
  constructor() {
    this.record = null;
    this.seen = 0;
    this.summary = h('div', { class: 'egress-summary' });
    this.rows = h('tbody', {});
    this.more = h('p', { class: 'muted egress-more', hidden: true });
    this.requests = h('div', { class: 'egress-requests', hidden: true },
      h('h3', {}, 'Requests'),
      h('div', { class: 'table-wrap' }, h('table', { class: 'egress-table' },
        h('thead', {}, h('tr', {}, ['Host', 'Port', 'Method', 'Decision', 'Bytes', 'Answer']
          .map((name) => h('th', { scope: 'col' }, name)))),
        this.rows)),
      this.more);
    this.element = h('div', { class: 'card egress', hidden: true },
      h('h2', {}, 'Egress'), this.summary, this.requests);
  }

  // The record's part (GET /jobs/{id}: `egress`, null for a job without a list).
  update(job) {
    this.record = job.egress || null;
    if (!this.record) {
      replace(this.summary);
      this.element.hidden = !this.seen;
      return;
    }
    this.element.hidden = false;
    replace(this.summary, summaryList(this.record), refusedHosts(this.record));
  }

  // One decision, from an `egress` event: appended as it comes.
  add(decision) {
    this.seen += 1;
    this.element.hidden = false;
    this.requests.hidden = false;
    if (this.seen > EGRESS_ROWS_MAX) {
      this.more.hidden = false;
      this.more.textContent = `${count(this.seen - EGRESS_ROWS_MAX)} more not listed; the counts above hold them all.`;
      return;
    }
    this.rows.append(decisionRow(decision));
  }
}

function summaryList(record) {
  const allow = record.allow || [];
  const facts = [
    ['Allow-list', allow.length
      ? h('ul', { class: 'plain-list egress-allow' }, allow.map((entry) => h('li', { class: 'mono' }, entry)))
      : 'none'],
    ['Allowed', count(record.allowed)],
    ['Refused', count(record.refused_count)],
    ['Moved', h('span', { title: `${count(record.bytes)} bytes` }, bytes(record.bytes))],
  ];
  if (record.limited) facts.push(['Bound reached', BOUNDS[record.limited] || record.limited]);
  return h('dl', { class: 'facts-list egress-facts' },
    facts.map(([name, value]) => [h('dt', {}, name), h('dd', {}, value)]));
}

function refusedHosts(record) {
  const refused = record.refused || [];
  if (!refused.length) return null;
  const note = record.refused_count > refused.length
    ? h('p', { class: 'muted' }, `${count(record.refused_count)} refusals in all: each host, port and reason is listed once.`)
    : null;
  return h('div', { class: 'egress-refused' },
    h('h3', {}, 'Refused hosts'),
    h('div', { class: 'table-wrap' }, h('table', { class: 'egress-refused-table' },
      h('thead', {}, h('tr', {}, ['Host', 'Port', 'Reason'].map((name) => h('th', { scope: 'col' }, name)))),
      h('tbody', {}, refused.map((entry) => h('tr', {},
        h('td', { class: 'mono' }, entry.host),
        h('td', {}, String(entry.port)),
        h('td', { class: 'reason' }, entry.reason)))))),
    note);
}

function decisionRow(decision) {
  const allowed = decision.allowed === true;
  const answer = allowed
    ? (decision.status ? `HTTP ${decision.status}` : '—')
    : (decision.reason || 'refused');
  return h('tr', { dataset: { decision: allowed ? 'allowed' : 'refused' } },
    h('td', { class: 'mono' }, decision.host),
    h('td', {}, String(decision.port ?? '—')),
    h('td', {}, decision.method || '—'),
    h('td', {}, h('span', { class: `badge decision-${allowed ? 'allowed' : 'refused'}` }, allowed ? 'allowed' : 'refused')),
    h('td', { title: `${count(decision.bytes)} bytes` }, bytes(decision.bytes)),
    h('td', { class: 'reason' }, answer));
}
