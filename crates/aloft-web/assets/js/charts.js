// Charts as SVG built element by element: horizontal bars, a stacked bar
// per rollout stage, and the rollout history plot. Sizes are attributes,
// never inline styles (the Content-Security-Policy allows none).

import { h, s } from './dom.js';
import { RolloutState } from './messages.js';
import { clock, time } from './format.js';

/** What a stage bar stacks, in order, with its label. */
export const SEGMENTS = [
  ['updated', 'updated'],
  ['installed', 'installed'],
  ['offered', 'offered'],
  ['failed', 'failed'],
  ['rolled_back', 'rolled back'],
  ['excluded', 'excluded'],
];

/** What the history plot draws, with its label. */
export const SERIES = [
  ['offered', 'offered'],
  ['installed', 'installed'],
  ['updated', 'updated'],
  ['rolled_back', 'rolled back'],
  ['failed', 'failed'],
];

/** A track 0..max filled to `value` (stretched to its CSS size). */
function track(value, max) {
  const width = max > 0 ? (100 * value) / max : 0;
  return s('svg', { class: 'track', viewBox: '0 0 100 1', preserveAspectRatio: 'none', 'aria-hidden': 'true' },
    s('rect', { class: 'bg', x: 0, y: 0, width: 100, height: 1 }),
    s('rect', { class: 'fill', x: 0, y: 0, width: width.toFixed(3), height: 1 }));
}

/** Labelled horizontal bars: rows of { label, value }. */
export function bars(rows, { caption }) {
  const max = Math.max(1, ...rows.map((r) => r.value));
  return h('figure', { class: 'chart' },
    h('div', { class: 'bars', role: 'list', 'aria-label': caption },
      rows.map((r) => h('div', { role: 'listitem', class: 'bar-row', 'data-label': r.label, 'data-value': r.value },
        h('span', { class: 'label' }, r.label),
        track(r.value, max),
        h('span', { class: 'value' }, r.value)))));
}

/** Counts summed over every stage. */
export function totals(counts) {
  const out = { targeted: 0, pending: 0, offered: 0, installed: 0, updated: 0, failed: 0, rolled_back: 0, excluded: 0 };
  for (const c of counts) for (const k of Object.keys(out)) out[k] += c[k];
  return out;
}

/** A stacked bar of one stage's (or a whole rollout's) counts. */
export function stageBar(c, label) {
  const total = Math.max(c.targeted, 1);
  let x = 0;
  const parts = [];
  for (const [key] of SEGMENTS) {
    const w = (100 * c[key]) / total;
    if (w > 0) {
      parts.push(s('rect', { class: `seg ${key}`, x: x.toFixed(3), y: 0, width: w.toFixed(3), height: 1 }));
      x += w;
    }
  }
  const words = SEGMENTS.filter(([k]) => c[k] > 0).map(([k, name]) => `${c[k]} ${name}`);
  const summary = `${label}: ${c.targeted} targeted${words.length ? `, ${words.join(', ')}` : ''}`;
  return s('svg', {
    class: 'stagebar', viewBox: '0 0 100 1', preserveAspectRatio: 'none', role: 'img',
    'aria-label': summary, 'data-updated': c.updated, 'data-targeted': c.targeted,
  }, s('title', {}, summary), s('rect', { class: 'bg', x: 0, y: 0, width: 100, height: 1 }), parts);
}

/** A legend for SEGMENTS or SERIES. */
export function legend(entries) {
  return h('ul', { class: 'legend' }, entries.map(([key, name]) =>
    h('li', {}, s('svg', { viewBox: '0 0 1 1', 'aria-hidden': 'true' },
      s('rect', { class: `sw ${key}`, x: 0, y: 0, width: 1, height: 1 })), name)));
}

/**
 * The history plot: one line per series over the samples' times, a marker
 * per sample, a dashed line where the state or stage changed. The SVG says
 * how many samples it drew in `data-samples`.
 */
export function historyPlot(samples, widthPx) {
  const width = Math.max(280, Math.round(widthPx || 640));
  const height = 240;
  const m = { left: 40, right: 14, top: 12, bottom: 30 };
  const points = samples.map((sample) => ({ sample, t: totals(sample.counts) }));
  const t0 = samples.length ? samples[0].time : 0;
  const t1 = samples.length ? Math.max(samples[samples.length - 1].time, t0 + 1) : 1;
  const yMax = Math.max(1, ...points.map((p) => Math.max(p.t.targeted, ...SERIES.map(([k]) => p.t[k]))));
  const x = (t) => m.left + ((t - t0) / (t1 - t0)) * (width - m.left - m.right);
  const y = (v) => height - m.bottom - (v / yMax) * (height - m.top - m.bottom);

  const grid = [0, Math.round(yMax / 2), yMax].filter((v, i, a) => a.indexOf(v) === i).map((v) => [
    s('line', { class: 'grid', x1: m.left, x2: width - m.right, y1: y(v), y2: y(v) }),
    s('text', { x: m.left - 6, y: y(v) + 4, 'text-anchor': 'end' }, v),
  ]);
  const xLabels = samples.length ? [
    s('text', { x: x(t0), y: height - 10, 'text-anchor': 'start' }, clock(t0)),
    t1 > t0 + 1 ? s('text', { x: x(t1), y: height - 10, 'text-anchor': 'end' }, clock(t1)) : null,
  ] : [s('text', { x: width / 2, y: height / 2, 'text-anchor': 'middle' }, 'no samples yet')];

  const changes = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1];
    const b = samples[i];
    if (a.state !== b.state || a.current_stage !== b.current_stage) {
      const what = a.state !== b.state ? RolloutState.nameOf(b.state) : `stage ${b.current_stage}`;
      changes.push(s('line', { class: 'state-change', x1: x(b.time), x2: x(b.time), y1: m.top, y2: height - m.bottom },
        s('title', {}, `${time(b.time)}: ${what}`)));
    }
  }

  const lines = SERIES.map(([key, name]) => s('g', { 'data-series': key },
    s('polyline', { class: key, points: points.map((p) => `${x(p.sample.time).toFixed(1)},${y(p.t[key]).toFixed(1)}`).join(' ') }),
    points.map((p) => s('circle', { class: `sw ${key}`, cx: x(p.sample.time).toFixed(1), cy: y(p.t[key]).toFixed(1), r: 3 },
      s('title', {}, `${time(p.sample.time)}: ${p.t[key]} ${name}`)))));

  const last = points[points.length - 1];
  const label = samples.length
    ? `${samples.length} samples from ${time(t0)} to ${time(t1)}; latest: ${SERIES.map(([k, n]) => `${last.t[k]} ${n}`).join(', ')}`
    : 'no samples yet';
  return s('svg', {
    class: 'plot', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img',
    'aria-label': label, 'data-samples': samples.length,
  },
  s('title', {}, label),
  grid,
  s('line', { class: 'axis', x1: m.left, x2: width - m.right, y1: y(0), y2: y(0) }),
  s('line', { class: 'axis', x1: m.left, x2: m.left, y1: m.top, y2: y(0) }),
  changes, lines, xLabels);
}
