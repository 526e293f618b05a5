//! The outage records and state changes the drill report shows, kept as plain data the
//! monitor fills in from state-machine transitions and verification results.

use crate::clock::WallClock;
use parking_lot::Mutex;
use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::db::identity::Identity;
use crate::error::ErrorClass;
use crate::failover::machine::FailoverState;
use crate::rpo::ledger::Check;
use crate::telemetry::timeline::LossWithoutOutage;

/// One outage as the drill report shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct OutageRecord {
    pub index: usize,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub start_unix: f64,
    pub end_unix: Option<f64>,
    /// First failed or stalled write after the last success → first success after.
    pub write_unavailable_seconds: Option<f64>,
    /// First success → achieved rate ≥ 95 % of target, held for the recovery window.
    pub time_to_full_rate_seconds: Option<f64>,
    #[serde(deserialize_with = "crate::telemetry::errors::class_names")]
    pub error_classes: Vec<&'static str>,
    pub identity_before: Option<Identity>,
    pub identity_after: Option<Identity>,
    pub checked_writes: Option<u64>,
    pub lost_writes: Option<u64>,
    /// Up to 10,000 lost sequence numbers (column `seq` of this run); none once the run's
    /// records hold [`MAX_LOST_SEQS`].
    pub lost_seqs: Vec<u64>,
    pub rpo_seconds: Option<f64>,
    /// The oldest write checked was lost, and older ones had gone out of `--verify-window`
    /// unchecked: `lost_writes` and `rpo_seconds` are lower bounds.
    pub lost_writes_at_least: bool,
    pub unknown_outcome_committed: Option<u64>,
    pub unknown_outcome_not_committed: Option<u64>,
    pub verification_seconds: Option<f64>,
    /// Writes were still unavailable when the run stopped: `write_unavailable_seconds` is the
    /// duration so far, and there is no end.
    pub open_at_shutdown: bool,
}

/// One change of the failover state, for the drill report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StateChange {
    pub at: String,
    pub from: FailoverState,
    pub to: FailoverState,
}

/// State changes kept for the report; a canary flapping for weeks keeps the latest.
pub const MAX_STATE_CHANGES: usize = 1000;

/// Outage records kept (about 0.5 kB each); a canary flapping for weeks keeps the latest
/// and adds up the older ones in [`EarlierOutages`].
pub const MAX_OUTAGES: usize = 1000;

/// The outage records let go (the oldest, beyond [`MAX_OUTAGES`]), added up: what the
/// verdict and the report still need of them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct EarlierOutages {
    /// Outages 1 to `count`.
    pub count: usize,
    pub checked_writes: u64,
    /// Of them, those never verified.
    pub unverified: usize,
    /// The longest write unavailability among them, and its outage.
    pub longest_write_unavailable_seconds: f64,
    pub longest_outage: usize,
    /// A loss among the records let go (outages, or primary changes without one) was a lower bound.
    pub lost_writes_at_least: bool,
}

impl EarlierOutages {
    /// Lets go of the oldest `records` beyond [`MAX_OUTAGES`], as a run does (a summary read back).
    pub fn keep_latest(&mut self, records: &mut Vec<OutageRecord>) {
        let over = records.len().saturating_sub(MAX_OUTAGES);
        for o in records.drain(..over) {
            self.add(&o);
        }
    }

    fn add(&mut self, o: &OutageRecord) {
        self.count = self.count.saturating_add(1);
        let checked = o.checked_writes.unwrap_or(0);
        self.checked_writes = self.checked_writes.saturating_add(checked);
        self.unverified = self
            .unverified
            .saturating_add(usize::from(o.lost_writes.is_none()));
        self.lost_writes_at_least |= o.lost_writes_at_least;
        let seconds = o.write_unavailable_seconds.unwrap_or(0.0);
        if seconds > self.longest_write_unavailable_seconds {
            self.longest_write_unavailable_seconds = seconds;
            self.longest_outage = o.index;
        }
    }
}

