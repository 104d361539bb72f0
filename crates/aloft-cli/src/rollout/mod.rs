//! `aloft rollout ...`: create, list, inspect, control and watch staged
//! rollouts.

pub mod history;
pub mod spec;
pub mod watch;

use std::time::Duration;

use aloft_protocol::pb;
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::client::status_error;
use crate::duration::{age, compact, now_unix, parse_duration};
use crate::output::{self, Table, dash, non_empty, non_zero};
use crate::{Ctx, args};
use spec::{StageDefaults, StagesSpec, parse_permille, parse_window, permille_text, window_text};

const CREATE_HELP: &str = "\
Stages (--stages), separated by commas, each covering a cumulative share of
the devices the selector matches:
  test            only devices flagged as test devices (must come first)
  10%             the first 10% (by a stable hash of device and rollout id)
  NAME=10%        the same, with a name
  10%:KEY=VALUE   per-stage overrides, several allowed:
                    soak=4h  min-sample=20  max-failure=2.5%
Settings a stage does not override take --soak, --min-sample and
--max-failure. A test stage needs only 1 finished device unless
--min-sample or min-sample= says otherwise.

A stage advances by itself once its soak time has passed and at least its
min-sample devices finished, so a stage with fewer devices than that waits
for `aloft rollout advance`; the last stage stays open (devices that come
to match still join) until an advance completes the rollout.

Selectors (--selector) combine comparisons with and, or, not and
parentheses:
  FIELD = VALUE, FIELD != VALUE, FIELD in (A, B)   fields: product, hardware,
      region, tz, tag, test (true/false), id, version
  version < 1.1.0, version in 1.0.0..1.2.0         versions compare numerically
  Quote values with other characters: tag = \"a b\".

Examples:
  aloft rollout create fw-1-2 --release sensor-1.2.0
  aloft rollout create fw-1-2 --release sensor-1.2.0 \\
      --selector 'product = sensor and region in (eu, us)' \\
      --stages 'test,canary=1%:soak=4h,10%,50%,100%' \\
      --window 02:00-04:00 --max-concurrent 200 --max-failure 2%

Factory rollouts (--factory) update devices before they ship: one standing
stage of every device of the release's product registered since the rollout
started, while at the factory (--factory-period after its registration),
no window; it pauses when over half of at least 5 finished devices failed.
A newer factory rollout of the product replaces the previous one. The
station waits for each device with `aloft device wait ID --confirmed RELEASE`.
  aloft rollout create factory-1-2 --release sensor-1.2.0 --factory";

/// `aloft rollout` subcommands.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Create a staged, health-gated rollout of a release.
    #[command(after_long_help = CREATE_HELP)]
    Create(CreateArgs),
    /// List rollouts.
    List,
    /// Show one rollout: stages, counts per state, pause reason, window, pacing.
    Status {
        /// Rollout id.
        #[arg(value_parser = args::rollout_id)]
        id: String,
    },
    /// Pause: no new updates go out until `resume`.
    Pause {
        /// Rollout id.
        #[arg(value_parser = args::rollout_id)]
        id: String,
        /// Why (recorded and shown in `status`).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a paused rollout.
    Resume {
        /// Rollout id.
        #[arg(value_parser = args::rollout_id)]
        id: String,
    },
    /// Cancel for good: no further devices are offered the release.
    Cancel {
        /// Rollout id.
        #[arg(value_parser = args::rollout_id)]
        id: String,
    },
    /// Move to the next stage now, without waiting for its soak time.
    Advance {
        /// Rollout id.
        #[arg(value_parser = args::rollout_id)]
        id: String,
    },
    /// Offer the release again to every device that failed in this rollout.
    RetryFailed {
        /// Rollout id.
        #[arg(value_parser = args::rollout_id)]
        id: String,
    },
    /// Take one device out of the rollout.
    Exclude {
        /// Rollout id.
        #[arg(value_parser = args::rollout_id)]
        id: String,
        /// Device id.
        #[arg(value_parser = args::device_id)]
        device: String,
    },
    /// Offer the release to one device now, whatever its stage and window.
    Force {
        /// Rollout id.
        #[arg(value_parser = args::rollout_id)]
        id: String,
        /// Device id.
        #[arg(value_parser = args::device_id)]
        device: String,
    },
    /// Offer the release again to one failed device.
    Retry {
        /// Rollout id.
        #[arg(value_parser = args::rollout_id)]
        id: String,
        /// Device id.
        #[arg(value_parser = args::device_id)]
        device: String,
    },
    /// Show how a rollout's state and counts changed over time (UTC).
    ///
    /// The server records a sample when the counts changed (at most once per
    /// its --rollout-sample-secs) and at once at every state or stage change.
    /// The table sums the counts over all stages; --json lists every stage.
    History(history::HistoryArgs),
    /// Follow a rollout live with progress bars until it ends (or Ctrl-C).
    ///
    /// On a terminal the stage bars redraw in place; otherwise (or with
    /// --json) every event and every status change is one line.
    Watch(watch::WatchArgs),
}

