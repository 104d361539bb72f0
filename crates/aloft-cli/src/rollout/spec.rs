//! Parsing of the rollout command line: the `--stages` spec, `--window`,
//! and failure-rate percentages. Pure functions with a typed error, so every
//! refusal is tested without a server.
//!
//! Stage spec grammar (stages separated by `,`):
//!
//! ```text
//! STAGES  = STAGE ("," STAGE)*
//! STAGE   = [NAME "="] TARGET (":" KEY "=" VALUE)*
//! TARGET  = "test" | 1..100 "%"
//! KEY     = "soak" (duration) | "min-sample" (count) | "max-failure" (percent)
//! ```
//!
//! e.g. `test,canary=1%:soak=4h,10%,50%:max-failure=2%,100%`.

use std::time::Duration;

use aloft_protocol::pb;
use thiserror::Error;

use crate::duration::parse_duration;

/// Most stages a rollout may have.
pub const MAX_STAGES: usize = 16;

/// Longest stage name.
pub const MAX_NAME_LEN: usize = 32;

/// What was wrong with a `--stages`, `--window` or percentage argument.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpecError {
    /// The stage list is empty.
    #[error("no stages given: use e.g. \"test,1%,10%,50%,100%\"")]
    NoStages,
    /// Two commas in a row, or a trailing comma.
    #[error("stage {index} is empty (two commas in a row or a trailing comma?)")]
    EmptyStage {
        /// 1-based stage position.
        index: usize,
    },
    /// More than [`MAX_STAGES`] stages.
    #[error("{count} stages given; at most {MAX_STAGES} are allowed")]
    TooManyStages {
        /// How many were given.
        count: usize,
    },
    /// The target is neither `test` nor a percentage.
    #[error("stage {index}: {text:?} is not a stage target: use `test` or a percentage like 10%")]
    BadTarget {
        /// 1-based stage position.
        index: usize,
        /// What was given.
        text: String,
    },
    /// A stage percentage outside 1..=100 or with a fraction.
    #[error("stage {index}: {text:?} must be a whole percentage from 1% to 100%")]
    StagePercent {
        /// 1-based stage position.
        index: usize,
        /// What was given.
        text: String,
    },
    /// Stage percentages must grow: each covers the stages before it.
    #[error(
        "stage {index}: {percent}% does not exceed the previous stage's {previous}%; \
         percentages are cumulative and must increase"
    )]
    NotIncreasing {
        /// 1-based stage position.
        index: usize,
        /// This stage's percentage.
        percent: u32,
        /// The previous stage's percentage.
        previous: u32,
    },
    /// A `test` stage after a percentage stage.
    #[error("stage {index}: the `test` stage must come first")]
    TestNotFirst {
        /// 1-based stage position.
        index: usize,
    },
    /// A stage name with characters other than letters, digits, `-`, `_`.
    #[error("stage {index}: name {name:?} must be 1 to {MAX_NAME_LEN} letters, digits, '-' or '_'")]
    BadName {
        /// 1-based stage position.
        index: usize,
        /// What was given.
        name: String,
    },
    /// Two stages with the same name.
    #[error("stage {index}: name {name:?} is used twice")]
    DuplicateName {
        /// 1-based stage position.
        index: usize,
        /// The repeated name.
        name: String,
    },
    /// An override that is not `KEY=VALUE`.
    #[error("stage {index}: {text:?} is not KEY=VALUE (keys: soak, min-sample, max-failure)")]
    BadOverride {
        /// 1-based stage position.
        index: usize,
        /// What was given.
        text: String,
    },
    /// An override key that does not exist.
    #[error("stage {index}: unknown setting {key:?} (use soak, min-sample or max-failure)")]
    UnknownKey {
        /// 1-based stage position.
        index: usize,
        /// What was given.
        key: String,
    },
    /// The same override twice in one stage.
    #[error("stage {index}: {key} is set twice")]
    DuplicateKey {
        /// 1-based stage position.
        index: usize,
        /// The repeated key.
        key: String,
    },
    /// An override value that does not parse.
    #[error("stage {index}: {key}: {reason}")]
    BadValue {
        /// 1-based stage position.
        index: usize,
        /// The key whose value is wrong.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// A failure-rate percentage that does not parse.
    #[error(
        "invalid percentage {text:?}: {reason} (use e.g. 5%, 0.5% or 0%; tenths of a percent at most)"
    )]
    BadPercent {
        /// What was given.
        text: String,
        /// What was wrong.
        reason: &'static str,
    },
    /// A window that is not `HH:MM-HH:MM`.
    #[error(
        "invalid window {text:?}: {reason} (use HH:MM-HH:MM in the device's local time, e.g. 02:00-04:00)"
    )]
    BadWindow {
        /// What was given.
        text: String,
        /// What was wrong.
        reason: String,
    },
}

