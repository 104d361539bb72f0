// Devices: a paged table with filters. The selector, the firmware version
// (added to the selector as `version = X`), the stale period and "suspected
// broken" are applied by the server (ListDevices); the status filter here,
// reading server pages until a page of this table is full.

import * as api from '../api.js';
import { h, pageTitle, replace, table, throttle } from '../dom.js';
import { agoEl, brokenName, errorText, statusBadge } from '../format.js';
import { DeviceStatus } from '../messages.js';

const PAGE = 50;
const STALE = [['any time', 0], ['1 h', 3600], ['24 h', 86400], ['7 d', 7 * 86400], ['30 d', 30 * 86400]];
const STATUSES = ['registered', 'idle', 'offered', 'installed', 'updated', 'failed', 'rolled_back', 'revoked'];

/** The selector sent: the operator's, and the version filter. */
function selectorOf(selector, version) {
  const parts = [];
  if (selector.trim()) parts.push(`(${selector.trim()})`);
  if (version.trim()) parts.push(`version = "${version.trim().replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`);
  return parts.join(' and ');
}

function row(d) {
  const a = d.attributes ?? { region: '', tags: [], test_device: false };
  return h('tr', { 'data-device': d.device_id },
    h('td', {}, h('a', { class: 'mono', href: `#/devices/${encodeURIComponent(d.device_id)}` }, d.device_id),
      a.test_device ? h('span', { class: 'badge' }, ' test') : ''),
    h('td', { class: 'mono' }, d.firmware_version || '–'),
    h('td', {}, statusBadge(d.status)),
    h('td', {}, d.connected ? h('span', { class: 'badge online' }, 'online') : h('span', { class: 'muted' }, 'offline')),
    h('td', { class: 'nowrap' }, agoEl(d.last_seen)),
    h('td', {}, a.region),
    h('td', {}, brokenName(d.suspected_broken) ? h('span', { class: 'badge broken' }, brokenName(d.suspected_broken)) : ''),
    h('td', { class: 'num' }, d.trust_root_version || '–'));
}

export function mount(main, ctx) {
  const q = ctx.query;
  const selector = h('input', { id: 'f-selector', type: 'text', value: q.get('selector') ?? '', placeholder: 'region = eu and tag = lab', spellcheck: 'false' });
  const version = h('input', { id: 'f-version', type: 'text', value: q.get('version') ?? '', placeholder: '1.2.0', size: 10 });
  const status = h('select', { id: 'f-status' },
    h('option', { value: '' }, 'any'),
    STATUSES.map((st) => h('option', { value: st, selected: q.get('status') === st }, st.replace('_', ' '))));
  const stale = h('select', { id: 'f-stale' }, STALE.map(([label, secs]) =>
    h('option', { value: secs, selected: Number(q.get('stale') ?? 0) === secs }, label)));
  const broken = h('input', { id: 'f-broken', type: 'checkbox', checked: q.get('broken') === '1' });
  const form = h('form', { class: 'panel filters', role: 'search' },
    h('div', { class: 'field grow' }, h('label', { for: 'f-selector' }, 'Selector'), selector),
    h('div', { class: 'field' }, h('label', { for: 'f-version' }, 'Firmware version'), version),
    h('div', { class: 'field' }, h('label', { for: 'f-status' }, 'Status'), status),
    h('div', { class: 'field' }, h('label', { for: 'f-stale' }, 'Not seen for'), stale),
    h('label', { class: 'check' }, broken, 'Suspected broken'),
    h('button', { type: 'submit' }, 'Apply'));
  const error = h('div', { class: 'alert', role: 'alert' });
  const list = h('div', { id: 'device-list' }, h('p', { class: 'muted' }, 'Loading…'));
  const pager = h('div', { class: 'pager' });
  replace(main, pageTitle('Devices'), form, error, list, pager);

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const next = new URLSearchParams();
    if (selector.value.trim()) next.set('selector', selector.value.trim());
    if (version.value.trim()) next.set('version', version.value.trim());
    if (status.value) next.set('status', status.value);
    if (Number(stale.value)) next.set('stale', stale.value);
    if (broken.checked) next.set('broken', '1');
    ctx.navigate('/devices', next);
  });

  const request = {
    selector: selectorOf(q.get('selector') ?? '', q.get('version') ?? ''),
    stale_secs: Number(q.get('stale') ?? 0),
    suspected_broken: q.get('broken') === '1',
  };
  const wanted = q.get('status') ? DeviceStatus[q.get('status')] : null;
  // Where each page starts (its `after`), for going back.
  const starts = [''];
  let page = 0;
  let nextAfter = '';
  let generation = 0;

  async function load() {
    const mine = ++generation;
    try {
      const rows = [];
      let after = starts[page];
      let next = '';
      for (;;) {
        const res = await api.listDevices({ ...request, after, limit: PAGE });
        let full = false;
        for (const [i, d] of res.devices.entries()) {
          if (wanted !== null && d.status !== wanted) continue;
          rows.push(d);
          if (rows.length === PAGE) {
            const atEnd = i === res.devices.length - 1 && !res.next_after;
            next = atEnd ? '' : d.device_id;
            full = true;
            break;
          }
        }
        if (full || !res.next_after || res.next_after === after) break;
        after = res.next_after;
      }
      if (mine !== generation) return;
      nextAfter = next;
      error.textContent = '';
      replace(list, rows.length
        ? table(['Device', 'Firmware', 'Status', 'Connection', 'Last seen', 'Region', 'Health', ['TrustRoot', 'num']], rows.map(row), { 'data-rows': rows.length })
        : h('p', { class: 'muted', id: 'no-devices' }, 'No device matches these filters.'));
      drawPager(rows.length);
    } catch (e) {
      if (mine === generation) error.textContent = `Could not list devices: ${errorText(e)}`;
    }
  }

  function drawPager(n) {
    const prev = h('button', { type: 'button', class: 'secondary', disabled: page === 0 }, 'Previous page');
    const next = h('button', { type: 'button', class: 'secondary', disabled: !nextAfter }, 'Next page');
    prev.addEventListener('click', () => { page -= 1; load(); });
    next.addEventListener('click', () => { starts[page + 1] = nextAfter; page += 1; load(); });
    replace(pager, prev, next, h('span', { class: 'muted small' }, `page ${page + 1}, ${n} devices`));
  }

  const unsubscribe = ctx.live.subscribe(throttle(load, 3000));
  load();
  return () => { unsubscribe(); generation++; };
}