/// Arguments of `aloft rollout create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Rollout id, e.g. fw-1-2-eu.
    #[arg(value_parser = args::rollout_id)]
    pub id: String,
    /// Release to roll out (from `aloft release list`).
    #[arg(long, value_name = "RELEASE", value_parser = args::release_id)]
    pub release: String,
    /// Devices to target, e.g. 'product = sensor and region = eu' (see
    /// below); default: all.
    #[arg(long, value_name = "EXPR")]
    pub selector: Option<String>,
    /// Stages, e.g. "test,1%,10%,50%,100%" (the default); see below.
    #[arg(long, value_name = "SPEC", default_value = spec::DEFAULT_STAGES,
          value_parser = |s: &str| s.parse::<StagesSpec>().map_err(|e| e.to_string()))]
    pub stages: StagesSpec,
    /// Soak time before a stage advances by itself.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub soak: Duration,
    /// Finished devices a stage needs before its failure rate counts [default: 10].
    #[arg(long, value_name = "N")]
    pub min_sample: Option<u32>,
    /// Failure rate that pauses the rollout, e.g. 5% or 0.5%.
    #[arg(long, value_name = "PERCENT", default_value = "5%",
          value_parser = |s: &str| parse_permille(s).map_err(|e| e.to_string()))]
    pub max_failure: u32,
    /// Maintenance window in each device's local time, e.g. 02:00-04:00.
    #[arg(long, value_name = "HH:MM-HH:MM",
          value_parser = |s: &str| parse_window(s).map_err(|e| e.to_string()))]
    pub window: Option<pb::MaintenanceWindow>,
    /// Concurrent downloads allowed (default: the server's limit).
    #[arg(long, value_name = "N")]
    pub max_concurrent: Option<u32>,
    /// A device that took the update and is silent this long counts as failed.
    #[arg(long, value_name = "DURATION", default_value = "2h", value_parser = parse_duration)]
    pub silent_after: Duration,
    /// Create it paused; start it with `aloft rollout resume`.
    #[arg(long)]
    pub paused: bool,
    /// A factory rollout: devices newly registered for the release's product
    /// take it at the factory, before they ship (see below). Takes no
    /// stages, window, soak, min-sample or max-failure.
    #[arg(long, conflicts_with_all = ["stages", "window", "soak", "min_sample", "max_failure"])]
    pub factory: bool,
    /// How long after its registration a device counts as at the factory.
    #[arg(long, value_name = "DURATION", requires = "factory", value_parser = parse_duration)]
    pub factory_period: Option<Duration>,
}

impl CreateArgs {
    /// The request this command line sends.
    pub fn request(&self) -> pb::CreateRolloutRequest {
        if self.factory {
            // The server gives it its one stage; no window.
            return pb::CreateRolloutRequest {
                rollout_id: self.id.clone(),
                release_id: self.release.clone(),
                selector: self.selector.clone().unwrap_or_default(),
                max_concurrent: self.max_concurrent.unwrap_or(0),
                silent_after_secs: self.silent_after.as_secs(),
                start_paused: self.paused,
                factory: Some(pb::FactoryRollout {
                    period_secs: self.factory_period.map_or(0, |d| d.as_secs()),
                    registered_since: 0,
                }),
                ..Default::default()
            };
        }
        let defaults = StageDefaults {
            soak: self.soak,
            min_sample: self
                .min_sample
                .unwrap_or(StageDefaults::default().min_sample),
            max_failure_permille: self.max_failure,
        };
        pb::CreateRolloutRequest {
            rollout_id: self.id.clone(),
            release_id: self.release.clone(),
            selector: self.selector.clone().unwrap_or_default(),
            stages: self.stages.resolve(&defaults, self.min_sample.is_some()),
            window: self.window,
            max_concurrent: self.max_concurrent.unwrap_or(0),
            silent_after_secs: self.silent_after.as_secs(),
            start_paused: self.paused,
            ..Default::default()
        }
    }
}