/// Lost sequence numbers kept over all records (800 kB): a canary losing writes at every
/// failover for weeks keeps the counts, not ever more numbers.
pub const MAX_LOST_SEQS: usize = 100_000;

#[derive(Debug, Default)]
struct Book {
    outages: VecDeque<OutageRecord>,
    earlier: EarlierOutages,
    changes: VecDeque<StateChange>,
    /// Lost sequence numbers held by the records.
    lost_seqs: usize,
    state: FailoverState,
    /// States entered since the timeline sampler last asked, so a short outage between
    /// two samples still marks its second.
    entered: Vec<FailoverState>,
    /// When the load stopped: an outage still open then lasted until this, not until the shutdown.
    load_end: Option<Instant>,
    /// Verifications asked for primary changes without an outage, and those answered.
    changes_asked: usize,
    changes_verified: usize,
    /// What the latest [`MAX_OUTAGES`] of those answered found: kept here, not read back
    /// from the bounded event log, so that a long drill's early triggers keep their losses.
    lone: VecDeque<LossWithoutOutage>,
}

/// The records, shared by the monitor (writer) and the report (reader).
#[derive(Debug)]
pub struct Outages {
    clock: WallClock,
    book: Mutex<Book>,
}

impl Outages {
    pub fn new(clock: WallClock) -> Outages {
        Outages {
            clock,
            book: Mutex::new(Book::default()),
        }
    }

    pub fn clock(&self) -> WallClock {
        self.clock.clone()
    }

    /// Follows a wall-clock step ([`WallClock::follow`]), moving an open outage's start with it so
    /// its dates and /metrics' stay on its end's clock. Returns the step and the moved start.
    pub fn follow_clock(&self) -> Option<(f64, Option<f64>)> {
        let step = self.clock.follow()?;
        Some((step, self.open_moved(step)))
    }

    fn open_moved(&self, step: f64) -> Option<f64> {
        let mut b = self.book.lock();
        let open = b.outages.back_mut().filter(|o| o.end_unix.is_none())?;
        open.start_unix += step;
        open.started_at = crate::clock::rfc3339(open.start_unix);
        Some(open.start_unix)
    }

    /// The records kept, the oldest first.
    pub fn outages(&self) -> Vec<OutageRecord> {
        self.book.lock().outages.iter().cloned().collect()
    }

    pub fn earlier(&self) -> EarlierOutages {
        self.book.lock().earlier.clone()
    }

    /// A primary change without an outage is to be verified (queued or not).
    pub fn change_to_verify(&self) {
        self.book.lock().changes_asked += 1;
    }

    /// A primary change's verification answered at `at` (Unix seconds) with `check`.
    pub fn change_verified(&self, at: f64, check: &Check) {
        let mut b = self.book.lock();
        b.changes_verified += 1;
        if b.lone.len() == MAX_OUTAGES {
            let let_go = b.lone.pop_front();
            b.earlier.lost_writes_at_least |= let_go.is_some_and(|l| l.at_least);
        }
        b.lone.push_back(LossWithoutOutage {
            at,
            lost: check.lost,
            rpo_seconds: check.rpo_seconds,
            at_least: check.at_least,
        });
    }

    /// The verifications of primary changes without an outage, the oldest first.
    pub fn losses_without_outage(&self) -> Vec<LossWithoutOutage> {
        self.book.lock().lone.iter().copied().collect()
    }

    /// Primary changes without an outage whose verification never answered (queue full,
    /// failing at stop, cut by the shutdown grace): their writes were never looked at.
    pub fn unverified_changes(&self) -> usize {
        let b = self.book.lock();
        b.changes_asked.saturating_sub(b.changes_verified)
    }

    pub fn state_changes(&self) -> Vec<StateChange> {
        self.book.lock().changes.iter().cloned().collect()
    }

    /// The current state (`healthy` before any change).
    pub fn state(&self) -> FailoverState {
        self.book.lock().state
    }

    /// The current state and every state entered since the last call.
    pub fn take_states(&self) -> Vec<FailoverState> {
        let mut b = self.book.lock();
        let mut states = std::mem::take(&mut b.entered);
        states.push(b.state);
        states
    }

