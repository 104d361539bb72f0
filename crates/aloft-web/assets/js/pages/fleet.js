// Fleet: device counts, devices by firmware version, rollouts in progress.

import * as api from '../api.js';
import { bars, legend, SEGMENTS, stageBar, totals } from '../charts.js';
import { h, pageTitle, replace, throttle } from '../dom.js';
import { summarize } from '../fleet.js';
import { errorText, now, stageLabel, stateBadge } from '../format.js';
import { RolloutState } from '../messages.js';

const STALE_CHOICES = [['1 h', 3600], ['24 h', 86400], ['7 d', 7 * 86400]];

function card(stat, label, value, href, tone) {
  return h('a', { class: `card ${value > 0 ? tone : ''}`, href, 'data-stat': stat },
    h('span', { class: 'n' }, value), h('span', { class: 'k' }, label));
}

function rolloutRow(r) {
  const stage = r.stages[r.current_stage];
  const c = r.counts[r.current_stage];
  return h('tr', { 'data-rollout': r.rollout_id },
    h('td', {}, h('a', { href: `#/rollouts/${encodeURIComponent(r.rollout_id)}` }, r.rollout_id)),
    h('td', {}, stateBadge(r.state)),
    h('td', { class: 'nowrap' }, `${r.current_stage + 1}/${r.stages.length} `,
      h('span', { class: 'muted' }, stage ? `${stage.name || ''} (${stageLabel(stage)})` : '')),
    h('td', {}, c ? stageBar(c, `stage ${r.current_stage + 1}`) : ''),
    h('td', { class: 'num' }, `${totals(r.counts).updated}/${totals(r.counts).targeted}`));
}

export function mount(main, ctx) {
  let staleSecs = Number(ctx.query.get('stale')) || 86400;
  const status = h('div', { class: 'alert', role: 'alert' });
  const cards = h('div', { class: 'cards', id: 'fleet-cards' });
  const chart = h('div', { id: 'versions' });
  const inProgress = h('div', { id: 'in-progress' });
  const staleSelect = h('select', { id: 'stale-for' }, STALE_CHOICES.map(([label, secs]) =>
    h('option', { value: secs, selected: secs === staleSecs }, label)));
  staleSelect.addEventListener('change', () => { staleSecs = Number(staleSelect.value); load(); });

  replace(main,
    pageTitle('Fleet'),
    status,
    h('div', { class: 'filters' }, h('div', { class: 'field' },
      h('label', { for: 'stale-for' }, 'Stale after'), staleSelect)),
    h('h2', {}, 'Devices'),
    cards,
    h('h2', {}, 'Devices by firmware version'),
    h('div', { class: 'panel' }, chart),
    h('h2', {}, 'Rollouts in progress'),
    inProgress);

  let generation = 0;
  async function load() {
    const mine = ++generation;
    try {
      const [devices, rollouts] = await Promise.all([api.listAllDevices(), api.listRollouts()]);
      if (mine !== generation) return;
      status.textContent = '';
      const f = summarize(devices, now(), staleSecs);
      replace(cards,
        card('devices', 'devices', f.devices, '#/devices'),
        card('online', 'online now', f.online, '#/devices', 'ok'),
        card('stale', `not seen for ${STALE_CHOICES.find(([, s]) => s === staleSecs)?.[0] ?? `${staleSecs} s`}`,
          f.stale, `#/devices?stale=${staleSecs}`, 'warn'),
        card('broken', 'suspected broken', f.broken, '#/devices?broken=1', 'bad'),
        card('failed', 'failed', f.failed, '#/devices?status=failed', 'bad'),
        card('rolled_back', 'rolled back', f.rolled_back, '#/devices?status=rolled_back', 'bad'));
      replace(chart, f.versions.length
        ? bars(f.versions.map((v) => ({ label: v.version || '(not reported)', value: v.devices })),
          { caption: 'Devices by firmware version' })
        : h('p', { class: 'muted' }, 'No devices registered yet.'));
      const running = rollouts.rollouts.filter((r) =>
        r.state === RolloutState.active || r.state === RolloutState.paused);
      replace(inProgress, running.length
        ? [h('div', { class: 'table-wrap' }, h('table', {},
          h('thead', {}, h('tr', {}, ['Rollout', 'State', 'Stage', 'Current stage', 'Updated'].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, running.map(rolloutRow)))), legend(SEGMENTS)]
        : h('p', { class: 'muted' }, 'No rollout is active or paused.'));
    } catch (e) {
      if (mine === generation) status.textContent = `Could not load the fleet: ${errorText(e)}`;
    }
  }

  const refresh = throttle(load, 1500);
  const unsubscribe = ctx.live.subscribe(refresh);
  const timer = setInterval(load, 30_000);
  load();
  return () => { unsubscribe(); clearInterval(timer); generation++; };
}
