//! The acknowledged-write ledger: which client sequence numbers the database
//! acknowledged (and when), and which writes have an unknown outcome, kept
//! compact (runs of sequence numbers per 100 ms slice) and bounded by a time
//! window, so that after a failover we can ask the new primary what survived.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// Ledger time resolution: RPO is reported to this precision.
pub const SLICE: Duration = Duration::from_millis(100);

/// Unknown-outcome writes remembered at most; beyond it they are counted, not kept.
const MAX_UNKNOWN: usize = 100_000;

/// How often, and how long back, an acknowledged id is noted ([`Ledger::floor_at`]): an
/// hour of seconds, longer than any statement timeout a write can fail after.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
const MAX_CHECKPOINTS: usize = 3_600;

/// Held slices ([`Ledger::hold`]) outlive the window until the ledger holds this many windows'
/// worth: verifications that keep failing while the load writes cannot grow it without bound.
pub const HOLD_WINDOWS: usize = 4;

#[derive(Debug)]
struct Slice {
    start: Instant,
    /// Acknowledged sequence numbers, merged into sorted half-open runs when the slice closes.
    runs: Vec<(u64, u64)>,
    open: Vec<u64>,
    min_id: i64,
}

impl Slice {
    /// Moves the open sequence numbers into runs, beside the runs an earlier close made (a
    /// snapshot closes the newest slice while it still takes acknowledgements).
    fn close(&mut self) {
        let mut open = std::mem::take(&mut self.open);
        open.sort_unstable();
        // Consecutive (or repeated) sequence numbers make one run.
        for run in open.chunk_by(|a, b| b - a <= 1) {
            self.runs.push((run[0], run[run.len() - 1] + 1));
        }
    }

    fn bytes(&self) -> usize {
        std::mem::size_of::<Slice>() + self.runs.capacity() * 16 + self.open.capacity() * 8
    }
}

#[derive(Debug, Default)]
pub struct Ledger {
    slices: VecDeque<Slice>,
    window: Duration,
    unknown: BTreeMap<u64, Unknown>,
    unknown_dropped: u64,
    /// The highest id acknowledged so far.
    newest_id: Option<i64>,
    /// The latest acknowledgement (lanes record theirs a little out of order), and the
    /// lowest id acknowledged since the last checkpoint.
    newest_at: Option<Instant>,
    period_min_id: Option<i64>,
    /// `(at, an id acknowledged in the second before)`, one a second: a write sent after
    /// `at` took a higher id ([`Ledger::floor_at`]).
    checkpoints: VecDeque<(Instant, i64)>,
    /// Verifications queued and not begun ([`Ledger::hold`]). While any waits, the slices
    /// begun up to the newest one's `until` are kept past the window, so that one queued
    /// behind a verification that keeps retrying still finds the writes before its outage.
    holds: usize,
    held_until: Option<Instant>,
    /// The newest `until` a verification began with: the slices up to it are in its snapshot.
    taken_until: Option<Instant>,
    /// A held slice in no snapshot was aged out anyway: waiting verifications cannot check all.
    held_lost: bool,
    /// The newest slice aged out of the window (not verified away): a loss that reaches the
    /// oldest write a verification checks may reach further back.
    aged_out: Option<Instant>,
}

/// A write whose outcome is unknown: when it failed, and the lowest id it can have had
/// ([`Ledger::floor_at`] its sending).
#[derive(Debug, Clone, Copy)]
struct Unknown {
    at: Instant,
    floor: Option<i64>,
}

/// What the ledger asks the new primary about, taken at the end of an outage.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Acknowledged sequence numbers as half-open runs, each with its slice's start.
    pub acked: Vec<(u64, u64, Instant)>,
    pub unknown: Vec<u64>,
    /// Lowest `transaction_id` among the acknowledged writes.
    pub min_id: Option<i64>,
    /// Writes acknowledged before `until` were aged out while the verification waited.
    pub incomplete: bool,
    /// Writes older than those it holds went out of `--verify-window` unverified.
    pub window_cut: bool,
}

/// The `seq`s of a [`Snapshot`] the primary holds, one bit each from its lowest: a
/// verification of an hour at 8,000/s holds 3.6 MB, not a row (100 B and more) a write.
#[derive(Debug)]
pub struct Present {
    lo: u64,
    bits: Vec<u64>,
}

