// The admin service's messages and enums, transcribed from
// proto/aloft/v1/admin.proto and signed.proto (field numbers must match
// them; only what the dashboard reads or sends is listed).

const rep = { repeated: true };

function message(name, fields) {
  return { name, fields };
}

/** An enum as { NAME: number } plus `nameOf(number)`. */
function enumeration(prefix, names) {
  const values = {};
  names.forEach((n, i) => { values[n] = i; });
  return Object.freeze({
    ...values,
    prefix,
    nameOf: (v) => names[v] ?? `unknown(${v})`,
  });
}

export const DeviceStatus = enumeration('DEVICE_STATUS_', [
  'unspecified', 'registered', 'idle', 'offered', 'installed', 'updated', 'failed',
  'rolled_back', 'revoked',
]);
export const BrokenReason = enumeration('BROKEN_REASON_', [
  'none', 'repeated_rollbacks', 'silent_after_update',
]);
export const RolloutState = enumeration('ROLLOUT_STATE_', [
  'unspecified', 'active', 'paused', 'cancelled', 'completed',
]);
export const RolloutAction = enumeration('ROLLOUT_ACTION_', [
  'unspecified', 'pause', 'resume', 'cancel', 'advance', 'retry_failed',
]);
export const DeviceAction = enumeration('DEVICE_ACTION_', [
  'unspecified', 'exclude', 'force', 'retry',
]);
export const Role = enumeration('ROLE_', ['unspecified', 'viewer', 'operator', 'admin']);
export const Slot = enumeration('SLOT_', ['unspecified', 'a', 'b']);

export const Signature = message('Signature', {
  key_id: [1, 'bytes'],
  signature: [2, 'bytes'],
});
export const SignedEnvelope = message('SignedEnvelope', {
  payload: [1, 'bytes'],
  signatures: [2, Signature, rep],
});
export const TrustRoot = message('TrustRoot', {
  version: [1, 'uint32'],
  expires_at: [2, 'uint64'],
  root_keys: [3, 'bytes', rep],
  root_threshold: [4, 'uint32'],
  release_keys: [5, 'bytes', rep],
  release_threshold: [6, 'uint32'],
  server_keys: [7, 'bytes', rep],
});

export const GetServerInfoRequest = message('GetServerInfoRequest', {});
export const ServerInfo = message('ServerInfo', {
  version: [1, 'string'],
  server_public_key: [2, 'bytes'],
  trust_root: [3, SignedEnvelope],
  server_time: [4, 'uint64'],
  next_server_public_key: [5, 'bytes'],
  caller_role: [6, 'enum'],
  caller_token_id: [7, 'string'],
});

export const DeviceAttributes = message('DeviceAttributes', {
  product: [1, 'string'],
  hardware: [2, 'string'],
  region: [3, 'string'],
  time_zone: [4, 'string'],
  tags: [5, 'string', rep],
  test_device: [6, 'bool'],
});
export const DeviceInfo = message('DeviceInfo', {
  device_id: [1, 'string'],
  public_key: [2, 'bytes'],
  attributes: [3, DeviceAttributes],
  status: [4, 'enum'],
  status_seq: [5, 'uint64'],
  firmware_version: [6, 'string'],
  security_version: [7, 'uint32'],
  active_slot: [8, 'enum'],
  last_seen: [9, 'uint64'],
  release_id: [10, 'string'],
  revoked: [11, 'bool'],
  registered_at: [12, 'uint64'],
  connected: [13, 'bool'],
  status_changed_at: [14, 'uint64'],
  rollback_times: [15, 'uint64', rep],
  recent_rollbacks: [16, 'uint32'],
  suspected_broken: [17, 'enum'],
  trust_root_version: [18, 'uint32'],
  trust_root_expires_at: [19, 'uint64'],
  trust_root_expired: [20, 'bool'],
  server_clock_ahead_secs: [21, 'uint64'],
});
export const GetDeviceRequest = message('GetDeviceRequest', { device_id: [1, 'string'] });
export const ListDevicesRequest = message('ListDevicesRequest', {
  selector: [1, 'string'],
  stale_secs: [2, 'uint64'],
  after: [3, 'string'],
  limit: [4, 'uint32'],
  suspected_broken: [5, 'bool'],
  trust_expires_within_secs: [6, 'uint64'],
});
export const ListDevicesResponse = message('ListDevicesResponse', {
  devices: [1, DeviceInfo, rep],
  next_after: [2, 'string'],
});

