//! The protocol between the boot simulator (`aloft-boot`) and the firmware
//! it starts (`aloft-firmware`): how the firmware finds its device, pets the
//! watchdog and asks for a reboot.
//!
//! **Start.** The boot simulator copies the verified image of the chosen slot
//! to an executable file and starts it with:
//! - [`ENV_FLASH`]: the device's flash file (the firmware opens it itself);
//! - [`ENV_IDENTITY`]: the device's identity bundle (`identity.pb`);
//! - [`ENV_SLOT`]: `A` or `B`, the slot started; [`ENV_TRIAL`]: `1` for an
//!   unconfirmed trial image, `0` otherwise;
//! - [`ENV_WATCHDOG_MS`]: the watchdog timeout in milliseconds.
//!
//! **Channel.** The firmware's standard output is the watchdog channel; logs
//! go to standard error. Each channel message is one line, [`PREFIX`] then a
//! word ([`Event`]): `start VERSION` once at start, `pet` as the heartbeat
//! (at least every timeout / 2), `confirmed` after it confirmed itself,
//! `reboot` before it exits to be rebooted. Other lines are passed through
//! as logs. No `pet` within the timeout: the boot simulator kills the
//! firmware and resets (boots again, which spends a trial attempt).
//!
//! **Exit.** [`EXIT_REBOOT`] asks for a reboot (after an install); any other
//! exit (including a signal) is a crash; both lead to a reset, and the boot
//! decision runs again. [`EXIT_HEALTH_FAILED`] is a crash whose cause the
//! firmware knows (its health check failed).

use std::io::Write;

/// Environment variable: path of the device's flash file.
pub const ENV_FLASH: &str = "ALOFT_FLASH";
/// Environment variable: path of the device's identity bundle.
pub const ENV_IDENTITY: &str = "ALOFT_IDENTITY";
/// Environment variable: the slot started (`A` or `B`).
pub const ENV_SLOT: &str = "ALOFT_BOOT_SLOT";
/// Environment variable: `1` if the image is an unconfirmed trial.
pub const ENV_TRIAL: &str = "ALOFT_BOOT_TRIAL";
/// Environment variable: the watchdog timeout in milliseconds.
pub const ENV_WATCHDOG_MS: &str = "ALOFT_WATCHDOG_MS";

/// Prefix of every channel line.
pub const PREFIX: &str = "aloft-wd ";

/// Exit code: reboot requested (an update was installed).
pub const EXIT_REBOOT: i32 = 10;
/// Exit code: the health check failed; the image did not confirm itself.
pub const EXIT_HEALTH_FAILED: i32 = 11;
/// Exit code of the `crash` fault.
pub const EXIT_CRASH: i32 = 70;

/// One message on the watchdog channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The firmware started, with its version.
    Start(String),
    /// Heartbeat.
    Pet,
    /// The firmware confirmed itself.
    Confirmed,
    /// The firmware is about to exit with [`EXIT_REBOOT`].
    Reboot,
}

impl Event {
    /// The channel line (without the newline).
    pub fn line(&self) -> String {
        match self {
            Self::Start(v) => format!("{PREFIX}start {v}"),
            Self::Pet => format!("{PREFIX}pet"),
            Self::Confirmed => format!("{PREFIX}confirmed"),
            Self::Reboot => format!("{PREFIX}reboot"),
        }
    }

    /// Parses a channel line; `None` for a line that is not a message.
    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.trim_end().strip_prefix(PREFIX)?;
        match rest.split_once(' ') {
            Some(("start", v)) => Some(Self::Start(v.to_owned())),
            None if rest == "pet" => Some(Self::Pet),
            None if rest == "confirmed" => Some(Self::Confirmed),
            None if rest == "reboot" => Some(Self::Reboot),
            _ => None,
        }
    }

    /// Writes the message to standard output (the channel) and flushes it.
    /// A closed channel is ignored: the watchdog then fires by itself.
    pub fn send(&self) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", self.line());
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        for e in [
            Event::Start("1.2.3".into()),
            Event::Pet,
            Event::Confirmed,
            Event::Reboot,
        ] {
            assert_eq!(Event::parse(&e.line()), Some(e));
        }
        assert_eq!(Event::parse("pet"), None);
        assert_eq!(Event::parse("aloft-wd petx"), None);
        assert_eq!(Event::parse("INFO aloft-wd pet"), None);
    }
}