impl Present {
    /// `seq`'s word in `bits` and its bit there; `None` for one the snapshot does not ask about.
    fn bit(&self, seq: u64) -> Option<(usize, u64)> {
        let i = seq.checked_sub(self.lo)?;
        let word = usize::try_from(i / 64).ok()?;
        (word < self.bits.len()).then_some((word, 1 << (i % 64)))
    }

    /// Notes `seq` as present; one the snapshot does not ask about is passed over.
    pub fn insert(&mut self, seq: u64) {
        if let Some((word, bit)) = self.bit(seq) {
            self.bits[word] |= bit;
        }
    }

    fn contains(&self, seq: u64) -> bool {
        self.bit(seq)
            .is_some_and(|(word, bit)| self.bits[word] & bit != 0)
    }
}

/// What one verification found: what was lost, and how the unknown outcomes resolved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Check {
    pub checked: u64,
    pub lost: u64,
    /// Up to 10,000 lost sequence numbers (column `seq` of this run).
    pub lost_seqs: Vec<u64>,
    pub rpo_seconds: f64,
    pub unknown_committed: u64,
    pub unknown_not_committed: u64,
    /// How long verification took, retries included.
    pub seconds: f64,
    /// The oldest write checked was lost, and older ones went out of `--verify-window`
    /// unchecked: the loss and the RPO may be larger than counted.
    pub at_least: bool,
}

impl Ledger {
    pub fn new(window: Duration) -> Ledger {
        Ledger {
            window,
            ..Ledger::default()
        }
    }

    /// A verification of what was acknowledged up to `until` is about to be queued.
    pub fn hold(&mut self, until: Instant) {
        self.holds += 1;
        self.held_until = Some(self.held_until.map_or(until, |h| h.max(until)));
    }

    /// Whether a verification is queued that has not taken its snapshot yet.
    pub fn held(&self) -> bool {
        self.holds > 0
    }

    /// A held verification begins: its snapshot, and its hold let go.
    pub fn take(&mut self, until: Instant) -> Snapshot {
        let snapshot = self.snapshot(until);
        self.taken_until = Some(self.taken_until.map_or(until, |t| t.max(until)));
        self.holds = self.holds.saturating_sub(1);
        if self.holds == 0 {
            (self.held_until, self.held_lost) = (None, false);
        }
        snapshot
    }

    pub fn ack(&mut self, seq: u64, id: i64, now: Instant) {
        let need_new = self
            .slices
            .back()
            .is_none_or(|s| now.duration_since(s.start) >= SLICE);
        if need_new {
            if let Some(last) = self.slices.back_mut() {
                last.close();
            }
            self.slices.push_back(Slice {
                start: now,
                runs: Vec::new(),
                open: Vec::new(),
                min_id: i64::MAX,
            });
            self.prune();
        }
        if let Some(slice) = self.slices.back_mut() {
            slice.open.push(seq);
            slice.min_id = slice.min_id.min(id);
        }
        self.newest_id = Some(self.newest_id.map_or(id, |n| n.max(id)));
        self.newest_at = Some(self.newest_at.map_or(now, |n| n.max(now)));
        self.period_min_id = Some(self.period_min_id.map_or(id, |m| m.min(id)));
        if need_new {
            self.checkpoint();
        }
    }

    /// Notes, at most once a second, the lowest id acknowledged since the last time: the
    /// lowest rather than the highest, so that a promoted standby whose sequence is behind
    /// the old primary's is caught up with at the next checkpoint.
    fn checkpoint(&mut self) {
        let Some(now) = self.newest_at else { return };
        let due = self
            .checkpoints
            .back()
            .is_none_or(|&(at, _)| now.duration_since(at) >= CHECKPOINT_EVERY);
        if let Some(min_id) = self.period_min_id.filter(|_| due) {
            if self.checkpoints.len() == MAX_CHECKPOINTS {
                self.checkpoints.pop_front();
            }
            self.checkpoints.push_back((now, min_id));
            self.period_min_id = None;
        }
    }

    /// About the lowest id a write sent at `sent` can have: ids grow, so it is above one
    /// acknowledged before it was sent; without a checkpoint that old, the oldest acknowledged id
    /// held (else the newest), below it if the write failed within `--verify-window` of being sent.
    fn floor_at(&self, sent: Instant) -> Option<i64> {
        let before = self.checkpoints.partition_point(|&(at, _)| at <= sent);
        match before.checked_sub(1) {
            Some(i) => Some(self.checkpoints[i].1),
            None => self.oldest_acked_id().or(self.newest_id),
        }
    }

