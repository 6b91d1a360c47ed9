// The submit form, built from GET /profiles and GET /engines. Prompt variables are sent
// with their declared types (integer, float, boolean, enum); a value that does not read
// as its type is sent as typed, so the server's own message explains what is wrong.
// Files are uploaded as they are chosen (ui/js/uploads.js) and sent as `inputs`; a
// repository (URL, ref, a stored credential) and what to do with the changes (a branch,
// a pull request) as `repo` and `output`. A 422's messages are shown next to the field
// they name.

import { ApiError, api, get } from './api.js';
import { field, h, replace, setFieldError } from './dom.js';
import { FilePicker } from './uploads.js';

export function showSubmit() {
  const view = new SubmitForm();
  return { element: view.element };
}

// name in the form -> where it goes in the body (and the key a 422's loc gives it).
const REPOSITORY = [
  { name: 'repo_url', key: 'repo.url', label: 'Repository URL', hint: 'Cloned as /workspace (with its .git) before the agent starts; https://…', control: () => text('repo_url', 'url') },
  { name: 'repo_ref', key: 'repo.ref', label: 'Ref', hint: 'A branch, a tag or a 40-digit commit; the default branch when empty.', control: () => text('repo_ref') },
  { name: 'repo_credential', key: 'repo.credential', label: 'Credential', hint: 'A stored credential (POST /credentials) for cloning and pushing.', control: () => h('select', { name: 'repo_credential' }, h('option', { value: '' }, 'none')) },
  { name: 'output_branch', key: 'output.branch', label: 'Output branch', hint: 'The agent’s changes are committed on this new branch and pushed.', control: () => text('output_branch') },
  { name: 'pr_title', key: 'output.pull_request.title', label: 'Pull request title', hint: 'Opens a pull (or merge) request from the branch; needs a github or gitlab credential.', control: () => text('pr_title') },
  { name: 'pr_body', key: 'output.pull_request.body', label: 'Pull request description', control: () => h('textarea', { name: 'pr_body', rows: 3 }) },
];

const ADVANCED = [
  { key: 'model', label: 'Model', hint: 'Overrides the profile’s model.', control: () => text('model') },
  { key: 'system_prompt', label: 'System prompt', control: () => h('textarea', { name: 'system_prompt', rows: 3 }) },
  { key: 'max_turns', label: 'Max turns', hint: '1 to 100.', control: () => text('max_turns', 'numeric'), type: 'integer' },
  { key: 'max_budget_usd', label: 'Max budget (USD)', hint: 'Up to 50.', control: () => text('max_budget_usd', 'decimal'), type: 'float' },
  { key: 'output_format', label: 'Output format', control: () => select('output_format', ['json', 'text', 'stream-json'], 'json') },
  { key: 'allowed_tools', label: 'Allowed tools', hint: 'Comma-separated, e.g. Read, Grep.', control: () => text('allowed_tools'), type: 'list' },
  { key: 'webhook_url', label: 'Webhook URL', hint: 'Called when the job ends.', control: () => text('webhook_url', 'url') },
  { key: 'priority', label: 'Priority', hint: '-1000 to 1000; higher runs first.', control: () => text('priority', 'numeric'), type: 'integer' },
  { key: 'max_attempts', label: 'Max attempts', hint: 'Retries are off unless set (1 to 20).', control: () => text('max_attempts', 'numeric'), type: 'integer' },
  { key: 'mcp_config', label: 'MCP config (JSON)', control: () => h('textarea', { name: 'mcp_config', rows: 3, class: 'mono', spellcheck: 'false' }), type: 'json' },
];

function text(name, inputmode) {
  return h('input', { name, type: 'text', inputmode: inputmode === 'url' ? 'url' : inputmode, spellcheck: 'false', autocomplete: 'off' });
}

function select(name, options, selected, blank) {
  return h('select', { name },
    blank !== undefined ? h('option', { value: '' }, blank) : null,
    options.map((option) => h('option', { value: String(option), selected: String(option) === String(selected) }, String(option))));
}

class SubmitForm {
  constructor() {
    this.fields = new Map();
    this.profiles = [];
    this.picker = new FilePicker();
    this.form = h('form', { class: 'submit-form card', novalidate: true, onsubmit: (event) => this.submit(event) });
    this.formError = h('p', { class: 'form-error', role: 'alert', hidden: true });
    this.vars = h('fieldset', { class: 'vars' });
    this.element = h('section', { class: 'view submit-view', 'aria-labelledby': 'submit-title' },
      h('div', { class: 'view-head' }, h('h1', { id: 'submit-title' }, 'New job')),
      this.form);
    replace(this.form, h('p', { class: 'muted' }, 'Loading profiles and engines…'));
    this.load();
  }

  async load() {
    try {
      const [profiles, engines] = await Promise.all([get('/profiles'), get('/engines')]);
      this.profiles = profiles.profiles;
      this.build(engines.engines);
    } catch (error) {
      replace(this.form, h('p', { class: 'form-error', role: 'alert' }, `Cannot load profiles and engines: ${error.message}`));
      return;
    }
    this.loadCredentials();
  }

