// Events: the live stream (WatchEvents), newest first, filterable. It
// shows what arrives while the page is open; a device's stored history is
// on its own page.

import { h, pageTitle, replace } from '../dom.js';
import { time } from '../format.js';

const KEEP = 500;

function matches(e, f) {
  const has = (value, needle) => !needle || value.toLowerCase().includes(needle.toLowerCase());
  return has(e.kind, f.kind) && has(e.device_id, f.device) && has(e.rollout_id, f.rollout)
    && (!f.hideCheckIns || e.seq !== 0);
}

function item(e) {
  return h('li', { 'data-kind': e.kind, 'data-seq': e.seq },
    h('time', { class: 'small mono', datetime: new Date(e.time * 1000).toISOString() }, time(e.time)),
    h('span', {}, h('span', { class: 'badge' }, e.kind), e.seq === 0 ? h('span', { class: 'small muted', title: 'published live, not stored' }, ' live') : ''),
    h('span', { class: 'detail' },
      e.device_id ? h('a', { class: 'mono', href: `#/devices/${encodeURIComponent(e.device_id)}` }, e.device_id) : '',
      e.rollout_id ? [' · ', h('a', { href: `#/rollouts/${encodeURIComponent(e.rollout_id)}` }, e.rollout_id)] : '',
      e.release_id ? ` · ${e.release_id}` : '',
      e.detail ? ` · ${e.detail}` : ''));
}

export function mount(main, ctx) {
  const kind = h('input', { id: 'e-kind', type: 'text', placeholder: 'rolled_back', spellcheck: 'false' });
  const device = h('input', { id: 'e-device', type: 'text', spellcheck: 'false' });
  const rollout = h('input', { id: 'e-rollout', type: 'text', spellcheck: 'false' });
  const hide = h('input', { id: 'e-hide', type: 'checkbox' });
  const freeze = h('input', { id: 'e-freeze', type: 'checkbox' });
  const count = h('p', { class: 'small muted', id: 'event-count', 'aria-live': 'polite' });
  const list = h('ol', { class: 'events', id: 'event-list', reversed: true });
  replace(main, pageTitle('Events'),
    h('form', { class: 'panel filters', role: 'search' },
      h('div', { class: 'field' }, h('label', { for: 'e-kind' }, 'Kind'), kind),
      h('div', { class: 'field' }, h('label', { for: 'e-device' }, 'Device'), device),
      h('div', { class: 'field' }, h('label', { for: 'e-rollout' }, 'Rollout'), rollout),
      h('label', { class: 'check' }, hide, 'Hide routine check-ins'),
      h('label', { class: 'check' }, freeze, 'Freeze the list')),
    count,
    h('div', { class: 'panel' }, list));

  const seen = [];
  const filters = () => ({ kind: kind.value.trim(), device: device.value.trim(), rollout: rollout.value.trim(), hideCheckIns: hide.checked });

  function draw() {
    const f = filters();
    const shown = seen.filter((e) => matches(e, f));
    replace(list, shown.map(item));
    count.textContent = shown.length
      ? `${shown.length} of ${seen.length} events since this page opened${freeze.checked ? ' (frozen)' : ''}`
      : `Waiting for events (${seen.length} so far do not match).`;
  }
  for (const input of [kind, device, rollout]) input.addEventListener('input', draw);
  hide.addEventListener('change', draw);
  freeze.addEventListener('change', draw);
  main.querySelector('form').addEventListener('submit', (e) => e.preventDefault());

  const unsubscribe = ctx.live.subscribe((e) => {
    if (e.kind === 'reconnected') return;
    seen.unshift(e);
    if (seen.length > KEEP) seen.length = KEEP;
    if (!freeze.checked) draw();
  });
  draw();
  return () => unsubscribe();
}
