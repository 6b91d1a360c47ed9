// Inline Markdown spans as DOM nodes: code, bold, italic, strike-through, links (http,
// https and mailto only; others stay text) and autolinks. Anything else stays text.
//
// One left-to-right scan, in time linear in the text. Regular expressions searched the
// remaining text once per rule and per span, and a rule such as the link's backtracked
// from every `[` to the end of the text: 80 K characters of `[a` froze the page for
// seconds. Here, at each position the rules are tried in order and the first that matches
// makes a span (so the earliest span wins, as before), and each search for a closing
// delimiter goes through a Finder, which never reads the same character twice.
//
// A link's label has spans but no links (an anchor inside an anchor is not HTML), and an
// autolink's label is its URL as text: rendering it as Markdown again recursed forever.

import { h } from './dom.js';

export function inline(text) {
  return new Scanner(text, true).nodes();
}

const OPENERS = new Set(['`', '*', '_', '~', '[', '<', 'h']);
const TRAILING_PUNCTUATION = new Set(['.', ',', ';', ':', '!', '?', "'", '"']);
const isSpace = (c) => /\s/.test(c);
const isWord = (c) => /\w/.test(c);
const endsUrl = (c) => c === ')' || isSpace(c);
const endsAngleUrl = (c) => c === '>' || isSpace(c);
const endsBareUrl = (c) => c === '<' || c === '>' || c === '(' || c === ')' || isSpace(c);
const notSpace = (c) => !isSpace(c);

// The first index at or after `from` holding a stop character (the text's length if none).
// It keeps its last answer, [from, at): the scanner asks from ever later positions, so the
// characters up to that answer are never read again for the same stop set.
class Finder {
  constructor(text, stops) {
    this.text = text;
    this.stops = stops;
    this.from = 0;
    this.at = -1;
  }

  next(from) {
    if (from >= this.from && from <= this.at) return this.at;
    let at = from;
    if (typeof this.stops === 'string') {
      at = this.text.indexOf(this.stops, from);
      if (at < 0) at = this.text.length;
    } else {
      while (at < this.text.length && !this.stops(this.text[at])) at += 1;
    }
    this.from = from;
    this.at = at;
    return at;
  }
}

class Scanner {
  constructor(text, links) {
    this.text = text;
    this.links = links;
    this.finders = new Map();
    // Where the text not yet made into spans begins: the regular expressions saw only
    // that rest, so a lookbehind (`_em_`, a bare URL's word boundary) stops there.
    this.segment = 0;
  }

  find(stops, from) {
    if (!this.finders.has(stops)) this.finders.set(stops, new Finder(this.text, stops));
    return this.finders.get(stops).next(from);
  }

  nodes() {
    const nodes = [];
    const { text } = this;
    for (let i = 0; i < text.length; i += 1) {
      const span = OPENERS.has(text[i]) ? this.spanAt(i) : null;
      if (!span) continue;
      pushText(nodes, text.slice(this.segment, i));
      nodes.push(span.node);
      this.segment = span.end;
      i = span.end - 1;
    }
    pushText(nodes, text.slice(this.segment));
    return nodes;
  }

  // The spans inside a span (bold in a link's label, say), with links only if allowed here.
  inner(start, end) {
    return new Scanner(this.text.slice(start, end), this.links).nodes();
  }

  spanAt(i) {
    return this.code(i) || this.delimited(i, 2, 'strong') || this.delimited(i, 2, 'del')
      || this.emphasis(i) || (this.links && (this.link(i) || this.angleLink(i) || this.bareLink(i)));
  }

  // `code`: no backtick inside, not empty.
  code(i) {
    if (this.text[i] !== '`') return null;
    const close = this.find('`', i + 1);
    if (close === i + 1 || close === this.text.length) return null;
    return { node: h('code', {}, this.text.slice(i + 1, close)), end: close + 1 };
  }

