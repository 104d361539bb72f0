//! `aloft fleet`: devices grouped by firmware version, with how many are
//! online, stale, failed or rolled back. Computed from ListDevices pages
//! until the server offers a fleet summary RPC.

use std::collections::BTreeMap;
use std::time::Duration;

use aloft_protocol::pb;
use clap::Args;
use serde::Serialize;

use crate::Ctx;
use crate::client::status_error;
use crate::device::{TrustState, trust_state};
use crate::duration::{now_unix, parse_duration};
use crate::output::{self, Table};

/// Devices fetched per ListDevices call.
const PAGE: u32 = 500;

/// Arguments of `aloft fleet`.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Only devices this selector matches, e.g. 'product = sensor and
    /// region = eu' (grammar: `aloft rollout create --help`); default: all.
    #[arg(long, value_name = "EXPR")]
    pub selector: Option<String>,
    /// A device not seen for this long counts as stale.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub stale: Duration,
    /// A TrustRoot that expires within this long counts as expiring.
    #[arg(long, value_name = "DURATION", default_value = "90d", value_parser = parse_duration)]
    pub trust_horizon: Duration,
}

/// One firmware version's row.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct VersionJson {
    /// Firmware version (`null`: the device has not reported one).
    pub version: Option<String>,
    /// Devices on it (revoked devices are left out).
    pub devices: u32,
    /// Connected right now.
    pub online: u32,
    /// Not seen for at least `--stale` (or never).
    pub stale: u32,
    /// Last update failed.
    pub failed: u32,
    /// Last update rolled back.
    pub rolled_back: u32,
    /// Suspected broken (the server's classification).
    pub broken: u32,
    /// Test devices.
    pub test_devices: u32,
    /// TrustRoot expiring within the horizon, or expired: these devices
    /// stop accepting updates unless a successor reaches them.
    pub root_expiring: u32,
}

/// Groups `devices` by firmware version, newest-looking version first
/// (versions compare by their numeric parts), revoked devices left out.
pub fn summarize(
    devices: &[pb::DeviceInfo],
    now: u64,
    stale_secs: u64,
    trust_horizon_secs: u64,
) -> Vec<VersionJson> {
    let mut by: BTreeMap<String, VersionJson> = BTreeMap::new();
    for d in devices.iter().filter(|d| !d.revoked) {
        let row = by.entry(d.firmware_version.clone()).or_default();
        row.devices += 1;
        row.online += u32::from(d.connected);
        row.stale += u32::from(d.last_seen == 0 || now.saturating_sub(d.last_seen) >= stale_secs);
        row.failed += u32::from(d.status == pb::DeviceStatus::Failed as i32);
        row.rolled_back += u32::from(d.status == pb::DeviceStatus::RolledBack as i32);
        row.broken += u32::from(d.suspected_broken != pb::BrokenReason::None as i32);
        row.test_devices += u32::from(d.attributes.as_ref().is_some_and(|a| a.test_device));
        row.root_expiring += u32::from(matches!(
            trust_state(d, now, trust_horizon_secs),
            TrustState::Expiring | TrustState::Expired
        ));
    }
    let mut rows: Vec<VersionJson> = by
        .into_iter()
        .map(|(v, mut row)| {
            row.version = output::non_empty(&v);
            row
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(version_key(r.version.as_deref())));
    rows
}

/// Sort key: numeric parts of a dotted version, then the text.
fn version_key(v: Option<&str>) -> (Vec<u64>, String) {
    let v = v.unwrap_or_default();
    let numbers = v
        .split(['.', '-', '+'])
        .map_while(|p| p.parse::<u64>().ok())
        .collect();
    (numbers, v.to_owned())
}

/// Runs `aloft fleet`.
pub async fn run(ctx: &mut Ctx, args: &FleetArgs) -> anyhow::Result<()> {
    let mut devices = Vec::new();
    let mut after = String::new();
    loop {
        let page = ctx
            .client
            .list_devices(pb::ListDevicesRequest {
                selector: args.selector.clone().unwrap_or_default(),
                after: after.clone(),
                limit: PAGE,
                ..Default::default()
            })
            .await
            .map_err(|s| status_error("listing devices for the fleet view", &s))?
            .into_inner();
        let progressed = page.next_after != after;
        devices.extend(page.devices);
        if page.next_after.is_empty() || !progressed {
            break;
        }
        after = page.next_after;
    }
    let rows = summarize(
        &devices,
        now_unix(),
        args.stale.as_secs(),
        args.trust_horizon.as_secs(),
    );
    if ctx.json() {
        return output::print_json(&rows);
    }
    let mut table = Table::new(&[
        "FIRMWARE",
        "DEVICES",
        "ONLINE",
        "STALE",
        "FAILED",
        "ROLLED BACK",
        "BROKEN",
        "ROOT EXPIRING",
        "TEST",
    ]);
    for r in &rows {
        table.row(vec![
            r.version.clone().unwrap_or_else(|| "(unknown)".into()),
            r.devices.to_string(),
            r.online.to_string(),
            r.stale.to_string(),
            r.failed.to_string(),
            r.rolled_back.to_string(),
            r.broken.to_string(),
            r.root_expiring.to_string(),
            r.test_devices.to_string(),
        ]);
    }
    table.print()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(version: &str, last_seen: u64, status: pb::DeviceStatus) -> pb::DeviceInfo {
        pb::DeviceInfo {
            firmware_version: version.into(),
            last_seen,
            status: status as i32,
            ..Default::default()
        }
    }

    #[test]
    fn groups_by_version_newest_first() {
        let now = 1_000_000;
        let mut online = device("1.10.0", now, pb::DeviceStatus::Updated);
        online.connected = true;
        online.attributes = Some(pb::DeviceAttributes {
            test_device: true,
            ..Default::default()
        });
        let mut revoked = device("9.0.0", now, pb::DeviceStatus::Revoked);
        revoked.revoked = true;
        let mut broken = device("1.2.0", now - 100, pb::DeviceStatus::Idle);
        broken.suspected_broken = pb::BrokenReason::RepeatedRollbacks as i32;
        let devices = vec![
            broken,
            online,
            device("1.2.0", now - 90_000, pb::DeviceStatus::RolledBack),
            device("", 0, pb::DeviceStatus::Registered),
            device("1.10.0", now - 10, pb::DeviceStatus::Failed),
            revoked,
        ];
        let rows = summarize(&devices, now, 86_400, 90 * 86_400);
        let versions: Vec<Option<&str>> = rows.iter().map(|r| r.version.as_deref()).collect();
        assert_eq!(versions, [Some("1.10.0"), Some("1.2.0"), None]);
        assert_eq!(
            rows[0],
            VersionJson {
                version: Some("1.10.0".into()),
                devices: 2,
                online: 1,
                stale: 0,
                failed: 1,
                rolled_back: 0,
                broken: 0,
                test_devices: 1,
                root_expiring: 0,
            }
        );
        assert_eq!(
            (
                rows[1].devices,
                rows[1].stale,
                rows[1].rolled_back,
                rows[1].broken
            ),
            (2, 1, 1, 1)
        );
        assert_eq!(
            (rows[2].devices, rows[2].stale),
            (1, 1),
            "never seen is stale"
        );
    }
}
