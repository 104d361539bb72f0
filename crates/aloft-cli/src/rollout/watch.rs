//! `aloft rollout watch`: live progress from the WatchEvents stream plus a
//! periodic GetRollout. On a terminal the per-stage progress bars redraw in
//! place with events scrolling above them; otherwise (or with `--json`) each
//! event and each status change is one line.

use std::io::IsTerminal as _;
use std::time::Duration;

use aloft_protocol::pb;
use anyhow::{anyhow, bail};
use clap::Args;
use serde::Serialize;
use tokio_stream::StreamExt as _;

use super::{CountsJson, RolloutJson, has_ended, rollout_json, stage_position, state_word};
use crate::Ctx;
use crate::client::status_error;
use crate::duration::parse_duration;
use crate::output::non_empty;

/// Arguments of `aloft rollout watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Rollout id.
    pub id: String,
    /// How often to refresh the counts besides reacting to events.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub interval: Duration,
}

/// Least time between two refreshes triggered by events.
const MIN_REFRESH: Duration = Duration::from_millis(200);

/// Width of a progress bar in cells.
pub const BAR_WIDTH: usize = 30;

/// How output is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Redraw the stage block in place, with colours.
    Terminal,
    /// One plain line per event or status change.
    Lines,
    /// One JSON object per line.
    Json,
}

/// One line of `watch --json`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WatchLine<'a> {
    /// An event from the stream.
    Event {
        /// Server sequence number.
        seq: u64,
        /// Unix seconds.
        time: u64,
        /// e.g. offered, installed, confirmed, rolled_back, rollout_paused.
        kind: &'a str,
        /// Device, if the event is about one.
        device: Option<String>,
        /// Rollout id.
        rollout: Option<String>,
        /// Release id.
        release: Option<String>,
        /// Free text.
        detail: Option<String>,
    },
    /// The rollout as GetRollout returned it (printed when it changes).
    Status {
        /// The rollout.
        rollout: &'a RolloutJson,
    },
    /// The watch ended.
    End {
        /// `completed`, `cancelled` or `interrupted`.
        reason: &'a str,
    },
}

/// A proportional bar: `#` updated, `+` offered or installed, `x` failed or
/// rolled back, `-` excluded, `.` pending. Empty cells when nobody is
/// targeted. With `colour`, segments get ANSI colours.
pub fn bar(c: &CountsJson, width: usize, colour: bool) -> String {
    let segments = [
        (c.updated, '#', "\x1b[32m"),
        (c.offered + c.installed, '+', "\x1b[33m"),
        (c.failed + c.rolled_back, 'x', "\x1b[31m"),
        (c.excluded, '-', "\x1b[2m"),
    ];
    let total = u64::from(c.targeted);
    let mut out = String::from("[");
    let mut cum: u64 = 0;
    let mut drawn = 0usize;
    if total > 0 {
        for (n, ch, code) in segments {
            cum = (cum + u64::from(n)).min(total);
            let end = (cum * width as u64 + total / 2) / total;
            let cells = (end as usize).saturating_sub(drawn);
            if cells > 0 {
                if colour {
                    out.push_str(code);
                }
                out.extend(std::iter::repeat_n(ch, cells));
                if colour {
                    out.push_str("\x1b[0m");
                }
            }
            drawn += cells;
        }
    }
    let rest = width.saturating_sub(drawn);
    out.extend(std::iter::repeat_n(if total > 0 { '.' } else { ' ' }, rest));
    out.push(']');
    out
}

/// The block of lines the terminal view redraws: a header and one bar per stage.
pub fn render_block(r: &pb::RolloutInfo, colour: bool) -> Vec<String> {
    let j = rollout_json(r);
    let mut lines = vec![format!(
        "rollout {}  release {}  {}  stage {}{}",
        j.id,
        j.release,
        state_word(r.state),
        stage_position(r),
        j.pause_reason
            .as_deref()
            .map_or_else(String::new, |p| format!("  paused: {p}"))
    )];
    let width = j.stages.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for (i, s) in j.stages.iter().enumerate() {
        let marker = if i == r.current_stage as usize && !has_ended(r) {
            '>'
        } else {
            ' '
        };
        let c = s.counts.unwrap_or_default();
        let done = c.updated + c.failed + c.rolled_back + c.excluded;
        let pct = (done * 100).checked_div(c.targeted).unwrap_or(0);
        lines.push(format!(
            "{marker} {:<width$}  {}  {:>3}%  {}/{} updated  {} in flight  {} failed  {} rolled back",
            s.name,
            bar(&c, BAR_WIDTH, colour),
            pct,
            c.updated,
            c.targeted,
            c.offered + c.installed,
            c.failed,
            c.rolled_back,
        ));
    }
    lines
}

