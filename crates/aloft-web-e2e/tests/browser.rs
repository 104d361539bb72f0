//! The dashboard in headless Chromium against the real server (TLS, `--web`
//! listener) and a simulated fleet of ten real agents, two of whose
//! firmware never confirms an update. One server, one fleet and one
//! browser are shared by the scenarios, which run in order (each builds on
//! the fleet the previous one left):
//!
//! 1. a wrong token gets a clear message and nothing is kept;
//! 2. an operator signs in (the token in session storage only, never in a
//!    URL) and the fleet page shows the server's device counts;
//! 3. a rollout the operator resumes advances stage by stage on screen
//!    without a reload, and its history plot draws every sample the server
//!    returned;
//! 4. the fleet page follows the fleet to 1.1.0 (and two rollbacks), also
//!    at phone width;
//! 5. with the keyboard only (Tab to the control, the skip link), Escape
//!    cancels a pause and changes nothing;
//!    Enter confirms it and the server records the pause and its reason;
//! 6. devices: the filters give the server's answer; a device's page; an
//!    operator excludes a device and the server records it;
//! 7. releases list their signers; the events page shows live events;
//! 8. a viewer sees no control, and a control call forced from the page is
//!    refused by the server, which changes nothing.
//!
//! After every scenario the browser's console must hold no error (a CSP
//! violation, a failed module load or an exception would show there).
//! Screenshots of each page go to `target/dashboard-screenshots/`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aloft_protocol::pb;
use aloft_web_e2e::chromium::Browser;
use aloft_web_e2e::webdriver::{Session, keys};
use aloft_web_e2e::world::{World, WorldConfig, now};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const DEVICES: usize = 10;
const ROLLING_BACK: u32 = 2;

struct Ctx<'a> {
    b: &'a Session,
    w: &'a World,
    shots: PathBuf,
}

