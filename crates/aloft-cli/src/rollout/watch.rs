//! `aloft rollout watch`: live progress from the WatchEvents stream plus a
//! periodic GetRollout. On a terminal the per-stage progress bars redraw in
//! place with events scrolling above them; otherwise (a pipe, a file,
//! `TERM=dumb`, or with `--json`) each event and each status change is one
//! line. `NO_COLOR` turns the bars' colours off.
//!
//! The terminal view redraws by moving the cursor up over the block it drew
//! last, so no line of it may wrap: every line is fitted to the terminal's
//! width (read again at every redraw), leaving its last column free. Narrow
//! terminals get a shorter bar, then fewer columns, then elided text; a
//! block taller than the terminal shows the stages around the current one.

use std::io::IsTerminal as _;
use std::time::Duration;

use aloft_protocol::pb;
use anyhow::{anyhow, bail};
use clap::Args;
use serde::Serialize;
use tokio_stream::StreamExt as _;
use unicode_width::{UnicodeWidthChar as _, UnicodeWidthStr as _};

use super::{CountsJson, RolloutJson, has_ended, rollout_json, stage_position, state_word};
use crate::Ctx;
use crate::client::status_error;
use crate::duration::parse_duration;
use crate::output::non_empty;

/// Arguments of `aloft rollout watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Rollout id.
    #[arg(value_parser = crate::args::rollout_id)]
    pub id: String,
    /// How often to refresh the counts besides reacting to events.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub interval: Duration,
}

/// Least time between two refreshes triggered by events.
const MIN_REFRESH: Duration = Duration::from_millis(200);

/// Widest progress bar, in cells (on terminals wide enough for it).
pub const BAR_WIDTH: usize = 30;

/// Narrowest progress bar worth drawing; below it columns are dropped first.
pub const MIN_BAR_WIDTH: usize = 10;

/// The size of the terminal the block is drawn on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TermSize {
    /// Columns.
    pub cols: usize,
    /// Rows.
    pub rows: usize,
}

impl TermSize {
    /// The size of the terminal on stdout; when it cannot be read, `COLUMNS`
    /// and `LINES`, else 80x24.
    pub fn of_stdout() -> Self {
        if let Some((terminal_size::Width(cols), terminal_size::Height(rows))) =
            terminal_size::terminal_size_of(std::io::stdout())
            && cols > 0
            && rows > 0
        {
            return Self {
                cols: cols.into(),
                rows: rows.into(),
            };
        }
        let var = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|n| *n > 0)
                .unwrap_or(default)
        };
        Self {
            cols: var("COLUMNS", 80),
            rows: var("LINES", 24),
        }
    }

    /// Columns a line may use: all but the last, so that no terminal wraps
    /// (or parks the cursor in a pending wrap) at the end of a full line.
    fn line_width(self) -> usize {
        self.cols.saturating_sub(1).max(1)
    }
}

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

/// Display width of `text` on a terminal.
fn text_width(text: &str) -> usize {
    text.width()
}

/// `text` with control characters (escape sequences from a server-side
/// string, say) shown as `?`, so it cannot move the cursor or recolour the
/// terminal.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// `text` cut to at most `max` terminal columns, ending in `…` when
/// something was cut.
pub fn elide(text: &str, max: usize) -> String {
    if text_width(text) <= max {
        return text.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > max {
            break;
        }
        out.push(c);
        used += w;
    }
    if max > 0 {
        out.push('…');
    }
    out
}

/// A column of the stage table, after the stage name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Col {
    Bar,
    Done,
    Updated,
    InFlight,
    Failed,
    RolledBack,
}

