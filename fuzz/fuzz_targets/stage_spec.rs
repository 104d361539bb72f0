//! The operator CLI's rollout argument parsers on arbitrary text
//! (crates/aloft-cli/src/rollout/spec.rs): `parse_stages` (`--stages`),
//! `parse_permille` (`--max-failure`) and `parse_window` (`--window`).
//!
//! Properties: no panic; a parsed stage list, rendered back in the grammar
//! (names only where they differ from the default, every override), parses
//! to the same list and resolves without panicking; a parsed percentage
//! prints (`permille_text`) and re-parses to the same value, at most 1000;
//! a parsed window prints (`window_text`) and re-parses to the same window.
#![no_main]

use aloft_cli::rollout::spec::{
    StageDefaults, StagesSpec, Target, parse_permille, parse_stages, parse_window, permille_text,
    window_text,
};
use libfuzzer_sys::fuzz_target;

fn render(spec: &StagesSpec) -> String {
    let stages: Vec<String> = spec
        .0
        .iter()
        .map(|s| {
            let (target, default_name) = match s.target {
                Target::Test => ("test".to_string(), "test".to_string()),
                Target::Percent(p) => (format!("{p}%"), format!("{p}%")),
            };
            let mut out = if s.name == default_name {
                target
            } else {
                format!("{}={target}", s.name)
            };
            if let Some(soak) = s.soak {
                out.push_str(&format!(":soak={}s", soak.as_secs()));
            }
            if let Some(n) = s.min_sample {
                out.push_str(&format!(":min-sample={n}"));
            }
            if let Some(p) = s.max_failure_permille {
                out.push_str(&format!(":max-failure={}", permille_text(p)));
            }
            out
        })
        .collect();
    stages.join(",")
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = parse_stages(text) {
        let printed = render(&spec);
        assert_eq!(parse_stages(&printed).as_ref(), Ok(&spec), "{printed:?}");
        for given in [false, true] {
            assert_eq!(
                spec.resolve(&StageDefaults::default(), given).len(),
                spec.0.len()
            );
        }
    }
    if let Ok(permille) = parse_permille(text) {
        assert!(permille <= 1000);
        assert_eq!(parse_permille(&permille_text(permille)), Ok(permille));
    }
    if let Ok(window) = parse_window(text) {
        assert_ne!(window.start_minute, window.end_minute);
        assert!(window.start_minute < 1440 && window.end_minute < 1440);
        assert_eq!(parse_window(&window_text(&window)).as_ref(), Ok(&window));
    }
});
