//! When the triggers run: `--failover-after` into the run, then every `--failover-every`,
//! `--failovers` times in all.

use std::ops::Add;
use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Schedule {
    /// From the start of the load to the first trigger.
    #[serde(serialize_with = "seconds")]
    pub after: Duration,
    /// Between the starts of consecutive triggers; `None` with a single failover.
    #[serde(serialize_with = "optional_seconds")]
    pub every: Option<Duration>,
    pub count: u32,
}

impl Schedule {
    /// Offsets of the planned trigger starts from the start of the load.
    pub fn offsets(&self) -> Vec<Duration> {
        let every = self.every.unwrap_or_default();
        (0..self.count).map(|i| self.after + every * i).collect()
    }

    /// Planned trigger starts for a run that started at `start` (any clock: tokio's
    /// `Instant` in the daemon, plain numbers in tests).
    pub fn instants<T: Copy + Add<Duration, Output = T>>(&self, start: T) -> Vec<T> {
        self.offsets().into_iter().map(|o| start + o).collect()
    }

    /// The offset of the last planned trigger.
    pub fn last(&self) -> Duration {
        self.after + self.every.unwrap_or_default() * self.count.saturating_sub(1)
    }
}

/// Reads what [`seconds`] wrote (a summary read back by `pgdrill report`).
pub(crate) fn from_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = <f64 as serde::Deserialize>::deserialize(d)?;
    Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom)
}

pub(crate) fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

pub(crate) fn optional_seconds<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trigger_runs_after_the_warm_up() {
        let s = Schedule {
            after: Duration::from_secs(30),
            every: None,
            count: 1,
        };
        assert_eq!(s.offsets(), vec![Duration::from_secs(30)]);
        assert_eq!(s.last(), Duration::from_secs(30));
    }

    #[test]
    fn repeated_triggers_are_evenly_spaced_from_the_run_start() {
        let s = Schedule {
            after: Duration::from_secs(20),
            every: Some(Duration::from_millis(90_500)),
            count: 3,
        };
        let start = tokio::time::Instant::now();
        let at = s.instants(start);
        assert_eq!(at.len(), 3);
        assert_eq!(at[0] - start, Duration::from_secs(20));
        assert_eq!(at[1] - start, Duration::from_millis(110_500));
        assert_eq!(at[2] - start, Duration::from_secs(201));
        assert_eq!(s.last(), Duration::from_secs(201));
        let json = serde_json::to_value(s).unwrap();
        assert_eq!(json["every"], 90.5);
        assert_eq!(json["after"], 20.0);
    }
}