impl Ctx<'_> {
    fn js(&self, script: &str) -> Value {
        self.b
            .execute(script, json!([]))
            .expect("running a script in the page")
    }

    fn goto(&self, fragment: &str) {
        self.b
            .goto(&format!("{}#{fragment}", self.w.web_url))
            .expect("navigating");
    }

    fn text(&self, css: &str) -> String {
        self.b
            .wait_for(css, WAIT)
            .and_then(|e| e.text())
            .unwrap_or_else(|e| panic!("{css}: {e}"))
    }

    /// Polls `probe` until it returns `Some`.
    fn until<T>(&self, what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
        let until = Instant::now() + timeout;
        loop {
            if let Some(v) = probe() {
                return v;
            }
            if Instant::now() >= until {
                self.shot(&format!("timeout-{}", what.replace(' ', "-")));
                panic!("timed out after {timeout:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// Saves a screenshot of the whole page (the window grown to its
    /// height for the moment), without the passing toast.
    fn shot(&self, name: &str) {
        let size = self.js(
            "document.getElementById('toast').classList.remove('show');
             return [window.outerWidth, window.outerHeight,
                     window.outerHeight - window.innerHeight + document.documentElement.scrollHeight]",
        );
        let dim = |i: usize| size[i].as_u64().unwrap_or(900) as u32;
        let (width, height, full) = (dim(0), dim(1), dim(2).min(4000));
        let grown = full > height && self.b.set_window_size(width, full).is_ok();
        std::thread::sleep(Duration::from_millis(300));
        if let Ok(png) = self.b.screenshot() {
            let _ = std::fs::write(self.shots.join(format!("{name}.png")), png);
        }
        if grown {
            let _ = self.b.set_window_size(width, height);
        }
    }

    fn sign_in(&self, token: &str) {
        self.goto("/fleet");
        let input = self.b.wait_for("#token", WAIT).expect("the sign-in form");
        input.clear().unwrap();
        input.send_keys(token).unwrap();
        self.b.find("#signin-submit").unwrap().click().unwrap();
        self.b
            .wait_for("#role[data-role]", WAIT)
            .expect("signed in");
    }

    fn no_console_errors(&self, scenario: &str) {
        let log = self.b.browser_log().expect("reading the console");
        let errors: Vec<_> = log.iter().filter(|e| e.level == "SEVERE").collect();
        assert!(errors.is_empty(), "{scenario}: console errors: {errors:#?}");
    }

    fn count(&self, css: &str) -> usize {
        self.b.find_all(css).map(|v| v.len()).unwrap_or(0)
    }
}

/// The fleet as `aloft fleet` (and the fleet page) counts it.
#[derive(Debug, PartialEq, Eq)]
struct Fleet {
    devices: u32,
    online: u32,
    stale: u32,
    broken: u32,
    failed: u32,
    rolled_back: u32,
    versions: BTreeMap<String, u32>,
}

fn truth(devices: &[pb::DeviceInfo]) -> Fleet {
    let t = now();
    let mut f = Fleet {
        devices: 0,
        online: 0,
        stale: 0,
        broken: 0,
        failed: 0,
        rolled_back: 0,
        versions: BTreeMap::new(),
    };
    for d in devices.iter().filter(|d| !d.revoked) {
        f.devices += 1;
        f.online += u32::from(d.connected);
        f.stale += u32::from(d.last_seen == 0 || t.saturating_sub(d.last_seen) >= 86_400);
        f.broken += u32::from(d.suspected_broken != pb::BrokenReason::None as i32);
        f.failed += u32::from(d.status == pb::DeviceStatus::Failed as i32);
        f.rolled_back += u32::from(d.status == pb::DeviceStatus::RolledBack as i32);
        *f.versions.entry(d.firmware_version.clone()).or_default() += 1;
    }
    f
}

/// What the fleet page shows, or `None` while it is loading.
fn on_screen(c: &Ctx<'_>) -> Option<Fleet> {
    let v = c.js(
        "const n = (k) => document.querySelector(`[data-stat=${k}] .n`)?.textContent;
         const rows = [...document.querySelectorAll('#versions .bar-row')]
           .map((r) => [r.dataset.label, Number(r.dataset.value)]);
         return { devices: n('devices'), online: n('online'), stale: n('stale'), broken: n('broken'),
                  failed: n('failed'), rolled_back: n('rolled_back'), rows };",
    );
    let n = |k: &str| v[k].as_str()?.parse::<u32>().ok();
    Some(Fleet {
        devices: n("devices")?,
        online: n("online")?,
        stale: n("stale")?,
        broken: n("broken")?,
        failed: n("failed")?,
        rolled_back: n("rolled_back")?,
        versions: v["rows"]
            .as_array()?
            .iter()
            .map(|r| {
                (
                    r[0].as_str()
                        .unwrap_or_default()
                        .replace("(not reported)", ""),
                    r[1].as_u64().unwrap_or(0) as u32,
                )
            })
            .collect(),
    })
}

/// Waits until the fleet page and the server agree; the agreed counts.
fn fleet_matches_server(c: &Ctx<'_>) -> Fleet {
    c.until(
        "the fleet page to show the server's counts",
        Duration::from_secs(30),
        || {
            let server = truth(&c.w.devices());
            let page = on_screen(c)?;
            (page == server).then_some(server)
        },
    )
}

fn wrong_token(c: &Ctx<'_>) {
    c.goto("/fleet");
    let input = c.b.wait_for("#token", WAIT).unwrap();
    c.b.find("#signin-submit").unwrap().click().unwrap();
    assert_eq!(c.text("#signin-error"), "Paste an operator token first.");
    let bogus = format!("aloft_{}", "0".repeat(64));
    input.send_keys(&bogus).unwrap();
    input.send_keys(keys::ENTER).unwrap();
    let message = c.until("the refusal message", WAIT, || {
        let t = c.text("#signin-error");
        (!t.is_empty()).then_some(t)
    });
    assert!(
        message.contains("The server did not accept this token"),
        "{message}"
    );
    assert!(
        message.contains("unknown operator token"),
        "the server's reason is shown: {message}"
    );
    assert_eq!(
        c.js("return sessionStorage.length"),
        json!(0),
        "a refused token is not kept"
    );
    assert!(!c.b.url().unwrap().contains(&bogus));
    assert!(
        c.b.find("#nav")
            .unwrap()
            .attribute("hidden")
            .unwrap()
            .is_some(),
        "no pages before sign-in"
    );
    c.shot("signin-refused");
}

fn operator_sees_the_fleet(c: &Ctx<'_>) {
    c.sign_in(&c.w.operator_token);
    assert_eq!(c.text("#role"), "operator");
    let token = &c.w.operator_token;
    assert!(
        !c.b.url().unwrap().contains(token.as_str()),
        "the token is never in the URL"
    );
    let leaked = c.b.execute(
        "return performance.getEntriesByType('resource').some((e) => e.name.includes(arguments[0]))
             || document.cookie.includes(arguments[0]) || localStorage.length > 0",
        json!([token]),
    );
    assert_eq!(
        leaked.unwrap(),
        json!(false),
        "the token is in no URL, cookie or localStorage"
    );
    assert_eq!(
        c.js("return sessionStorage.getItem('aloft.operator-token')")
            .as_str(),
        Some(token.as_str()),
        "the token lives in this tab's session storage"
    );
    let fleet = fleet_matches_server(c);
    assert_eq!(fleet.devices, DEVICES as u32);
    assert_eq!(fleet.online, DEVICES as u32);
    assert_eq!(
        fleet.versions,
        BTreeMap::from([("1.0.0".to_owned(), DEVICES as u32)])
    );
    c.shot("fleet");
}

fn rollout_advances_live(c: &Ctx<'_>) {
    // The canary soaks long enough for its progress to be on screen before
    // the stage advances.
    let stage = |name: &str, percent, soak_secs| pb::RolloutStage {
        name: name.into(),
        percent,
        test_devices_only: false,
        soak_secs,
        min_sample: 1,
        max_failure_permille: 1000,
    };
    c.w.create_rollout(pb::CreateRolloutRequest {
        rollout_id: "to-1.1.0".into(),
        release_id: c.w.releases[1].id.clone(),
        stages: vec![stage("canary", 30, 4), stage("everyone", 100, 1)],
        start_paused: true,
        ..Default::default()
    });
    c.goto("/rollouts/to-1.1.0");
    c.b.wait_for("#rollout-state [data-state=paused]", WAIT)
        .unwrap();
    c.js("window.aloftMarker = 'the same page'");
    assert_eq!(c.text("#rollout-stage"), "1 of 2");

    c.b.find("button[data-action=resume]")
        .unwrap()
        .click()
        .unwrap();
    c.b.wait_for("#confirm[open]", WAIT).unwrap();
    c.b.find("#confirm-ok").unwrap().click().unwrap();
    c.w.wait_until("the server to resume to-1.1.0", WAIT, |w| {
        (w.rollout("to-1.1.0").state == pb::RolloutState::Active as i32).then_some(())
    });
    // A keyboard user resting on a control keeps it while the page redraws.
    c.b.wait_for("button[data-action=cancel]:not([disabled])", WAIT)
        .unwrap();
    c.js("document.querySelector('button[data-action=cancel]').focus()");
    let mut focus_while_active = Vec::new();

    // Watch the page (never reloading it) until it shows the rollout done.
    let mut seen: Vec<(String, String, u64)> = Vec::new();
    c.until(
        "to-1.1.0 completed on screen",
        Duration::from_secs(120),
        || {
            let v = c.js(
                "return [document.querySelector('#rollout-state [data-state]')?.dataset.state,
                     document.querySelector('#rollout-stage')?.textContent,
                     [...document.querySelectorAll('#stages [data-count=updated]')]
                        .reduce((a, e) => a + Number(e.textContent), 0),
                     document.activeElement.dataset.action ?? document.activeElement.tagName]",
            );
            if v[0] == json!("active") {
                focus_while_active.push(v[3].as_str().unwrap_or_default().to_owned());
            }
            let now = (
                v[0].as_str().unwrap_or_default().to_owned(),
                v[1].as_str().unwrap_or_default().to_owned(),
                v[2].as_u64().unwrap_or(0),
            );
            if seen.last() != Some(&now) {
                seen.push(now.clone());
            }
            (now.0 == "completed").then_some(())
        },
    );
    println!("observed on screen (state, stage, updated): {seen:?}");
    assert!(
        focus_while_active.iter().all(|f| f == "cancel"),
        "the focused control kept the focus through the redraws: {focus_while_active:?}"
    );
    assert_eq!(
        c.js("return window.aloftMarker"),
        json!("the same page"),
        "no reload happened"
    );
    assert!(
        seen.iter().any(|s| s.0 == "active" && s.1 == "1 of 2"),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|s| s.1 == "2 of 2"),
        "the stage advanced on screen: {seen:?}"
    );
    let updated: Vec<u64> = seen.iter().map(|s| s.2).collect();
    assert!(updated.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    let server = c.w.rollout("to-1.1.0");
    let server_updated: u32 = server.counts.iter().map(|s| s.updated).sum();
    assert_eq!(server_updated, DEVICES as u32 - ROLLING_BACK);
    c.until("the final counts on screen", WAIT, || {
        (c.js("return [...document.querySelectorAll('#stages [data-count=updated]')].reduce((a, e) => a + Number(e.textContent), 0)")
            == json!(server_updated))
        .then_some(())
    });
    assert!(
        seen.iter()
            .any(|s| s.1 == "1 of 2" && s.2 > 0 && s.2 < u64::from(server_updated)),
        "the canary's progress was on screen before the stage advanced: {seen:?}"
    );
    // Created paused, resumed, advanced, completed: four samples at least.
    history_plot_matches(c, "to-1.1.0", 4);
    c.shot("rollout");
}

/// The plot draws one marker per series for every sample the server has.
fn history_plot_matches(c: &Ctx<'_>, id: &str, at_least: usize) {
    let samples = c.until("the plot to draw the server's samples", WAIT, || {
        let server = c.w.history(id).len();
        let drawn =
            c.b.find("#history svg.plot")
                .ok()?
                .attribute("data-samples")
                .ok()??;
        (drawn == server.to_string()).then_some(server)
    });
    assert!(
        samples >= at_least,
        "{id}: {samples} samples, {at_least} expected at least"
    );
    for series in ["offered", "installed", "updated", "rolled_back", "failed"] {
        assert_eq!(
            c.count(&format!("#history g[data-series={series}] circle")),
            samples,
            "{series}"
        );
    }
}

fn fleet_follows(c: &Ctx<'_>) {
    c.goto("/fleet");
    let fleet = fleet_matches_server(c);
    assert_eq!(
        fleet.versions,
        BTreeMap::from([
            ("1.1.0".to_owned(), DEVICES as u32 - ROLLING_BACK),
            ("1.0.0".to_owned(), ROLLING_BACK),
        ])
    );
    assert_eq!(fleet.rolled_back, ROLLING_BACK);
    c.shot("fleet-after-rollout");
    // A phone's viewport (390 x 844 CSS px, mobile): narrower than any
    // desktop window, so emulated rather than a window size.
    for (page, name) in [
        ("/fleet", "fleet-phone"),
        ("/rollouts/to-1.1.0", "rollout-phone"),
        ("/devices", "devices-phone"),
        ("/releases", "releases-phone"),
    ] {
        c.b.emulate_viewport(Some((390, 844))).unwrap();
        c.goto(page);
        c.b.wait_for("main h1", WAIT).unwrap();
        std::thread::sleep(Duration::from_millis(800));
        assert_eq!(c.js("return window.innerWidth"), json!(390), "{page}");
        let overflow = c.js(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
        );
        assert_eq!(overflow, json!(0), "{page} scrolls sideways at phone width");
        let off_screen = c.js(
            "return [...document.querySelectorAll('main *, header *')]
               .filter((e) => { const r = e.getBoundingClientRect();
                                return r.width > 0 && (r.left < -1 || r.right > window.innerWidth + 1)
                                  && !e.closest('.table-wrap, .scroll'); })
               .map((e) => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className)",
        );
        assert_eq!(off_screen, json!([]), "{page}: cut off at phone width");
        let full = c.js("return document.documentElement.scrollHeight");
        let full = full.as_u64().unwrap_or(844).clamp(844, 4000) as u32;
        c.b.emulate_viewport(Some((390, full))).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let png = c.b.screenshot().unwrap();
        std::fs::write(c.shots.join(format!("{name}.png")), png).unwrap();
    }
    c.b.emulate_viewport(None).unwrap();
    c.b.set_window_size(1280, 900).unwrap();
}

fn pause_with_the_keyboard(c: &Ctx<'_>) {
    for id in &c.w.device_ids[..2] {
        c.w.make_test_device(id);
    }
    let test = pb::RolloutStage {
        name: "test devices".into(),
        test_devices_only: true,
        soak_secs: 3600,
        min_sample: 1,
        max_failure_permille: 1000,
        ..Default::default()
    };
    let all = pb::RolloutStage {
        name: "everyone".into(),
        percent: 100,
        soak_secs: 1,
        min_sample: 1,
        max_failure_permille: 1000,
        ..Default::default()
    };
    c.w.create_rollout(pb::CreateRolloutRequest {
        rollout_id: "to-1.2.0".into(),
        release_id: c.w.releases[2].id.clone(),
        stages: vec![test, all],
        ..Default::default()
    });
    c.w.wait_until(
        "the test devices to finish with 1.2.0",
        Duration::from_secs(60),
        |w| {
            let r = w.rollout("to-1.2.0");
            let s = &r.counts[0];
            (s.targeted == 2 && s.updated + s.failed + s.rolled_back == 2).then_some(())
        },
    );
    c.goto("/rollouts/to-1.2.0");
    c.b.wait_for("#rollout-state [data-state=active]", WAIT)
        .unwrap();
    c.b.wait_for("button[data-action=pause]", WAIT).unwrap();
    let focused = |c: &Ctx<'_>| -> String {
        c.js("const e = document.activeElement;
              return e.tagName + (e.id ? '#' + e.id : '') + (e.dataset.action ? '/' + e.dataset.action : '')
                + (e.classList.contains('skip') ? '.skip' : '')")
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(focused(c), "H1", "the page's heading has the focus");
    // Backwards through the header to the skip link, which brings the
    // focus back to the page (and stays on it).
    let mut path = Vec::new();
    while focused(c) != "A.skip" {
        assert!(
            path.len() < 15,
            "Shift+Tab never reached the skip link: {path:?}"
        );
        c.b.active()
            .unwrap()
            .send_keys(&format!("{}{}", keys::SHIFT, keys::TAB))
            .unwrap();
        path.push(focused(c));
    }
    assert!(path.iter().any(|p| p == "BUTTON#signout"), "{path:?}");
    c.b.active().unwrap().send_keys(keys::ENTER).unwrap();
    assert_eq!(focused(c), "H1", "the skip link focuses the page");
    assert!(c.b.url().unwrap().ends_with("#/rollouts/to-1.2.0"));
    // Forwards with Tab to the pause control.
    let mut path = Vec::new();
    while focused(c) != "BUTTON/pause" {
        assert!(
            path.len() < 15,
            "Tab never reached the pause control: {path:?}"
        );
        c.b.active().unwrap().send_keys(keys::TAB).unwrap();
        path.push(focused(c));
    }
    c.b.active().unwrap().send_keys(keys::ENTER).unwrap();
    c.b.wait_for("#confirm[open]", WAIT).unwrap();
    assert_eq!(
        c.b.active().unwrap().attribute("id").unwrap().as_deref(),
        Some("confirm-reason")
    );
    c.b.active().unwrap().send_keys(keys::ESCAPE).unwrap();
    c.until("the dialog to close", WAIT, || {
        c.b.find("#confirm[open]").is_err().then_some(())
    });
    assert_eq!(
        c.b.active()
            .unwrap()
            .attribute("data-action")
            .unwrap()
            .as_deref(),
        Some("pause"),
        "focus returns to the control"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        c.w.rollout("to-1.2.0").state,
        pb::RolloutState::Active as i32,
        "Escape changes nothing"
    );

    c.b.active().unwrap().send_keys(keys::ENTER).unwrap();
    c.b.wait_for("#confirm[open]", WAIT).unwrap();
    let reason = "hold: checking the test devices";
    c.b.active().unwrap().send_keys(reason).unwrap();
    c.b.active().unwrap().send_keys(keys::ENTER).unwrap();
    let paused = c.w.wait_until("the server to record the pause", WAIT, |w| {
        let r = w.rollout("to-1.2.0");
        (r.state == pb::RolloutState::Paused as i32).then_some(r)
    });
    assert_eq!(paused.pause_reason, reason);
    let history = c.w.history("to-1.2.0");
    assert_eq!(
        history.last().map(|s| s.state),
        Some(pb::RolloutState::Paused as i32),
        "a sample at the pause"
    );
    c.b.wait_for("#rollout-state [data-state=paused]", WAIT)
        .unwrap();
    assert!(c.text("#gate").contains(reason), "the gate panel shows why");
    history_plot_matches(c, "to-1.2.0", 2);
    c.shot("rollout-paused");
}

fn device_rows(c: &Ctx<'_>) -> Vec<String> {
    c.js("return [...document.querySelectorAll('#device-list tr[data-device]')].map((r) => r.dataset.device)")
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn devices_and_a_device(c: &Ctx<'_>) {
    c.goto("/devices");
    let all = c.until("the device table", WAIT, || {
        let rows = device_rows(c);
        (rows.len() == DEVICES).then_some(rows)
    });
    assert_eq!(all, c.w.device_ids);
    c.shot("devices");

    // Status (filtered here) and firmware version (by the server's selector).
    let server = c.w.devices();
    let pick = |f: &dyn Fn(&pb::DeviceInfo) -> bool| -> Vec<String> {
        server
            .iter()
            .filter(|d| f(d))
            .map(|d| d.device_id.clone())
            .collect()
    };
    let rolled_back = pick(&|d| d.status == pb::DeviceStatus::RolledBack as i32);
    let on_110 = pick(&|d| d.firmware_version == "1.1.0");
    c.js("document.querySelector('#f-status').value = 'rolled_back'");
    c.b.find("#devices-apply, form[role=search] button[type=submit]")
        .unwrap()
        .click()
        .unwrap();
    c.until("the status filter", WAIT, || {
        (device_rows(c) == rolled_back).then_some(())
    });
    c.js("document.querySelector('#f-status').value = ''");
    let version = c.b.find("#f-version").unwrap();
    version.send_keys("1.1.0").unwrap();
    version.send_keys(keys::ENTER).unwrap();
    c.until("the firmware filter", WAIT, || {
        (device_rows(c) == on_110).then_some(())
    });
    assert!(
        c.b.url().unwrap().contains("version=1.1.0"),
        "filters live in the fragment"
    );

    // A device the filter shows that is not a test device (so to-1.2.0
    // has not reached it yet).
    let id = on_110
        .iter()
        .find(|d| !c.w.device_ids[..2].contains(d))
        .expect("a device on 1.1.0 outside the test stage");
    c.b.find(&format!("tr[data-device='{id}'] a"))
        .unwrap()
        .click()
        .unwrap();
    let firmware = c.text("#device-firmware");
    let record = server.iter().find(|d| &d.device_id == id).unwrap();
    assert_eq!(firmware, record.firmware_version);
    assert!(
        c.text("#device-trust").starts_with("version 1,"),
        "the TrustRoot the device reported"
    );
    c.until("the device's events", WAIT, || {
        (c.count("#device-events li[data-kind]") > 0).then_some(())
    });

    // Exclude it from to-1.2.0 (it is not a test device, so not yet offered).
    c.b.wait_for("#device-rollout", WAIT).unwrap();
    c.js("const s = document.querySelector('#device-rollout'); s.value = 'to-1.2.0'; s.dispatchEvent(new Event('change'))");
    c.b.find("#device-controls button[data-action=exclude]")
        .unwrap()
        .click()
        .unwrap();
    c.b.wait_for("#confirm[open]", WAIT).unwrap();
    c.b.find("#confirm-ok").unwrap().click().unwrap();
    c.w.wait_until("the server to record the exclusion", WAIT, |w| {
        let excluded: u32 = w
            .rollout("to-1.2.0")
            .counts
            .iter()
            .map(|s| s.excluded)
            .sum();
        (excluded == 1).then_some(())
    });
    c.shot("device");
}

fn releases_and_events(c: &Ctx<'_>) {
    c.goto("/releases");
    let signer: String =
        c.w.release_key_id
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
    for r in &c.w.releases[1..] {
        let css = format!("tr[data-release='{}'] [data-signer='{signer}']", r.id);
        c.b.wait_for(&css, WAIT)
            .unwrap_or_else(|e| panic!("{css}: {e}"));
    }
    assert_eq!(c.count("#release-list tr[data-release]"), 2);
    c.shot("releases");

    c.goto("/events");
    c.b.wait_for("#event-list", WAIT).unwrap();
    c.b.find("#e-kind")
        .unwrap()
        .send_keys("rollout_created")
        .unwrap();
    c.w.create_rollout(pb::CreateRolloutRequest {
        rollout_id: "later".into(),
        release_id: c.w.releases[2].id.clone(),
        start_paused: true,
        ..Default::default()
    });
    c.until("the live event", WAIT, || {
        let kinds = c.js("return [...document.querySelectorAll('#event-list li')].map((l) => l.dataset.kind + ' ' + l.textContent)");
        let kinds = kinds.as_array()?.clone();
        (kinds.len() == 1 && kinds[0].as_str()?.contains("later")).then_some(())
    });
    c.shot("events");
}

fn viewer_has_no_controls(c: &Ctx<'_>) {
    c.b.find("#signout").unwrap().click().unwrap();
    c.b.wait_for("#token", WAIT).unwrap();
    assert_eq!(
        c.js("return sessionStorage.length"),
        json!(0),
        "signing out forgets the token"
    );
    c.sign_in(&c.w.viewer_token);
    assert_eq!(c.text("#role"), "viewer (read only)");

    c.goto("/rollouts/to-1.2.0");
    c.b.wait_for("#rollout-state [data-state=paused]", WAIT)
        .unwrap();
    c.b.wait_for("#stages tr[data-stage]", WAIT).unwrap();
    assert_eq!(
        c.count("button[data-action]"),
        0,
        "a viewer is offered no rollout control"
    );
    assert_eq!(c.count("#controls"), 0);
    c.shot("viewer-rollout");
    c.goto(&format!("/devices/{}", c.w.device_ids[4]));
    c.b.wait_for("#device-firmware", WAIT).unwrap();
    assert_eq!(c.count("#device-controls"), 0, "nor a device control");

    // The page's own client, forced to call the controls with the viewer's token.
    let forced = |script: &str| -> Value {
        c.b.execute_async(
            &format!(
                "const done = arguments[arguments.length - 1];
                 import('/js/api.js').then((api) => {script})
                   .then((r) => done({{ ok: true, state: r.state }}),
                         (e) => done({{ ok: false, code: e.code, message: e.message }}));"
            ),
            json!([]),
        )
        .expect("the forced call")
    };
    let before = c.w.rollout("to-1.2.0");
    let resume = forced("api.controlRollout('to-1.2.0', 'resume', 'forced by a viewer')");
    assert_eq!(resume["ok"], json!(false), "{resume}");
    assert_eq!(resume["code"], json!(7), "PERMISSION_DENIED: {resume}");
    assert!(
        resume["message"]
            .as_str()
            .unwrap_or_default()
            .contains("operator"),
        "{resume}"
    );
    let exclude = forced(&format!(
        "api.controlRolloutDevice('to-1.2.0', '{}', 'exclude')",
        c.w.device_ids[5]
    ));
    assert_eq!(exclude["code"], json!(7), "PERMISSION_DENIED: {exclude}");
    let after = c.w.rollout("to-1.2.0");
    assert_eq!(
        after.state,
        pb::RolloutState::Paused as i32,
        "the server kept it paused"
    );
    assert_eq!(after.counts, before.counts, "and excluded nobody");
}

/// The checks above mean something: the page runs under its
/// Content-Security-Policy with Trusted Types (no string becomes code or
/// markup), and a console error does reach the log they read.
fn policy_is_enforced_and_errors_are_seen(c: &Ctx<'_>) {
    // WebDriver's own scripts run with the DevTools allowance for eval, so
    // the probe runs from a timer, as the page's own code would.
    let probe = c
        .b
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const violated = [];
             document.addEventListener('securitypolicyviolation', (e) => violated.push(e.violatedDirective));
             setTimeout(() => {
               const r = { violated };
               try { eval('1'); r.eval = 'ran'; } catch (e) { r.eval = e.name; }
               try { document.createElement('div').innerHTML = '<b>x</b>'; r.sink = 'ran'; }
               catch (e) { r.sink = e.name; }
               setTimeout(() => done(r), 200);
             }, 0);",
            json!([]),
        )
        .expect("the policy probe");
    // Under Trusted Types a string reaching eval or an HTML sink is refused
    // before script-src is even consulted: both are reported as that.
    assert_eq!(
        probe["eval"],
        json!("EvalError"),
        "no string becomes code: {probe}"
    );
    assert_eq!(
        probe["sink"],
        json!("TypeError"),
        "no string becomes markup: {probe}"
    );
    assert_eq!(
        probe["violated"],
        json!(["require-trusted-types-for", "require-trusted-types-for"]),
        "the browser reported both as violations of the page's policy: {probe}"
    );
    c.js("console.error('aloft console probe')");
    let log = c.b.browser_log().unwrap();
    assert!(
        log.iter()
            .any(|e| e.level == "SEVERE" && e.message.contains("aloft console probe")),
        "the console check reads errors: {log:#?}"
    );
}

/// One step of the story, on the shared world and browser.
type Scenario = fn(&Ctx<'_>);

#[test]
#[ignore = "needs Chromium and chromedriver: `cargo xtask ci` installs them and runs this (its browser step)"]
fn dashboard_in_headless_chromium() {
    let started = Instant::now();
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(|p| p.join("dashboard-screenshots"))
        .expect("the target directory");
    std::fs::create_dir_all(&shots).unwrap();
    let world = World::start(WorldConfig {
        tls: true,
        devices: DEVICES,
        never_confirm_pct: f64::from(ROLLING_BACK) * 100.0 / DEVICES as f64,
    });
    println!(
        "[{:5.1} s] server, web listener and {DEVICES} devices up",
        started.elapsed().as_secs_f64()
    );
    let browser = Browser::start(1280, 900, true).unwrap_or_else(|e| panic!("{e}"));
    let c = Ctx {
        b: browser.session(),
        w: &world,
        shots: shots.clone(),
    };
    let scenarios: [(&str, Scenario); 8] = [
        ("a wrong token gets a clear message", wrong_token),
        (
            "an operator signs in and sees the fleet's counts",
            operator_sees_the_fleet,
        ),
        (
            "a rollout advances live, its plot draws the server's samples",
            rollout_advances_live,
        ),
        (
            "the fleet page follows the fleet, also at phone width",
            fleet_follows,
        ),
        (
            "a pause with the keyboard, recorded by the server",
            pause_with_the_keyboard,
        ),
        (
            "devices: filters, a device's page, an exclusion",
            devices_and_a_device,
        ),
        ("releases with signers, live events", releases_and_events),
        (
            "a viewer sees no control and a forced call is refused",
            viewer_has_no_controls,
        ),
    ];
    for (name, scenario) in scenarios {
        let t = Instant::now();
        scenario(&c);
        c.no_console_errors(name);
        println!(
            "[{:5.1} s] ok ({:.1} s): {name}",
            started.elapsed().as_secs_f64(),
            t.elapsed().as_secs_f64()
        );
    }
    policy_is_enforced_and_errors_are_seen(&c);
    println!("screenshots: {}", shots.display());
}
