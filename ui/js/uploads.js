// The submit form's file picker: each chosen file is uploaded at once (POST /uploads),
// showing its size and progress, and the job names the uploaded ones as its inputs, each
// with an optional path in /workspace. A refused upload shows the tower's own message
// (415, 413, 422) next to the picker, and the form is not sent until it is removed.

import { ApiError, api, uploadFile } from './api.js';
import { field, h, setFieldError } from './dom.js';
import { bytes } from './format.js';

const HINT = 'Each file is uploaded as soon as it is chosen. A .tar, .tar.gz, .tgz or .zip is ' +
  'unpacked into /workspace (or under its path); any other file is placed there as it is.';

export class FilePicker {
  constructor() {
    this.rows = [];
    this.sent = [];
    this.input = h('input', { type: 'file', multiple: true, name: 'files', id: 'job-files', onchange: () => this.chosen() });
    this.list = h('ul', { class: 'uploads', 'aria-label': 'Files for the job' });
    this.wrapper = field({ label: 'Files', control: this.input, key: 'inputs', hint: HINT });
    this.element = h('fieldset', { class: 'files' }, h('legend', {}, 'Workspace files'), this.wrapper, this.list);
  }

  chosen() {
    for (const file of this.input.files) this.add(file);
    this.input.value = '';
  }

  add(file) {
    const row = new UploadRow(file, {
      remove: () => this.remove(row),
      settled: () => this.showFailures(),
    });
    this.rows.push(row);
    this.list.append(row.element);
  }

  remove(row) {
    row.discard();
    this.rows = this.rows.filter((one) => one !== row);
    row.element.remove();
    this.showFailures();
    this.input.focus();
  }

  showFailures() {
    setFieldError(this.wrapper, this.failures());
  }

  failures() {
    return this.rows.filter((row) => row.error).map((row) => `${row.file.name}: ${row.error}`).join(' ');
  }

  clearErrors() {
    for (const row of this.rows) setFieldError(row.wrapper, '');
    this.showFailures();
  }

  // The job's inputs once every upload has settled, or {error} when one failed.
  async inputs() {
    await Promise.allSettled(this.rows.map((row) => row.done));
    const failures = this.failures();
    if (failures) return { error: `${failures} (remove the refused files to submit)` };
    this.sent = [...this.rows];
    return { inputs: this.sent.map((row) => row.input()) };
  }

  // "inputs.2.path" names the third input sent; "inputs" the whole list (its total size).
  fieldFor(key) {
    if (key !== 'inputs' && !key.startsWith('inputs.')) return null;
    const index = Number(key.split('.')[1]);
    return (Number.isInteger(index) && this.sent[index]) ? this.sent[index].wrapper : this.wrapper;
  }

  reset() {
    this.rows = [];
    this.sent = [];
    this.list.replaceChildren();
    setFieldError(this.wrapper, '');
  }
}

class UploadRow {
  constructor(file, { remove, settled }) {
    this.file = file;
    this.error = null;
    this.upload = null;
    this.stop = new AbortController();
    this.progress = h('progress', { max: String(file.size || 1), value: '0', 'aria-label': `Upload of ${file.name}` });
    this.state = h('span', { class: 'upload-state', role: 'status' }, 'Uploading…');
    this.path = h('input', { type: 'text', name: 'input-path', spellcheck: 'false', autocomplete: 'off', placeholder: '(the workspace itself)' });
    this.wrapper = field({ label: 'Path in /workspace', control: this.path });
    this.element = h('li', { class: 'upload', dataset: { file: file.name, state: 'uploading' } },
      h('div', { class: 'upload-head' },
        h('span', { class: 'upload-name mono' }, file.name),
        h('span', { class: 'upload-size muted', title: `${file.size} bytes` }, bytes(file.size)),
        h('button', { type: 'button', class: 'link-button', onclick: remove, 'aria-label': `Remove ${file.name}` }, 'Remove')),
      this.progress, this.state, this.wrapper);
    this.done = this.send().finally(settled);
  }

  async send() {
    try {
      this.upload = await uploadFile(this.file, (loaded, total) => this.onProgress(loaded, total), this.stop.signal);
      this.progress.value = this.progress.max;
      const entries = this.upload.kind === 'file' ? '' : `, ${this.upload.entries} entries`;
      this.state.textContent = `Uploaded: ${this.upload.upload_id} (${this.upload.kind}${entries})`;
      this.element.dataset.state = 'uploaded';
    } catch (error) {
      this.error = refusal(error);
      this.state.textContent = `Refused: ${this.error}`;
      this.element.dataset.state = 'failed';
      this.wrapper.hidden = true; // nothing to place
    }
  }

  // Removed from the form: stop it going up, or delete it from the tower (no job will
  // name it; left alone it would wait for UPLOAD_TTL_HOURS).
  discard() {
    this.stop.abort();
    if (this.upload) api('DELETE', `/uploads/${encodeURIComponent(this.upload.upload_id)}`).catch(() => {});
  }

  onProgress(loaded, total) {
    this.progress.max = total || 1;
    this.progress.value = loaded;
    this.state.textContent = `${bytes(loaded)} of ${bytes(total)}`;
  }

  input() {
    const path = this.path.value.trim();
    return path ? { upload: this.upload.upload_id, path } : { upload: this.upload.upload_id };
  }
}

// The tower's words for a refused upload: a 422 names the body itself, so only its
// messages are shown (not "body.body: ...").
function refusal(error) {
  const detail = error instanceof ApiError && error.body ? error.body.detail : null;
  if (Array.isArray(detail) && detail.length) return detail.map((one) => one.msg).join('; ');
  return error.message;
}
