//! The per-second timeline of a run, bounded in memory for canaries that run for weeks
//! (docs/report.md). A 1 Hz sampler pushes one [`Second`] per second, the monitor [`Event`]s;
//! nothing on the load path touches it. Tiers ([`TIERS`]) are counted in buckets, so a sampler that
//! skips seconds cannot make it grow; buckets older than the last tier are dropped (and counted):
//! Prometheus keeps the long history. Merging: counts add; max, p99 and pool in use take the
//! maximum (for p99 an upper bound: at least 99 % of every part, so of the union, lies below it),
//! so a spike is never averaged away; p50 is the success-weighted mean (a typical value); the state
//! is the worst seen, so a one-second outage still colours its 10-minute bucket.
//!
//! Memory bound: the tiers' caps of 112-byte buckets plus [`MAX_EVENTS`] events with at most two
//! strings of [`MAX_TEXT`] bytes each, 3,448,320 bytes (3.4 MB) on 64-bit targets; `tests.rs` feeds
//! a simulated week and checks the heap actually held against it.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Error classes a bucket can count; the crate's fixed set (17 today) must fit.
pub const MAX_CLASSES: usize = 17;

/// Tiers' caps and bucket widths (s), finest first: 6 h at 1 s, 24 h at 1 min, 30 days at 10 min.
pub const TIERS: [(usize, u64); 3] = [(6 * 3600, 1), (24 * 60, 60), (30 * 24 * 6, 600)];

/// Events kept (the latest); a flapping canary drops the oldest.
pub const MAX_EVENTS: usize = 1000;
/// Longest text an event keeps (bytes), so events stay bounded too.
pub const MAX_TEXT: usize = 160;

labelled! {
    /// Write availability as the failover state machine saw it, ordered by severity
    /// so that merging keeps the worst. Serialized like the monitor's states.
    #[derive(
        Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
    )]
    #[serde(rename_all = "snake_case")]
    pub enum State {
        #[default]
        Healthy = "healthy",
        Degraded = "degraded",
        Recovering = "recovering",
        Outage = "outage",
    }
}

/// What happened during `span` seconds from `at` (unix seconds). Counts saturate at
/// `u32::MAX`, which a 10-minute bucket reaches only above 7 million writes/s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub at: u64,
    #[serde(default = "one")]
    pub span: u16,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub successes: u32,
    /// Failures per class, indexed like [`Timeline::classes`].
    #[serde(default, with = "sparse")]
    pub errors: [u32; MAX_CLASSES],
    /// Scheduled but never started (backlog full).
    #[serde(default, skip_serializing_if = "is_default")]
    pub skipped: u32,
    /// Latency from the intended start, seconds; 0 when nothing completed.
    #[serde(default, skip_serializing_if = "is_default")]
    pub p50: f32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub p99: f32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub max: f32,
    #[serde(default)]
    pub pool_in_use: u32,
    #[serde(default)]
    pub state: State,
}

/// What the sampler pushes: a bucket one second wide.
pub type Second = Bucket;

fn one() -> u16 {
    1
}
fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl Bucket {
    /// An empty second starting at `at` (unix seconds).
    pub fn second(at: u64) -> Bucket {
        Bucket {
            at,
            span: 1,
            ..Bucket::default()
        }
    }

    pub fn end(&self) -> u64 {
        self.at + u64::from(self.span)
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.iter().map(|&n| u64::from(n)).sum()
    }

    /// True when a latency was recorded (a real latency is never 0).
    pub fn has_latency(&self) -> bool {
        self.max > 0.0
    }

    /// Folds `other` into `self` (module doc rules), widening `self` from its start to cover it.
    pub fn merge(&mut self, other: &Bucket) {
        let start = self.at.min(other.at);
        let end = self.end().max(other.end());
        if self.has_latency() && other.has_latency() {
            let (a, b) = (f64::from(self.successes), f64::from(other.successes));
            self.p50 = if a + b > 0.0 {
                ((f64::from(self.p50) * a + f64::from(other.p50) * b) / (a + b)) as f32
            } else {
                self.p50.max(other.p50)
            };
        } else if other.has_latency() {
            self.p50 = other.p50;
        }
        self.p99 = self.p99.max(other.p99);
        self.max = self.max.max(other.max);
        self.attempts = self.attempts.saturating_add(other.attempts);
        self.successes = self.successes.saturating_add(other.successes);
        self.skipped = self.skipped.saturating_add(other.skipped);
        for (mine, theirs) in self.errors.iter_mut().zip(other.errors.iter()) {
            *mine = mine.saturating_add(*theirs);
        }
        self.pool_in_use = self.pool_in_use.max(other.pool_in_use);
        self.state = self.state.max(other.state);
        self.at = start;
        self.span = u16::try_from(end - start).unwrap_or(u16::MAX);
    }
}