export const Event = message('Event', {
  seq: [1, 'uint64'],
  time: [2, 'uint64'],
  device_id: [3, 'string'],
  rollout_id: [4, 'string'],
  release_id: [5, 'string'],
  kind: [6, 'string'],
  detail: [7, 'string'],
});
export const ListDeviceEventsRequest = message('ListDeviceEventsRequest', {
  device_id: [1, 'string'],
  limit: [2, 'uint32'],
});
export const ListEventsResponse = message('ListEventsResponse', { events: [1, Event, rep] });
export const WatchEventsRequest = message('WatchEventsRequest', { rollout_id: [1, 'string'] });

export const ReleaseInfo = message('ReleaseInfo', {
  release_id: [1, 'string'],
  product: [2, 'string'],
  hardware: [3, 'string', rep],
  version: [4, 'string'],
  security_version: [5, 'uint32'],
  image_len: [6, 'uint64'],
  payload_len: [7, 'uint64'],
  manifest_digest: [8, 'bytes'],
  expires_at: [9, 'uint64'],
  uploaded_at: [10, 'uint64'],
  signer_key_ids: [11, 'bytes', rep],
});
export const ListReleasesRequest = message('ListReleasesRequest', {});
export const ListReleasesResponse = message('ListReleasesResponse', {
  releases: [1, ReleaseInfo, rep],
});

export const RolloutStage = message('RolloutStage', {
  name: [1, 'string'],
  percent: [2, 'uint32'],
  test_devices_only: [3, 'bool'],
  soak_secs: [4, 'uint64'],
  min_sample: [5, 'uint32'],
  max_failure_permille: [6, 'uint32'],
});
export const MaintenanceWindow = message('MaintenanceWindow', {
  start_minute: [1, 'uint32'],
  end_minute: [2, 'uint32'],
});
export const StageCounts = message('StageCounts', {
  stage: [1, 'string'],
  targeted: [2, 'uint32'],
  pending: [3, 'uint32'],
  offered: [4, 'uint32'],
  installed: [5, 'uint32'],
  updated: [6, 'uint32'],
  failed: [7, 'uint32'],
  rolled_back: [8, 'uint32'],
  excluded: [9, 'uint32'],
});
export const RolloutInfo = message('RolloutInfo', {
  rollout_id: [1, 'string'],
  release_id: [2, 'string'],
  selector: [3, 'string'],
  stages: [4, RolloutStage, rep],
  window: [5, MaintenanceWindow],
  state: [6, 'enum'],
  current_stage: [7, 'uint32'],
  pause_reason: [8, 'string'],
  counts: [9, StageCounts, rep],
  created_at: [10, 'uint64'],
  stage_started_at: [11, 'uint64'],
  max_concurrent: [12, 'uint32'],
});
export const GetRolloutRequest = message('GetRolloutRequest', { rollout_id: [1, 'string'] });
export const ListRolloutsRequest = message('ListRolloutsRequest', {});
export const ListRolloutsResponse = message('ListRolloutsResponse', {
  rollouts: [1, RolloutInfo, rep],
});
export const ControlRolloutRequest = message('ControlRolloutRequest', {
  rollout_id: [1, 'string'],
  action: [2, 'enum'],
  reason: [3, 'string'],
});
export const ControlRolloutDeviceRequest = message('ControlRolloutDeviceRequest', {
  rollout_id: [1, 'string'],
  device_id: [2, 'string'],
  action: [3, 'enum'],
});
export const RolloutSample = message('RolloutSample', {
  time: [1, 'uint64'],
  state: [2, 'enum'],
  current_stage: [3, 'uint32'],
  counts: [4, StageCounts, rep],
});
export const GetRolloutHistoryRequest = message('GetRolloutHistoryRequest', {
  rollout_id: [1, 'string'],
  since: [2, 'uint64'],
  limit: [3, 'uint32'],
});
export const RolloutHistory = message('RolloutHistory', {
  samples: [1, RolloutSample, rep],
});