/// The gate settings a stage uses unless it overrides them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageDefaults {
    /// Time a stage soaks before it may advance by itself.
    pub soak: Duration,
    /// Finished devices needed before the failure rate counts.
    pub min_sample: u32,
    /// Failure rate that pauses the rollout, in parts per thousand.
    pub max_failure_permille: u32,
}

impl Default for StageDefaults {
    fn default() -> Self {
        Self {
            soak: Duration::from_secs(3600),
            min_sample: 10,
            max_failure_permille: 50,
        }
    }
}

/// What a stage covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Only devices flagged as test devices.
    Test,
    /// This cumulative share (1-100) of the targeted devices.
    Percent(u32),
}

/// One parsed stage; `None` settings take the rollout's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageSpec {
    /// Display name (defaults to `test` or `N%`).
    pub name: String,
    /// Who is in the stage.
    pub target: Target,
    /// `soak=` override.
    pub soak: Option<Duration>,
    /// `min-sample=` override.
    pub min_sample: Option<u32>,
    /// `max-failure=` override (permille).
    pub max_failure_permille: Option<u32>,
}

/// The parsed `--stages` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagesSpec(pub Vec<StageSpec>);

impl StagesSpec {
    /// The wire stages: each setting not overridden takes `defaults`, except
    /// that a `test` stage defaults to a min-sample of 1 (every test device
    /// counts) unless `--min-sample` or `min-sample=` says otherwise.
    pub fn resolve(
        &self,
        defaults: &StageDefaults,
        min_sample_given: bool,
    ) -> Vec<pb::RolloutStage> {
        self.0
            .iter()
            .map(|s| {
                let test = s.target == Target::Test;
                let min_sample = s.min_sample.unwrap_or(if test && !min_sample_given {
                    1
                } else {
                    defaults.min_sample
                });
                pb::RolloutStage {
                    name: s.name.clone(),
                    percent: match s.target {
                        Target::Test => 0,
                        Target::Percent(p) => p,
                    },
                    test_devices_only: test,
                    soak_secs: s.soak.unwrap_or(defaults.soak).as_secs(),
                    min_sample,
                    max_failure_permille: s
                        .max_failure_permille
                        .unwrap_or(defaults.max_failure_permille),
                }
            })
            .collect()
    }
}

impl std::str::FromStr for StagesSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_stages(s)
    }
}

/// The default stage list.
pub const DEFAULT_STAGES: &str = "test,1%,10%,50%,100%";

/// Parses a `--stages` spec (see the module docs for the grammar).
pub fn parse_stages(text: &str) -> Result<StagesSpec, SpecError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(SpecError::NoStages);
    }
    let items: Vec<&str> = text.split(',').map(str::trim).collect();
    if items.len() > MAX_STAGES {
        return Err(SpecError::TooManyStages { count: items.len() });
    }
    let mut stages: Vec<StageSpec> = Vec::with_capacity(items.len());
    let mut previous: Option<u32> = None;
    for (i, item) in items.iter().enumerate() {
        let index = i + 1;
        if item.is_empty() {
            return Err(SpecError::EmptyStage { index });
        }
        let mut parts = item.split(':').map(str::trim);
        let head = parts.next().unwrap_or_default();
        let (name, target_text) = match head.split_once('=') {
            Some((name, target)) => (Some(name.trim()), target.trim()),
            None => (None, head),
        };
        let target = parse_target(index, target_text)?;
        match target {
            Target::Test if index != 1 => return Err(SpecError::TestNotFirst { index }),
            Target::Test => {}
            Target::Percent(percent) => {
                if let Some(previous) = previous
                    && percent <= previous
                {
                    return Err(SpecError::NotIncreasing {
                        index,
                        percent,
                        previous,
                    });
                }
                previous = Some(percent);
            }
        }
        let name = match name {
            Some(name) => {
                let ok = !name.is_empty()
                    && name.len() <= MAX_NAME_LEN
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if !ok {
                    return Err(SpecError::BadName {
                        index,
                        name: name.to_owned(),
                    });
                }
                name.to_owned()
            }
            None => match target {
                Target::Test => "test".to_owned(),
                Target::Percent(p) => format!("{p}%"),
            },
        };
        if stages.iter().any(|s| s.name == name) {
            return Err(SpecError::DuplicateName { index, name });
        }
        let mut stage = StageSpec {
            name,
            target,
            soak: None,
            min_sample: None,
            max_failure_permille: None,
        };
        for part in parts {
            apply_override(index, part, &mut stage)?;
        }
        stages.push(stage);
    }
    Ok(StagesSpec(stages))
}