/// Error counts as `[[class index, count], …]`, nonzero only: most seconds have none.
mod sparse {
    use super::MAX_CLASSES;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u32; MAX_CLASSES], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().enumerate().filter(|(_, n)| **n > 0))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u32; MAX_CLASSES], D::Error> {
        let pairs = Vec::<(usize, u32)>::deserialize(d)?;
        let mut out = [0u32; MAX_CLASSES];
        for (i, n) in pairs {
            let slot = out.get_mut(i).ok_or_else(|| {
                serde::de::Error::custom(format!("error class index {i} >= {MAX_CLASSES}"))
            })?;
            *slot = slot.saturating_add(n);
        }
        Ok(out)
    }
}

/// Something worth a marker on the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unix seconds, sub-second precision.
    pub at: f64,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// Dated back to the first failed (or stalled) write, as the outage record is.
    OutageStart { outage: u32 },
    /// The first acknowledged write after the outage.
    OutageEnd {
        outage: u32,
        unavailable_seconds: Option<f64>,
    },
    /// The primary's identity changed (address, timeline or postmaster start).
    PrimaryChange { before: String, after: String },
    /// Acknowledged writes checked against the (new) primary.
    Verification {
        outage: Option<u32>,
        checked: u64,
        lost: u64,
        /// The time span of the lost writes (0 with none lost).
        #[serde(default)]
        rpo_seconds: f64,
        /// `lost` and `rpo_seconds` are lower bounds (the oldest write checked lost too).
        #[serde(default)]
        at_least: bool,
        unknown_committed: u64,
        unknown_not_committed: u64,
    },
    /// A server restarted in place, or pgdrill itself started again.
    Restart { what: String },
    /// The drill's own fault injection (e.g. `pg_ctl stop -m immediate`).
    FailoverTrigger { how: String },
}

/// A verification that closed no outage: when it ran, and what it found lost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossWithoutOutage {
    pub at: f64,
    pub lost: u64,
    pub rpo_seconds: f64,
    /// `lost` and `rpo_seconds` are lower bounds, as an outage record's `lost_writes_at_least`.
    #[serde(default)]
    pub at_least: bool,
}

/// The latest [`MAX_EVENTS`] events, in push order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EventLog {
    list: VecDeque<Event>,
    /// Events dropped to stay within the bound.
    #[serde(default)]
    dropped: u64,
}