impl Col {
    fn heading(self) -> &'static str {
        match self {
            Self::Bar => "PROGRESS",
            Self::Done => "DONE",
            Self::Updated => "UPDATED",
            Self::InFlight => "IN FLIGHT",
            Self::Failed => "FAILED",
            Self::RolledBack => "ROLLED BACK",
        }
    }

    fn cell(self, c: &CountsJson) -> String {
        match self {
            Self::Bar => String::new(),
            Self::Done => {
                let done = c.updated + c.failed + c.rolled_back + c.excluded;
                format!("{}%", (done * 100).checked_div(c.targeted).unwrap_or(0))
            }
            Self::Updated => format!("{}/{}", c.updated, c.targeted),
            Self::InFlight => (c.offered + c.installed).to_string(),
            Self::Failed => c.failed.to_string(),
            Self::RolledBack => c.rolled_back.to_string(),
        }
    }
}

/// Every column, in display order.
const COLUMNS: [Col; 6] = [
    Col::Bar,
    Col::Done,
    Col::Updated,
    Col::InFlight,
    Col::Failed,
    Col::RolledBack,
];

/// The columns a narrow terminal gives up, first to last: what the bar
/// already shows goes before what only a number tells.
const DROP_ORDER: [Col; 4] = [Col::Done, Col::InFlight, Col::RolledBack, Col::Failed];

/// The stage table's shape for one width: which columns, how wide the bar.
struct Layout {
    cols: Vec<Col>,
    bar: usize,
    /// Width of each column in `cols` (the bar's without its brackets).
    widths: Vec<usize>,
    name_width: usize,
}

impl Layout {
    /// The richest layout whose lines fit in `avail` columns: the widest bar
    /// (down to [`MIN_BAR_WIDTH`]) with every column, then fewer columns,
    /// then no bar. `None` when not even the stage name and the updated
    /// count fit.
    fn fit(names: &[String], counts: &[CountsJson], avail: usize) -> Option<Self> {
        let name_width = names
            .iter()
            .map(|n| text_width(n))
            .chain([text_width("STAGE")])
            .max()
            .unwrap_or(0);
        for with_bar in [true, false] {
            for dropped in 0..=DROP_ORDER.len() {
                let cols: Vec<Col> = COLUMNS
                    .into_iter()
                    .filter(|c| with_bar || *c != Col::Bar)
                    .filter(|c| !DROP_ORDER[..dropped].contains(c))
                    .collect();
                let widths: Vec<usize> = cols
                    .iter()
                    .map(|col| match col {
                        Col::Bar => 0,
                        _ => counts
                            .iter()
                            .map(|c| col.cell(c).len())
                            .chain([col.heading().len()])
                            .max()
                            .unwrap_or(0),
                    })
                    .collect();
                // Marker and space, the name, then two spaces before each
                // column; the bar adds its brackets (and later its cells).
                let fixed = 2
                    + name_width
                    + widths.iter().map(|w| w + 2).sum::<usize>()
                    + if with_bar { 2 } else { 0 };
                let bar = if with_bar {
                    if fixed + MIN_BAR_WIDTH > avail {
                        continue;
                    }
                    (avail - fixed).min(BAR_WIDTH)
                } else if fixed > avail {
                    continue;
                } else {
                    0
                };
                return Some(Self {
                    cols,
                    bar,
                    widths,
                    name_width,
                });
            }
        }
        None
    }

    fn heading(&self) -> String {
        let mut line = format!("  {:<w$}", "STAGE", w = self.name_width);
        for (col, width) in self.cols.iter().zip(&self.widths) {
            line.push_str("  ");
            match col {
                Col::Bar => line.push_str(&format!("{:<w$}", col.heading(), w = self.bar + 2)),
                _ => line.push_str(&format!("{:>width$}", col.heading())),
            }
        }
        line.trim_end().to_owned()
    }

    fn row(&self, marker: char, name: &str, c: &CountsJson, colour: bool) -> String {
        let pad = self.name_width.saturating_sub(text_width(name));
        let mut line = format!("{marker} {name}{:pad$}", "");
        for (col, width) in self.cols.iter().zip(&self.widths) {
            line.push_str("  ");
            match col {
                Col::Bar => line.push_str(&bar(c, self.bar, colour)),
                _ => line.push_str(&format!("{:>width$}", col.cell(c))),
            }
        }
        line
    }
}

