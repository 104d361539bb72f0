//! End-to-end tests of the fleet dashboard (`aloft-web`, served by
//! `aloft-server --web`): a [`world::World`] of the real server, a
//! simulated fleet of real agents and signed releases, driven through
//! headless Chromium ([`chromium::Browser`]) with a small W3C WebDriver
//! client ([`webdriver`]).
//!
//! The tests are in `tests/`: `http.rs` (the listener's headers, the
//! same-origin rule and role checks through gRPC-web, no browser) runs with
//! every `cargo test`; `browser.rs` needs Chromium and chromedriver, so it
//! is `#[ignore]`d there and run by `cargo xtask ci`'s browser step, which
//! installs them when they are missing.
#![forbid(unsafe_code)]

pub mod chromium;
pub mod webdriver;
pub mod world;