impl EventLog {
    pub fn push(&mut self, mut event: Event) {
        let texts = match &mut event.kind {
            EventKind::PrimaryChange { before, after } => vec![before, after],
            EventKind::Restart { what: text } | EventKind::FailoverTrigger { how: text } => {
                vec![text]
            }
            _ => vec![],
        };
        for s in texts {
            s.truncate(s.floor_char_boundary(MAX_TEXT));
            s.shrink_to_fit();
        }
        if self.list.len() == MAX_EVENTS {
            self.list.pop_front();
            self.dropped += 1;
        }
        self.list.push_back(event);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Event> {
        self.list.iter()
    }

    /// The log as a run keeps it (the latest [`MAX_EVENTS`], texts cut), for one read from a file.
    pub fn kept(mut self) -> EventLog {
        let list = std::mem::take(&mut self.list);
        list.into_iter().for_each(|e| self.push(e));
        self
    }

    /// The verifications that closed no outage (a failover faster than the outage
    /// threshold) still in the log: a summary older than its own list of them.
    pub fn losses_without_outage(&self) -> Vec<LossWithoutOutage> {
        let lone = |e: &Event| match e.kind {
            EventKind::Verification {
                outage: None,
                lost,
                rpo_seconds,
                at_least,
                ..
            } => Some(LossWithoutOutage {
                at: e.at,
                lost,
                rpo_seconds,
                at_least,
            }),
            _ => None,
        };
        self.list.iter().filter_map(lone).collect()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// The run's timeline: buckets oldest first across the tiers, and the events.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(into = "TimelineJson", try_from = "TimelineJson")]
pub struct Timeline {
    /// Error class names, in the order of [`Bucket::errors`].
    classes: Vec<String>,
    /// As [`TIERS`]: the finest (newest) first.
    tiers: [VecDeque<Bucket>; 3],
    /// Buckets dropped beyond the oldest tier.
    dropped_buckets: u64,
    pub events: EventLog,
}

impl Timeline {
    /// `classes`: the error class names (at most [`MAX_CLASSES`]), in [`Bucket::errors`] order.
    pub fn new(classes: &[&str]) -> Timeline {
        assert!(
            classes.len() <= MAX_CLASSES,
            "{} error classes, the timeline holds {MAX_CLASSES}",
            classes.len()
        );
        Timeline {
            classes: classes.iter().map(|c| c.to_string()).collect(),
            ..Timeline::default()
        }
    }

    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Records an event at `at` (unix seconds).
    pub fn event(&mut self, at: f64, kind: EventKind) {
        self.events.push(Event { at, kind });
    }

    /// Records one sampled second. A second at or before the newest one (a clock
    /// step back, a duplicate tick) merges into the newest rather than reorder.
    pub fn push(&mut self, mut second: Second) {
        second.span = 1;
        if let Some(last) = self.tiers[0].back_mut().filter(|l| second.at <= l.at) {
            (second.at, second.span) = (last.at, last.span);
            last.merge(&second);
            return;
        }
        self.push_tier(0, second);
    }

    /// Adds `b` to tier `i`: merged into its newest bucket when in the same aligned span (buckets
    /// arrive in time order), else as its own, the tier's oldest moving on to the next tier
    /// (dropped beyond the last). Room is made first, so no tier ever exceeds its cap.
    fn push_tier(&mut self, i: usize, b: Bucket) {
        let (cap, span) = TIERS[i];
        let same_span = |last: &&mut Bucket| last.at / span == b.at / span;
        if let Some(last) = self.tiers[i].back_mut().filter(same_span) {
            last.merge(&b);
            return;
        }
        if self.tiers[i].len() == cap {
            match self.tiers[i].pop_front() {
                Some(old) if i + 1 < TIERS.len() => self.push_tier(i + 1, old),
                _ => self.dropped_buckets += 1,
            }
        }
        // Grown at most to the cap, so a deque's doubling never overshoots the bound.
        let tier = &mut self.tiers[i];
        if tier.len() == tier.capacity() && tier.capacity() < cap {
            tier.reserve_exact(tier.capacity().max(64).min(cap - tier.capacity()));
        }
        tier.push_back(b);
    }

    /// Every bucket, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Bucket> {
        self.tiers.iter().rev().flatten()
    }

    /// Start of the oldest and end of the newest bucket, unix seconds.
    pub fn span(&self) -> Option<(u64, u64)> {
        let first = self.iter().next()?;
        let last = self.tiers.iter().find_map(VecDeque::back)?;
        Some((first.at, last.end()))
    }

    /// A copy, for rendering, holding only the buckets that end within `last` of the
    /// newest bucket's end, and the events from the first of them on (the live page's view).
    pub fn recent(&self, last: Duration) -> Timeline {
        let end = self.span().map_or(0, |(_, end)| end);
        let from = end.saturating_sub(last.as_secs());
        let buckets: VecDeque<Bucket> = self.iter().filter(|b| b.end() > from).copied().collect();
        let from = buckets.front().map_or(0.0, |b| b.at as f64);
        let mut t = Timeline::default();
        (t.classes, t.tiers[0]) = (self.classes.clone(), buckets);
        for e in self.events.iter().filter(|e| e.at >= from) {
            t.events.push(e.clone());
        }
        t
    }
}

/// The run's timeline behind one lock, shared by the 1 Hz sampler and the places where
/// events happen (the monitor, the identity tracker). The load path never takes it.
pub type Recorder = Mutex<Timeline>;

/// The JSON form: one list of buckets oldest first (each with its span), so a
/// reader needs to know nothing about the tiers.
#[derive(Serialize, Deserialize)]
struct TimelineJson {
    classes: Vec<String>,
    buckets: Vec<Bucket>,
    #[serde(default)]
    dropped_buckets: u64,
    #[serde(default)]
    events: EventLog,
}

impl From<Timeline> for TimelineJson {
    fn from(t: Timeline) -> TimelineJson {
        TimelineJson {
            buckets: t.iter().copied().collect(),
            classes: t.classes,
            dropped_buckets: t.dropped_buckets,
            events: t.events,
        }
    }
}

impl TryFrom<TimelineJson> for Timeline {
    type Error = String;

    fn try_from(t: TimelineJson) -> Result<Timeline, String> {
        let n = t.classes.len();
        if n > MAX_CLASSES {
            return Err(format!("{n} error classes, at most {MAX_CLASSES}"));
        }
        let mut out = Timeline {
            classes: t.classes,
            dropped_buckets: t.dropped_buckets,
            events: t.events,
            ..Timeline::default()
        };
        // Back into the tier their width says, newest first; a bucket is never in a finer tier
        // than a newer one: the coarsest tier's oldest bucket can be narrow (a run that began
        // just before a 10-minute boundary). Read for rendering, not pushed to again.
        let mut finest = 0;
        for b in t.buckets.into_iter().rev() {
            let span = u64::from(b.span);
            let tier = TIERS.iter().position(|t| span <= t.1).unwrap_or(2);
            finest = finest.max(tier);
            out.tiers[finest].push_front(b);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