/// Runs one `aloft rollout` command.
pub async fn run(ctx: &mut Ctx, cmd: RolloutCommand) -> anyhow::Result<()> {
    use pb::{DeviceAction as D, RolloutAction as A};
    match cmd {
        RolloutCommand::Create(args) => create(ctx, &args).await,
        RolloutCommand::List => list(ctx).await,
        RolloutCommand::Status { id } => status(ctx, &id).await,
        RolloutCommand::Pause { id, reason } => {
            control(ctx, &id, A::Pause, reason.unwrap_or_default()).await
        }
        RolloutCommand::Resume { id } => control(ctx, &id, A::Resume, String::new()).await,
        RolloutCommand::Cancel { id } => control(ctx, &id, A::Cancel, String::new()).await,
        RolloutCommand::Advance { id } => control(ctx, &id, A::Advance, String::new()).await,
        RolloutCommand::RetryFailed { id } => {
            control(ctx, &id, A::RetryFailed, String::new()).await
        }
        RolloutCommand::Exclude { id, device } => {
            control_device(ctx, &id, &device, D::Exclude).await
        }
        RolloutCommand::Force { id, device } => control_device(ctx, &id, &device, D::Force).await,
        RolloutCommand::Retry { id, device } => control_device(ctx, &id, &device, D::Retry).await,
        RolloutCommand::History(args) => history::run(ctx, &args).await,
        RolloutCommand::Watch(args) => watch::run(ctx, &args).await,
    }
}

/// A rollout state as a lowercase word.
pub fn state_word(state: i32) -> &'static str {
    match pb::RolloutState::try_from(state) {
        Ok(pb::RolloutState::Active) => "active",
        Ok(pb::RolloutState::Paused) => "paused",
        Ok(pb::RolloutState::Cancelled) => "cancelled",
        Ok(pb::RolloutState::Completed) => "completed",
        Ok(pb::RolloutState::Unspecified) | Err(_) => "unknown",
    }
}

/// True once a rollout can no longer change (completed or cancelled).
pub fn has_ended(r: &pb::RolloutInfo) -> bool {
    r.state == pb::RolloutState::Completed as i32 || r.state == pb::RolloutState::Cancelled as i32
}

/// A stage as `--json` prints it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct StageJson {
    /// Stage name.
    pub name: String,
    /// Cumulative share (0 for a test stage).
    pub percent: u32,
    /// Only test devices.
    pub test_devices_only: bool,
    /// Soak time in seconds.
    pub soak_secs: u64,
    /// Minimum finished devices before the gate applies.
    pub min_sample: u32,
    /// Pause threshold in parts per thousand.
    pub max_failure_permille: u32,
    /// Device counts by state (`null` until the server reports them).
    pub counts: Option<CountsJson>,
}

/// Device counts of one stage.
#[derive(Debug, Default, Serialize, PartialEq, Eq, Clone, Copy)]
pub struct CountsJson {
    /// Devices in the stage.
    pub targeted: u32,
    /// Not yet offered.
    pub pending: u32,
    /// Offered, not yet installed.
    pub offered: u32,
    /// Installed, not yet confirmed.
    pub installed: u32,
    /// Running the new release.
    pub updated: u32,
    /// Install failed.
    pub failed: u32,
    /// Rolled back to the old release.
    pub rolled_back: u32,
    /// Taken out by an operator.
    pub excluded: u32,
}

impl From<&pb::StageCounts> for CountsJson {
    fn from(c: &pb::StageCounts) -> Self {
        Self {
            targeted: c.targeted,
            pending: c.pending,
            offered: c.offered,
            installed: c.installed,
            updated: c.updated,
            failed: c.failed,
            rolled_back: c.rolled_back,
            excluded: c.excluded,
        }
    }
}

