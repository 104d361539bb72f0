// The fleet's health from its device records, counted the way `aloft
// fleet` counts them (crates/aloft-cli/src/fleet.rs): revoked devices left
// out; stale = not seen for the stale period, or never.

import { BrokenReason, DeviceStatus } from './messages.js';

/** Sort key of a dotted version: its numeric parts. */
function versionKey(v) {
  const parts = [];
  for (const p of (v || '').split(/[.+-]/)) {
    if (!/^\d+$/.test(p)) break;
    parts.push(Number(p));
  }
  return parts;
}

/** Newest-looking version first; the unknown version last. */
export function compareVersions(a, b) {
  const ka = versionKey(a);
  const kb = versionKey(b);
  for (let i = 0; i < Math.max(ka.length, kb.length); i++) {
    const d = (kb[i] ?? -1) - (ka[i] ?? -1);
    if (d !== 0) return d;
  }
  return (b || '').localeCompare(a || '');
}

/**
 * Totals and a row per firmware version:
 * { devices, online, stale, broken, failed, rolled_back, versions: [{ version, devices }] }.
 */
export function summarize(devices, nowSecs, staleSecs) {
  const out = { devices: 0, online: 0, stale: 0, broken: 0, failed: 0, rolled_back: 0, versions: [] };
  const byVersion = new Map();
  for (const d of devices) {
    if (d.revoked) continue;
    out.devices += 1;
    out.online += d.connected ? 1 : 0;
    out.stale += (d.last_seen === 0 || nowSecs - d.last_seen >= staleSecs) ? 1 : 0;
    out.broken += d.suspected_broken !== BrokenReason.none ? 1 : 0;
    out.failed += d.status === DeviceStatus.failed ? 1 : 0;
    out.rolled_back += d.status === DeviceStatus.rolled_back ? 1 : 0;
    byVersion.set(d.firmware_version, (byVersion.get(d.firmware_version) ?? 0) + 1);
  }
  out.versions = [...byVersion.entries()]
    .map(([version, n]) => ({ version, devices: n }))
    .sort((a, b) => compareVersions(a.version, b.version));
  return out;
}
