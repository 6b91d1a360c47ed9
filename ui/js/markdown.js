// A small Markdown renderer that builds DOM nodes: the agent's text never becomes markup.
// Blocks: headings, fenced and indented code, lists (nested by indent), quotes, rules,
// tables, paragraphs. Inline spans: see markdown-inline.js. Anything else is shown as the
// text it is.
//
// The text is an agent's, so it may be hostile: rendering takes time linear in its length
// (times the nesting bound below). Each regular expression here is anchored and cannot
// backtrack over more than a few characters; trimming is done by hand where a pattern
// such as `\s*#*\s*$` would try every split of a long run of spaces.

import { h } from './dom.js';
import { inline } from './markdown-inline.js';

// Quotes and lists nested deeper than this are shown as text: each level reads its lines
// again, and `>>>>…` nested by thousands overflowed the stack.
const MAX_DEPTH = 16;

export function renderMarkdown(source) {
  const lines = String(source).replace(/\r\n?/g, '\n').split('\n');
  const root = h('div', { class: 'markdown' });
  root.append(...blocks(lines, 0));
  return root;
}

function blocks(lines, depth) {
  if (depth > MAX_DEPTH) return [h('p', {}, inline(lines.join('\n')))];
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) { i += 1; continue; }
    const step = FENCE.test(line) ? fenced(lines, i)
      : /^ {0,3}#{1,6}\s/.test(line) ? heading(lines, i)
      : /^ {0,3}([-*_])(\s*\1){2,}\s*$/.test(line) ? [h('hr'), i + 1]
      : /^ {0,3}>/.test(line) ? quote(lines, i, depth)
      : LIST_ITEM.test(line) ? list(lines, i, depth)
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

// `## Title ##`: the closing hashes and the spaces around them are not part of the title.
function heading(lines, start) {
  const line = lines[start].trimStart();
  const level = line.match(/^#{1,6}/)[0].length;
  const text = trimEndOf(line.slice(level).trim(), '#').trimEnd();
  return [h(`h${level}`, {}, inline(text)), start + 1];
}

function trimEndOf(text, character) {
  let end = text.length;
  while (end > 0 && text[end - 1] === character) end -= 1;
  return text.slice(0, end);
}

function quote(lines, start, depth) {
  const body = [];
  let i = start;
  while (i < lines.length && /^ {0,3}>/.test(lines[i])) body.push(lines[i++].replace(/^ {0,3}> ?/, ''));
  return [h('blockquote', {}, blocks(body, depth + 1)), i];
}

function list(lines, start, depth) {
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
    element.append(listItem(body, depth));
    while (i < lines.length && !lines[i].trim() && i + 1 < lines.length && LIST_ITEM.test(lines[i + 1])) i += 1;
  }
  return [element, i];
}

function listItem(body, depth) {
  if (body.length === 1) {
    if (/^\[[ xX]\]\s/.test(body[0])) {
      return h('li', { class: 'task' }, body[0][1] === ' ' ? '☐ ' : '☑ ', inline(body[0].slice(4).trimStart()));
    }
    return h('li', {}, inline(body[0]));
  }
  const [first, ...rest] = blocks(body, depth + 1);
  const item = h('li');
  if (first && first.tagName === 'P') item.append(...first.childNodes);
  else if (first) item.append(first);
  item.append(...rest);
  return item;
}

// The second line is the delimiter row: `| --- | :--: |`, outer pipes optional.
function isTable(lines, i) {
  return lines[i].includes('|') && i + 1 < lines.length
    && cells(lines[i + 1]).every((cell) => /^:?-{2,}:?$/.test(cell));
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