/// A rollout as `--json` prints it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct RolloutJson {
    /// Rollout id.
    pub id: String,
    /// Release id.
    pub release: String,
    /// Selector (`null` = all devices).
    pub selector: Option<String>,
    /// active, paused, cancelled, completed.
    pub state: &'static str,
    /// Index of the current stage (0-based).
    pub current_stage: u32,
    /// Name of the current stage.
    pub current_stage_name: Option<String>,
    /// Why it paused, if it paused itself or the operator gave a reason.
    pub pause_reason: Option<String>,
    /// Maintenance window `HH:MM-HH:MM` (`null` = any time).
    pub window: Option<String>,
    /// Concurrent download cap (`null` = server default).
    pub max_concurrent: Option<u32>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds the current stage started.
    pub stage_started_at: Option<u64>,
    /// Stages with their counts.
    pub stages: Vec<StageJson>,
    /// Totals over all stages.
    pub totals: CountsJson,
    /// Set for a factory rollout (update before shipment).
    pub factory: Option<FactoryJson>,
}

/// A factory rollout's settings.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct FactoryJson {
    /// Devices registered at or after this Unix time join.
    pub registered_since: u64,
    /// How long after its registration a device counts as at the factory.
    pub period_secs: u64,
}

/// How long a device stays "at the factory" when a factory rollout leaves
/// its period at 0 (the proto's default).
const DEFAULT_FACTORY_PERIOD_SECS: u64 = 7 * 86_400;

fn factory_json(f: &pb::FactoryRollout) -> FactoryJson {
    FactoryJson {
        registered_since: f.registered_since,
        period_secs: if f.period_secs == 0 {
            DEFAULT_FACTORY_PERIOD_SECS
        } else {
            f.period_secs
        },
    }
}

/// The counts the server reported for stage `index` (matched by name,
/// falling back to position).
fn stage_counts(r: &pb::RolloutInfo, index: usize) -> Option<&pb::StageCounts> {
    let name = &r.stages.get(index)?.name;
    r.counts
        .iter()
        .find(|c| &c.stage == name)
        .or_else(|| r.counts.get(index).filter(|c| c.stage.is_empty()))
}

/// Sums counts over all stages.
pub fn totals(counts: &[pb::StageCounts]) -> CountsJson {
    let mut t = CountsJson::default();
    for c in counts {
        t.targeted += c.targeted;
        t.pending += c.pending;
        t.offered += c.offered;
        t.installed += c.installed;
        t.updated += c.updated;
        t.failed += c.failed;
        t.rolled_back += c.rolled_back;
        t.excluded += c.excluded;
    }
    t
}

/// Converts a rollout to its JSON form.
pub fn rollout_json(r: &pb::RolloutInfo) -> RolloutJson {
    RolloutJson {
        id: r.rollout_id.clone(),
        release: r.release_id.clone(),
        selector: non_empty(&r.selector),
        state: state_word(r.state),
        current_stage: r.current_stage,
        current_stage_name: r
            .stages
            .get(r.current_stage as usize)
            .map(|s| s.name.clone()),
        pause_reason: non_empty(&r.pause_reason),
        window: r.window.as_ref().map(window_text),
        max_concurrent: (r.max_concurrent != 0).then_some(r.max_concurrent),
        created_at: r.created_at,
        stage_started_at: non_zero(r.stage_started_at),
        stages: r
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| StageJson {
                name: s.name.clone(),
                percent: s.percent,
                test_devices_only: s.test_devices_only,
                soak_secs: s.soak_secs,
                min_sample: s.min_sample,
                max_failure_permille: s.max_failure_permille,
                counts: stage_counts(r, i).map(CountsJson::from),
            })
            .collect(),
        totals: totals(&r.counts),
        factory: r.factory.as_ref().map(factory_json),
    }
}

/// `test` or `10%`.
fn target_text(s: &pb::RolloutStage) -> String {
    if s.test_devices_only {
        "test devices".into()
    } else {
        format!("{}%", s.percent)
    }
}

/// `2/5 10%`: the current stage, 1-based, of how many.
fn stage_position(r: &pb::RolloutInfo) -> String {
    match r.stages.get(r.current_stage as usize) {
        Some(s) => format!("{}/{} {}", r.current_stage + 1, r.stages.len(), s.name),
        None if r.stages.is_empty() => "-".into(),
        None => format!("{}/{}", r.current_stage + 1, r.stages.len()),
    }
}

