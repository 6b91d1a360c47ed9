// Accessible tabs: arrow keys move between tabs, Home/End jump, one panel shown at a time.

import { h, uid } from './dom.js';

export function tabs(label, entries) {
  const base = uid('tabs');
  const list = h('div', { class: 'tabs', role: 'tablist', 'aria-label': label });
  const panels = [];
  const buttons = entries.map(([name, content], index) => {
    const tabId = `${base}-tab-${index}`;
    const panelId = `${base}-panel-${index}`;
    const panel = h('div', { id: panelId, role: 'tabpanel', 'aria-labelledby': tabId, tabindex: '0', class: 'tab-panel' }, content);
    panels.push(panel);
    return h('button', { type: 'button', role: 'tab', id: tabId, 'aria-controls': panelId, dataset: { tab: name } }, name);
  });
  function select(index, focus = false) {
    buttons.forEach((button, i) => {
      button.setAttribute('aria-selected', String(i === index));
      button.tabIndex = i === index ? 0 : -1;
      panels[i].hidden = i !== index;
    });
    if (focus) buttons[index].focus();
  }
  buttons.forEach((button, index) => {
    button.addEventListener('click', () => select(index));
    button.addEventListener('keydown', (event) => {
      const moves = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: buttons.length - 1 };
      if (!(event.key in moves)) return;
      event.preventDefault();
      select((moves[event.key] + buttons.length) % buttons.length, true);
    });
  });
  list.append(...buttons);
  select(0);
  return h('div', { class: 'tabset' }, list, panels);
}
