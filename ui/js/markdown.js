// A small Markdown renderer that builds DOM nodes: the agent's text never becomes markup.
// Blocks: headings, fenced and indented code, lists (nested by indent), quotes, rules,
// tables, paragraphs. Inline: code, bold, italic, strike-through, links (http, https and
// mailto only; others stay text), autolinks. Anything else is shown as the text it is.

import { h } from './dom.js';

export function renderMarkdown(source) {
  const lines = String(source).replace(/\r\n?/g, '\n').split('\n');
  const root = h('div', { class: 'markdown' });
  root.append(...blocks(lines));
  return root;
}

function blocks(lines) {
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) { i += 1; continue; }
    const step = FENCE.test(line) ? fenced(lines, i)
      : /^ {0,3}#{1,6}\s/.test(line) ? heading(lines, i)
      : /^ {0,3}([-*_])(\s*\1){2,}\s*$/.test(line) ? [h('hr'), i + 1]
      : /^ {0,3}>/.test(line) ? quote(lines, i)
      : LIST_ITEM.test(line) ? list(lines, i)
      : /^( {4}|\t)/.test(line) ? indented(lines, i)
      : isTable(lines, i) ? table(lines, i)
      : paragraph(lines, i);
    out.push(step[0]);
    i = step[1];
  }
  return out;
}

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)/;
const LIST_ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+/;

function fenced(lines, start) {
  const [, marker, language] = lines[start].match(FENCE);
  const body = [];
  let i = start + 1;
  while (i < lines.length && !lines[i].trim().startsWith(marker)) body.push(lines[i++]);
  const code = h('code', language ? { class: `language-${language}` } : {}, body.join('\n'));
  return [h('pre', {}, code), i + 1];
}

function indented(lines, start) {
  const body = [];
  let i = start;
  while (i < lines.length && (/^( {4}|\t)/.test(lines[i]) || !lines[i].trim())) {
    body.push(lines[i].replace(/^( {4}|\t)/, ''));
    i += 1;
  }
  while (body.length && !body[body.length - 1].trim()) body.pop();
  return [h('pre', {}, h('code', {}, body.join('\n'))), i];
}

function heading(lines, start) {
  const [, hashes, text] = lines[start].match(/^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/);
  return [h(`h${hashes.length}`, {}, inline(text)), start + 1];
}

function quote(lines, start) {
  const body = [];
  let i = start;
  while (i < lines.length && /^ {0,3}>/.test(lines[i])) body.push(lines[i++].replace(/^ {0,3}> ?/, ''));
  return [h('blockquote', {}, blocks(body)), i];
}

function list(lines, start) {
  const [, indent, marker] = lines[start].match(LIST_ITEM);
  const ordered = /\d/.test(marker);
  const element = h(ordered ? 'ol' : 'ul');
  if (ordered && parseInt(marker, 10) !== 1) element.setAttribute('start', parseInt(marker, 10));
  let i = start;
  while (i < lines.length) {
    const match = lines[i].match(LIST_ITEM);
    if (!match || match[1].length !== indent.length || /\d/.test(match[2]) !== ordered) break;
    const body = [lines[i].slice(match[0].length)];
    i += 1;
    // The item goes on while lines are indented deeper than its marker (or blank inside).
    while (i < lines.length && (lines[i].match(/^\s*/)[0].length > indent.length && lines[i].trim()
      || (!lines[i].trim() && i + 1 < lines.length && lines[i + 1].match(/^\s*/)[0].length > indent.length))) {
      body.push(lines[i].slice(Math.min(lines[i].match(/^\s*/)[0].length, indent.length + 2)));
      i += 1;
    }
    element.append(listItem(body));
    while (i < lines.length && !lines[i].trim() && i + 1 < lines.length && LIST_ITEM.test(lines[i + 1])) i += 1;
  }
  return [element, i];
}

