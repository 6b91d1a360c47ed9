// A job's workspace on its page: what went in (inputs, repository, the branch and pull
// request asked for), what came back (artifacts with their downloads, what was left out
// and why, the diff file by file) and what was published. Downloads are fetched with the
// key and saved through an object URL: the key never goes in a URL.

import { download, fetchTextPrefix, get } from './api.js';
import { h, replace } from './dom.js';
import { renderDiff } from './diff.js';
import { bytes, count, httpUrl } from './format.js';

// A diff larger than this is shown cut (its first lines), with the whole one to download:
// a node per run of lines stays quick to build up to about a megabyte.
export const DIFF_DISPLAY_MAX = 1024 * 1024;

const jobPath = (jobId, rest) => `/jobs/${encodeURIComponent(jobId)}${rest}`;
const artifactPath = (jobId, path) => jobPath(jobId, `/artifacts/${path.split('/').map(encodeURIComponent).join('/')}`);

// Inputs, repository and output as asked, and what was published; hidden for a job
// that had none of them.
export function renderWorkspace(card, job) {
  const inputs = job.inputs || [];
  card.hidden = !inputs.length && !job.repo && !job.output && !job.published;
  if (card.hidden) return;
  const rows = [];
  if (inputs.length) {
    rows.push(['Inputs', h('ul', { class: 'plain-list inputs-list' }, inputs.map((input) =>
      h('li', {}, h('span', { class: 'mono' }, input.upload), ' → ', h('span', { class: 'mono' }, `/workspace/${input.path || ''}`))))]);
  }
  if (job.repo) {
    rows.push(['Repository', h('span', { class: 'mono repo-url' }, job.repo.url)]);
    rows.push(['Ref', job.repo.ref || 'default branch']);
    rows.push(['Credential', job.repo.credential || 'none']);
  }
  if (job.output) {
    rows.push(['Output branch', h('span', { class: 'mono' }, job.output.branch)]);
    if (job.output.pull_request) rows.push(['Pull request title', job.output.pull_request.title]);
  }
  replace(card, h('h2', {}, 'Workspace'),
    h('dl', { class: 'facts-list' }, rows.map(([name, value]) => [h('dt', {}, name), h('dd', {}, value)])),
    job.published ? published(job.published) : null);
}

function published(record) {
  const box = h('div', { class: 'published' }, h('h3', {}, 'Published'));
  if (record.error) {
    box.append(h('div', { class: 'error-box publish-error' }, h('h3', {}, 'Publishing failed'), h('pre', {}, record.error)));
    return box;
  }
  if (!record.branch) {
    box.append(h('p', { class: 'muted publish-reason' }, record.reason || 'Nothing was pushed.'));
    return box;
  }
  const link = httpUrl(record.pull_request_url);
  const number = record.pull_request_number ?? null;
  const label = number !== null ? `#${number}` : record.pull_request_url;
  const pull = record.pull_request_url
    ? (link ? h('a', { href: link, rel: 'noopener noreferrer nofollow', target: '_blank', class: 'pull-request-link' }, label) : h('span', { class: 'mono' }, record.pull_request_url))
    : 'none';
  box.append(h('dl', { class: 'facts-list' },
    h('dt', {}, 'Branch'), h('dd', { class: 'mono published-branch' }, record.branch),
    h('dt', {}, 'Commit'), h('dd', { class: 'mono', title: record.commit || '' }, (record.commit || '—').slice(0, 12)),
    h('dt', {}, 'Pull request'), h('dd', { class: 'published-pull' }, pull)));
  return box;
}

// The artifacts card: read once per summary the record shows (an attempt's replace the
// last one's), never again while it stays the same.
export class ArtifactsView {
  constructor(jobId, onError) {
    this.jobId = jobId;
    this.onError = onError;
    this.shown = null;
    this.element = h('div', { class: 'card artifacts', hidden: true });
  }

  update(job) {
    const summary = job.artifacts;
    this.element.hidden = !summary;
    if (!summary) return;
    const key = JSON.stringify([job.attempt, summary]);
    if (key === this.shown) return;
    this.shown = key;
    replace(this.element, h('h2', {}, 'Artifacts'), h('p', { class: 'muted' }, 'Loading the artifacts…'));
    this.load();
  }

  async load() {
    try {
      this.render(await get(jobPath(this.jobId, '/artifacts')));
    } catch (error) {
      this.shown = null;
      replace(this.element, h('h2', {}, 'Artifacts'), h('p', { class: 'form-error' }, `Cannot list the artifacts: ${error.message}`));
    }
  }

  render(listing) {
    const total = listing.files.reduce((sum, file) => sum + file.size, 0);
    const all = h('button', { type: 'button', class: 'download-all', onclick: () => this.save(jobPath(this.jobId, '/artifacts.tar.gz'), `${this.jobId}-artifacts.tar.gz`) },
      'Download all (.tar.gz)');
    replace(this.element,
      h('div', { class: 'card-head' }, h('h2', {}, 'Artifacts'),
        h('span', { class: 'muted' }, `${count(listing.files.length)} files, ${bytes(total)}`),
        listing.files.length ? all : null),
      listing.files.length ? this.fileTable(listing.files) : h('p', { class: 'muted' }, 'The job created or changed no file that was kept.'),
      omitted(listing), deleted(listing));
  }