/// The plain-line form of an event.
pub fn event_line(e: &pb::Event) -> String {
    let t = e.time % 86_400;
    let mut line = format!(
        "{:02}:{:02}:{:02}Z  {}",
        t / 3600,
        (t / 60) % 60,
        t % 60,
        e.kind
    );
    if !e.device_id.is_empty() {
        line.push_str(&format!("  device {}", e.device_id));
    }
    if !e.detail.is_empty() {
        line.push_str(&format!("  {}", e.detail));
    }
    line
}

/// The plain-line form of a status.
pub fn status_line(r: &pb::RolloutInfo) -> String {
    let t = super::totals(&r.counts);
    let mut line = format!(
        "status  {}  stage {}  updated {}/{}  in flight {}  failed {}  rolled back {}  excluded {}",
        state_word(r.state),
        stage_position(r),
        t.updated,
        t.targeted,
        t.offered + t.installed,
        t.failed,
        t.rolled_back,
        t.excluded
    );
    if !r.pause_reason.is_empty() {
        line.push_str(&format!("  reason: {}", r.pause_reason));
    }
    line
}

/// Writes watch output and remembers how many block lines are on screen.
struct Screen<W> {
    out: W,
    mode: Mode,
    block_lines: usize,
    last: Option<RolloutJson>,
}

impl<W: std::io::Write> Screen<W> {
    fn new(out: W, mode: Mode) -> Self {
        Self {
            out,
            mode,
            block_lines: 0,
            last: None,
        }
    }

    fn write(&mut self, text: &str) -> anyhow::Result<()> {
        let out = &mut self.out;
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(anyhow!(BrokenPipe)),
            other => Ok(other?),
        }
    }

    /// Cursor-up-and-clear over the block drawn last.
    fn erase(&self) -> String {
        if self.block_lines == 0 {
            String::new()
        } else {
            format!("\x1b[{}F\x1b[J", self.block_lines)
        }
    }

    fn json(&mut self, line: &WatchLine<'_>) -> anyhow::Result<()> {
        let mut text = serde_json::to_string(line)?;
        text.push('\n');
        self.write(&text)
    }

    fn event(&mut self, e: &pb::Event, rollout: Option<&pb::RolloutInfo>) -> anyhow::Result<()> {
        match self.mode {
            Mode::Json => self.json(&WatchLine::Event {
                seq: e.seq,
                time: e.time,
                kind: &e.kind,
                device: non_empty(&e.device_id),
                rollout: non_empty(&e.rollout_id),
                release: non_empty(&e.release_id),
                detail: non_empty(&e.detail),
            }),
            Mode::Lines => self.write(&format!("{}\n", event_line(e))),
            Mode::Terminal => {
                let mut text = self.erase();
                text.push_str(&event_line(e));
                text.push('\n');
                self.block_lines = 0;
                self.write(&text)?;
                match rollout {
                    Some(r) => self.redraw(r),
                    None => Ok(()),
                }
            }
        }
    }

    fn status(&mut self, r: &pb::RolloutInfo) -> anyhow::Result<()> {
        let j = rollout_json(r);
        if self.mode != Mode::Terminal && self.last.as_ref() == Some(&j) {
            return Ok(());
        }
        let result = match self.mode {
            Mode::Json => self.json(&WatchLine::Status { rollout: &j }),
            Mode::Lines => self.write(&format!("{}\n", status_line(r))),
            Mode::Terminal => self.redraw(r),
        };
        self.last = Some(j);
        result
    }

    fn redraw(&mut self, r: &pb::RolloutInfo) -> anyhow::Result<()> {
        let lines = render_block(r, true);
        let mut text = self.erase();
        for line in &lines {
            text.push_str(line);
            text.push('\n');
        }
        self.block_lines = lines.len();
        self.write(&text)
    }

    fn end(&mut self, reason: &str) -> anyhow::Result<()> {
        match self.mode {
            Mode::Json => self.json(&WatchLine::End { reason }),
            Mode::Lines | Mode::Terminal => self.write(&format!("watch ended: {reason}\n")),
        }
    }
}

/// Marker error: stdout was closed (e.g. `| head`); the watch just stops.
#[derive(Debug)]
struct BrokenPipe;

