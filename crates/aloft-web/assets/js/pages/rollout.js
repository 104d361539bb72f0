// One rollout: its stages with their progress, the health gate, the
// history plot (GetRolloutHistory, redrawn as events arrive) and, for
// operators, its controls. Each control asks for confirmation, then calls
// ControlRollout; the server checks the token's role again.

import * as api from '../api.js';
import { historyPlot, legend, SEGMENTS, SERIES, stageBar, totals } from '../charts.js';
import { confirmAction } from '../confirm.js';
import { h, pageTitle, replace, table, throttle } from '../dom.js';
import { agoEl, errorText, span, stageLabel, stateBadge, time } from '../format.js';
import { RolloutState } from '../messages.js';

/** The controls, each with when it applies and how it is confirmed. */
const CONTROLS = [
  {
    action: 'pause', label: 'Pause', withReason: true,
    when: (r) => r.state === RolloutState.active,
    body: (r) => `Devices of ${r.rollout_id} get no new offers until it is resumed; downloads in progress finish.`,
  },
  {
    action: 'resume', label: 'Resume',
    when: (r) => r.state === RolloutState.paused,
    body: (r) => `Offers of ${r.release_id} start again. The current stage's failures so far are acknowledged: the health gate counts only new ones.`,
  },
  {
    action: 'advance', label: 'Advance stage',
    when: (r) => r.state === RolloutState.active || r.state === RolloutState.paused,
    body: (r) => (r.current_stage + 1 < r.stages.length
      ? `Moves ${r.rollout_id} to stage ${r.current_stage + 2} now, ignoring the soak time and the gate's criteria.`
      : `This is the last stage: advancing completes ${r.rollout_id} now.`),
  },
  {
    action: 'retry_failed', label: 'Retry failed',
    when: (r) => r.state !== RolloutState.cancelled && totals(r.counts).failed + totals(r.counts).rolled_back > 0,
    body: (r) => `Devices of ${r.rollout_id} that failed or rolled back are offered ${r.release_id} again.`,
  },
  {
    action: 'cancel', label: 'Cancel rollout', danger: true, withReason: true,
    when: (r) => r.state === RolloutState.active || r.state === RolloutState.paused,
    body: (r) => `Cancelling is final: ${r.rollout_id} makes no more offers and stops downloads of ${r.release_id}. Devices keep what they run.`,
  },
];

function stagesTable(r) {
  return table(['#', 'Stage', 'Devices', 'Soak', 'Gate', 'Progress', ['Updated', 'num'], ['Failed', 'num'], ['Rolled back', 'num'], ['Pending', 'num']],
    r.stages.map((s, i) => {
      const c = r.counts[i] ?? { targeted: 0, pending: 0, offered: 0, installed: 0, updated: 0, failed: 0, rolled_back: 0, excluded: 0 };
      const current = i === r.current_stage && r.state !== RolloutState.completed;
      return h('tr', { class: current ? 'current' : '', 'data-stage': i, 'aria-current': current ? 'step' : false },
        h('td', {}, i + 1),
        h('td', {}, s.name || '', current ? h('span', { class: 'badge' }, 'current') : ''),
        h('td', { class: 'nowrap' }, stageLabel(s)),
        h('td', { class: 'nowrap' }, span(s.soak_secs)),
        h('td', { class: 'small' }, `> ${s.max_failure_permille / 10} % failed, once ${s.min_sample} finished`),
        h('td', {}, stageBar(c, s.name || `stage ${i + 1}`)),
        h('td', { class: 'num', 'data-count': 'updated' }, c.updated),
        h('td', { class: 'num' }, c.failed),
        h('td', { class: 'num' }, c.rolled_back),
        h('td', { class: 'num' }, c.pending + c.offered + c.installed));
    }));
}

/** The gate of the current stage as the counts show it; the server's reason when it tripped. */
function gate(r) {
  const s = r.stages[r.current_stage];
  const c = r.counts[r.current_stage];
  if (!s || !c) return h('p', { class: 'muted' }, 'No stage.');
  const finished = c.updated + c.failed + c.rolled_back;
  const failed = c.failed + c.rolled_back;
  const rate = finished ? Math.round((1000 * failed) / finished) : 0;
  const tripped = r.state === RolloutState.paused && r.pause_reason;
  const over = r.state === RolloutState.completed || r.state === RolloutState.cancelled;
  const rule = `Stage ${r.current_stage + 1} pauses the rollout by itself when more than ${s.max_failure_permille} ‰ of its finished devices fail, once ${s.min_sample} have finished.`;
  let headline = 'Holding. ';
  let text = rule;
  if (tripped) {
    headline = 'Paused: ';
    text = r.pause_reason;
  } else if (over) {
    headline = `${RolloutState.nameOf(r.state)[0].toUpperCase()}${RolloutState.nameOf(r.state).slice(1)}. `;
    text = 'The gate no longer applies.';
  }
  const state = tripped ? 'paused' : over ? 'over' : 'holding';
  return h('div', { class: `panel gate ${tripped ? 'tripped' : over ? '' : 'holding'}`, id: 'gate', 'data-gate': state },
    h('p', {}, h('strong', {}, headline), text),
    h('p', { class: 'small muted' },
      `This stage now: ${failed} failed or rolled back of ${finished} finished (${rate} ‰). `,
      'Failures acknowledged by a resume no longer count against the gate.'),
    r.state === RolloutState.active && r.current_stage + 1 < r.stages.length
      ? h('p', { class: 'small muted' }, `Stage started ${time(r.stage_started_at)}; it may advance after ${span(s.soak_secs)} of soak.`)
      : '');
}