/// The stage table `status` prints.
pub fn stage_table(r: &pb::RolloutInfo) -> Table {
    let mut table = Table::new(&[
        "",
        "STAGE",
        "TARGET",
        "SOAK",
        "GATE",
        "DEVICES",
        "PENDING",
        "OFFERED",
        "INSTALLED",
        "UPDATED",
        "FAILED",
        "ROLLED BACK",
        "EXCLUDED",
    ]);
    for (i, s) in r.stages.iter().enumerate() {
        let marker = if i == r.current_stage as usize && !has_ended(r) {
            ">"
        } else {
            ""
        };
        let mut row = vec![
            marker.to_owned(),
            s.name.clone(),
            target_text(s),
            compact(s.soak_secs),
            format!(
                "{} after {}",
                permille_text(s.max_failure_permille),
                s.min_sample
            ),
        ];
        match stage_counts(r, i) {
            Some(c) => row.extend(
                [
                    c.targeted,
                    c.pending,
                    c.offered,
                    c.installed,
                    c.updated,
                    c.failed,
                    c.rolled_back,
                    c.excluded,
                ]
                .map(|n| n.to_string()),
            ),
            None => row.extend(std::iter::repeat_n("-".to_owned(), 8)),
        }
        table.row(row);
    }
    table
}

/// The `key: value` lines above the stage table.
pub fn status_fields(r: &pb::RolloutInfo, now: u64) -> Vec<(&'static str, String)> {
    let t = totals(&r.counts);
    let mut fields = vec![
        ("rollout", r.rollout_id.clone()),
        ("release", r.release_id.clone()),
        (
            "selector",
            if r.selector.is_empty() {
                "(all devices)".into()
            } else {
                r.selector.clone()
            },
        ),
        ("state", state_word(r.state).into()),
    ];
    if let Some(f) = r.factory.as_ref().map(factory_json) {
        fields.push((
            "factory",
            format!(
                "update before shipment: devices of the product registered since {} join \
                 for {} after their registration",
                age(now, f.registered_since),
                compact(f.period_secs)
            ),
        ));
    }
    if !r.pause_reason.is_empty() {
        fields.push(("pause reason", r.pause_reason.clone()));
    }
    let mut stage = stage_position(r);
    if r.stage_started_at != 0 && !has_ended(r) {
        stage.push_str(&format!(" (started {})", age(now, r.stage_started_at)));
    }
    fields.push(("stage", stage));
    fields.push((
        "window",
        r.window.as_ref().map_or_else(
            || "any time".into(),
            |w| format!("{} device-local time", window_text(w)),
        ),
    ));
    fields.push((
        "pacing",
        if r.max_concurrent == 0 {
            "server default".into()
        } else {
            format!("at most {} concurrent downloads", r.max_concurrent)
        },
    ));
    fields.push((
        "progress",
        format!(
            "{} of {} updated, {} failed, {} rolled back, {} excluded",
            t.updated, t.targeted, t.failed, t.rolled_back, t.excluded
        ),
    ));
    fields.push(("created", age(now, r.created_at)));
    fields
}

fn print_status(r: &pb::RolloutInfo) -> anyhow::Result<()> {
    let mut text = output::render_fields(&status_fields(r, now_unix()));
    text.push('\n');
    text.push_str(&stage_table(r).render());
    output::print_text(&text)
}

async fn create(ctx: &mut Ctx, args: &CreateArgs) -> anyhow::Result<()> {
    let r = ctx
        .client
        .create_rollout(args.request())
        .await
        .map_err(|s| status_error(&format!("creating rollout {}", args.id), &s))?
        .into_inner();
    if ctx.json() {
        return output::print_json(&rollout_json(&r));
    }
    print_status(&r)
}

async fn get(ctx: &mut Ctx, id: &str) -> anyhow::Result<pb::RolloutInfo> {
    Ok(ctx
        .client
        .get_rollout(pb::GetRolloutRequest {
            rollout_id: id.to_owned(),
        })
        .await
        .map_err(|s| status_error(&format!("showing rollout {id}"), &s))?
        .into_inner())
}

async fn status(ctx: &mut Ctx, id: &str) -> anyhow::Result<()> {
    let r = get(ctx, id).await?;
    if ctx.json() {
        return output::print_json(&rollout_json(&r));
    }
    print_status(&r)
}

