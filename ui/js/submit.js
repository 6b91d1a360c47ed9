// The submit form, built from GET /profiles and GET /engines. Prompt variables are sent
// with their declared types (integer, float, boolean, enum); a value that does not read
// as its type is sent as typed, so the server's own message explains what is wrong.
// A 422's messages are shown next to the field they name.

import { ApiError, api, get } from './api.js';
import { field, h, replace, setFieldError } from './dom.js';

export function showSubmit() {
  const view = new SubmitForm();
  return { element: view.element };
}

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
      h('details', { class: 'advanced' }, h('summary', {}, 'Advanced options'),
        h('div', { class: 'grid two' }, ADVANCED.map((spec) =>
          this.add(spec.key, spec.label, spec.control(), { hint: spec.hint })))),
      this.formError,
      h('div', { class: 'actions' },
        h('button', { type: 'submit', class: 'primary' }, 'Submit job'),
        h('button', { type: 'reset', onclick: () => setTimeout(() => this.onProfile(), 0) }, 'Reset')));
    this.dryRun = dryRun;
    this.onProfile();
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

// The value in its declared type when it reads as one; otherwise the text as typed, for
// the server to refuse with a message naming the field.
export function typed(type, raw) {
  if (type === 'integer' && /^[-+]?\d+$/.test(raw)) return Number(raw);
  if (type === 'float' && raw !== '' && Number.isFinite(Number(raw))) return Number(raw);
  if (type === 'boolean' && (raw === 'true' || raw === 'false')) return raw === 'true';
  return raw;
}
