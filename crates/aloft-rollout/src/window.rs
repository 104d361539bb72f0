//! Maintenance windows in the device's own time zone.
//!
//! Rules:
//! - A window is `[start_minute, end_minute)` of **local wall-clock time**
//!   (minutes after local midnight, 0-1439). When `end < start` it wraps
//!   midnight (22:00-02:00). `start == end` means the whole day.
//! - "Local" is the device's IANA zone from the bundled tz database (not the
//!   host's), so daylight-saving changes are handled by the wall clock: on a
//!   spring-forward day a 02:00-04:00 window in Europe/Berlin opens at 03:00
//!   (02:xx does not exist) and lasts one hour; on a fall-back day it lasts
//!   three hours (02:xx happens twice).
//! - An unknown zone name is an [`Error::UnknownTimeZone`]. The documented
//!   fallback, [`resolve_or_utc`], treats it (and an empty name) as UTC; the
//!   rollout engine uses that fallback so a typo delays nothing worse than
//!   the window's timing.

use aloft_protocol::UnixTime;
use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::Error;

const DAY_MINUTES: u16 = 24 * 60;

/// A daily maintenance window in local time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MaintenanceWindow {
    start_minute: u16,
    end_minute: u16,
}

impl MaintenanceWindow {
    /// A window from `start_minute` to `end_minute` (each 0-1439).
    pub fn new(start_minute: u32, end_minute: u32) -> Result<Self, Error> {
        let check = |m: u32| {
            u16::try_from(m)
                .ok()
                .filter(|&m| m < DAY_MINUTES)
                .ok_or(Error::InvalidWindow(m))
        };
        Ok(Self {
            start_minute: check(start_minute)?,
            end_minute: check(end_minute)?,
        })
    }

    /// Start, in minutes after local midnight.
    pub fn start_minute(&self) -> u32 {
        self.start_minute.into()
    }

    /// End (exclusive), in minutes after local midnight.
    pub fn end_minute(&self) -> u32 {
        self.end_minute.into()
    }

    fn contains_minute(&self, m: u16) -> bool {
        let (s, e) = (self.start_minute, self.end_minute);
        match s.cmp(&e) {
            core::cmp::Ordering::Equal => true,
            core::cmp::Ordering::Less => s <= m && m < e,
            core::cmp::Ordering::Greater => m >= s || m < e,
        }
    }

    /// Whether the instant `now` falls inside the window in zone `tz`.
    pub fn is_open(&self, now: UnixTime, tz: &TimeZone) -> bool {
        self.is_open_at(to_ts(now), tz)
    }

    fn is_open_at(&self, ts: Timestamp, tz: &TimeZone) -> bool {
        let dt = tz.to_datetime(ts);
        let m = dt.hour() as u16 * 60 + dt.minute() as u16;
        self.contains_minute(m)
    }

    /// The first instant at or after `now` inside the window (`now` itself
    /// when the window is open), in zone `tz`.
    pub fn next_start(&self, now: UnixTime, tz: &TimeZone) -> UnixTime {
        let now_ts = to_ts(now);
        if self.is_open_at(now_ts, tz) {
            return now;
        }
        // The window can only open where the local clock reaches the start
        // minute, or where a zone transition jumps the clock into the window.
        let horizon = now.0.saturating_add(3 * 86_400);
        let mut candidates: Vec<Timestamp> = Vec::new();
        let today = tz.to_datetime(now_ts).date();
        let (h, m) = (
            (self.start_minute / 60) as i8,
            (self.start_minute % 60) as i8,
        );
        let mut day = today.yesterday().unwrap_or(today);
        for _ in 0..4 {
            let amb = tz.to_ambiguous_timestamp(day.at(h, m, 0, 0));
            candidates.extend(amb.earlier());
            candidates.extend(amb.later());
            match day.tomorrow() {
                Ok(d) => day = d,
                Err(_) => break,
            }
        }
        candidates.extend(
            tz.following(now_ts)
                .take_while(|t| t.timestamp().as_second() <= horizon as i64)
                .map(|t| t.timestamp()),
        );
        candidates
            .into_iter()
            .filter(|t| t.as_second() >= now.0 as i64 && self.is_open_at(*t, tz))
            .min()
            .map_or(UnixTime(horizon), from_ts)
    }
}

/// Suggests when a device should next check in to find its window open:
/// [`MaintenanceWindow::next_start`] in the device's zone name, with the
/// [`resolve_or_utc`] fallback.
pub fn next_window_start(window: &MaintenanceWindow, now: UnixTime, tz_name: &str) -> UnixTime {
    window.next_start(now, &resolve_or_utc(tz_name).0)
}

