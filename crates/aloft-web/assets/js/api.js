// The admin service as the dashboard calls it: one function per RPC, each
// sending the signed-in token. Nothing here decides who may do what: the
// server does, for every call.

import { serverStream, unary } from './grpc-web.js';
import * as M from './messages.js';
import { token } from './session.js';

const SERVICE = '/aloft.v1.AdminService/';

function call(method, requestSchema, request, responseSchema, opts = {}) {
  return unary(SERVICE + method, requestSchema, request, responseSchema, {
    token: opts.token ?? token(),
    signal: opts.signal,
  });
}

/** ServerInfo, including the caller's role. `opts.token` tries another token. */
export const getServerInfo = (opts) =>
  call('GetServerInfo', M.GetServerInfoRequest, {}, M.ServerInfo, opts);

export const listDevices = (request, opts) =>
  call('ListDevices', M.ListDevicesRequest, request, M.ListDevicesResponse, opts);

/** Every device matching `request`, fetched page by page. */
export async function listAllDevices(request = {}, opts = {}) {
  const devices = [];
  let after = '';
  for (;;) {
    const page = await listDevices({ ...request, after, limit: 500 }, opts);
    devices.push(...page.devices);
    if (!page.next_after || page.next_after === after) return devices;
    after = page.next_after;
  }
}

export const getDevice = (deviceId, opts) =>
  call('GetDevice', M.GetDeviceRequest, { device_id: deviceId }, M.DeviceInfo, opts);

export const listDeviceEvents = (deviceId, limit, opts) =>
  call('ListDeviceEvents', M.ListDeviceEventsRequest, { device_id: deviceId, limit },
    M.ListEventsResponse, opts);

export const listReleases = (opts) =>
  call('ListReleases', M.ListReleasesRequest, {}, M.ListReleasesResponse, opts);

export const listRollouts = (opts) =>
  call('ListRollouts', M.ListRolloutsRequest, {}, M.ListRolloutsResponse, opts);

export const getRollout = (rolloutId, opts) =>
  call('GetRollout', M.GetRolloutRequest, { rollout_id: rolloutId }, M.RolloutInfo, opts);

export const getRolloutHistory = (rolloutId, opts) =>
  call('GetRolloutHistory', M.GetRolloutHistoryRequest, { rollout_id: rolloutId },
    M.RolloutHistory, opts);

/** `action`: 'pause' | 'resume' | 'cancel' | 'advance' | 'retry_failed'. */
export function controlRollout(rolloutId, action, reason = '', opts) {
  const value = M.RolloutAction[action];
  if (!value) throw new TypeError(`unknown rollout action ${action}`);
  return call('ControlRollout', M.ControlRolloutRequest,
    { rollout_id: rolloutId, action: value, reason }, M.RolloutInfo, opts);
}

/** `action`: 'exclude' | 'force' | 'retry'. */
export function controlRolloutDevice(rolloutId, deviceId, action, opts) {
  const value = M.DeviceAction[action];
  if (!value) throw new TypeError(`unknown device action ${action}`);
  return call('ControlRolloutDevice', M.ControlRolloutDeviceRequest,
    { rollout_id: rolloutId, device_id: deviceId, action: value }, M.RolloutInfo, opts);
}

/** The live event stream (all rollouts when `rolloutId` is empty). */
export function watchEvents(rolloutId = '', opts = {}) {
  return serverStream(SERVICE + 'WatchEvents', M.WatchEventsRequest, { rollout_id: rolloutId },
    M.Event, { token: opts.token ?? token(), signal: opts.signal, onOpen: opts.onOpen });
}