    /// A write sent at `sent` failed at `now`, and the server may have committed it.
    pub fn unknown(&mut self, seq: u64, sent: Instant, now: Instant) {
        if self.unknown.len() >= MAX_UNKNOWN {
            // Still counted in pgdrill_unknown_outcome_writes_total, just never resolved.
            if self.unknown_dropped == 0 {
                tracing::warn!(
                    limit = MAX_UNKNOWN,
                    "too many unknown-outcome writes to remember; later ones stay unresolved"
                );
            }
            self.unknown_dropped += 1;
            return;
        }
        let floor = self.floor_at(sent);
        self.unknown.insert(seq, Unknown { at: now, floor });
    }

    /// Keeps the newest `window` worth of slices. Slices exist only where writes were acknowledged,
    /// so an outage, however long, ages nothing out: the writes from just before it are still here
    /// when it ends. Held slices ([`Ledger::hold`]) stay, up to [`HOLD_WINDOWS`] windows.
    fn prune(&mut self) {
        let keep = (self.window.as_nanos() / SLICE.as_nanos()).max(1) as usize + 1;
        let excess = self.slices.len().saturating_sub(keep);
        let held = self.held_until.map_or(0, |until| {
            let aged = self.slices.iter().take(excess);
            aged.take_while(|s| s.start <= until).count()
        });
        // Past the cap, the oldest held slices go first; lost only if no snapshot has them.
        let dropped = held.saturating_sub(keep * (HOLD_WINDOWS - 1));
        let taken = self.taken_until;
        let mut gone = self.slices.iter().take(dropped);
        self.held_lost |= gone.any(|s| taken.is_none_or(|t| s.start > t));
        let aged = self.slices.iter().take(excess).map(|s| s.start).max();
        self.aged_out = aged.max(self.aged_out);
        self.slices.drain(held..excess);
        self.slices.drain(..dropped);
    }

    /// The lowest id of a write the ledger may still ask about: of the acknowledged writes
    /// it holds, and about, of the unknown outcomes not yet resolved (they may be older than
    /// every acknowledged write it still holds).
    pub fn oldest_id(&self) -> Option<i64> {
        let unknown = self.unknown.values().filter_map(|u| u.floor);
        self.oldest_acked_id().into_iter().chain(unknown).min()
    }

    fn oldest_acked_id(&self) -> Option<i64> {
        let ids = self.slices.iter().map(|s| s.min_id);
        ids.filter(|id| *id != i64::MAX).min()
    }

    /// Everything acknowledged up to `until`, for verification; leaves the ledger as is.
    pub fn snapshot(&mut self, until: Instant) -> Snapshot {
        let taken = self.taken_until;
        let mut snap = Snapshot {
            incomplete: self.held_lost,
            // Writes never verified went out of the window before the ones it holds.
            window_cut: self.aged_out.is_some_and(|a| taken.is_none_or(|t| a > t)),
            ..Snapshot::default()
        };
        for slice in self.slices.iter_mut().take_while(|s| s.start <= until) {
            slice.close();
            let runs = slice.runs.iter().map(|&(lo, hi)| (lo, hi, slice.start));
            snap.acked.extend(runs);
        }
        let unknown = self.unknown.iter().filter(|(_, u)| u.at <= until);
        snap.unknown = unknown.clone().map(|(s, _)| *s).collect();
        let acked = self.slices.iter().take_while(|s| s.start <= until);
        let acked_ids = acked.map(|s| s.min_id).filter(|id| *id != i64::MAX);
        snap.min_id = acked_ids.chain(unknown.filter_map(|(_, u)| u.floor)).min();
        snap
    }

    /// Unknown outcomes older than `before` (settled: the server has committed or aborted
    /// them by now), and the lowest id they can have, about.
    pub fn settled_unknowns(&self, before: Instant) -> (Vec<u64>, Option<i64>) {
        let settled = self.unknown.iter().filter(|(_, u)| u.at < before);
        let seqs = settled.clone().map(|(s, _)| *s).collect();
        let min_id = settled.filter_map(|(_, u)| u.floor).min();
        (seqs, min_id.or_else(|| self.oldest_acked_id()))
    }