async fn list(ctx: &mut Ctx) -> anyhow::Result<()> {
    let rollouts = ctx
        .client
        .list_rollouts(pb::ListRolloutsRequest {})
        .await
        .map_err(|s| status_error("listing rollouts", &s))?
        .into_inner()
        .rollouts;
    if ctx.json() {
        return output::print_json(&rollouts.iter().map(rollout_json).collect::<Vec<_>>());
    }
    let now = now_unix();
    let mut table = Table::new(&[
        "ID", "RELEASE", "STATE", "STAGE", "UPDATED", "FAILED", "CREATED", "REASON",
    ]);
    for r in &rollouts {
        let t = totals(&r.counts);
        table.row(vec![
            r.rollout_id.clone(),
            r.release_id.clone(),
            state_word(r.state).into(),
            stage_position(r),
            format!("{}/{}", t.updated, t.targeted),
            (t.failed + t.rolled_back).to_string(),
            age(now, r.created_at),
            dash(&r.pause_reason),
        ]);
    }
    table.print()
}

fn action_word(action: pb::RolloutAction) -> &'static str {
    match action {
        pb::RolloutAction::Pause => "pausing",
        pb::RolloutAction::Resume => "resuming",
        pb::RolloutAction::Cancel => "cancelling",
        pb::RolloutAction::Advance => "advancing",
        pb::RolloutAction::RetryFailed => "retrying failed devices of",
        pb::RolloutAction::Unspecified => "controlling",
    }
}

async fn control(
    ctx: &mut Ctx,
    id: &str,
    action: pb::RolloutAction,
    reason: String,
) -> anyhow::Result<()> {
    let r = ctx
        .client
        .control_rollout(pb::ControlRolloutRequest {
            rollout_id: id.to_owned(),
            action: action as i32,
            reason,
        })
        .await
        .map_err(|s| status_error(&format!("{} rollout {id}", action_word(action)), &s))?
        .into_inner();
    if ctx.json() {
        return output::print_json(&rollout_json(&r));
    }
    eprintln!(
        "rollout {id}: {}, stage {}",
        state_word(r.state),
        stage_position(&r)
    );
    print_status(&r)
}

