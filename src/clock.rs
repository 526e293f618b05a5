//! The run's clocks: wall time now, and the monotonic clock mapped onto wall time once, so
//! that every output dates an instant the same way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Now, as unix seconds (for events dated where no monotonic clock mapping is at hand).
pub fn unix_now() -> f64 {
    unix(SystemTime::now())
}

/// A wall-clock time as unix seconds (0 before 1970).
pub fn unix(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Unix seconds as RFC 3339 UTC, rounded to the millisecond as every duration is printed
/// (so an outage's two ends read as far apart as its duration), within what RFC 3339 can
/// write (years 1970 to 9999: a report's input can hold any number).
pub fn rfc3339(unix: f64) -> String {
    let unix = if unix.is_finite() {
        // Half a millisecond up, then truncated to it: rounded.
        (unix + 0.0005).clamp(0.0, 253_402_300_799.0)
    } else {
        0.0
    };
    let t = UNIX_EPOCH + Duration::from_secs_f64(unix);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Whether `seconds` is over `limit` as every output shows a duration, to the millisecond:
/// an outage printed as 120.000 s does not fail a 120 s objective.
pub fn exceeds(seconds: f64, limit: f64) -> bool {
    (seconds * 1000.0).round() > (limit * 1000.0).round()
}

/// Maps the monotonic clock onto wall time: fixed at start so that durations never move,
/// and moved only when the wall clock steps (an NTP step, a resumed VM), so that dates on
/// /metrics stay comparable with the scraper's clock. Clones share the mapping.
#[derive(Debug, Clone)]
pub struct WallClock {
    instant: Instant,
    unix: f64,
    /// The wall clock's steps since start, in seconds (the bits of an `f64`).
    stepped: Arc<AtomicU64>,
}

/// A smaller gap between the wall clock and the mapping is no step: the monotonic clock is
/// slewed with the wall clock, so they part only when the wall clock is set.
const STEP: f64 = 0.1;

impl WallClock {
    pub fn now() -> WallClock {
        WallClock {
            instant: Instant::now(),
            unix: unix_now(),
            stepped: Arc::default(),
        }
    }

    pub fn unix(&self, at: Instant) -> f64 {
        let unix = self.unix + f64::from_bits(self.stepped.load(Ordering::Relaxed));
        unix + at.saturating_duration_since(self.instant).as_secs_f64()
            - self.instant.saturating_duration_since(at).as_secs_f64()
    }

    pub fn rfc3339(&self, at: Instant) -> String {
        rfc3339(self.unix(at))
    }

    /// Follows a step of the wall clock since the last call: returns it (seconds, negative
    /// back), dates from now on moved by it.
    pub fn follow(&self) -> Option<f64> {
        self.follow_to(unix_now(), Instant::now())
    }

    pub(crate) fn follow_to(&self, wall: f64, at: Instant) -> Option<f64> {
        let step = wall - self.unix(at);
        if step.abs() < STEP {
            return None;
        }
        let stepped = f64::from_bits(self.stepped.load(Ordering::Relaxed)) + step;
        self.stepped.store(stepped.to_bits(), Ordering::Relaxed);
        Some(step)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_round_to_the_millisecond_as_durations_do() {
        // An outage of 0.225891 s prints as 0.226 s: its two ends read 0.226 s apart.
        let (start, end) = (1_795_766_469.528_089_3, 1_795_766_469.753_980_4);
        assert_eq!(format!("{:.3}", end - start), "0.226");
        assert_eq!(super::rfc3339(start), "2026-11-27T08:01:09.528Z");
        assert_eq!(super::rfc3339(end), "2026-11-27T08:01:09.754Z");
        assert_eq!(super::rfc3339(f64::NAN), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::rfc3339(1e300), "9999-12-31T23:59:59.000Z");
    }

    #[test]
    fn a_step_of_the_wall_clock_moves_dates_from_then_on_for_every_clone() {
        let clock = super::WallClock::now();
        let shared = clock.clone();
        let at = tokio::time::Instant::now();
        let before = clock.unix(at);
        // A slewed or jittery reading is no step.
        assert_eq!(clock.follow_to(before + 0.05, at), None);
        assert_eq!(clock.follow_to(before + 120.0, at), Some(120.0));
        assert_eq!(shared.unix(at), before + 120.0);
        assert_eq!(clock.follow_to(before + 120.0, at), None, "followed once");
        assert_eq!(clock.follow_to(before + 60.0, at), Some(-60.0));
        assert_eq!(shared.unix(at), before + 60.0);
    }
}