fn parse_target(index: usize, text: &str) -> Result<Target, SpecError> {
    if text.eq_ignore_ascii_case("test") {
        return Ok(Target::Test);
    }
    let Some(number) = text.strip_suffix('%') else {
        return Err(SpecError::BadTarget {
            index,
            text: text.to_owned(),
        });
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(SpecError::BadTarget {
            index,
            text: text.to_owned(),
        });
    }
    match number.parse::<u32>() {
        Ok(p @ 1..=100) => Ok(Target::Percent(p)),
        _ => Err(SpecError::StagePercent {
            index,
            text: text.to_owned(),
        }),
    }
}

fn apply_override(index: usize, part: &str, stage: &mut StageSpec) -> Result<(), SpecError> {
    let Some((key, value)) = part.split_once('=') else {
        return Err(SpecError::BadOverride {
            index,
            text: part.to_owned(),
        });
    };
    let (key, value) = (key.trim(), value.trim());
    let bad = |reason: String| SpecError::BadValue {
        index,
        key: key.to_owned(),
        reason,
    };
    let already = match key {
        "soak" => stage
            .soak
            .replace(parse_duration(value).map_err(bad)?)
            .is_some(),
        "min-sample" => {
            let n = value
                .parse::<u32>()
                .map_err(|_| bad(format!("{value:?} is not a whole number of devices")))?;
            stage.min_sample.replace(n).is_some()
        }
        "max-failure" => {
            let p = parse_permille(value).map_err(|e| bad(e.to_string()))?;
            stage.max_failure_permille.replace(p).is_some()
        }
        _ => {
            return Err(SpecError::UnknownKey {
                index,
                key: key.to_owned(),
            });
        }
    };
    if already {
        return Err(SpecError::DuplicateKey {
            index,
            key: key.to_owned(),
        });
    }
    Ok(())
}

/// Parses a failure rate such as `5%`, `0.5%` or `0%` into parts per
/// thousand (the wire unit). The `%` is required, at most one decimal.
pub fn parse_permille(text: &str) -> Result<u32, SpecError> {
    let bad = |reason| SpecError::BadPercent {
        text: text.to_owned(),
        reason,
    };
    let t = text.trim();
    let number = t
        .strip_suffix('%')
        .ok_or_else(|| bad("missing the % sign"))?;
    let (whole, tenth) = match number.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (number, None),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("not a number"));
    }
    let whole: u32 = whole.parse().map_err(|_| bad("too large"))?;
    let tenth = match tenth {
        None => 0,
        Some(f) if f.len() == 1 && f.as_bytes()[0].is_ascii_digit() => {
            u32::from(f.as_bytes()[0] - b'0')
        }
        Some(f) if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(bad("not a number"));
        }
        Some(_) => return Err(bad("more than one decimal place")),
    };
    let permille = whole
        .checked_mul(10)
        .and_then(|p| p.checked_add(tenth))
        .ok_or_else(|| bad("too large"))?;
    if permille > 1000 {
        return Err(bad("more than 100%"));
    }
    Ok(permille)
}

/// Renders parts per thousand as a percentage: `50` -> `5%`, `25` -> `2.5%`.
pub fn permille_text(permille: u32) -> String {
    if permille.is_multiple_of(10) {
        format!("{}%", permille / 10)
    } else {
        format!("{}.{}%", permille / 10, permille % 10)
    }
}

/// Parses `HH:MM-HH:MM` (device-local time; `24:00` allowed as the end;
/// an end before the start wraps past midnight).
pub fn parse_window(text: &str) -> Result<pb::MaintenanceWindow, SpecError> {
    let bad = |reason: &str| SpecError::BadWindow {
        text: text.to_owned(),
        reason: reason.to_owned(),
    };
    let (start, end) = text
        .trim()
        .split_once('-')
        .ok_or_else(|| bad("missing '-' between start and end"))?;
    let start = parse_clock(start.trim(), false).map_err(|r| bad(&format!("start {r}")))?;
    let end = parse_clock(end.trim(), true).map_err(|r| bad(&format!("end {r}")))?;
    let end = end % 1440;
    if start == end {
        return Err(bad(
            "start and end are equal, so the window would be empty; omit --window to allow any time",
        ));
    }
    Ok(pb::MaintenanceWindow {
        start_minute: start,
        end_minute: end,
    })
}

