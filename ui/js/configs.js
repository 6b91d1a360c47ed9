// Profiles, engines and templates (/configs CRUD). The server validates every write;
// its message is shown under the editor, tied to it by aria-describedby.

import { ApiError, api, get } from './api.js';
import { field, h, replace, setFieldError } from './dom.js';
import { dateTime } from './format.js';

const TYPES = [['profile', 'Profiles'], ['engine', 'Engines'], ['template', 'Templates']];
const NAME = /^[A-Za-z0-9_-]{1,64}$/;

export function showConfigs(type, name) {
  const kind = TYPES.some(([t]) => t === type) ? type : 'profile';
  const view = new ConfigEditor(kind, name || null);
  return { element: view.element };
}

class ConfigEditor {
  constructor(type, name) {
    this.type = type;
    this.name = name;
    this.list = h('ul', { class: 'config-list', 'aria-label': `${label(type)} stored` });
    this.editor = h('div', { class: 'card config-editor' });
    this.element = h('section', { class: 'view configs-view', 'aria-labelledby': 'configs-title' },
      h('div', { class: 'view-head' }, h('h1', { id: 'configs-title' }, 'Configs')),
      h('nav', { class: 'type-tabs', 'aria-label': 'Config types' }, TYPES.map(([t, text]) =>
        h('a', { href: `#/configs/${t}`, 'aria-current': t === type ? 'page' : null }, text))),
      h('div', { class: 'config-layout' },
        h('aside', { class: 'card' }, h('h2', {}, label(type)), this.list, this.newForm()),
        this.editor));
    this.loadList();
    if (name) this.open(name);
    else replace(this.editor, h('p', { class: 'muted' }, `Choose a ${type} to edit, or create one.`));
  }

  newForm() {
    const input = h('input', { id: 'new-config-name', type: 'text', spellcheck: 'false', autocomplete: 'off', placeholder: 'name' });
    const wrapper = field({ label: `New ${this.type}`, control: input, key: 'new-name' });
    return h('form', { class: 'new-config', onsubmit: (event) => {
      event.preventDefault();
      const name = input.value.trim();
      if (!NAME.test(name)) {
        setFieldError(wrapper, 'Use 1 to 64 letters, digits, - or _.');
        return;
      }
      setFieldError(wrapper, '');
      this.edit({ name, content: '', updated_at: null }, true);
    } }, wrapper, h('button', { type: 'submit' }, 'Create'));
  }

  async loadList() {
    try {
      const { names } = await get(`/configs/${this.type}`);
      replace(this.list, names.map((name) => h('li', {},
        h('a', { href: `#/configs/${this.type}/${encodeURIComponent(name)}`, 'aria-current': name === this.name ? 'page' : null }, name))));
    } catch (error) {
      replace(this.list, h('li', { class: 'form-error' }, error.message));
    }
  }

  async open(name) {
    try {
      this.edit(await get(`/configs/${this.type}/${encodeURIComponent(name)}`), false);
    } catch (error) {
      replace(this.editor, h('p', { class: 'form-error', role: 'alert' }, error.message));
    }
  }

  edit(config, isNew) {
    const textarea = h('textarea', { id: 'config-content', class: 'mono code', rows: 24, spellcheck: 'false', value: config.content });
    const contentField = field({ label: `${config.name} (${this.type === 'template' ? 'Jinja2' : 'TOML'})`, control: textarea, key: 'content' });
    const status = h('p', { class: 'save-state', role: 'status' }, config.updated_at ? `Saved ${dateTime(config.updated_at)}` : 'Not saved yet');
    const save = async (event) => {
      event.preventDefault();
      setFieldError(contentField, '');
      status.textContent = 'Saving…';
      try {
        const saved = await api(isNew ? 'POST' : 'PUT', `/configs/${this.type}/${encodeURIComponent(config.name)}`,
          { body: { content: textarea.value } });
        status.textContent = `Saved ${dateTime(saved.updated_at)}`;
        if (isNew) location.hash = `#/configs/${this.type}/${encodeURIComponent(config.name)}`;
      } catch (error) {
        status.textContent = 'Not saved';
        setFieldError(contentField, errorText(error));
        textarea.focus();
      }
    };
    const remove = async () => {
      if (!window.confirm(`Delete the ${this.type} ${config.name}?`)) return;
      try {
        await api('DELETE', `/configs/${this.type}/${encodeURIComponent(config.name)}`);
        location.hash = `#/configs/${this.type}`;
      } catch (error) {
        setFieldError(contentField, errorText(error));
      }
    };
    textarea.addEventListener('keydown', (event) => {
      if ((event.ctrlKey || event.metaKey) && event.key === 's') save(event);
    });
    replace(this.editor, h('form', { class: 'config-form', onsubmit: save },
      h('h2', {}, isNew ? `New ${this.type}: ${config.name}` : `${label(this.type).slice(0, -1)}: ${config.name}`),
      contentField,
      h('div', { class: 'actions' },
        h('button', { type: 'submit', class: 'primary' }, isNew ? 'Create' : 'Save'),
        isNew ? null : h('button', { type: 'button', class: 'danger', onclick: remove }, 'Delete'),
        status),
      h('p', { class: 'hint' }, 'Ctrl+S saves. The server checks the content before storing it.')));
  }
}

function label(type) {
  return TYPES.find(([t]) => t === type)[1];
}

// A 422 about the content reads better without the "content: " prefix it would get.
function errorText(error) {
  if (error instanceof ApiError) {
    const fields = error.fieldErrors;
    if (fields.content) return fields.content;
  }
  return error.message;
}