export function mount(main, ctx) {
  const id = ctx.params[0];
  const status = h('div', { class: 'alert', role: 'alert' });
  const head = h('div', { id: 'rollout-head' });
  const controls = h('div', { class: 'controls', id: 'controls' });
  const gateBox = h('div');
  const stages = h('div', { id: 'stages' });
  const plot = h('div', { id: 'history' });
  const plotNote = h('p', { class: 'small muted', id: 'history-note' });
  replace(main,
    pageTitle('Rollout ', h('span', { class: 'mono' }, id)),
    status, head,
    ctx.session.canControl() ? h('section', { 'aria-label': 'Controls' }, controls) : '',
    h('h2', {}, 'Health gate'), gateBox,
    h('h2', {}, 'Stages'), stages, legend(SEGMENTS),
    h('h2', {}, 'History'), h('div', { class: 'panel' }, plot, legend(SERIES), plotNote));

  let rollout = null;
  let samples = [];
  let busy = false;
  let generation = 0;

  // Built once and updated in place, so a focused control keeps the focus
  // while the page follows the rollout.
  const buttons = new Map();
  function drawControls() {
    if (!ctx.session.canControl() || !rollout) return;
    if (!buttons.size) {
      for (const c of CONTROLS) {
        const b = h('button', { type: 'button', class: c.danger ? 'danger' : '', 'data-action': c.action }, c.label);
        b.addEventListener('click', () => run(c));
        buttons.set(c.action, b);
      }
      replace(controls, [...buttons.values()]);
    }
    for (const c of CONTROLS) buttons.get(c.action).disabled = busy || !c.when(rollout);
  }

  function drawPlot() {
    replace(plot, historyPlot(samples, plot.clientWidth));
    plotNote.textContent = `${samples.length} samples recorded by the server (when the state, the stage or the counts changed), oldest first.`;
  }

  async function run(control) {
    const answer = await confirmAction({
      title: `${control.label}: ${rollout.rollout_id}?`,
      body: control.body(rollout),
      confirmLabel: control.label,
      danger: control.danger,
      withReason: control.withReason,
    });
    if (!answer) return;
    busy = true;
    drawControls();
    try {
      const reason = answer.reason || `from the dashboard (${ctx.session.serverInfo().caller_token_id})`;
      rollout = await api.controlRollout(rollout.rollout_id, control.action, reason);
      ctx.toast(`${control.label}: done. ${rollout.rollout_id} is ${RolloutState.nameOf(rollout.state)}.`);
      status.textContent = '';
    } catch (e) {
      status.textContent = `${control.label} refused: ${errorText(e)}`;
    } finally {
      busy = false;
      load();
    }
  }

  function draw() {
    const r = rollout;
    replace(head, h('div', { class: 'panel' }, h('dl', { class: 'facts' },
      h('dt', {}, 'State'), h('dd', { id: 'rollout-state' }, stateBadge(r.state),
        r.pause_reason ? h('span', { class: 'muted' }, ` ${r.pause_reason}`) : ''),
      h('dt', {}, 'Release'), h('dd', { class: 'mono' }, h('a', { href: '#/releases' }, r.release_id)),
      h('dt', {}, 'Stage'), h('dd', { id: 'rollout-stage' }, `${Math.min(r.current_stage + 1, r.stages.length)} of ${r.stages.length}`),
      h('dt', {}, 'Selector'), h('dd', { class: 'mono' }, r.selector || '(every device)'),
      h('dt', {}, 'Updated'), h('dd', {}, `${totals(r.counts).updated} of ${totals(r.counts).targeted} targeted`),
      h('dt', {}, 'Window'), h('dd', {}, r.window && r.window.start_minute !== r.window.end_minute
        ? `${String(Math.floor(r.window.start_minute / 60)).padStart(2, '0')}:${String(r.window.start_minute % 60).padStart(2, '0')}–${String(Math.floor(r.window.end_minute / 60)).padStart(2, '0')}:${String(r.window.end_minute % 60).padStart(2, '0')} device local time`
        : 'any time'),
      h('dt', {}, 'Created'), h('dd', {}, agoEl(r.created_at)))));
    replace(gateBox, gate(r));
    replace(stages, stagesTable(r));
    drawControls();
  }

  async function load() {
    const mine = ++generation;
    try {
      const [r, history] = await Promise.all([api.getRollout(id), api.getRolloutHistory(id)]);
      if (mine !== generation) return;
      rollout = r;
      samples = history.samples;
      draw();
      drawPlot();
    } catch (e) {
      if (mine === generation) status.textContent = `Could not load rollout ${id}: ${errorText(e)}`;
    }
  }

  const refresh = throttle(load, 700);
  const unsubscribe = ctx.live.subscribe((e) => {
    if (e.kind === 'reconnected' || e.rollout_id === id || e.rollout_id === '') refresh();
  });
  const onResize = throttle(() => { if (rollout) drawPlot(); }, 200);
  window.addEventListener('resize', onResize);
  load();
  return () => { unsubscribe(); window.removeEventListener('resize', onResize); generation++; };
}
