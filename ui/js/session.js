// A job's session as a thread (GET /sessions/{id}: its turns, oldest first; siblings
// from two continues of one job share a turn), and a "continue" box on a finished job
// (POST /jobs/{id}/continue: the next turn, in the workspace and conversation it left).

import { ApiError, api, get } from './api.js';
import { h, replace, statusBadge } from './dom.js';
import { TERMINAL, dateTime } from './format.js';

const PREVIEW_CHARS = 300;

export class SessionView {
  constructor(jobId, notice) {
    this.jobId = jobId;
    this.notice = notice;
    this.thread = h('ol', { class: 'session-thread' });
    this.prompt = h('textarea', { name: 'continue_prompt', rows: 3, required: true, 'aria-label': 'Next prompt' });
    this.button = h('button', { type: 'submit' }, 'Continue');
    this.form = h('form', { class: 'continue-form', hidden: true, onsubmit: (event) => this.submit(event) },
      h('label', {}, 'Continue this job: its next turn starts from the workspace and conversation it left'),
      this.prompt, h('div', { class: 'form-actions' }, this.button));
    this.threadCard = h('div', { hidden: true }, h('h3', {}, 'Session'), this.thread);
    this.element = h('div', { class: 'card session', hidden: true }, this.threadCard, this.form);
  }

  async update(job) {
    const finished = TERMINAL.has(job.status) && Boolean(job.started_at);
    this.form.hidden = !finished;
    this.threadCard.hidden = !job.session_id;
    this.element.hidden = this.form.hidden && this.threadCard.hidden;
    if (!job.session_id) return;
    try {
      const session = await get(`/sessions/${encodeURIComponent(job.session_id)}`);
      replace(this.thread, session.turns.map((turn) => this.turnItem(turn)));
    } catch (error) {
      this.notice(error.message);
    }
  }

  turnItem(turn) {
    const current = turn.job_id === this.jobId;
    const preview = (turn.error || turn.result || '').slice(0, PREVIEW_CHARS);
    return h('li', { class: current ? 'turn current' : 'turn', dataset: { jobId: turn.job_id } },
      h('span', { class: 'turn-number' }, `Turn ${turn.turn}`),
      current ? h('span', { class: 'mono' }, turn.job_id)
        : h('a', { class: 'mono', href: `#/jobs/${encodeURIComponent(turn.job_id)}` }, turn.job_id),
      statusBadge(turn.status),
      h('span', { class: 'muted' }, dateTime(turn.created_at)),
      preview ? h('p', { class: 'turn-preview' }, preview) : null);
  }

  async submit(event) {
    event.preventDefault();
    this.button.disabled = true;
    try {
      const body = { prompt: this.prompt.value };
      const reply = await api('POST', `/jobs/${encodeURIComponent(this.jobId)}/continue`, { body });
      location.hash = `#/jobs/${encodeURIComponent(reply.job_id)}`;
    } catch (error) {
      this.notice(error instanceof ApiError ? error.message : String(error));
    } finally {
      this.button.disabled = false;
    }
  }
}