fn parse_clock(text: &str, allow_24: bool) -> Result<u32, String> {
    let (h, m) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not HH:MM"))?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(h) || m.len() != 2 || !digits(m) {
        return Err(format!("{text:?} is not HH:MM"));
    }
    let (h, m): (u32, u32) = (h.parse().unwrap_or(99), m.parse().unwrap_or(99));
    if m > 59 {
        return Err(format!("{text:?} has minutes past 59"));
    }
    match h {
        0..=23 => Ok(h * 60 + m),
        24 if allow_24 && m == 0 => Ok(1440),
        _ => Err(format!("{text:?} has an hour past 23")),
    }
}

/// Renders a window as `HH:MM-HH:MM`.
pub fn window_text(w: &pb::MaintenanceWindow) -> String {
    format!(
        "{:02}:{:02}-{:02}:{:02}",
        w.start_minute / 60,
        w.start_minute % 60,
        w.end_minute / 60,
        w.end_minute % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(spec: &StagesSpec) -> Vec<&str> {
        spec.0.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn default_stages_parse_and_resolve() {
        let spec = parse_stages(DEFAULT_STAGES).unwrap();
        assert_eq!(names(&spec), ["test", "1%", "10%", "50%", "100%"]);
        let stages = spec.resolve(&StageDefaults::default(), false);
        assert!(stages[0].test_devices_only);
        assert_eq!(stages[0].percent, 0);
        assert_eq!(
            stages[0].min_sample, 1,
            "test stage: every test device counts"
        );
        assert_eq!(stages[1].percent, 1);
        assert_eq!(stages[1].min_sample, 10);
        assert_eq!(stages[4].percent, 100);
        assert!(stages.iter().all(|s| s.soak_secs == 3600));
        assert!(stages.iter().all(|s| s.max_failure_permille == 50));
        // An explicit --min-sample applies to the test stage too.
        let stages = spec.resolve(
            &StageDefaults {
                min_sample: 3,
                ..StageDefaults::default()
            },
            true,
        );
        assert_eq!(stages[0].min_sample, 3);
    }

    #[test]
    fn names_and_overrides() {
        let spec = parse_stages(
            " TEST , canary=1%:soak=4h:min-sample=3 , 10% , half=50%:max-failure=2.5% , 100%:soak=0s ",
        )
        .unwrap();
        assert_eq!(names(&spec), ["test", "canary", "10%", "half", "100%"]);
        let stages = spec.resolve(&StageDefaults::default(), false);
        assert_eq!(stages[1].soak_secs, 4 * 3600);
        assert_eq!(stages[1].min_sample, 3);
        assert_eq!(stages[3].max_failure_permille, 25);
        assert_eq!(stages[3].min_sample, 10);
        assert_eq!(stages[4].soak_secs, 0);
        assert_eq!(parse_stages("100%").unwrap().0.len(), 1);
        assert_eq!(
            "5%,20%".parse::<StagesSpec>().unwrap().0[1].target,
            Target::Percent(20)
        );
    }

    #[test]
    fn every_bad_stage_spec_is_refused() {
        use SpecError as E;
        type Check = fn(&SpecError) -> bool;
        let cases: Vec<(&str, Check, &str)> = vec![
            ("", |e| matches!(e, E::NoStages), "no stages"),
            ("  ", |e| matches!(e, E::NoStages), "no stages"),
            (
                "1%,,10%",
                |e| matches!(e, E::EmptyStage { index: 2 }),
                "stage 2 is empty",
            ),
            (
                "1%,10%,",
                |e| matches!(e, E::EmptyStage { index: 3 }),
                "trailing comma",
            ),
            (
                "half",
                |e| matches!(e, E::BadTarget { .. }),
                "not a stage target",
            ),
            (
                "10",
                |e| matches!(e, E::BadTarget { .. }),
                "percentage like 10%",
            ),
            (
                "-5%",
                |e| matches!(e, E::BadTarget { .. }),
                "not a stage target",
            ),
            (
                "0%",
                |e| matches!(e, E::StagePercent { .. }),
                "from 1% to 100%",
            ),
            (
                "101%",
                |e| matches!(e, E::StagePercent { .. }),
                "from 1% to 100%",
            ),
            (
                "0.5%",
                |e| matches!(e, E::StagePercent { .. }),
                "whole percentage",
            ),
            (
                "10%,10%",
                |e| matches!(e, E::NotIncreasing { index: 2, .. }),
                "must increase",
            ),
            (
                "50%,10%",
                |e| matches!(e, E::NotIncreasing { .. }),
                "does not exceed the previous stage's 50%",
            ),
            (
                "1%,test",
                |e| matches!(e, E::TestNotFirst { index: 2 }),
                "must come first",
            ),
            (
                "test,test",
                |e| matches!(e, E::TestNotFirst { .. }),
                "must come first",
            ),
            (
                "a b=1%",
                |e| matches!(e, E::BadName { .. }),
                "letters, digits",
            ),
            ("=1%", |e| matches!(e, E::BadName { .. }), "letters, digits"),
            (
                "x=1%,x=2%",
                |e| matches!(e, E::DuplicateName { .. }),
                "used twice",
            ),
            (
                "10%=1%,10%",
                |e| matches!(e, E::BadName { .. }),
                "letters, digits",
            ),
            (
                "1%:soak",
                |e| matches!(e, E::BadOverride { .. }),
                "not KEY=VALUE",
            ),
            (
                "1%:speed=2",
                |e| matches!(e, E::UnknownKey { .. }),
                "unknown setting \"speed\"",
            ),
            (
                "1%:soak=1h:soak=2h",
                |e| matches!(e, E::DuplicateKey { .. }),
                "soak is set twice",
            ),
            (
                "1%:soak=1x",
                |e| matches!(e, E::BadValue { .. }),
                "soak: invalid duration",
            ),
            (
                "1%:soak=",
                |e| matches!(e, E::BadValue { .. }),
                "empty duration",
            ),
            (
                "1%:min-sample=-1",
                |e| matches!(e, E::BadValue { .. }),
                "whole number of devices",
            ),
            (
                "1%:max-failure=5",
                |e| matches!(e, E::BadValue { .. }),
                "missing the % sign",
            ),
            (
                "1%:max-failure=200%",
                |e| matches!(e, E::BadValue { .. }),
                "more than 100%",
            ),
        ];
        for (text, check, needle) in cases {
            let err = parse_stages(text).unwrap_err();
            assert!(check(&err), "{text:?}: unexpected {err:?}");
            let msg = err.to_string();
            assert!(msg.contains(needle), "{text:?}: {msg:?} lacks {needle:?}");
        }
        let many = vec!["x"; MAX_STAGES + 1].join(",");
        assert!(matches!(
            parse_stages(&many),
            Err(SpecError::TooManyStages { count: 17 })
        ));
    }

    #[test]
    fn percentages_become_permille() {
        assert_eq!(parse_permille("5%"), Ok(50));
        assert_eq!(parse_permille("0%"), Ok(0));
        assert_eq!(parse_permille("2.5%"), Ok(25));
        assert_eq!(parse_permille(" 100% "), Ok(1000));
        assert_eq!(parse_permille("0.1%"), Ok(1));
        assert_eq!(permille_text(50), "5%");
        assert_eq!(permille_text(25), "2.5%");
        for (bad, why) in [
            ("5", "missing the % sign"),
            ("%", "not a number"),
            ("x%", "not a number"),
            ("-1%", "not a number"),
            ("1.%", "not a number"),
            (".5%", "not a number"),
            ("1.x%", "not a number"),
            ("0.25%", "more than one decimal place"),
            ("100.1%", "more than 100%"),
            ("99999999999%", "too large"),
            ("429496730%", "too large"),
        ] {
            let err = parse_permille(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn windows_parse_and_wrap() {
        let w = parse_window("02:00-04:00").unwrap();
        assert_eq!((w.start_minute, w.end_minute), (120, 240));
        let w = parse_window(" 22:30 - 1:15 ").unwrap();
        assert_eq!((w.start_minute, w.end_minute), (1350, 75));
        let w = parse_window("22:00-24:00").unwrap();
        assert_eq!((w.start_minute, w.end_minute), (1320, 0));
        assert_eq!(
            window_text(&parse_window("2:05-4:00").unwrap()),
            "02:05-04:00"
        );
        for (bad, why) in [
            ("02:00", "missing '-'"),
            ("0200-0400", "is not HH:MM"),
            ("02:0-04:00", "is not HH:MM"),
            ("ab:cd-04:00", "is not HH:MM"),
            ("02:60-04:00", "minutes past 59"),
            ("25:00-04:00", "hour past 23"),
            ("24:00-04:00", "hour past 23"),
            ("02:00-24:30", "hour past 23"),
            ("03:00-03:00", "start and end are equal"),
            ("00:00-24:00", "start and end are equal"),
            ("-04:00", "start"),
        ] {
            let err = parse_window(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
            assert!(err.contains("HH:MM-HH:MM"), "{bad:?}: {err}");
        }
    }
}