  // **bold**, __bold__ and ~~struck~~: no marker character inside, not empty.
  delimited(i, width, tag) {
    const marker = this.text[i];
    const markers = tag === 'del' ? ['~'] : ['*', '_'];
    if (!markers.includes(marker) || this.text[i + 1] !== marker) return null;
    const close = this.find(marker, i + width);
    if (close === i + width || this.text[close + 1] !== marker) return null;
    return { node: h(tag, {}, this.inner(i + width, close)), end: close + width };
  }

  // *italic* and _italic_ (the underscore form not inside a word): starts with no space.
  emphasis(i) {
    const { text } = this;
    const marker = text[i];
    if (marker !== '*' && marker !== '_') return null;
    if (i + 1 >= text.length || text[i + 1] === marker || isSpace(text[i + 1])) return null;
    if (marker === '_' && i > this.segment && isWord(text[i - 1])) return null;
    const close = this.find(marker, i + 1);
    if (close === text.length) return null;
    if (marker === '_' && close + 1 < text.length && isWord(text[close + 1])) return null;
    return { node: h('em', {}, this.inner(i + 1, close)), end: close + 1 };
  }

  // [label](url) or [label](url "title"): no `]` in the label, no space or `)` in the URL.
  link(i) {
    const { text } = this;
    if (text[i] !== '[') return null;
    const labelEnd = this.find(']', i + 1);
    if (labelEnd === i + 1 || text[labelEnd + 1] !== '(') return null;
    const urlStart = labelEnd + 2;
    const urlEnd = this.find(endsUrl, urlStart);
    if (urlEnd === urlStart || urlEnd === text.length) return null;
    const end = text[urlEnd] === ')' ? urlEnd + 1 : this.titleEnd(urlEnd);
    if (end < 0) return null;
    const label = new Scanner(text.slice(i + 1, labelEnd), false).nodes();
    return { node: link(label, text.slice(urlStart, urlEnd), text.slice(i, end)), end };
  }

  // After the URL: spaces, "title", `)`. Where the link ends, or -1.
  titleEnd(spaceAt) {
    const quote = this.find(notSpace, spaceAt);
    if (this.text[quote] !== '"') return -1;
    const close = this.find('"', quote + 1);
    return this.text[close + 1] === ')' ? close + 2 : -1;
  }

  // <https://...>
  angleLink(i) {
    if (this.text[i] !== '<') return null;
    const start = urlBodyStart(this.text, i + 1);
    if (start < 0) return null;
    const close = this.find(endsAngleUrl, start);
    if (close === start || this.text[close] !== '>') return null;
    const url = this.text.slice(i + 1, close);
    return { node: link(url, url, this.text.slice(i, close + 1)), end: close + 1 };
  }

  // A bare https://... at a word boundary, without its trailing punctuation.
  bareLink(i) {
    const { text } = this;
    if (i > this.segment && isWord(text[i - 1])) return null;
    const start = urlBodyStart(text, i);
    if (start < 0) return null;
    let last = this.find(endsBareUrl, start) - 1;
    while (last > start && TRAILING_PUNCTUATION.has(text[last])) last -= 1;
    if (last <= start) return null;
    const url = text.slice(i, last + 1);
    return { node: link(url, url, url), end: last + 1 };
  }
}

// Where the rest of a URL starting with http:// or https:// at `at` begins, or -1.
function urlBodyStart(text, at) {
  for (const scheme of ['http://', 'https://']) {
    if (text.startsWith(scheme, at)) return at + scheme.length;
  }
  return -1;
}

function pushText(nodes, text) {
  const parts = text.split('\n');
  parts.forEach((part, index) => {
    if (index) nodes.push(h('br'));
    if (part) nodes.push(document.createTextNode(part));
  });
}

// An <a> for an http, https or mailto URL; any other URL stays the text it was.
function link(label, href, original) {
  let url;
  try { url = new URL(href); } catch { return document.createTextNode(original); }
  if (!['http:', 'https:', 'mailto:'].includes(url.protocol)) return document.createTextNode(original);
  return h('a', { href: url.href, rel: 'noopener noreferrer nofollow', target: '_blank' }, label);
}