  // Without them the form still works: only the credential select stays empty.
  async loadCredentials() {
    const select = this.form.elements.repo_credential;
    try {
      const { credentials } = await get('/credentials');
      select.append(...credentials.map((c) => h('option', { value: c.name }, `${c.name} (${c.kind})`)));
    } catch (error) {
      setFieldError(this.fields.get('repo.credential'), `Cannot list the credentials: ${error.message}`);
    }
  }

  add(key, label, control, options = {}) {
    const wrapper = field({ label, control, key, ...options });
    this.fields.set(key, wrapper);
    return wrapper;
  }

  build(engines) {
    const profileSelect = h('select', { name: 'profile', id: 'job-profile', onchange: () => this.onProfile() },
      this.profiles.map((p) => h('option', { value: p.name, selected: p.name === 'default' }, p.name)));
    const engineSelect = h('select', { name: 'engine', id: 'job-engine' },
      engines.map((e) => h('option', { value: e.id, disabled: !e.available }, e.available ? e.name : `${e.name} (unavailable)`)));
    this.profileHint = h('p', { class: 'hint' });
    const dryRun = h('input', { type: 'checkbox', name: 'dry_run', id: 'job-dry-run' });
    replace(this.form,
      h('div', { class: 'grid two' },
        this.add('agent_id', 'Agent id', h('input', { name: 'agent_id', id: 'job-agent', type: 'text', required: true, spellcheck: 'false', autocomplete: 'off', value: 'dashboard' }),
          { required: true, hint: 'Letters, digits, - and _ (up to 64).' }),
        this.add('engine', 'Engine', engineSelect, { required: true }),
        this.add('profile', 'Profile', profileSelect),
        h('div', { class: 'field checkbox-field', dataset: { field: 'dry_run' } },
          dryRun, h('label', { for: 'job-dry-run' }, 'Dry run'),
          h('p', { class: 'hint' }, 'Runs the worker container but not the agent; the result shows the command.'))),
      this.profileHint,
      this.add('prompt', 'Prompt', h('textarea', { name: 'prompt', id: 'job-prompt', rows: 6, spellcheck: 'true' })),
      this.vars,
      this.picker.element,
      h('details', { class: 'advanced repository' }, h('summary', {}, 'Repository and pull request'),
        h('div', { class: 'grid two' }, REPOSITORY.map((spec) =>
          this.add(spec.key, spec.label, spec.control(), { hint: spec.hint })))),
      h('details', { class: 'advanced' }, h('summary', {}, 'Advanced options'),
        h('div', { class: 'grid two' }, ADVANCED.map((spec) =>
          this.add(spec.key, spec.label, spec.control(), { hint: spec.hint })))),
      this.formError,
      h('div', { class: 'actions' },
        h('button', { type: 'submit', class: 'primary' }, 'Submit job'),
        h('button', { type: 'reset', onclick: () => this.reset() }, 'Reset')));
    this.dryRun = dryRun;
    this.onProfile();
  }

  reset() {
    this.picker.reset();
    this.clearErrors();
    setTimeout(() => this.onProfile(), 0); // once the form's own reset has run
  }

  currentProfile() {
    const name = this.form.elements.profile.value;
    return this.profiles.find((p) => p.name === name);
  }

  onProfile() {
    const profile = this.currentProfile();
    if (!profile) return;
    this.profileHint.textContent = [profile.description, profile.model && `Model: ${profile.model}.`].filter(Boolean).join(' ');
    if (profile.engine) this.form.elements.engine.value = profile.engine;
    for (const key of [...this.fields.keys()]) if (key.startsWith('prompt_vars.')) this.fields.delete(key);
    const inputs = profile.prompt_vars.map((spec) => this.varField(spec));
    replace(this.vars, h('legend', {}, `Variables of ${profile.name}`),
      inputs.length ? h('div', { class: 'grid two' }, inputs) : h('p', { class: 'muted' }, 'This profile declares no variables.'));
  }

  varField(spec) {
    const name = `var-${spec.name}`;
    const hasDefault = spec.default !== null && spec.default !== undefined;
    let control;
    if (spec.enum) {
      control = select(name, spec.enum, hasDefault ? spec.default : '', spec.required ? undefined : hasDefault ? `default (${spec.default})` : 'not set');
      if (!spec.required) control.value = '';
    } else if (spec.type === 'boolean') {
      control = select(name, ['true', 'false'], '', hasDefault ? `default (${spec.default})` : 'not set');
    } else {
      const inputmode = spec.type === 'integer' ? 'numeric' : spec.type === 'float' ? 'decimal' : undefined;
      control = h('input', { name, type: 'text', inputmode, spellcheck: 'false', autocomplete: 'off', placeholder: hasDefault ? String(spec.default) : '', required: spec.required });
    }
    control.dataset.varType = spec.type;
    control.dataset.varName = spec.name;
    const hint = [spec.description, `${spec.type}${spec.enum ? ', one of the listed values' : ''}${hasDefault ? `, default ${spec.default}` : ''}.`]
      .filter(Boolean).join(' ');
    return this.add(`prompt_vars.${spec.name}`, spec.name, control, { hint, required: spec.required });
  }