impl std::fmt::Display for BrokenPipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout closed")
    }
}

impl std::error::Error for BrokenPipe {}

/// Runs `aloft rollout watch`.
pub async fn run(ctx: &mut Ctx, args: &WatchArgs) -> anyhow::Result<()> {
    let mode = if ctx.json() {
        Mode::Json
    } else if std::io::stdout().is_terminal() {
        Mode::Terminal
    } else {
        Mode::Lines
    };
    let mut screen = Screen::new(std::io::stdout(), mode);
    match watch(ctx, args, &mut screen).await {
        Err(e) if e.is::<BrokenPipe>() => Ok(()),
        other => other,
    }
}

async fn fetch(ctx: &mut Ctx, id: &str) -> anyhow::Result<pb::RolloutInfo> {
    Ok(ctx
        .client
        .get_rollout(pb::GetRolloutRequest {
            rollout_id: id.to_owned(),
        })
        .await
        .map_err(|s| status_error(&format!("watching rollout {id}"), &s))?
        .into_inner())
}

async fn watch<W: std::io::Write>(
    ctx: &mut Ctx,
    args: &WatchArgs,
    screen: &mut Screen<W>,
) -> anyhow::Result<()> {
    let id = &args.id;
    // Poll the Ctrl-C future once so the handler is installed before the
    // first line goes out (anyone reacting to that line may interrupt us).
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    tokio::select! {
        biased;
        _ = &mut ctrl_c => return screen.end("interrupted"),
        () = std::future::ready(()) => {}
    }
    // Subscribe first, then read the state, so no event falls in between.
    let mut events = ctx
        .client
        .watch_events(pb::WatchEventsRequest {
            rollout_id: id.clone(),
        })
        .await
        .map_err(|s| status_error(&format!("watching rollout {id}"), &s))?
        .into_inner();
    let mut rollout = fetch(ctx, id).await?;
    screen.status(&rollout)?;
    let mut tick = tokio::time::interval(args.interval.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.reset();
    // Events change counts or state, so they trigger a refresh, but at most
    // one per MIN_REFRESH however fast events arrive.
    let mut dirty = false;
    let mut last_fetch = tokio::time::Instant::now();
    loop {
        if has_ended(&rollout) {
            return screen.end(state_word(rollout.state));
        }
        tokio::select! {
            _ = &mut ctrl_c => return screen.end("interrupted"),
            _ = tick.tick() => {
                rollout = fetch(ctx, id).await?;
                (dirty, last_fetch) = (false, tokio::time::Instant::now());
                screen.status(&rollout)?;
            }
            () = tokio::time::sleep_until(last_fetch + MIN_REFRESH), if dirty => {
                rollout = fetch(ctx, id).await?;
                (dirty, last_fetch) = (false, tokio::time::Instant::now());
                screen.status(&rollout)?;
            }
            event = events.next() => match event {
                Some(Ok(e)) => {
                    screen.event(&e, Some(&rollout))?;
                    dirty = true;
                }
                Some(Err(s)) => return Err(status_error(&format!("watching rollout {id}"), &s)),
                None => bail!("watching rollout {id}: the server closed the event stream"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(targeted: u32, updated: u32, offered: u32, failed: u32, excluded: u32) -> CountsJson {
        CountsJson {
            targeted,
            pending: targeted - updated - offered - failed - excluded,
            offered,
            updated,
            failed,
            excluded,
            ..Default::default()
        }
    }

    #[test]
    fn bars_are_proportional_and_fixed_width() {
        assert_eq!(bar(&counts(10, 5, 0, 0, 0), 10, false), "[#####.....]");
        assert_eq!(bar(&counts(10, 2, 3, 1, 1), 10, false), "[##+++x-...]");
        assert_eq!(bar(&counts(3, 3, 0, 0, 0), 10, false), "[##########]");
        assert_eq!(bar(&counts(0, 0, 0, 0, 0), 4, false), "[    ]");
        for n in 0..=7 {
            let b = bar(&counts(7, n, 0, 0, 0), BAR_WIDTH, false);
            assert_eq!(b.chars().count(), BAR_WIDTH + 2, "{b}");
        }
        // Counts above the target (a server race) never overflow the bar.
        let over = CountsJson {
            targeted: 2,
            updated: 5,
            ..Default::default()
        };
        assert_eq!(bar(&over, 4, false), "[####]");
        let coloured = bar(&counts(2, 1, 1, 0, 0), 2, true);
        assert_eq!(coloured, "[\x1b[32m#\x1b[0m\x1b[33m+\x1b[0m]");
    }

    fn rollout(updated: u32) -> pb::RolloutInfo {
        pb::RolloutInfo {
            rollout_id: "r".into(),
            release_id: "fw".into(),
            state: pb::RolloutState::Active as i32,
            stages: vec![
                pb::RolloutStage {
                    name: "test".into(),
                    test_devices_only: true,
                    ..Default::default()
                },
                pb::RolloutStage {
                    name: "100%".into(),
                    percent: 100,
                    ..Default::default()
                },
            ],
            counts: vec![pb::StageCounts {
                stage: "test".into(),
                targeted: 4,
                updated,
                pending: 4 - updated,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn event() -> pb::Event {
        pb::Event {
            kind: "confirmed".into(),
            device_id: "d1".into(),
            rollout_id: "r".into(),
            ..Default::default()
        }
    }

    #[test]
    fn terminal_redraws_the_block_in_place() {
        let mut screen = Screen::new(Vec::new(), Mode::Terminal);
        screen.status(&rollout(0)).unwrap();
        assert_eq!(screen.block_lines, 3);
        let first = String::from_utf8(std::mem::take(&mut screen.out)).unwrap();
        assert!(
            !first.contains("\x1b[3F"),
            "nothing to erase yet: {first:?}"
        );
        screen.event(&event(), Some(&rollout(1))).unwrap();
        let text = String::from_utf8(std::mem::take(&mut screen.out)).unwrap();
        // Erase the 3 block lines, print the event, redraw the block below it.
        assert!(
            text.starts_with("\x1b[3F\x1b[J00:00:00Z  confirmed  device d1\n"),
            "{text:?}"
        );
        assert!(text.contains("1/4 updated"), "{text:?}");
        assert!(text.contains("\x1b[32m"), "colours on a terminal: {text:?}");
        assert_eq!(screen.block_lines, 3);
    }

    #[test]
    fn line_modes_print_changes_only() {
        let mut screen = Screen::new(Vec::new(), Mode::Lines);
        screen.status(&rollout(0)).unwrap();
        screen.status(&rollout(0)).unwrap();
        screen.event(&event(), None).unwrap();
        screen.status(&rollout(2)).unwrap();
        screen.end("completed").unwrap();
        let text = String::from_utf8(screen.out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].contains("updated 0/4"), "{text}");
        assert!(lines[2].contains("updated 2/4"), "{text}");
        assert!(
            !text.contains('\x1b'),
            "no escapes off a terminal: {text:?}"
        );

        let mut screen = Screen::new(Vec::new(), Mode::Json);
        screen.status(&rollout(0)).unwrap();
        screen.event(&event(), None).unwrap();
        screen.end("interrupted").unwrap();
        let text = String::from_utf8(screen.out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["type"], "status");
        assert_eq!(lines[0]["rollout"]["totals"]["targeted"], 4);
        assert_eq!(lines[1]["type"], "event");
        assert_eq!(lines[1]["device"], "d1");
        assert_eq!(lines[1]["detail"], serde_json::Value::Null);
        assert_eq!(lines[2]["reason"], "interrupted");
    }

    #[test]
    fn lines_read_naturally() {
        let e = pb::Event {
            seq: 3,
            time: 86_400 + 3600 + 62,
            device_id: "d1".into(),
            rollout_id: "r".into(),
            release_id: "fw".into(),
            kind: "rolled_back".into(),
            detail: "boot failed".into(),
        };
        assert_eq!(
            event_line(&e),
            "01:01:02Z  rolled_back  device d1  boot failed"
        );
        let line = serde_json::to_string(&WatchLine::End {
            reason: "completed",
        })
        .unwrap();
        assert_eq!(line, r#"{"type":"end","reason":"completed"}"#);
        let r = pb::RolloutInfo {
            rollout_id: "r".into(),
            state: pb::RolloutState::Paused as i32,
            pause_reason: "too many failures".into(),
            stages: vec![pb::RolloutStage {
                name: "all".into(),
                percent: 100,
                ..Default::default()
            }],
            ..Default::default()
        };
        let line = status_line(&r);
        assert!(line.starts_with("status  paused  stage 1/1 all"), "{line}");
        assert!(line.ends_with("reason: too many failures"), "{line}");
        let block = render_block(&r, false);
        assert_eq!(block.len(), 2);
        assert!(block[0].contains("paused: too many failures"), "{block:?}");
        assert!(block[1].starts_with("> all  ["), "{block:?}");
    }
}