/// The block of lines the terminal view redraws, fitted to `size`: the
/// rollout's header, its pause reason if any, and a table with one bar per
/// stage. No line is wider than `size.cols - 1` and the block is shorter
/// than the terminal, so it can always be redrawn in place.
pub fn render_block(r: &pb::RolloutInfo, size: TermSize, colour: bool) -> Vec<String> {
    let j = rollout_json(r);
    let avail = size.line_width();
    let id = printable(&j.id);
    let state = state_word(r.state);
    let position = printable(&stage_position(r));
    let full = format!(
        "rollout {id}  release {}  {state}  stage {position}",
        printable(&j.release)
    );
    let header = if text_width(&full) <= avail {
        full
    } else {
        elide(&format!("rollout {id}  {state}  stage {position}"), avail)
    };
    let mut head = vec![header];
    if let Some(reason) = &j.pause_reason {
        head.push(elide(
            &format!("pause reason: {}", printable(reason)),
            avail,
        ));
    }

    let names: Vec<String> = j.stages.iter().map(|s| printable(&s.name)).collect();
    let counts: Vec<CountsJson> = j
        .stages
        .iter()
        .map(|s| s.counts.unwrap_or_default())
        .collect();
    let current = (!has_ended(r)).then_some(r.current_stage as usize);
    let mut rows: Vec<String> = Vec::new();
    match Layout::fit(&names, &counts, avail) {
        Some(layout) => {
            head.push(layout.heading());
            for (i, (name, c)) in names.iter().zip(&counts).enumerate() {
                let marker = if Some(i) == current { '>' } else { ' ' };
                rows.push(layout.row(marker, name, c, colour));
            }
        }
        None => {
            for (i, (name, c)) in names.iter().zip(&counts).enumerate() {
                let marker = if Some(i) == current { '>' } else { ' ' };
                rows.push(elide(
                    &format!("{marker} {name} {}/{}", c.updated, c.targeted),
                    avail,
                ));
            }
        }
    }

    // Keep the block below the terminal's height (the cursor cannot move up
    // past the top row): the stages around the current one, and a count of
    // the rest.
    let max_lines = size.rows.saturating_sub(1).max(1);
    if head.len() + rows.len() > max_lines {
        let room = max_lines.saturating_sub(head.len() + 1);
        let focus = current.unwrap_or(rows.len().saturating_sub(1));
        let start = focus
            .saturating_sub(room / 2)
            .min(rows.len().saturating_sub(room));
        let hidden = rows.len() - room;
        rows = rows.into_iter().skip(start).take(room).collect();
        rows.push(elide(&format!("  … {hidden} more stages"), avail));
    }
    head.extend(rows);
    head.truncate(max_lines);
    head
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
    /// The terminal's size; `None`: read the size of stdout at every redraw.
    size: Option<TermSize>,
    /// Colours in the terminal view (off with `NO_COLOR`).
    colour: bool,
    block_lines: usize,
    last: Option<RolloutJson>,
}

impl<W: std::io::Write> Screen<W> {
    fn new(out: W, mode: Mode, size: Option<TermSize>, colour: bool) -> Self {
        Self {
            out,
            mode,
            size,
            colour,
            block_lines: 0,
            last: None,
        }
    }

    fn size(&self) -> TermSize {
        self.size.unwrap_or_else(TermSize::of_stdout)
    }

