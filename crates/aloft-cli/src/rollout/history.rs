//! `aloft rollout history`: how a rollout's state and counts changed over
//! time, from the samples the server records.

use std::time::Duration;

use aloft_protocol::pb;
use clap::Args;
use serde::Serialize;

use super::{CountsJson, state_word, totals};
use crate::Ctx;
use crate::client::status_error;
use crate::duration::{now_unix, parse_duration, utc_text};
use crate::output::{self, Table};

/// Arguments of `aloft rollout history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Rollout id.
    #[arg(value_parser = crate::args::rollout_id)]
    pub id: String,
    /// Only samples from this long ago on, e.g. 2h or 7d (default: all kept).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub since: Option<Duration>,
}

/// One stage's counts in a sample, as `--json` prints them.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct StageSampleJson {
    /// Stage name.
    pub stage: String,
    /// Device counts by state.
    #[serde(flatten)]
    pub counts: CountsJson,
}

/// One sample as `--json` prints it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct SampleJson {
    /// Unix seconds.
    pub time: u64,
    /// The same time in UTC, `YYYY-MM-DD HH:MM:SS`.
    pub time_utc: String,
    /// active, paused, cancelled, completed.
    pub state: &'static str,
    /// Index of the current stage (0-based).
    pub current_stage: u32,
    /// Name of the current stage.
    pub current_stage_name: Option<String>,
    /// Counts per stage.
    pub stages: Vec<StageSampleJson>,
    /// Totals over all stages.
    pub totals: CountsJson,
}

fn stage_name(s: &pb::RolloutSample) -> Option<String> {
    s.counts
        .get(s.current_stage as usize)
        .map(|c| c.stage.clone())
        .filter(|n| !n.is_empty())
}

/// Converts a sample to its JSON form.
pub fn sample_json(s: &pb::RolloutSample) -> SampleJson {
    SampleJson {
        time: s.time,
        time_utc: utc_text(s.time),
        state: state_word(s.state),
        current_stage: s.current_stage,
        current_stage_name: stage_name(s),
        stages: s
            .counts
            .iter()
            .map(|c| StageSampleJson {
                stage: c.stage.clone(),
                counts: c.into(),
            })
            .collect(),
        totals: totals(&s.counts),
    }
}

/// The history table: one row per sample with totals over all stages.
pub fn history_table(samples: &[pb::RolloutSample]) -> Table {
    let mut table = Table::new(&[
        "TIME (UTC)",
        "STATE",
        "STAGE",
        "TARGETED",
        "PENDING",
        "OFFERED",
        "INSTALLED",
        "UPDATED",
        "FAILED",
        "ROLLED BACK",
    ]);
    for s in samples {
        let t = totals(&s.counts);
        table.row(vec![
            utc_text(s.time),
            state_word(s.state).into(),
            stage_name(s).unwrap_or_else(|| s.current_stage.to_string()),
            t.targeted.to_string(),
            t.pending.to_string(),
            t.offered.to_string(),
            t.installed.to_string(),
            t.updated.to_string(),
            t.failed.to_string(),
            t.rolled_back.to_string(),
        ]);
    }
    table
}

/// Runs `aloft rollout history`.
pub async fn run(ctx: &mut Ctx, args: &HistoryArgs) -> anyhow::Result<()> {
    let since = args
        .since
        .map_or(0, |d| now_unix().saturating_sub(d.as_secs()));
    let samples = ctx
        .client
        .get_rollout_history(pb::GetRolloutHistoryRequest {
            rollout_id: args.id.clone(),
            since,
            limit: 0,
        })
        .await
        .map_err(|s| status_error(&format!("showing the history of rollout {}", args.id), &s))?
        .into_inner()
        .samples;
    if ctx.json() {
        return output::print_json(&samples.iter().map(sample_json).collect::<Vec<_>>());
    }
    if samples.is_empty() {
        return output::print_text("no samples\n");
    }
    history_table(&samples).print()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(stage: &str, targeted: u32, updated: u32, failed: u32) -> pb::StageCounts {
        pb::StageCounts {
            stage: stage.into(),
            targeted,
            pending: targeted - updated - failed,
            updated,
            failed,
            ..Default::default()
        }
    }

    fn sample() -> pb::RolloutSample {
        pb::RolloutSample {
            time: 1_795_961_100,
            state: pb::RolloutState::Paused as i32,
            current_stage: 1,
            counts: vec![counts("canary", 10, 10, 0), counts("10%", 950, 900, 3)],
        }
    }

    #[test]
    fn table_shows_utc_time_stage_name_and_totals() {
        let text = history_table(&[sample()]).render();
        let mut lines = text.lines();
        let header = lines.next().unwrap();
        assert!(header.starts_with("TIME (UTC)   "), "{header}");
        assert!(header.ends_with("FAILED  ROLLED BACK"), "{header}");
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            row.join(" "),
            "2026-11-29 14:05:00 paused 10% 960 47 0 0 910 3 0"
        );
    }

    #[test]
    fn json_has_every_stage() {
        let j = serde_json::to_value(sample_json(&sample())).unwrap();
        assert_eq!(j["time_utc"], "2026-11-29 14:05:00");
        assert_eq!(j["state"], "paused");
        assert_eq!(j["current_stage_name"], "10%");
        assert_eq!(j["stages"][1]["stage"], "10%");
        assert_eq!(j["stages"][1]["updated"], 900);
        assert_eq!(j["stages"][0]["targeted"], 10);
        assert_eq!(j["totals"]["failed"], 3);
    }
}