    pub fn state_changed(&self, from: FailoverState, to: FailoverState, at: Instant) {
        let change = StateChange {
            at: self.clock.rfc3339(at),
            from,
            to,
        };
        let mut b = self.book.lock();
        if b.changes.len() == MAX_STATE_CHANGES {
            b.changes.pop_front();
        }
        b.changes.push_back(change);
        b.state = to;
        if !b.entered.contains(&to) {
            b.entered.push(to);
        }
    }

    /// Opens a record; returns its 1-based index.
    pub fn started(&self, start: Instant, before: Option<Identity>) -> usize {
        let mut b = self.book.lock();
        if b.outages.len() == MAX_OUTAGES {
            if let Some(old) = b.outages.pop_front() {
                b.lost_seqs -= old.lost_seqs.len();
                b.earlier.add(&old);
            }
        }
        let index = b.earlier.count + b.outages.len() + 1;
        b.outages.push_back(OutageRecord {
            index,
            started_at: self.clock.rfc3339(start),
            start_unix: self.clock.unix(start),
            identity_before: before,
            ..OutageRecord::default()
        });
        index
    }

    /// Whether a verification's figures are the last failover's to show: those of the
    /// latest outage (`outage`), or a loss found without one while none is open.
    pub fn shows_last_failover(&self, outage: Option<usize>, lost: u64) -> bool {
        let b = self.book.lock();
        let latest = b.outages.back();
        match outage {
            Some(index) => latest.is_some_and(|o| o.index == index),
            None => lost > 0 && latest.is_none_or(|o| o.end_unix.is_some()),
        }
    }

    /// Closes the open record; returns its index for [`Outages::verified`].
    pub fn ended(
        &self,
        start: Instant,
        end: Instant,
        classes: &[ErrorClass],
        after: Option<Identity>,
    ) -> Option<usize> {
        let mut b = self.book.lock();
        let o = b.outages.back_mut()?;
        o.ended_at = Some(self.clock.rfc3339(end));
        o.end_unix = Some(self.clock.unix(end));
        o.write_unavailable_seconds = Some((end - start).as_secs_f64());
        o.error_classes = classes.iter().map(|c| c.as_str()).collect();
        o.identity_after = after;
        Some(o.index)
    }

    /// The load stopped now (the end of `--duration`, or a signal).
    pub fn load_stopped(&self, at: Instant) {
        self.book.lock().load_end = Some(at);
    }

    pub fn load_end(&self) -> Option<Instant> {
        self.book.lock().load_end
    }

    /// Marks the open record as still open, with the duration so far, which it returns in
    /// seconds: until the load stopped, else until `now`.
    pub fn still_open(&self, start: Instant, now: Instant, classes: &[ErrorClass]) -> f64 {
        let mut b = self.book.lock();
        let until = b.load_end.unwrap_or(now);
        let seconds = until.saturating_duration_since(start).as_secs_f64();
        if let Some(o) = b.outages.back_mut().filter(|o| o.ended_at.is_none()) {
            o.write_unavailable_seconds = Some(seconds);
            o.error_classes = classes.iter().map(|c| c.as_str()).collect();
            o.open_at_shutdown = true;
        }
        seconds
    }

    pub fn full_rate(&self, seconds: f64) {
        if let Some(o) = self.book.lock().outages.back_mut() {
            o.time_to_full_rate_seconds = Some(seconds);
        }
    }