  fileTable(files) {
    return h('div', { class: 'table-wrap' }, h('table', { class: 'artifact-files' },
      h('thead', {}, h('tr', {}, ['Path', 'Size', ''].map((name) => h('th', { scope: 'col' }, name)))),
      h('tbody', {}, files.map((file) => h('tr', { dataset: { path: file.path } },
        h('td', { class: 'mono artifact-path' }, file.path),
        h('td', { class: 'artifact-size', title: `${file.size} bytes` }, bytes(file.size)),
        h('td', {}, h('button', {
          type: 'button', class: 'link-button', 'aria-label': `Download ${file.path}`,
          onclick: () => this.save(artifactPath(this.jobId, file.path), file.path.split('/').pop()),
        }, 'Download')))))));
  }

  async save(path, filename) {
    try {
      await download(path, filename);
    } catch (error) {
      this.onError(`Cannot download ${filename}: ${error.message}`);
    }
  }
}

function omitted(listing) {
  if (!listing.omitted_count) return null;
  const more = listing.omitted_count - listing.omitted.length;
  return h('div', { class: 'omitted' },
    h('h3', {}, `Left out (${count(listing.omitted_count)})`),
    h('ul', { class: 'plain-list omitted-list' }, listing.omitted.map((one) => h('li', { dataset: { path: one.path } },
      h('span', { class: 'mono' }, one.path), ' ', h('span', { class: 'muted' }, `(${bytes(one.size)})`), ': ', h('span', { class: 'omitted-why' }, one.why)))),
    more > 0 ? h('p', { class: 'muted' }, `and ${count(more)} more not listed.`) : null);
}

function deleted(listing) {
  if (!listing.deleted_count) return null;
  const more = listing.deleted_count - listing.deleted.length;
  return h('div', { class: 'deleted' },
    h('h3', {}, `Deleted (${count(listing.deleted_count)})`),
    h('ul', { class: 'plain-list' }, listing.deleted.map((path) => h('li', { class: 'mono' }, path))),
    more > 0 ? h('p', { class: 'muted' }, `and ${count(more)} more not listed.`) : null);
}

// The diff card, for a job with changes: its totals, then the diff file by file (cut
// past DIFF_DISPLAY_MAX, with the whole one to download).
export class DiffView {
  constructor(jobId, onError) {
    this.jobId = jobId;
    this.onError = onError;
    this.shown = null;
    this.element = h('div', { class: 'card diff-card', hidden: true });
  }

  update(job) {
    const summary = job.artifacts || {};
    this.element.hidden = !job.changes && !summary.diff_error;
    if (this.element.hidden) return;
    const key = JSON.stringify([job.attempt, job.changes, summary.diff_size, summary.diff_error]);
    if (key === this.shown) return;
    this.shown = key;
    const changes = job.changes || { files: 0, insertions: 0, deletions: 0 };
    const totals = h('span', { class: 'diff-totals' },
      `${count(changes.files)} files changed, `,
      h('span', { class: 'diff-stat-add' }, `+${count(changes.insertions)}`), ' ',
      h('span', { class: 'diff-stat-del' }, `−${count(changes.deletions)}`));
    this.body = h('div', { class: 'diff-body' });
    const save = h('button', { type: 'button', class: 'download-diff', onclick: () => this.save() }, 'Download the diff');
    replace(this.element, h('div', { class: 'card-head' }, h('h2', {}, 'Changes'), totals,
      summary.diff_size !== null && summary.diff_size !== undefined ? save : null), this.body);
    if (summary.diff_error) {
      replace(this.body, h('div', { class: 'error-box' }, h('h3', {}, 'No diff'), h('pre', {}, summary.diff_error)));
    } else if (summary.diff_size !== null && summary.diff_size !== undefined) {
      replace(this.body, h('p', { class: 'muted' }, 'Loading the diff…'));
      this.load(summary.diff_size);
    }
  }

  async load(size) {
    try {
      const { text, truncated } = await fetchTextPrefix(jobPath(this.jobId, '/diff'), DIFF_DISPLAY_MAX);
      replace(this.body,
        truncated ? h('p', { class: 'notice diff-truncated' },
          `This diff is ${bytes(size)}: only its first ${bytes(DIFF_DISPLAY_MAX)} is shown. `,
          h('button', { type: 'button', class: 'link-button', onclick: () => this.save() }, 'Download the whole diff')) : null,
        renderDiff(text));
    } catch (error) {
      this.shown = null;
      replace(this.body, h('p', { class: 'form-error' }, `Cannot read the diff: ${error.message}`));
    }
  }

  async save() {
    try {
      await download(jobPath(this.jobId, '/diff'), `${this.jobId}.diff`);
    } catch (error) {
      this.onError(`Cannot download the diff: ${error.message}`);
    }
  }
}
