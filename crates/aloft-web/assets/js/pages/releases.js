// Releases: what each signed release is, who signed it, when it expires.

import * as api from '../api.js';
import { h, pageTitle, replace, table, throttle } from '../dom.js';
import { agoEl, bytes, errorText, hex, now, shortId, time } from '../format.js';
import { compareVersions } from '../fleet.js';

function row(r) {
  const expired = r.expires_at && r.expires_at <= now();
  return h('tr', { 'data-release': r.release_id },
    h('td', { class: 'mono' }, r.release_id),
    h('td', { class: 'mono' }, r.version),
    h('td', { class: 'num' }, r.security_version),
    h('td', {}, r.product),
    h('td', {}, r.hardware.join(', ')),
    h('td', { class: 'num nowrap' }, bytes(r.image_len)),
    h('td', { class: 'mono small' }, r.signer_key_ids.length
      ? r.signer_key_ids.map((k) => h('div', { title: hex(k), 'data-signer': hex(k) }, shortId(k)))
      : h('span', { class: 'muted' }, 'none verifies')),
    h('td', { class: 'nowrap' }, time(r.expires_at), expired ? [' ', h('span', { class: 'badge expired' }, 'expired')] : ''),
    h('td', { class: 'nowrap' }, agoEl(r.uploaded_at)));
}

export function mount(main, ctx) {
  const status = h('div', { class: 'alert', role: 'alert' });
  const list = h('div', { id: 'release-list' }, h('p', { class: 'muted' }, 'Loading…'));
  replace(main, pageTitle('Releases'), status, list,
    h('p', { class: 'small muted' },
      'Signers are the release keys (short key ids) whose signature on the manifest the server verifies under its TrustRoots. Devices check the same signatures themselves.'));

  let generation = 0;
  async function load() {
    const mine = ++generation;
    try {
      const { releases } = await api.listReleases();
      if (mine !== generation) return;
      status.textContent = '';
      const sorted = [...releases].sort((a, b) => a.product.localeCompare(b.product) || compareVersions(a.version, b.version));
      replace(list, sorted.length
        ? table(['Release', 'Version', ['Security', 'num'], 'Product', 'Hardware', ['Image', 'num'], 'Signed by', 'Expires', 'Uploaded'], sorted.map(row))
        : h('p', { class: 'muted' }, 'No release uploaded yet: `cargo xtask release` or `aloft release upload`.'));
    } catch (e) {
      if (mine === generation) status.textContent = `Could not list releases: ${errorText(e)}`;
    }
  }
  const unsubscribe = ctx.live.subscribe((e) => {
    if (e.kind === 'release_uploaded' || e.kind === 'reconnected') refresh();
  });
  const refresh = throttle(load, 1000);
  load();
  return () => { unsubscribe(); generation++; };
}