    fn write(&mut self, text: &str) -> anyhow::Result<()> {
        let out = &mut self.out;
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(anyhow!(BrokenPipe)),
            other => Ok(other?),
        }
    }

    /// Back to the start of the block drawn last, and clear from there down
    /// (carriage return, cursor up, erase below: VT100 sequences).
    fn erase(&self) -> String {
        if self.block_lines == 0 {
            String::new()
        } else {
            format!("\r\x1b[{}A\x1b[J", self.block_lines)
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
                let width = self.size().line_width();
                let mut text = self.erase();
                text.push_str(&elide(&printable(&event_line(e)), width));
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
        let lines = render_block(r, self.size(), self.colour);
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
    } else if std::io::stdout().is_terminal()
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
    {
        Mode::Terminal
    } else {
        Mode::Lines
    };
    let colour = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut screen = Screen::new(std::io::stdout(), mode, None, colour);
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
                None => bail!(
                    "watching rollout {id}: the server closed the event stream (it stopped or \
                     restarted)\n  hint: start the watch again once the server is back"
                ),
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

    const SIZE_80: TermSize = TermSize { cols: 80, rows: 24 };

    #[test]
    fn terminal_redraws_the_block_in_place() {
        let mut screen = Screen::new(Vec::new(), Mode::Terminal, Some(SIZE_80), true);
        screen.status(&rollout(0)).unwrap();
        // Header, column headings, two stages.
        assert_eq!(screen.block_lines, 4);
        let first = String::from_utf8(std::mem::take(&mut screen.out)).unwrap();
        assert!(
            !first.contains("\x1b[4A"),
            "nothing to erase yet: {first:?}"
        );
        screen.event(&event(), Some(&rollout(1))).unwrap();
        let text = String::from_utf8(std::mem::take(&mut screen.out)).unwrap();
        // Erase the 4 block lines, print the event, redraw the block below it.
        assert!(
            text.starts_with("\r\x1b[4A\x1b[J00:00:00Z  confirmed  device d1\n"),
            "{text:?}"
        );
        assert!(text.contains("1/4"), "{text:?}");
        assert!(text.contains("\x1b[32m"), "colours on a terminal: {text:?}");
        assert_eq!(screen.block_lines, 4);

        // NO_COLOR: the same picture without colours.
        let mut screen = Screen::new(Vec::new(), Mode::Terminal, Some(SIZE_80), false);
        screen.status(&rollout(1)).unwrap();
        let text = String::from_utf8(screen.out).unwrap();
        assert!(!text.contains("\x1b[3"), "{text:?}");
    }

    /// A rollout whose text is as long as it gets: long ids and names, a
    /// long pause reason, five-digit counts.
    fn wordy(stages: usize) -> pb::RolloutInfo {
        pb::RolloutInfo {
            rollout_id: "fw-1.1.0-eu".into(),
            release_id: "aloft-sample-1.1.0".into(),
            state: pb::RolloutState::Paused as i32,
            pause_reason: "stage 1 (10%): 3 of 20 devices failed (150‰ > 100‰), and the operator \
                           asked to look at the logs first"
                .into(),
            current_stage: 1,
            stages: (0..stages)
                .map(|i| pb::RolloutStage {
                    name: if i == 0 {
                        "test".into()
                    } else {
                        format!("wave-{i}")
                    },
                    percent: 100,
                    ..Default::default()
                })
                .collect(),
            counts: (0..stages)
                .map(|i| pb::StageCounts {
                    stage: if i == 0 {
                        "test".into()
                    } else {
                        format!("wave-{i}")
                    },
                    targeted: 12_000,
                    updated: 10_500,
                    offered: 700,
                    installed: 300,
                    failed: 321,
                    rolled_back: 179,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn widths(block: &[String]) -> Vec<usize> {
        block.iter().map(|l| text_width(&strip_colour(l))).collect()
    }

    fn strip_colour(line: &str) -> String {
        let mut out = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn blocks_fit_every_terminal_width() {
        for cols in 8..=200 {
            for r in [rollout(2), wordy(3)] {
                let size = TermSize { cols, rows: 24 };
                let block = render_block(&r, size, true);
                for (line, w) in block.iter().zip(widths(&block)) {
                    assert!(w < cols, "{cols} columns: {w} wide: {line:?}");
                }
                assert!(block.len() < 24, "{block:?}");
            }
        }
    }

    #[test]
    fn eighty_columns_show_every_column() {
        let block = render_block(&wordy(3), SIZE_80, false);
        assert!(
            block[0].starts_with(
                "rollout fw-1.1.0-eu  release aloft-sample-1.1.0  paused  stage 2/3 wave-1"
            ),
            "{block:#?}"
        );
        assert!(
            block[1].starts_with("pause reason: stage 1 (10%)") && block[1].ends_with('…'),
            "{block:#?}"
        );
        for heading in [
            "STAGE",
            "PROGRESS",
            "DONE",
            "UPDATED",
            "IN FLIGHT",
            "FAILED",
            "ROLLED BACK",
        ] {
            assert!(block[2].contains(heading), "{heading}: {block:#?}");
        }
        assert!(block[4].starts_with("> wave-1  [####"), "{block:#?}");
        assert!(
            block[4].ends_with("  91%  10500/12000       1000     321          179"),
            "{block:#?}"
        );
        assert!(widths(&block).iter().all(|w| *w <= 79), "{block:#?}");
        // The bar gets the room that is left, up to its full width.
        let wide = render_block(
            &wordy(3),
            TermSize {
                cols: 200,
                rows: 24,
            },
            false,
        );
        assert!(
            wide[4].contains(&format!("[{}", "#".repeat(26))),
            "{wide:#?}"
        );
        assert!(
            wide[1].ends_with("logs first"),
            "no elision when it fits: {wide:#?}"
        );
    }

    #[test]
    fn narrow_terminals_drop_columns_before_the_counts() {
        let block = render_block(&wordy(3), TermSize { cols: 60, rows: 24 }, false);
        assert!(
            !block[2].contains("DONE") && !block[2].contains("IN FLIGHT"),
            "{block:#?}"
        );
        assert!(
            block[2].contains("UPDATED") && block[2].contains("FAILED"),
            "{block:#?}"
        );
        assert!(block[4].contains("10500/12000"), "{block:#?}");
        // The header loses the release before it is cut.
        assert_eq!(block[0], "rollout fw-1.1.0-eu  paused  stage 2/3 wave-1");
        let block = render_block(&wordy(3), TermSize { cols: 30, rows: 24 }, false);
        assert!(
            !block[2].contains("PROGRESS"),
            "no room for a bar: {block:#?}"
        );
        assert!(block[4].contains("10500/12000"), "{block:#?}");
    }

    #[test]
    fn tall_blocks_keep_the_current_stage_in_view() {
        let mut r = wordy(30);
        r.current_stage = 20;
        let block = render_block(
            &r,
            TermSize {
                cols: 100,
                rows: 12,
            },
            false,
        );
        assert_eq!(block.len(), 11, "{block:#?}");
        assert!(
            block.iter().any(|l| l.starts_with("> wave-20 ")),
            "{block:#?}"
        );
        assert!(block.last().unwrap().contains("more stages"), "{block:#?}");
    }

    #[test]
    fn server_text_cannot_drive_the_terminal() {
        let mut r = rollout(1);
        r.pause_reason = "bad\x1b[2Jreason\n".into();
        let block = render_block(&r, SIZE_80, false);
        assert!(
            block
                .iter()
                .all(|l| !l.contains('\x1b') && !l.contains('\n')),
            "{block:?}"
        );
        assert!(block[1].contains("bad?[2Jreason?"), "{block:?}");
        assert_eq!(elide("abcdef", 4), "abc…");
        assert_eq!(elide("abcd", 4), "abcd");
        assert_eq!(elide("日本語の", 5), "日本…");
    }

    #[test]
    fn line_modes_print_changes_only() {
        let mut screen = Screen::new(Vec::new(), Mode::Lines, None, true);
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

        let mut screen = Screen::new(Vec::new(), Mode::Json, None, true);
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
        let block = render_block(&r, SIZE_80, false);
        assert_eq!(block.len(), 4, "{block:?}");
        assert_eq!(block[1], "pause reason: too many failures");
        assert!(block[2].starts_with("  STAGE  PROGRESS"), "{block:?}");
        assert!(block[3].starts_with("> all    ["), "{block:?}");
    }
}
