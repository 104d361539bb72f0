// How values read on screen: UTC times (as the CLI prints them), ages,
// sizes, key ids, status names.

import { h } from './dom.js';
import { BrokenReason, DeviceStatus, RolloutState } from './messages.js';

/** Now, in Unix seconds. */
export function now() {
  return Math.floor(Date.now() / 1000);
}

/** "2025-01-31 12:00:05 UTC"; "never" for 0. */
export function time(unix) {
  if (!unix) return 'never';
  return `${new Date(unix * 1000).toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

/** "12:00:05" (UTC). */
export function clock(unix) {
  return new Date(unix * 1000).toISOString().slice(11, 19);
}

/** "4 s", "3 min", "2 h", "5 d". */
export function span(secs) {
  const s = Math.max(0, Math.round(secs));
  if (s < 90) return `${s} s`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min`;
  if (s < 36 * 3600) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

/** "3 min ago", "never". */
export function ago(unix) {
  if (!unix) return 'never';
  return `${span(now() - unix)} ago`;
}

/** A <time> element showing the age, with the exact UTC time as its title. */
export function agoEl(unix) {
  if (!unix) return h('span', { class: 'muted' }, 'never');
  return h('time', { datetime: new Date(unix * 1000).toISOString(), title: time(unix) }, ago(unix));
}

/** "64.0 KiB". */
export function bytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB'];
  let v = n;
  let u = -1;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return `${v.toFixed(1)} ${units[u]}`;
}

/** Lower-case hex. */
export function hex(bytesValue) {
  return Array.from(bytesValue, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The first 8 bytes of a key id in hex (the CLI's short form). */
export function shortId(bytesValue) {
  return hex(bytesValue.subarray(0, 8));
}

/** "rolled back" for DEVICE_STATUS_ROLLED_BACK. */
export function statusName(status) {
  return DeviceStatus.nameOf(status).replace('_', ' ');
}

/** A coloured badge for a device status. */
export function statusBadge(status) {
  const name = DeviceStatus.nameOf(status);
  return h('span', { class: `badge ${name}` }, name.replace('_', ' '));
}

/** A coloured badge for a rollout state. */
export function stateBadge(state) {
  const name = RolloutState.nameOf(state);
  return h('span', { class: `badge ${name}`, 'data-state': name }, name);
}

/** "repeated rollbacks" / "silent after update"; '' when not broken. */
export function brokenName(reason) {
  return reason === BrokenReason.none ? '' : BrokenReason.nameOf(reason).replaceAll('_', ' ');
}

/** A stage as the CLI labels it: "test devices", "50 %". */
export function stageLabel(stage) {
  return stage.test_devices_only ? 'test devices' : `${stage.percent} %`;
}

/** A message for a failed call: the gRPC code and the server's words. */
export function errorText(e) {
  if (e && e.codeName) return `${e.codeName}: ${e.message}`;
  return String(e && e.message ? e.message : e);
}