    /// Unknown outcomes resolved by the periodic check: not to be counted again.
    pub fn forget_unknowns(&mut self, seqs: &[u64]) {
        for seq in seqs {
            self.unknown.remove(seq);
        }
    }

    /// After a verification, forget exactly the runs it covered, so that nothing is counted twice
    /// and what was acknowledged after the snapshot (in the newest slice it closed) is verified
    /// next time. Emptied slices go, but the newest, which takes the next acknowledgements.
    pub fn forget_verified(&mut self, until: Instant, snap: &Snapshot) {
        let verified: HashSet<(u64, u64, Instant)> = snap.acked.iter().copied().collect();
        for slice in self.slices.iter_mut().take_while(|s| s.start <= until) {
            let start = slice.start;
            slice
                .runs
                .retain(|&(lo, hi)| !verified.contains(&(lo, hi, start)));
        }
        let newest = self.slices.pop_back();
        self.slices
            .retain(|s| !s.runs.is_empty() || !s.open.is_empty());
        self.slices.extend(newest);
        self.forget_unknowns(&snap.unknown);
    }

    pub fn bytes(&self) -> usize {
        let checkpoints = self.checkpoints.capacity() * std::mem::size_of::<(Instant, i64)>();
        self.slices.iter().map(Slice::bytes).sum::<usize>() + self.unknown.len() * 48 + checkpoints
    }
}

impl Snapshot {
    /// One past the highest `seq` the snapshot holds.
    pub fn seq_end(&self) -> i64 {
        let acked = self.acked.iter().map(|&(_, hi, _)| hi);
        let unknown = self.unknown.iter().map(|&s| s + 1);
        acked.chain(unknown).max().unwrap_or(0) as i64
    }

    /// Nothing found yet, for every `seq` the snapshot asks about.
    pub fn present(&self) -> Present {
        let acked = self.acked.iter().map(|&(lo, _, _)| lo);
        let lo = acked.chain(self.unknown.iter().copied()).min().unwrap_or(0);
        let span = (self.seq_end() as u64).saturating_sub(lo);
        let words = usize::try_from(span.div_ceil(64)).unwrap_or(usize::MAX);
        Present {
            lo,
            bits: vec![0; words],
        }
    }