function listItem(body) {
  const task = body[0].match(/^\[([ xX])\]\s+(.*)$/);
  if (body.length === 1) {
    if (task) return h('li', { class: 'task' }, task[1] === ' ' ? '☐ ' : '☑ ', inline(task[2]));
    return h('li', {}, inline(body[0]));
  }
  const [first, ...rest] = blocks(body);
  const item = h('li');
  if (first && first.tagName === 'P') item.append(...first.childNodes);
  else if (first) item.append(first);
  item.append(...rest);
  return item;
}

function isTable(lines, i) {
  return lines[i].includes('|') && i + 1 < lines.length
    && /^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$/.test(lines[i + 1]);
}

function cells(line) {
  return line.trim().replace(/^\|/, '').replace(/\|$/, '').split('|').map((cell) => cell.trim());
}

function table(lines, start) {
  const header = cells(lines[start]);
  const rows = [];
  let i = start + 2;
  while (i < lines.length && lines[i].includes('|') && lines[i].trim()) rows.push(cells(lines[i++]));
  return [h('div', { class: 'table-wrap' }, h('table', {},
    h('thead', {}, h('tr', {}, header.map((cell) => h('th', { scope: 'col' }, inline(cell))))),
    h('tbody', {}, rows.map((row) => h('tr', {}, header.map((_, c) => h('td', {}, inline(row[c] || '')))))))), i];
}

function paragraph(lines, start) {
  const body = [];
  let i = start;
  while (i < lines.length && lines[i].trim() && !FENCE.test(lines[i]) && !/^ {0,3}(#{1,6}\s|>)/.test(lines[i])
    && !(body.length && LIST_ITEM.test(lines[i]))) {
    body.push(lines[i].trim());
    i += 1;
  }
  return [h('p', {}, inline(body.join('\n'))), i];
}

// Inline spans, left to right: the earliest match wins; text between matches stays text.
const INLINE = [
  { re: /`([^`]+)`/, make: (m) => h('code', {}, m[1]) },
  { re: /\*\*([^*]+?)\*\*|__([^_]+?)__/, make: (m) => h('strong', {}, inline(m[1] || m[2])) },
  { re: /~~([^~]+?)~~/, make: (m) => h('del', {}, inline(m[1])) },
  { re: /\*([^*\s][^*]*?)\*|(?<![\w])_([^_\s][^_]*?)_(?![\w])/, make: (m) => h('em', {}, inline(m[1] || m[2])) },
  { re: /\[([^\]]+)\]\(([^)\s]+)(?:\s+"[^"]*")?\)/, make: (m) => link(m[1], m[2], m[0]) },
  { re: /<(https?:\/\/[^>\s]+)>/, make: (m) => link(m[1], m[1], m[0]) },
  { re: /\bhttps?:\/\/[^\s<>()]+[^\s<>().,;:!?'"]/, make: (m) => link(m[0], m[0], m[0]) },
];

function inline(text) {
  const nodes = [];
  let rest = text;
  while (rest) {
    let best = null;
    for (const rule of INLINE) {
      const match = rule.re.exec(rest);
      if (match && (best === null || match.index < best.match.index)) best = { rule, match };
    }
    if (!best) { pushText(nodes, rest); break; }
    pushText(nodes, rest.slice(0, best.match.index));
    nodes.push(best.rule.make(best.match));
    rest = rest.slice(best.match.index + best.match[0].length);
  }
  return nodes;
}

function pushText(nodes, text) {
  const parts = text.split('\n');
  parts.forEach((part, index) => {
    if (index) nodes.push(h('br'));
    if (part) nodes.push(document.createTextNode(part));
  });
}

function link(label, href, original) {
  let url;
  try { url = new URL(href); } catch { return document.createTextNode(original); }
  if (!['http:', 'https:', 'mailto:'].includes(url.protocol)) return document.createTextNode(original);
  return h('a', { href: url.href, rel: 'noopener noreferrer nofollow', target: '_blank' }, inline(label));
}
