// One device: its attributes, firmware and slot, TrustRoot, health, its
// event timeline and, for operators, its place in a rollout (exclude,
// force, retry), each confirmed first.

import * as api from '../api.js';
import { confirmAction } from '../confirm.js';
import { h, pageTitle, replace, throttle } from '../dom.js';
import { agoEl, brokenName, errorText, hex, shortId, statusBadge, time } from '../format.js';
import { RolloutState, Slot } from '../messages.js';

const DEVICE_CONTROLS = [
  { action: 'exclude', label: 'Exclude', body: (d, r) => `${d} gets no offer from ${r} again (until forced or retried).` },
  { action: 'force', label: 'Force', body: (d, r) => `${d} is offered ${r}'s release at its next check-in, whatever its stage, window or the pacing cap.` },
  { action: 'retry', label: 'Retry', body: (d, r) => `${d}'s failed attempt in ${r} is forgotten and it is offered the release again.` },
];

function facts(d) {
  const a = d.attributes ?? { product: '', hardware: '', region: '', time_zone: '', tags: [], test_device: false };
  const pairs = [
    ['Status', [statusBadge(d.status), d.release_id ? h('span', { class: 'mono muted' }, ` ${d.release_id}`) : '']],
    ['Firmware', h('span', { class: 'mono', id: 'device-firmware' }, d.firmware_version || 'not reported')],
    ['Security version', d.security_version],
    ['Active slot', Slot.nameOf(d.active_slot).toUpperCase()],
    ['Connection', d.connected ? h('span', { class: 'badge online' }, 'online') : 'offline'],
    ['Last seen', [agoEl(d.last_seen), d.last_seen ? h('span', { class: 'muted small' }, ` (${time(d.last_seen)})`) : '']],
    ['Product', a.product],
    ['Hardware', a.hardware],
    ['Region', a.region || '–'],
    ['Time zone', a.time_zone || '–'],
    ['Tags', a.tags.length ? a.tags.join(', ') : '–'],
    ['Test device', a.test_device ? 'yes' : 'no'],
    ['Registered', time(d.registered_at)],
    ['Health', brokenName(d.suspected_broken)
      ? h('span', { class: 'badge broken' }, `suspected broken: ${brokenName(d.suspected_broken)}`)
      : `no sign of trouble (${d.recent_rollbacks} recent rollbacks)`],
    ['Key id', h('span', { class: 'mono', title: hex(d.public_key) }, d.public_key.length ? shortId(d.public_key) : '–')],
  ];
  if (d.trust_root_version > 0) {
    pairs.push(['TrustRoot', h('span', { id: 'device-trust' }, `version ${d.trust_root_version}, expires ${time(d.trust_root_expires_at)}`,
      d.trust_root_expired ? h('span', { class: 'badge expired' }, ' expired: cannot verify updates') : '')]);
  }
  if (d.server_clock_ahead_secs > 0) {
    pairs.push(['Clock', `the server's clock was ${d.server_clock_ahead_secs} s ahead of what the device accepted`]);
  }
  if (d.revoked) pairs.push(['Revoked', h('span', { class: 'badge revoked' }, 'revoked')]);
  return h('dl', { class: 'facts' }, pairs.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

function timeline(events) {
  if (!events.length) return h('p', { class: 'muted' }, 'No events recorded.');
  return h('ol', { class: 'events', reversed: true }, [...events].reverse().map((e) => h('li', { 'data-kind': e.kind },
    h('time', { class: 'small mono', datetime: new Date(e.time * 1000).toISOString() }, time(e.time)),
    h('span', {}, h('span', { class: 'badge' }, e.kind)),
    h('span', { class: 'detail' }, [e.rollout_id ? `rollout ${e.rollout_id}` : '', e.release_id ? `release ${e.release_id}` : '', e.detail].filter(Boolean).join(' · ')))));
}

export function mount(main, ctx) {
  const id = ctx.params[0];
  const status = h('div', { class: 'alert', role: 'alert' });
  const info = h('div', { class: 'panel', id: 'device-facts' }, h('p', { class: 'muted' }, 'Loading…'));
  const controls = h('div', { id: 'device-controls' });
  const events = h('div', { class: 'panel', id: 'device-events' });
  replace(main,
    pageTitle('Device ', h('span', { class: 'mono' }, id)),
    status, info,
    ctx.session.canControl() ? [h('h2', {}, 'In a rollout'), controls] : '',
    h('h2', {}, 'Events'), events);

  let rollouts = [];
  let chosen = '';
  let generation = 0;

  function drawControls(device) {
    if (!ctx.session.canControl()) return;
    const usable = rollouts.filter((r) => r.state !== RolloutState.cancelled);
    if (!usable.length) {
      replace(controls, h('p', { class: 'muted' }, 'No rollout to control this device in.'));
      return;
    }
    if (!usable.some((r) => r.rollout_id === chosen)) {
      const fromRelease = usable.find((r) => r.release_id === device.release_id);
      chosen = (fromRelease ?? usable[0]).rollout_id;
    }
    const select = h('select', { id: 'device-rollout' }, usable.map((r) =>
      h('option', { value: r.rollout_id, selected: r.rollout_id === chosen }, `${r.rollout_id} (${RolloutState.nameOf(r.state)})`)));
    select.addEventListener('change', () => { chosen = select.value; });
    replace(controls, h('div', { class: 'panel filters' },
      h('div', { class: 'field' }, h('label', { for: 'device-rollout' }, 'Rollout'), select),
      h('div', { class: 'controls' }, DEVICE_CONTROLS.map((c) => {
        const b = h('button', { type: 'button', class: 'secondary', 'data-action': c.action }, c.label);
        b.addEventListener('click', async () => {
          const answer = await confirmAction({ title: `${c.label} ${id}?`, body: c.body(id, chosen), confirmLabel: c.label });
          if (!answer) return;
          try {
            await api.controlRolloutDevice(chosen, id, c.action);
            ctx.toast(`${c.label}: done for ${id} in ${chosen}.`);
            status.textContent = '';
          } catch (e) {
            status.textContent = `${c.label} refused: ${errorText(e)}`;
          }
          load();
        });
        return b;
      }))));
  }

  async function load() {
    const mine = ++generation;
    try {
      const [device, list, r] = await Promise.all([
        api.getDevice(id),
        api.listDeviceEvents(id, 100),
        ctx.session.canControl() ? api.listRollouts() : Promise.resolve({ rollouts: [] }),
      ]);
      if (mine !== generation) return;
      rollouts = r.rollouts;
      status.textContent = '';
      replace(info, facts(device));
      replace(events, timeline(list.events));
      drawControls(device);
    } catch (e) {
      if (mine === generation) status.textContent = `Could not load device ${id}: ${errorText(e)}`;
    }
  }

  const refresh = throttle(load, 1000);
  const unsubscribe = ctx.live.subscribe((e) => {
    if (e.kind === 'reconnected' || e.device_id === id) refresh();
  });
  load();
  return () => { unsubscribe(); generation++; };
}
