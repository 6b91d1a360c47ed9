// Small inline SVG charts, no library: bars per minute (stacked series) and lines.

import { svg, h } from './dom.js';

const WIDTH = 600;
const HEIGHT = 160;
const PAD = { top: 12, right: 12, bottom: 22, left: 44 };

// points: [{minute, ...}]; series: [{key, label, className}]. Bars are stacked per minute.
export function barChart(title, points, series, format = String) {
  const totals = points.map((p) => series.reduce((sum, s) => sum + (p[s.key] || 0), 0));
  const max = niceMax(Math.max(1, ...totals));
  const plot = frame(title, max, format, points);
  const slot = innerWidth() / Math.max(1, points.length);
  points.forEach((point, index) => {
    let base = 0;
    for (const s of series) {
      const value = point[s.key] || 0;
      if (!value) continue;
      const y0 = yOf(base, max);
      const y1 = yOf(base + value, max);
      plot.append(svg('rect', {
        x: (PAD.left + index * slot + slot * 0.15).toFixed(1), width: Math.max(1, slot * 0.7).toFixed(1),
        y: y1.toFixed(1), height: Math.max(0.5, y0 - y1).toFixed(1), class: s.className,
      }, svg('title', {}, `${minuteLabel(point.minute)}: ${value} ${s.label}`)));
      base += value;
    }
  });
  return figure(title, plot, series);
}

// Lines per series; a minute without a value (null) breaks the line.
export function lineChart(title, points, series, format = String) {
  const values = points.flatMap((p) => series.map((s) => p[s.key]).filter((v) => v !== null && v !== undefined));
  const max = niceMax(Math.max(1, ...values));
  const plot = frame(title, max, format, points);
  const slot = innerWidth() / Math.max(1, points.length);
  for (const s of series) {
    let path = '';
    let pen = false;
    points.forEach((point, index) => {
      const value = point[s.key];
      if (value === null || value === undefined) { pen = false; return; }
      const x = PAD.left + index * slot + slot / 2;
      const y = yOf(value, max);
      path += `${pen ? 'L' : 'M'}${x.toFixed(1)},${y.toFixed(1)} `;
      pen = true;
      plot.append(svg('circle', { cx: x.toFixed(1), cy: y.toFixed(1), r: 2.5, class: s.className },
        svg('title', {}, `${minuteLabel(point.minute)}: ${s.label} ${format(value)}`)));
    });
    if (path) plot.append(svg('path', { d: path.trim(), class: `${s.className} line` }));
  }
  return figure(title, plot, series);
}

function figure(title, plot, series) {
  return h('figure', { class: 'chart' },
    h('figcaption', {}, h('span', { class: 'chart-title' }, title),
      h('span', { class: 'legend' }, series.map((s) => h('span', { class: `key ${s.className}` }, s.label)))),
    plot);
}

function frame(title, max, format, points) {
  const plot = svg('svg', { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: 'img', 'aria-label': title });
  for (const fraction of [0, 0.5, 1]) {
    const y = yOf(max * fraction, max);
    plot.append(svg('line', { x1: PAD.left, x2: WIDTH - PAD.right, y1: y, y2: y, class: 'grid' }));
    plot.append(svg('text', { x: PAD.left - 6, y: y + 4, class: 'axis', 'text-anchor': 'end' }, format(max * fraction)));
  }
  if (points.length) {
    const labels = [[0, 'start'], [points.length - 1, 'end']];
    for (const [index, anchor] of labels) {
      const x = index === 0 ? PAD.left : WIDTH - PAD.right;
      plot.append(svg('text', { x, y: HEIGHT - 6, class: 'axis', 'text-anchor': anchor }, minuteLabel(points[index].minute)));
    }
  }
  return plot;
}

function innerWidth() {
  return WIDTH - PAD.left - PAD.right;
}

function yOf(value, max) {
  return PAD.top + (HEIGHT - PAD.top - PAD.bottom) * (1 - value / max);
}

function niceMax(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

function minuteLabel(minute) {
  return new Date(minute).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
}