    /// Fills in what verification found for outage `index`.
    pub fn verified(&self, index: usize, c: &Check, written_to: Option<Identity>) {
        let mut guard = self.book.lock();
        let b = &mut *guard;
        let Some(position) = index.checked_sub(b.earlier.count + 1) else {
            // Let go unverified while its verification ran (one answer per outage).
            b.earlier.checked_writes += c.checked;
            b.earlier.unverified = b.earlier.unverified.saturating_sub(1);
            b.earlier.lost_writes_at_least |= c.at_least;
            return;
        };
        let Some(o) = b.outages.get_mut(position) else {
            return;
        };
        if written_to.is_some() {
            o.identity_after = written_to;
        }
        o.checked_writes = Some(c.checked);
        o.lost_writes = Some(c.lost);
        b.lost_seqs -= o.lost_seqs.len();
        let room = MAX_LOST_SEQS.saturating_sub(b.lost_seqs);
        o.lost_seqs = c.lost_seqs.iter().take(room).copied().collect();
        b.lost_seqs += o.lost_seqs.len();
        o.rpo_seconds = Some(c.rpo_seconds);
        o.lost_writes_at_least = c.at_least;
        o.unknown_outcome_committed = Some(c.unknown_committed);
        o.unknown_outcome_not_committed = Some(c.unknown_not_committed);
        o.verification_seconds = Some(c.seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn check(lost: u64) -> Check {
        Check {
            checked: 100,
            lost,
            lost_seqs: (0..lost).collect(),
            rpo_seconds: 0.3,
            unknown_committed: 2,
            unknown_not_committed: 1,
            seconds: 0.05,
            at_least: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lost_sequence_numbers_are_kept_up_to_a_bound_over_the_run() {
        let outages = Outages::new(WallClock::now());
        let t0 = Instant::now();
        let many = Check {
            lost_seqs: (0..10_000).collect(),
            ..check(10_000)
        };
        for i in 0..(MAX_LOST_SEQS / 10_000 + 2) {
            outages.started(t0, None);
            let index = outages.ended(t0, t0, &[], None).expect("open record");
            outages.verified(index, &many, None);
            // Verified again (a retry): replaced, not counted twice.
            outages.verified(index, &many, None);
            assert_eq!(index, i + 1);
        }
        let records = outages.outages();
        let kept: usize = records.iter().map(|o| o.lost_seqs.len()).sum();
        assert_eq!(kept, MAX_LOST_SEQS);
        // Every record still counts what it lost.
        assert!(records.iter().all(|o| o.lost_writes == Some(10_000)));
        assert!(records.last().is_some_and(|o| o.lost_seqs.is_empty()));
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_record_is_opened_closed_and_verified() {
        let outages = Outages::new(WallClock::now());
        let t0 = Instant::now();
        assert_eq!(outages.started(t0, None), 1);
        let end = t0 + Duration::from_millis(1_250);
        let index = outages.ended(t0, end, &[ErrorClass::AdminShutdown], None);
        assert_eq!(index, Some(1));
        outages.full_rate(2.5);
        outages.verified(1, &check(3), None);

        let records = outages.outages();
        assert_eq!(records.len(), 1);
        let o = &records[0];
        assert_eq!(o.write_unavailable_seconds, Some(1.25));
        assert!((o.end_unix.unwrap() - o.start_unix - 1.25).abs() < 1e-6);
        assert_eq!(o.error_classes, vec!["admin_shutdown"]);
        assert_eq!(o.time_to_full_rate_seconds, Some(2.5));
        assert_eq!((o.checked_writes, o.lost_writes), (Some(100), Some(3)));
        assert_eq!(o.lost_seqs, vec![0, 1, 2]);
        assert_eq!(o.rpo_seconds, Some(0.3));
        assert_eq!(
            (o.unknown_outcome_committed, o.unknown_outcome_not_committed),
            (Some(2), Some(1))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wall_clock_step_moves_the_open_outages_start_and_later_dates() {
        let outages = Outages::new(WallClock::now());
        let t0 = Instant::now();
        outages.started(t0, None);
        let end = outages.ended(t0, t0 + Duration::from_secs(1), &[], None);
        let before = outages.outages()[0].clone();
        let t1 = t0 + Duration::from_secs(5);
        outages.started(t1, None);
        let open_before = outages.outages()[1].start_unix;
        assert_eq!(outages.open_moved(120.0), Some(open_before + 120.0));
        let records = outages.outages();
        assert_eq!(records[0], before, "an ended outage keeps its dates");
        assert_eq!(
            records[1].started_at,
            crate::clock::rfc3339(open_before + 120.0)
        );
        assert!(end.is_some());
        // Nothing open: nothing to move.
        outages.ended(t1, t1 + Duration::from_secs(1), &[], None);
        assert_eq!(outages.open_moved(-60.0), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_outage_gets_the_next_index_and_verification_finds_its_own() {
        let outages = Outages::new(WallClock::now());
        let t0 = Instant::now();
        outages.started(t0, None);
        let first = outages.ended(t0, t0 + Duration::from_secs(1), &[], None);
        outages.started(t0 + Duration::from_secs(5), None);
        // The first outage's verification finishes while the second is open.
        outages.verified(first.unwrap(), &check(0), None);
        // Its figures are not the last failover's: the second's are pending.
        assert!(!outages.shows_last_failover(first, 0));
        assert!(outages.shows_last_failover(Some(2), 0));
        assert!(
            !outages.shows_last_failover(None, 3),
            "a loss while one is open"
        );
        let records = outages.outages();
        assert_eq!(records[1].index, 2);
        assert_eq!(records[0].lost_writes, Some(0));
        assert_eq!(records[1].lost_writes, None);
        assert_eq!(records[1].ended_at, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flapping_canary_keeps_the_latest_records_and_adds_up_the_rest() {
        let outages = Outages::new(WallClock::now());
        let t0 = Instant::now();
        let mut pending = None;
        for i in 1..=MAX_OUTAGES + 5 {
            outages.started(t0, None);
            let long = if i == 3 { 9.0 } else { 1.0 };
            let end = t0 + Duration::from_secs_f64(long);
            let index = outages.ended(t0, end, &[], None).expect("open record");
            assert_eq!(index, i);
            // Outage 2's verification answers only after its record was let go.
            if i == 2 {
                pending = Some(index);
            } else {
                outages.verified(index, &check(0), None);
            }
        }
        let earlier = outages.earlier();
        let records = outages.outages();
        assert_eq!(records.len(), MAX_OUTAGES);
        assert_eq!(records[0].index, 6);
        assert_eq!((earlier.count, earlier.unverified), (5, 1));
        assert_eq!(earlier.checked_writes, 400);
        assert_eq!(earlier.longest_outage, 3);
        assert_eq!(earlier.longest_write_unavailable_seconds, 9.0);

        outages.verified(pending.expect("outage 2"), &check(0), None);
        let earlier = outages.earlier();
        assert_eq!((earlier.unverified, earlier.checked_writes), (0, 500));
    }

    #[tokio::test(start_paused = true)]
    async fn state_changes_keep_the_latest_thousand_and_the_current_state() {
        let outages = Outages::new(WallClock::now());
        assert_eq!(outages.state(), FailoverState::Healthy);
        let (a, b) = (FailoverState::Healthy, FailoverState::Degraded);
        for i in 0..MAX_STATE_CHANGES + 5 {
            let (from, to) = if i % 2 == 0 { (a, b) } else { (b, a) };
            outages.state_changed(from, to, Instant::now());
        }
        let changes = outages.state_changes();
        assert_eq!(changes.len(), MAX_STATE_CHANGES);
        // The oldest five went: the first kept is change #5, degraded → healthy.
        assert_eq!(changes[0].from, FailoverState::Degraded);
        assert_eq!(outages.state(), FailoverState::Degraded);
    }

    #[test]
    fn a_primary_change_is_unverified_until_its_verification_answers() {
        let o = Outages::new(WallClock::now());
        o.change_to_verify();
        o.change_to_verify();
        o.change_verified(1.0, &check(3));
        assert_eq!(o.unverified_changes(), 1);
        // Its loss is kept whatever else happens (a long drill's early triggers keep theirs),
        // the latest MAX_OUTAGES of them.
        for i in 0..MAX_OUTAGES {
            o.change_verified(2.0 + i as f64, &check(0));
        }
        let lone = o.losses_without_outage();
        assert_eq!(lone.len(), MAX_OUTAGES);
        assert_eq!((lone[0].at, lone[0].lost), (2.0, 0));
    }
}
