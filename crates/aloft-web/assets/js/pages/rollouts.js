// Rollouts: every rollout with its state and per-stage progress.

import * as api from '../api.js';
import { legend, SEGMENTS, stageBar, totals } from '../charts.js';
import { h, pageTitle, replace, table, throttle } from '../dom.js';
import { agoEl, errorText, stageLabel, stateBadge } from '../format.js';
import { RolloutState } from '../messages.js';

/** Active and paused first, then newest first. */
function order(a, b) {
  const live = (r) => (r.state === RolloutState.active || r.state === RolloutState.paused ? 0 : 1);
  return live(a) - live(b) || b.created_at - a.created_at;
}

function row(r) {
  const t = totals(r.counts);
  return h('tr', { 'data-rollout': r.rollout_id },
    h('td', {}, h('a', { href: `#/rollouts/${encodeURIComponent(r.rollout_id)}` }, r.rollout_id)),
    h('td', { class: 'mono' }, r.release_id),
    h('td', {}, stateBadge(r.state),
      r.pause_reason ? h('div', { class: 'small muted' }, r.pause_reason) : ''),
    h('td', { class: 'nowrap' }, `${Math.min(r.current_stage + 1, r.stages.length)}/${r.stages.length}`),
    h('td', {}, h('div', { class: 'stages' }, r.stages.map((s, i) => h('div', { class: 'small' },
      h('span', { class: 'muted' }, `${s.name || `stage ${i + 1}`} (${stageLabel(s)})`),
      r.counts[i] ? stageBar(r.counts[i], s.name || `stage ${i + 1}`) : '')))),
    h('td', { class: 'num' }, `${t.updated}/${t.targeted}`),
    h('td', { class: 'num' }, t.failed + t.rolled_back),
    h('td', { class: 'nowrap' }, agoEl(r.created_at)));
}

export function mount(main, ctx) {
  const status = h('div', { class: 'alert', role: 'alert' });
  const list = h('div', { id: 'rollout-list' }, h('p', { class: 'muted' }, 'Loading…'));
  replace(main, pageTitle('Rollouts'), status, list, legend(SEGMENTS));

  let generation = 0;
  async function load() {
    const mine = ++generation;
    try {
      const { rollouts } = await api.listRollouts();
      if (mine !== generation) return;
      status.textContent = '';
      replace(list, rollouts.length
        ? table(['Rollout', 'Release', 'State', 'Stage', 'Progress per stage', ['Updated', 'num'], ['Failed', 'num'], 'Created'],
          [...rollouts].sort(order).map(row))
        : h('p', { class: 'muted' }, 'No rollouts yet: create one with `aloft rollout create`.'));
    } catch (e) {
      if (mine === generation) status.textContent = `Could not list rollouts: ${errorText(e)}`;
    }
  }
  const unsubscribe = ctx.live.subscribe(throttle(load, 1000));
  load();
  return () => { unsubscribe(); generation++; };
}