async fn control_device(
    ctx: &mut Ctx,
    id: &str,
    device: &str,
    action: pb::DeviceAction,
) -> anyhow::Result<()> {
    let verb = match action {
        pb::DeviceAction::Exclude => "excluding",
        pb::DeviceAction::Force => "forcing",
        pb::DeviceAction::Retry => "retrying",
        pb::DeviceAction::Unspecified => "controlling",
    };
    let r = ctx
        .client
        .control_rollout_device(pb::ControlRolloutDeviceRequest {
            rollout_id: id.to_owned(),
            device_id: device.to_owned(),
            action: action as i32,
        })
        .await
        .map_err(|s| status_error(&format!("{verb} device {device} in rollout {id}"), &s))?
        .into_inner();
    if ctx.json() {
        return output::print_json(&rollout_json(&r));
    }
    eprintln!("rollout {id}: done {verb} device {device}");
    print_status(&r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> pb::RolloutInfo {
        pb::RolloutInfo {
            rollout_id: "r1".into(),
            release_id: "fw-1".into(),
            selector: String::new(),
            stages: vec![
                pb::RolloutStage {
                    name: "test".into(),
                    test_devices_only: true,
                    soak_secs: 3600,
                    min_sample: 1,
                    max_failure_permille: 50,
                    ..Default::default()
                },
                pb::RolloutStage {
                    name: "10%".into(),
                    percent: 10,
                    soak_secs: 7200,
                    min_sample: 10,
                    max_failure_permille: 25,
                    ..Default::default()
                },
            ],
            window: Some(pb::MaintenanceWindow {
                start_minute: 120,
                end_minute: 240,
            }),
            state: pb::RolloutState::Paused as i32,
            current_stage: 1,
            pause_reason: "failure rate 30% > 2.5%".into(),
            counts: vec![
                pb::StageCounts {
                    stage: "test".into(),
                    targeted: 2,
                    updated: 2,
                    ..Default::default()
                },
                pb::StageCounts {
                    stage: "10%".into(),
                    targeted: 10,
                    pending: 3,
                    updated: 4,
                    failed: 2,
                    rolled_back: 1,
                    ..Default::default()
                },
            ],
            created_at: 1000,
            stage_started_at: 2000,
            max_concurrent: 50,
            factory: None,
        }
    }

    #[test]
    fn json_is_stable() {
        let j = serde_json::to_value(rollout_json(&sample())).unwrap();
        assert_eq!(j["state"], "paused");
        assert_eq!(j["current_stage_name"], "10%");
        assert_eq!(j["window"], "02:00-04:00");
        assert_eq!(j["selector"], serde_json::Value::Null);
        assert_eq!(j["stages"][1]["counts"]["failed"], 2);
        assert_eq!(j["totals"]["targeted"], 12);
        assert_eq!(j["totals"]["updated"], 6);
        assert_eq!(j["max_concurrent"], 50);
    }

    #[test]
    fn status_shows_reason_window_pacing_and_stages() {
        let r = sample();
        let text = output::render_fields(&status_fields(&r, 3000));
        assert!(
            text.contains("pause reason:  failure rate 30% > 2.5%"),
            "{text}"
        );
        assert!(text.contains("02:00-04:00 device-local time"), "{text}");
        assert!(text.contains("at most 50 concurrent downloads"), "{text}");
        assert!(text.contains("2/2 10% (started 16m ago)"), "{text}");
        assert!(
            text.contains("6 of 12 updated, 2 failed, 1 rolled back"),
            "{text}"
        );
        let table = stage_table(&r).render();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].contains("ROLLED BACK"), "{table}");
        assert!(
            lines[1].starts_with("   test   test devices  1h"),
            "{table}"
        );
        assert!(lines[2].starts_with(">  10%"), "{table}");
        assert!(lines[2].contains("2.5% after 10"), "{table}");
    }

    #[test]
    fn status_shows_a_factory_rollouts_settings() {
        let mut r = sample();
        assert!(
            !output::render_fields(&status_fields(&r, 3000)).contains("factory"),
            "an ordinary rollout has no factory line"
        );
        assert!(rollout_json(&r).factory.is_none());
        r.factory = Some(pb::FactoryRollout {
            period_secs: 0,
            registered_since: 10_000 - 7200,
        });
        let text = output::render_fields(&status_fields(&r, 10_000));
        assert!(
            text.contains("registered since 2h ago join for 7d after their registration"),
            "{text}"
        );
        r.factory = Some(pb::FactoryRollout {
            period_secs: 3 * 3600,
            registered_since: 10,
        });
        let j = serde_json::to_value(rollout_json(&r)).unwrap();
        assert_eq!(j["factory"]["period_secs"], 3 * 3600);
        assert_eq!(j["factory"]["registered_since"], 10);
    }

    #[test]
    fn missing_counts_render_as_dashes() {
        let mut r = sample();
        r.counts.clear();
        let table = stage_table(&r).render();
        let row = table.lines().nth(1).unwrap();
        assert_eq!(
            row.split_whitespace().filter(|c| *c == "-").count(),
            8,
            "{table}"
        );
        assert!(rollout_json(&r).stages[0].counts.is_none());
    }

    #[test]
    fn create_request_applies_defaults_and_overrides() {
        use clap::Parser as _;
        let cli = crate::Cli::try_parse_from([
            "aloft",
            "rollout",
            "create",
            "r1",
            "--release",
            "fw-1",
            "--stages",
            "test,5%:soak=10m,100%",
            "--max-failure",
            "2%",
            "--window",
            "22:00-02:00",
            "--max-concurrent",
            "7",
            "--paused",
        ])
        .unwrap();
        let crate::Command::Rollout(RolloutCommand::Create(args)) = cli.command else {
            panic!("not rollout create")
        };
        let req = args.request();
        assert_eq!(req.stages.len(), 3);
        assert_eq!(req.stages[0].min_sample, 1);
        assert_eq!(req.stages[1].soak_secs, 600);
        assert_eq!(req.stages[2].soak_secs, 3600);
        assert!(req.stages.iter().all(|s| s.max_failure_permille == 20));
        assert_eq!(req.window.unwrap().start_minute, 22 * 60);
        assert_eq!(req.max_concurrent, 7);
        assert_eq!(req.silent_after_secs, 7200);
        assert!(req.start_paused);
        assert_eq!(req.selector, "");

        let cli = crate::Cli::try_parse_from(["aloft", "rollout", "create", "r", "--release", "f"])
            .unwrap();
        let crate::Command::Rollout(RolloutCommand::Create(args)) = cli.command else {
            panic!("not rollout create")
        };
        let req = args.request();
        assert_eq!(req.stages.len(), 5);
        assert_eq!(req.window, None);
        assert_eq!(req.max_concurrent, 0);
    }
}