  clearErrors() {
    for (const wrapper of this.fields.values()) setFieldError(wrapper, '');
    this.picker.clearErrors();
    this.formError.hidden = true;
  }

  // Shows each message next to its field; returns false when some had none to go to.
  showErrors(errors) {
    const unplaced = [];
    let first = null;
    for (const [key, message] of Object.entries(errors)) {
      const wrapper = this.fieldFor(key);
      if (!wrapper) { unplaced.push(`${key}: ${message}`); continue; }
      setFieldError(wrapper, message);
      if (wrapper.closest('details')) wrapper.closest('details').open = true;
      first = first || wrapper;
    }
    if (unplaced.length) this.showFormError(unplaced.join('; '));
    if (first) first.querySelector('input, select, textarea').focus();
  }

  // "prompt_vars.x.y" goes to the prompt_vars.x field, "allowed_tools.3" to allowed_tools.
  fieldFor(key) {
    const upload = this.picker.fieldFor(key);
    if (upload) return upload;
    const parts = key.split('.');
    for (let n = parts.length; n > 0; n -= 1) {
      const wrapper = this.fields.get(parts.slice(0, n).join('.'));
      if (wrapper) return wrapper;
    }
    return null;
  }

  showFormError(message) {
    this.formError.textContent = message;
    this.formError.hidden = false;
  }

  collect() {
    const elements = this.form.elements;
    const errors = {};
    const body = {
      agent_id: elements.agent_id.value.trim(),
      engine: elements.engine.value,
      profile: elements.profile.value,
      prompt: elements.prompt.value,
      dry_run: this.dryRun.checked,
    };
    if (!body.agent_id) errors.agent_id = 'An agent id is required.';
    const vars = {};
    for (const control of this.vars.querySelectorAll('[data-var-name]')) {
      const raw = control.value.trim();
      const name = control.dataset.varName;
      if (!raw) {
        if (control.required) errors[`prompt_vars.${name}`] = `${name} is required.`;
        continue;
      }
      vars[name] = typed(control.dataset.varType, raw);
    }
    if (Object.keys(vars).length) body.prompt_vars = vars;
    for (const spec of ADVANCED) {
      const raw = elements[spec.key].value.trim();
      if (!raw || (spec.key === 'output_format' && raw === 'json')) continue;
      if (spec.type === 'json') {
        try { body[spec.key] = JSON.parse(raw); } catch (error) { errors[spec.key] = `Not valid JSON: ${error.message}`; }
      } else if (spec.type === 'list') {
        body[spec.key] = raw.split(',').map((item) => item.trim()).filter(Boolean);
      } else {
        body[spec.key] = typed(spec.type, raw);
      }
    }
    Object.assign(body, repository(elements));
    return { body, errors };
  }

  async submit(event) {
    event.preventDefault();
    this.clearErrors();
    const { body, errors } = this.collect();
    if (Object.keys(errors).length) {
      this.showErrors(errors);
      return;
    }
    const button = this.form.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      const files = await this.picker.inputs();
      if (files.error) {
        this.showErrors({ inputs: files.error });
        return;
      }
      if (files.inputs.length) body.inputs = files.inputs;
      const submitted = await api('POST', '/jobs', { body });
      location.hash = `#/jobs/${encodeURIComponent(submitted.job_id)}`;
    } catch (error) {
      if (error instanceof ApiError && error.status === 422 && Object.keys(error.fieldErrors).length) {
        this.showErrors(error.fieldErrors);
      } else {
        this.showFormError(error.message);
      }
    } finally {
      button.disabled = false;
    }
  }
}

// `repo` and `output` from the repository section: each part only when filled in, so the
// server says what a half-filled one lacks (a branch without a repository, say).
function repository(elements) {
  const value = (name) => elements[name].value.trim();
  const fields = {};
  const repo = pick({ url: value('repo_url'), ref: value('repo_ref'), credential: value('repo_credential') });
  if (repo) fields.repo = repo;
  const pullRequest = pick({ title: value('pr_title'), body: elements.pr_body.value });
  const output = pick({ branch: value('output_branch') });
  if (output || pullRequest) fields.output = { ...output, ...(pullRequest ? { pull_request: pullRequest } : {}) };
  return fields;
}

// The entries with a value, or null when none has one.
function pick(entries) {
  const kept = Object.fromEntries(Object.entries(entries).filter(([, value]) => value));
  return Object.keys(kept).length ? kept : null;
}

// The value in its declared type when it reads as one; otherwise the text as typed, for
// the server to refuse with a message naming the field.
export function typed(type, raw) {
  if (type === 'integer' && /^[-+]?\d+$/.test(raw)) return Number(raw);
  if (type === 'float' && raw !== '' && Number.isFinite(Number(raw))) return Number(raw);
  if (type === 'boolean' && (raw === 'true' || raw === 'false')) return raw === 'true';
  return raw;
}