/// Looks up an IANA zone name in the bundled database.
pub fn resolve_time_zone(name: &str) -> Result<TimeZone, Error> {
    TimeZone::get(name).map_err(|_| Error::UnknownTimeZone(name.to_string()))
}

/// The documented fallback: the named zone, or UTC when the name is empty or
/// unknown. The flag says whether the fallback was taken.
pub fn resolve_or_utc(name: &str) -> (TimeZone, bool) {
    match resolve_time_zone(name) {
        Ok(tz) => (tz, false),
        Err(_) => (TimeZone::UTC, true),
    }
}

fn to_ts(t: UnixTime) -> Timestamp {
    // Clamp: times past jiff's range (year 9999) behave like its maximum.
    Timestamp::from_second(t.0.min(Timestamp::MAX.as_second() as u64) as i64)
        .unwrap_or(Timestamp::MAX)
}

fn from_ts(t: Timestamp) -> UnixTime {
    UnixTime(t.as_second().max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix seconds of an RFC 3339 instant (test helper).
    fn at(s: &str) -> UnixTime {
        from_ts(s.parse::<Timestamp>().unwrap())
    }

    fn tz(name: &str) -> TimeZone {
        resolve_time_zone(name).unwrap()
    }

    fn w(a: u32, b: u32) -> MaintenanceWindow {
        MaintenanceWindow::new(a, b).unwrap()
    }

    #[test]
    fn plain_and_wrapping_windows() {
        let utc = TimeZone::UTC;
        let night = w(120, 240); // 02:00-04:00
        assert!(!night.is_open(at("2024-06-01T01:59:59Z"), &utc));
        assert!(night.is_open(at("2024-06-01T02:00:00Z"), &utc));
        assert!(night.is_open(at("2024-06-01T03:59:59Z"), &utc));
        assert!(!night.is_open(at("2024-06-01T04:00:00Z"), &utc));
        let wrap = w(22 * 60, 2 * 60); // 22:00-02:00
        assert!(wrap.is_open(at("2024-06-01T23:30:00Z"), &utc));
        assert!(wrap.is_open(at("2024-06-01T01:00:00Z"), &utc));
        assert!(!wrap.is_open(at("2024-06-01T02:00:00Z"), &utc));
        assert!(!wrap.is_open(at("2024-06-01T21:59:00Z"), &utc));
        assert_eq!(
            wrap.next_start(at("2024-06-01T12:00:00Z"), &utc),
            at("2024-06-01T22:00:00Z")
        );
        let all_day = w(300, 300);
        assert!(all_day.is_open(at("2024-06-01T12:00:00Z"), &utc));
        assert_eq!(
            MaintenanceWindow::new(1440, 0),
            Err(Error::InvalidWindow(1440))
        );
        assert_eq!(
            MaintenanceWindow::new(0, 99_999),
            Err(Error::InvalidWindow(99_999))
        );
        assert!(MaintenanceWindow::new(1439, 0).is_ok());
    }

    #[test]
    fn local_time_not_utc() {
        let night = w(120, 240);
        // 02:30 in Berlin (summer, +02:00) is 00:30 UTC.
        let berlin = tz("Europe/Berlin");
        assert!(night.is_open(at("2024-07-10T00:30:00Z"), &berlin));
        assert!(!night.is_open(at("2024-07-10T02:30:00Z"), &berlin));
        // Kolkata is +05:30: 02:00 local is 20:30 UTC the day before.
        let kolkata = tz("Asia/Kolkata");
        assert!(!night.is_open(at("2024-07-09T20:29:59Z"), &kolkata));
        assert!(night.is_open(at("2024-07-09T20:30:00Z"), &kolkata));
        assert!(night.is_open(at("2024-07-09T22:29:59Z"), &kolkata));
        assert!(!night.is_open(at("2024-07-09T22:30:00Z"), &kolkata));
        assert_eq!(
            night.next_start(at("2024-07-09T12:00:00Z"), &kolkata),
            at("2024-07-09T20:30:00Z")
        );
    }

    #[test]
    fn berlin_spring_forward() {
        // 2024-03-31: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
        let berlin = tz("Europe/Berlin");
        let night = w(120, 240);
        // 00:59:59 UTC is 01:59:59 CET: closed; one second later it is 03:00 CEST: open.
        assert!(!night.is_open(at("2024-03-31T00:59:59Z"), &berlin));
        assert!(night.is_open(at("2024-03-31T01:00:00Z"), &berlin));
        assert!(night.is_open(at("2024-03-31T01:59:59Z"), &berlin));
        assert!(!night.is_open(at("2024-03-31T02:00:00Z"), &berlin)); // 04:00 CEST
        // The window opens at the transition (02:00 local does not exist).
        assert_eq!(
            night.next_start(at("2024-03-30T12:00:00Z"), &berlin),
            at("2024-03-31T01:00:00Z")
        );
        // A window entirely in the gap (02:15-02:45) does not happen that day.
        let gap = w(135, 165);
        assert_eq!(
            gap.next_start(at("2024-03-30T12:00:00Z"), &berlin),
            at("2024-04-01T00:15:00Z") // 02:15 CEST on Monday
        );
        // A window straddling the gap's end (02:30-03:30) opens at 03:00 CEST.
        let straddle = w(150, 210);
        assert_eq!(
            straddle.next_start(at("2024-03-30T12:00:00Z"), &berlin),
            at("2024-03-31T01:00:00Z")
        );
    }

    #[test]
    fn berlin_fall_back() {
        // 2024-10-27: 03:00 CEST falls back to 02:00 CET (01:00 UTC).
        let berlin = tz("Europe/Berlin");
        let night = w(120, 240);
        assert!(!night.is_open(at("2024-10-26T23:59:59Z"), &berlin)); // 01:59:59 CEST
        assert!(night.is_open(at("2024-10-27T00:00:00Z"), &berlin)); // 02:00 CEST
        assert!(night.is_open(at("2024-10-27T01:30:00Z"), &berlin)); // 02:30 CET (again)
        assert!(night.is_open(at("2024-10-27T02:59:59Z"), &berlin)); // 03:59:59 CET
        assert!(!night.is_open(at("2024-10-27T03:00:00Z"), &berlin)); // 04:00 CET
        // Three hours of real time; opens at the first 02:00.
        assert_eq!(
            night.next_start(at("2024-10-26T12:00:00Z"), &berlin),
            at("2024-10-27T00:00:00Z")
        );
    }

    #[test]
    fn new_york_dst() {
        let ny = tz("America/New_York");
        let night = w(120, 240);
        // 2024-03-10: 02:00 EST jumps to 03:00 EDT (07:00 UTC).
        assert!(!night.is_open(at("2024-03-10T06:59:59Z"), &ny));
        assert!(night.is_open(at("2024-03-10T07:00:00Z"), &ny)); // 03:00 EDT
        assert!(!night.is_open(at("2024-03-10T08:00:00Z"), &ny)); // 04:00 EDT
        assert_eq!(
            night.next_start(at("2024-03-09T20:00:00Z"), &ny),
            at("2024-03-10T07:00:00Z")
        );
        // 2024-11-03: 02:00 EDT falls back to 01:00 EST (06:00 UTC).
        assert!(!night.is_open(at("2024-11-03T06:59:59Z"), &ny)); // 01:59:59 EST
        assert!(night.is_open(at("2024-11-03T07:00:00Z"), &ny)); // 02:00 EST
        assert!(!night.is_open(at("2024-11-03T09:00:00Z"), &ny)); // 04:00 EST
        assert_eq!(
            night.next_start(at("2024-11-02T20:00:00Z"), &ny),
            at("2024-11-03T07:00:00Z")
        );
        // A 01:00-02:00 window happens twice that night: 05:00-06:00Z and 06:00-07:00Z.
        let one = w(60, 120);
        assert!(one.is_open(at("2024-11-03T05:30:00Z"), &ny));
        assert!(one.is_open(at("2024-11-03T06:30:00Z"), &ny));
    }

    #[test]
    fn next_start_when_open_is_now() {
        let night = w(120, 240);
        let t = at("2024-06-01T02:10:00Z");
        assert_eq!(night.next_start(t, &TimeZone::UTC), t);
        assert_eq!(
            next_window_start(&night, at("2024-06-01T05:00:00Z"), "UTC"),
            at("2024-06-02T02:00:00Z")
        );
    }

    #[test]
    fn unknown_zone_is_an_error_with_utc_fallback() {
        assert_eq!(
            resolve_time_zone("Mars/Olympus_Mons").unwrap_err(),
            Error::UnknownTimeZone("Mars/Olympus_Mons".into())
        );
        assert!(resolve_time_zone("").is_err());
        let (z, fell_back) = resolve_or_utc("Mars/Olympus_Mons");
        assert!(fell_back);
        assert_eq!(z, TimeZone::UTC);
        assert!(!resolve_or_utc("Asia/Kolkata").1);
        let night = w(120, 240);
        assert_eq!(
            next_window_start(&night, at("2024-06-01T05:00:00Z"), "Nowhere/Else"),
            at("2024-06-02T02:00:00Z")
        );
    }
}
