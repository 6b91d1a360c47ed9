// A git diff shown file by file: added lines green, removed red, hunk headers apart, a
// binary patch as "binary file changed". The diff is the agent's work, so it is hostile
// text: every line goes into a text node, styled by a class, never parsed as markup.

import { h } from './dom.js';

export function renderDiff(text) {
  const files = splitFiles(text);
  if (!files.length) return h('p', { class: 'muted' }, 'The diff is empty: nothing changed.');
  return h('div', { class: 'diff-files' }, files.map(renderFile));
}

// Each file's lines, from one "diff --git" header to the next; anything before the first
// header (there is nothing there in git's output) is kept as a section of its own.
export function splitFiles(text) {
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const files = [];
  let current = null;
  for (const line of lines) {
    if (line.startsWith('diff --git ') || current === null) {
      current = [];
      files.push(current);
    }
    current.push(line);
  }
  return files;
}

function renderFile(lines) {
  const facts = describe(lines);
  const name = h('span', { class: 'diff-file-name mono' }, facts.path);
  const stat = facts.binary ? null : h('span', { class: 'diff-stat' },
    h('span', { class: 'diff-stat-add' }, `+${facts.added}`), ' ',
    h('span', { class: 'diff-stat-del' }, `−${facts.removed}`));
  const change = facts.change ? h('span', { class: 'badge' }, facts.change) : null;
  return h('section', { class: 'diff-file', dataset: { path: facts.path } },
    h('h3', { class: 'diff-file-head' }, name, change, stat),
    facts.binary
      ? [h('pre', { class: 'diff' }, block('diff-meta', facts.header)), h('p', { class: 'diff-binary' }, 'binary file changed')]
      : h('pre', { class: 'diff' }, blocks(lines)));
}

// The file's path, what happened to it, whether it is binary, its line counts.
function describe(lines) {
  const facts = { path: pathOf(lines), change: null, binary: false, added: 0, removed: 0, header: [] };
  let inHunk = false;
  for (const line of lines) {
    if (!inHunk) {
      if (line.startsWith('@@')) { inHunk = true; continue; }
      if (line === 'GIT binary patch' || (line.startsWith('Binary files ') && line.endsWith(' differ'))) {
        facts.binary = true;
        break;
      }
      facts.header.push(line);
      if (line.startsWith('new file mode')) facts.change = 'added';
      else if (line.startsWith('deleted file mode')) facts.change = 'deleted';
      else if (line.startsWith('rename to ')) facts.change = 'renamed';
    } else if (line.startsWith('+')) {
      facts.added += 1;
    } else if (line.startsWith('-')) {
      facts.removed += 1;
    }
  }
  return facts;
}

function pathOf(lines) {
  const named = (prefix) => {
    const line = lines.find((one) => one.startsWith(prefix) && !one.endsWith('/dev/null'));
    return line ? line.slice(prefix.length) : null;
  };
  const renamed = named('rename to ');
  if (renamed) return renamed;
  const side = named('+++ b/') || named('--- a/');
  if (side) return side;
  // No ---/+++ lines (a binary or mode-only change): "diff --git a/P b/P".
  const rest = lines[0].startsWith('diff --git ') ? lines[0].slice('diff --git '.length) : lines[0];
  const half = (rest.length - 1) / 2;
  if (Number.isInteger(half) && rest.startsWith('a/') && rest.slice(half + 1).startsWith('b/')) return rest.slice(half + 3);
  return rest;
}

// Consecutive lines of one kind in one block: a node per run, not per line.
function blocks(lines) {
  const out = [];
  let kind = null;
  let run = [];
  let inHunk = false;
  for (const line of lines) {
    if (line.startsWith('@@')) inHunk = true;
    const lineKind = inHunk ? kindOf(line) : 'diff-meta';
    if (lineKind !== kind && run.length) {
      out.push(block(kind, run));
      run = [];
    }
    kind = lineKind;
    run.push(line);
  }
  if (run.length) out.push(block(kind, run));
  return out;
}

function kindOf(line) {
  if (line.startsWith('@@')) return 'diff-hunk';
  if (line.startsWith('+')) return 'diff-add';
  if (line.startsWith('-')) return 'diff-del';
  if (line.startsWith('\\')) return 'diff-note';
  return 'diff-context';
}

function block(kind, lines) {
  return h('span', { class: `diff-line ${kind}` }, `${lines.join('\n')}\n`);
}