    /// Compares against the sequence numbers present on the primary. The RPO is measured
    /// back from `window_end`, or else (a switch seen without an outage, noticed up to a
    /// probe's interval after it) from the last lost acknowledgement.
    pub fn judge(&self, present: &Present, window_end: Option<Instant>) -> Check {
        let contains = |s: u64| present.contains(s);
        let mut v = Check::default();
        let mut lost_at: Option<(Instant, Instant)> = None;
        for &(lo, hi, at) in &self.acked {
            v.checked += hi - lo;
            for s in lo..hi {
                if !contains(s) {
                    v.lost += 1;
                    if v.lost_seqs.len() < 10_000 {
                        v.lost_seqs.push(s);
                    }
                    lost_at = Some(lost_at.map_or((at, at), |(e, l)| (e.min(at), l.max(at))));
                }
            }
        }
        // The RPO: from the earliest lost acknowledgement to the end of the checked window,
        // rounded up by one slice (an RPO is only as fine as the slices); 0 when none was lost.
        if let Some((earliest, latest)) = lost_at {
            let end = window_end.unwrap_or(latest);
            v.rpo_seconds = (end.saturating_duration_since(earliest) + SLICE).as_secs_f64();
            let oldest = self.acked.iter().map(|&(_, _, at)| at).min();
            v.at_least = self.window_cut && oldest == Some(earliest);
        }
        v.unknown_committed = self.unknown.iter().filter(|&&s| contains(s)).count() as u64;
        v.unknown_not_committed = self.unknown.len() as u64 - v.unknown_committed;
        v
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn judged(snap: &Snapshot, seqs: impl IntoIterator<Item = u64>) -> Check {
        snap.judge(&found(snap, seqs), None)
    }

    /// What a primary holding `seqs` answers to `snap`.
    pub(crate) fn found(snap: &Snapshot, seqs: impl IntoIterator<Item = u64>) -> Present {
        let mut present = snap.present();
        seqs.into_iter().for_each(|s| present.insert(s));
        present
    }

    #[tokio::test(start_paused = true)]
    async fn runs_compact_and_lost_writes_are_found() {
        let mut ledger = Ledger::new(Duration::from_secs(30));
        let t0 = Instant::now();
        // Acks arrive out of order across lanes; seq 5 failed, 9 is unknown.
        for (i, seq) in [1u64, 0, 2, 3, 4, 6, 8, 7].iter().enumerate() {
            ledger.ack(
                *seq,
                100 + i as i64,
                t0 + Duration::from_millis(i as u64 * 30),
            );
        }
        ledger.unknown(9, t0, t0 + Duration::from_millis(250));
        let end = t0 + Duration::from_secs(1);
        let snap = ledger.snapshot(end);
        assert_eq!(snap.min_id, Some(100));
        assert_eq!(snap.acked.iter().map(|r| r.1 - r.0).sum::<u64>(), 8);
        // The query asks for nothing past the unknown 9, however far the load has gone.
        assert_eq!(snap.seq_end(), 10);
        assert_eq!(Snapshot::default().seq_end(), 0);
        // The new primary lacks 7 and 8 (acknowledged) and has 9 (unknown).
        let verdict = snap.judge(&found(&snap, [0, 1, 2, 3, 4, 6, 9]), Some(end));
        assert_eq!(verdict.checked, 8);
        assert_eq!(verdict.lost, 2);
        assert_eq!(verdict.lost_seqs, vec![7, 8]);
        assert_eq!(verdict.unknown_committed, 1);
        assert_eq!(verdict.unknown_not_committed, 0);
        // 7 was acknowledged 210 ms in, 790 ms before the end; plus one slice.
        assert!(verdict.rpo_seconds >= 0.79 + SLICE.as_secs_f64() - 1e-9);
        // Without a window end (a switch noticed late), from the first lost slice (3, at t0)
        // to the last (7, in the slice begun 120 ms in), plus one slice: not up to `end`.
        let late = snap.judge(&found(&snap, [0, 1, 2, 4, 6, 8, 9]), None);
        assert_eq!(late.lost_seqs, vec![3, 7]);
        assert!((late.rpo_seconds - (0.12 + SLICE.as_secs_f64())).abs() < 1e-9);
        let none_lost = snap.judge(&found(&snap, [0, 1, 2, 3, 4, 6, 7, 8]), Some(end));
        assert_eq!((none_lost.lost, none_lost.rpo_seconds), (0, 0.0));
        // Rows the snapshot does not ask about (an earlier verification's, one past the
        // end) are passed over, not counted.
        let beyond = snap.judge(&found(&snap, [0, 1, 2, 3, 4, 6, 7, 8, 10, 5_000]), None);
        assert_eq!((beyond.lost, beyond.unknown_committed), (0, 0));
        let mut later = Snapshot::default();
        later.acked.push((1_000, 1_003, t0));
        let earlier = judged(&later, [3, 999, 1_000, 1_002]);
        assert_eq!((earlier.checked, earlier.lost_seqs), (3, vec![1_001]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_loss_reaching_the_oldest_write_after_the_window_cut_is_a_lower_bound() {
        // 1 s window, 10 writes a second for 3 s: the first 2 s went out unverified.
        let mut ledger = Ledger::new(Duration::from_secs(1));
        let t0 = Instant::now();
        for seq in 0..30u64 {
            ledger.ack(seq, seq as i64, t0 + Duration::from_millis(seq * 100));
        }
        let end = t0 + Duration::from_secs(3);
        let snap = ledger.snapshot(end);
        assert!(snap.window_cut);
        let held: Vec<u64> = snap.acked.iter().flat_map(|&(lo, hi, _)| lo..hi).collect();
        let oldest = held[0];
        // Everything the window holds lost: older writes may be lost too, unseen.
        assert!(snap.judge(&found(&snap, []), Some(end)).at_least);
        // The last writes lost, the oldest held found: the loss is all counted.
        let kept = found(&snap, held.iter().copied().filter(|&s| s < 27));
        let tail = snap.judge(&kept, Some(end));
        assert!(tail.lost > 0 && !tail.at_least, "{tail:?}");
        // Nothing went out of the window yet: a loss from the first write is all there is.
        let mut young = Ledger::new(Duration::from_secs(30));
        for seq in 0..30u64 {
            young.ack(seq, seq as i64, t0 + Duration::from_millis(seq * 100));
        }
        let snap = young.snapshot(end);
        assert!(!snap.window_cut && !snap.judge(&found(&snap, []), Some(end)).at_least);
        assert!(oldest > 0);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_stays_bounded_by_the_window() {
        let window = Duration::from_secs(2);
        let mut ledger = Ledger::new(window);
        let t0 = Instant::now();
        // 8,000/s for 20 s: 160,000 acks.
        for seq in 0..160_000u64 {
            ledger.ack(seq, seq as i64, t0 + Duration::from_micros(seq * 125));
        }
        assert!(ledger.slices.len() <= 22, "{}", ledger.slices.len());
        assert!(ledger.bytes() < 64 * 1024, "{}", ledger.bytes());
        let end = t0 + Duration::from_secs(21);
        let snap = ledger.snapshot(end);
        assert_eq!(snap.acked.len(), ledger.slices.len());
        ledger.forget_verified(end, &snap);
        assert_eq!(ledger.slices.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_verification_keeps_its_writes_past_the_window_within_a_bound() {
        // 1 s window (11 slices), 10 slices a second: the writes of 0..1 s, then an outage
        // ends at 0.95 s whose verification waits behind another while the load goes on.
        let at = |ms: u64| Instant::now() + Duration::from_millis(ms);
        let mut ledger = Ledger::new(Duration::from_secs(1));
        let ack_until = |ledger: &mut Ledger, from: u64, to: u64| {
            for seq in from..to {
                ledger.ack(seq, seq as i64, at(seq * 100));
            }
        };
        ack_until(&mut ledger, 0, 10);
        ledger.hold(at(950));
        // 3 s of writes later: without the hold only the last second would be left.
        ack_until(&mut ledger, 10, 40);
        let snap = ledger.take(at(950));
        assert!(!snap.incomplete);
        assert_eq!(snap.acked.iter().map(|r| r.1 - r.0).sum::<u64>(), 10);
        ack_until(&mut ledger, 40, 41);
        assert_eq!(
            ledger.slices.len(),
            11,
            "no hold left: the window alone again"
        );
        // One verification begins at 4.05 s and keeps failing; one more is queued after each
        // second of writes. Kept up to four windows' worth, the oldest first aged out: first
        // those the begun one's snapshot has, then the waiting ones' own, which they say.
        ledger.hold(at(4_050));
        let _retrying = ledger.take(at(4_050));
        let mut complete = Vec::new();
        for next in [41, 51, 61, 71, 81, 91] {
            ack_until(&mut ledger, next, next + 10);
            ledger.hold(at(next * 100 + 950));
            assert!(ledger.slices.len() <= 4 * 11, "{}", ledger.slices.len());
            complete.push(!ledger.snapshot(at(4_000)).incomplete);
        }
        assert_eq!(complete, [true, true, true, true, false, false]);
        for _ in 0..5 {
            assert!(ledger.take(at(10_000)).incomplete);
        }
        assert!(ledger.take(at(10_000)).incomplete, "the last waiting one");
        assert!(
            !ledger.snapshot(at(10_000)).incomplete,
            "none waits: complete again"
        );
    }

    /// Every sequence number the next snapshot would ask about.
    fn asked(ledger: &mut Ledger, until: Instant) -> Vec<u64> {
        let snap = ledger.snapshot(until);
        let mut seqs: Vec<u64> = snap.acked.iter().flat_map(|&(lo, hi, _)| lo..hi).collect();
        seqs.sort_unstable();
        seqs
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_id_is_what_retention_must_leave() {
        // 21 slices kept: 20 of the window's and the newest.
        let mut ledger = Ledger::new(Duration::from_secs(2));
        assert_eq!(ledger.oldest_id(), None);
        let t0 = Instant::now();
        // One write a second: each its own slice, all kept (the ledger counts slices).
        for (n, id) in [(0, 500), (1, 400), (2, 600)] {
            ledger.ack(n, id, t0 + Duration::from_secs(n));
        }
        assert_eq!(ledger.oldest_id(), Some(400));
        // An unknown outcome, sent after 400 was acknowledged (not yet 600); its row may be
        // older than any write held later.
        let sent = t0 + Duration::from_millis(1_500);
        ledger.unknown(3, sent, t0 + Duration::from_secs(3));
        for n in 4..40 {
            ledger.ack(n, 600 + n as i64, t0 + Duration::from_secs(n));
        }
        assert!(ledger.oldest_acked_id() > Some(600), "pruned");
        assert_eq!(ledger.oldest_id(), Some(400), "until it is resolved");
        assert_eq!(
            ledger.settled_unknowns(t0 + Duration::from_secs(5)).1,
            Some(400)
        );
        assert_eq!(
            ledger.snapshot(t0 + Duration::from_secs(50)).min_id,
            Some(400)
        );
        ledger.forget_unknowns(&[3]);
        assert!(ledger.oldest_id() > Some(600), "{:?}", ledger.oldest_id());
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_failing_long_after_it_was_sent_keeps_its_floor() {
        // --statement-timeout 60s beside a 2 s window: by the time the write fails, every
        // acknowledgement from before it was sent has been pruned.
        let mut ledger = Ledger::new(Duration::from_secs(2));
        let t0 = Instant::now();
        let at = |tenths: u64| t0 + Duration::from_millis(tenths * 100);
        for n in 0..700 {
            ledger.ack(n, n as i64, at(n));
        }
        ledger.unknown(700, at(100), at(700));
        assert!(ledger.oldest_acked_id() > Some(600), "pruned");
        let floor = ledger.oldest_id().expect("a floor");
        // Sent at 10 s, after ids up to 100 were acknowledged: a second's worth below.
        assert!((90..=100).contains(&floor), "{floor}");
        // Sent before any acknowledgement: nothing known below it but what is held.
        let mut ledger = Ledger::new(Duration::from_secs(2));
        ledger.ack(0, 7, at(10));
        ledger.unknown(1, at(5), at(20));
        assert_eq!(ledger.oldest_id(), Some(7));
        // A promoted standby whose sequence is behind: ids 1,000 and up until 1 s, then 500
        // and up. A write sent at 3.5 s (failing at 10 s) has an id of 500 or more.
        let mut ledger = Ledger::new(Duration::from_secs(2));
        for n in 0..=10 {
            ledger.ack(n, 1_000 + n as i64, at(n));
        }
        for n in 15..=100 {
            ledger.ack(n, 500 + n as i64, at(n));
        }
        ledger.unknown(101, at(35), at(100));
        let floor = ledger.oldest_id().expect("a floor");
        assert!((500..=535).contains(&floor), "{floor}");
        // The checkpoints stay bounded, however long the run.
        let mut ledger = Ledger::new(Duration::from_secs(2));
        for n in 0..(MAX_CHECKPOINTS as u64 + 100) * 10 {
            ledger.ack(n, n as i64, at(n));
        }
        assert_eq!(ledger.checkpoints.len(), MAX_CHECKPOINTS);
    }

    #[tokio::test(start_paused = true)]
    async fn each_acknowledged_write_is_verified_once() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // A canary's pace: nothing acknowledged after the verification, in the slice it
        // closed. The next failover must not judge 0 and 1 again (counted lost twice).
        let mut ledger = Ledger::new(Duration::from_secs(30));
        ledger.ack(0, 1, ms(0));
        ledger.ack(1, 2, ms(10));
        let snap = ledger.snapshot(ms(20));
        ledger.forget_verified(ms(20), &snap);
        assert_eq!(asked(&mut ledger, ms(5_000)), Vec::<u64>::new());
        // What came after a snapshot, in the slice it closed, is kept beside what came
        // before: once verified, only the later one is asked about again.
        let mut ledger = Ledger::new(Duration::from_secs(30));
        ledger.ack(0, 1, ms(0));
        ledger.ack(1, 2, ms(10));
        let snap = ledger.snapshot(ms(20));
        ledger.ack(2, 3, ms(30));
        assert_eq!(asked(&mut ledger, ms(40)), vec![0, 1, 2]);
        ledger.forget_verified(ms(20), &snap);
        assert_eq!(asked(&mut ledger, ms(5_000)), vec![2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_outage_does_not_age_out_the_writes_before_it() {
        let mut ledger = Ledger::new(Duration::from_secs(30));
        let t0 = Instant::now();
        for seq in 0..8_000u64 {
            ledger.ack(seq, seq as i64, t0 + Duration::from_micros(seq * 125));
        }
        // Two minutes without an acknowledgement, then the first write after it.
        let after = t0 + Duration::from_secs(121);
        ledger.ack(8_000, 8_000, after);
        let snap = ledger.snapshot(after);
        let checked: u64 = snap.acked.iter().map(|(lo, hi, _)| hi - lo).sum();
        assert_eq!(
            checked, 8_001,
            "every write from before the outage is still verifiable"
        );
    }
}
