//! RPO: after an outage or a primary change, ask the (new) primary which acknowledged
//! writes it still has, retrying until it answers; count what was lost and over what span.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use futures_util::TryStreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_postgres::types::{ToSql, Type};
use tokio_util::sync::CancellationToken;

use crate::db::identity::IdentityTracker;
use crate::db::pool::DbPool;
use crate::db::table::Workload;
use crate::error::ErrorClass;
use crate::retry::{Backoff, Throttle};
use crate::rpo::ledger::{Check, Ledger, HOLD_WINDOWS};
use crate::telemetry::metrics::Metrics;

/// Rows are fetched from a little below the lowest acknowledged id, since ids
/// from concurrent connections are not ordered like the schedule.
const ID_SLACK: i64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("connecting for verification: {0}")]
    Connect(#[from] crate::db::connect::ConnectError),
    #[error("the server reached is a standby; waiting for a primary")]
    Standby,
    #[error("the pooled connection reaches another server than the primary; waiting")]
    NotCurrent,
    #[error("verification query: {}", crate::db::error_text(.0))]
    Query(#[from] tokio_postgres::Error),
    #[error("verification query: no answer within {}", humantime::format_duration(*.0))]
    NoAnswer(Duration),
}

/// The lowest id a read-back looks at: [`ID_SLACK`] below the lowest id it looks for (`min_id`,
/// else `floor`), but never below `floor`, the trial INSERT's id (once drawn): every row of this
/// run has a later one, and the ids below it are the users' rows on a table pgdrill shares.
fn read_back_from(min_id: Option<i64>, floor: Option<i64>) -> i64 {
    let from = min_id.or(floor).unwrap_or(0).saturating_sub(ID_SLACK);
    floor.map_or(from, |floor| from.max(floor))
}

/// Which of the run's rows a verification query returns.
enum Seqs<'a> {
    /// `seq` below this.
    Below(i64),
    Asked(&'a [i64]),
}

/// One verification to run: the writes acknowledged before `until`.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    /// The outage this closes (its 1-based index), if any.
    pub outage: Option<usize>,
    pub until: Instant,
    /// When writes stopped being acknowledged: the RPO is measured back from here (`None`:
    /// from the last lost acknowledgement).
    pub loss_reference: Option<Instant>,
}

/// Totals over the run, as plain numbers for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RpoTotals {
    /// Acknowledged writes looked for on a new primary, by every verification.
    pub checked_writes: u64,
    pub lost_writes: u64,
    pub unknown_committed: u64,
    pub unknown_not_committed: u64,
}

/// Runs verifications one at a time and keeps the totals.
pub struct Verifier {
    pool: DbPool,
    workload: Arc<Workload>,
    ledger: Arc<Mutex<Ledger>>,
    metrics: Arc<Metrics>,
    identity: Arc<IdentityTracker>,
    totals: Mutex<RpoTotals>,
    /// An unknown outcome is checked once it is older than this: by then the server has
    /// committed or aborted it (statement_timeout ends what is still running).
    settle: Duration,
    /// How often a failing check of unknown outcomes is said.
    unknowns_failing: Mutex<Throttle>,
    /// While an outage is open, its verification resolves the unknown outcomes, so that they
    /// count in that outage's figures: the periodic check leaves them.
    outage_open: AtomicBool,
}

/// How often the ledger's size is published, and unknown outcomes are checked.
const LEDGER_GAUGE_EVERY: Duration = Duration::from_secs(1);
/// Every this many ticks a fresh connection is made and closed, as a fresh client would: its
/// identity probe sees a primary that changed behind a pooler's kept connections (a RELOAD
/// pointing PgBouncer at the promoted standby, the old primary left up: no error, no new
/// connection, and in session pooling those connections stay on the old server for good).
const PROBE_EVERY_TICKS: u32 = 5;
/// A probe's connection may take this long (a hung server: the ticks go on).
const PROBE_WITHIN: Duration = Duration::from_secs(3);
/// A verification failing the same way is said once in this long (it retries far more often).
const FAILED_WARN_EVERY: Duration = Duration::from_secs(30);

/// One periodic check of unknown outcomes may wait this long for its connection, then as
/// long for its query; the next tick tries again.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// A verification that failed (the new primary not yet reachable) is tried again.
const VERIFY_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));

impl Verifier {
    pub fn new(
        pool: DbPool,
        workload: Arc<Workload>,
        ledger: Arc<Mutex<Ledger>>,
        metrics: Arc<Metrics>,
        identity: Arc<IdentityTracker>,
        statement_timeout: Duration,
    ) -> Verifier {
        Verifier {
            pool,
            workload,
            ledger,
            metrics,
            identity,
            totals: Mutex::default(),
            settle: statement_timeout + Duration::from_secs(1),
            unknowns_failing: Mutex::new(Throttle::new(FAILED_WARN_EVERY)),
            outage_open: AtomicBool::new(false),
        }
    }

    /// Told by the failover monitor as an outage opens and ends.
    pub fn outage_open(&self, open: bool) {
        self.outage_open.store(open, Ordering::Relaxed);
    }

    pub fn totals(&self) -> RpoTotals {
        *self.totals.lock()
    }

    /// The lowest id a verification may still read back: retention must leave it and
    /// what follows (`None`: nothing to verify).
    pub fn oldest_unverified_id(&self) -> Option<i64> {
        self.ledger.lock().oldest_id()
    }

    /// Adds to the run's totals and to their metrics.
    fn add(&self, checked: u64, lost: u64, committed: u64, not_committed: u64) {
        let m = &self.metrics;
        m.lost_writes.inc_by(lost);
        m.unknown_outcome_committed.inc_by(committed);
        m.unknown_outcome_not_committed.inc_by(not_committed);
        let mut t = self.totals.lock();
        t.checked_writes += checked;
        t.lost_writes += lost;
        t.unknown_committed += committed;
        t.unknown_not_committed += not_committed;
    }

    /// Hands `found` the `seq`s of this run's rows from about `min_id` on that the primary the pool
    /// reaches now holds: those below `seq_end` (no more rows than the snapshot checks, however
    /// long the load has run since), or of `asked` only. Streamed: the rows are not held. A query
    /// unanswered within `limit` is given up with its connection (a hung server).
    async fn present(
        &self,
        min_id: Option<i64>,
        which: Seqs<'_>,
        limit: Duration,
        mut found: impl FnMut(u64),
    ) -> Result<(), VerifyError> {
        let (mut dedicated, mut pooled) = (None, None);
        let conn: &mut crate::db::connect::Conn = match self.pool.dedicated().await {
            Ok(conn) => dedicated.insert(conn),
            // No slot left on the server for one more connection: one of the pool's will do.
            Err(err) if err.class == ErrorClass::TooManyConnections => {
                let pooled = pooled.insert(self.pool.checkout(true).await.map_err(|_| err)?);
                // It may still reach the old primary (a session pooler, a proxy that keeps
                // sessions): only one to the server writes go to now will do.
                let now = self.identity.current();
                if now.is_some_and(|now| pooled.silence.server.is_another_process(&now)) {
                    pooled.retired = true;
                    return Err(VerifyError::NotCurrent);
                }
                pooled
            }
            Err(err) => return Err(err.into()),
        };
        if conn.broken {
            return Err(VerifyError::Standby);
        }
        let from_id = read_back_from(min_id, self.workload.id_floor.get().copied());
        let table = self.workload.target();
        let mut params: Vec<(&(dyn ToSql + Sync), Type)> =
            vec![(&from_id, Type::INT8), (&self.workload.run_id, Type::INT8)];
        match &which {
            Seqs::Asked(asked) => params.push((asked, Type::INT8_ARRAY)),
            Seqs::Below(end) => params.push((end, Type::INT8)),
        }
        let sql = table.seqs_sql(self.workload.partitioned(), matches!(which, Seqs::Asked(_)));
        // Unnamed statement: no server-side state, so it also works through PgBouncer in
        // transaction mode (a named one may be executed on another server connection).
        let client = &conn.client;
        let read = async {
            let rows = client.query_typed_raw(&sql, params).await?;
            let mut rows = std::pin::pin!(rows);
            while let Some(row) = rows.try_next().await? {
                if let Some(seq) = row.try_get::<_, Option<i64>>(0)? {
                    found(seq as u64);
                }
            }
            Ok::<_, tokio_postgres::Error>(())
        };
        let Ok(read) = tokio::time::timeout(limit, read).await else {
            conn.broken = true;
            return Err(VerifyError::NoAnswer(limit));
        };
        Ok(read?)
    }

    /// Serves `requests` until the channel closes, each result to `done`; after `stop`, one that
    /// keeps failing is given up after 5 s (the caller bounds the drain by the shutdown grace).
    pub async fn run(
        &self,
        mut requests: mpsc::Receiver<Request>,
        stop: CancellationToken,
        done: impl Fn(&Request, &Check),
    ) {
        let mut gauge = tokio::time::interval(LEDGER_GAUGE_EVERY);
        let mut ticks: u32 = 0;
        loop {
            let req = tokio::select! {
                req = requests.recv() => match req {
                    Some(req) => req,
                    None => return,
                },
                _ = gauge.tick() => {
                    self.publish_ledger_size();
                    ticks = ticks.wrapping_add(1);
                    // Between verifications, one at a time: nothing is resolved twice.
                    if !stop.is_cancelled() {
                        self.resolve_unknowns().await;
                        // A fresh connection, closed at once: connecting observes its server (a
                        // changed primary is verified against); a failure is the connector's.
                        if ticks.is_multiple_of(PROBE_EVERY_TICKS) {
                            let _ = tokio::time::timeout(PROBE_WITHIN, self.pool.dedicated()).await;
                        }
                    }
                    continue;
                }
            };
            // The gauge keeps ticking while a verification retries.
            let check = self.check(&req, &stop);
            tokio::pin!(check);
            let result = loop {
                tokio::select! {
                    result = &mut check => break result,
                    _ = gauge.tick() => self.publish_ledger_size(),
                }
            };
            if let Some(check) = result {
                done(&req, &check);
            }
        }
    }

    /// Resolves settled unknown outcomes against the primary, without waiting for an
    /// outage (a killed backend, a dropped connection). Failures wait for the next tick.
    async fn resolve_unknowns(&self) {
        let Some(before) = Instant::now().checked_sub(self.settle) else {
            return;
        };
        let (seqs, min_id) = {
            let ledger = self.ledger.lock();
            // A queued verification resolves them too, as its outage's or primary change's.
            if self.outage_open.load(Ordering::Relaxed) || ledger.held() {
                return;
            }
            ledger.settled_unknowns(before)
        };
        if seqs.is_empty() {
            return;
        }
        let asked = seqs.iter().map(|s| *s as i64).collect::<Vec<_>>();
        // The query has its own limit, inside this one: cut off from outside, an unanswered
        // query would leave its connection open (and its server slot taken).
        let limit = self.settle.min(RESOLVE_TIMEOUT);
        let mut found = HashSet::new();
        let present = self.present(min_id, Seqs::Asked(&asked), limit, |s| {
            found.insert(s);
        });
        let error = match tokio::time::timeout(RESOLVE_TIMEOUT + limit, present).await {
            Err(_) => format!("no connection within {RESOLVE_TIMEOUT:?}"),
            Ok(Ok(())) => {
                self.ledger.lock().forget_unknowns(&seqs);
                let committed = seqs.iter().filter(|s| found.contains(s)).count() as u64;
                let not_committed = seqs.len() as u64 - committed;
                self.add(0, 0, committed, not_committed);
                tracing::info!(
                    event = "unknown_resolved",
                    committed,
                    not_committed,
                    "unknown-outcome writes resolved"
                );
                return;
            }
            Ok(Err(err)) => err.to_string(),
        };
        // Said (not every second), so that writes left unresolved are not left silently.
        if self.unknowns_failing.lock().hit(Instant::now()).is_some() {
            tracing::warn!(
                error,
                unresolved = seqs.len(),
                "checking unknown-outcome writes failed; retrying every second"
            );
        }
    }

    fn publish_ledger_size(&self) {
        let bytes = self.ledger.lock().bytes();
        self.metrics.ledger_bytes.set(bytes as i64);
    }

    /// Keeps what `until` covers in the ledger until its verification takes its snapshot.
    pub fn hold(&self, until: Instant) {
        self.ledger.lock().hold(until);
    }

    /// One request, retried until it succeeds or we stop.
    async fn check(&self, req: &Request, stop: &CancellationToken) -> Option<Check> {
        let snapshot = self.ledger.lock().take(req.until);
        if snapshot.incomplete {
            self.metrics.verification_errors.inc();
            tracing::warn!(
                outage = ?req.outage,
                "a verification waited behind one that kept failing until writes it was to \
                 check were aged out of the ledger ({HOLD_WINDOWS} × --verify-window of \
                 writes since): it stays unverified"
            );
            return None;
        }
        let began = Instant::now();
        let mut failures = 0;
        let mut warned = Throttle::new(FAILED_WARN_EVERY);
        let nothing_to_check = snapshot.acked.is_empty() && snapshot.unknown.is_empty();
        let mut check = loop {
            if nothing_to_check {
                break Check::default();
            }
            // One pass over the snapshot against the primary the pool reaches now.
            let mut present = snapshot.present();
            let end = Seqs::Below(snapshot.seq_end());
            let read = self.present(snapshot.min_id, end, self.settle, |s| present.insert(s));
            match read.await {
                Ok(()) => break snapshot.judge(&present, req.loss_reference),
                Err(err) => {
                    self.metrics.verification_errors.inc();
                    let error = err.to_string();
                    if let Some(held_back) = warned.hit_keyed(&error, Instant::now()) {
                        tracing::warn!(%error, held_back, "verification failed; retrying");
                    }
                    if stop.is_cancelled() && began.elapsed() > Duration::from_secs(5) {
                        return None;
                    }
                    failures += 1;
                    tokio::time::sleep(VERIFY_BACKOFF.delay(failures)).await;
                }
            }
        };
        self.ledger.lock().forget_verified(req.until, &snapshot);
        self.publish_ledger_size();
        check.seconds = began.elapsed().as_secs_f64();
        self.count(&check);
        Some(check)
    }

    fn count(&self, c: &Check) {
        self.metrics.verifications.inc();
        self.add(
            c.checked,
            c.lost,
            c.unknown_committed,
            c.unknown_not_committed,
        );
        if c.lost > 0 {
            tracing::error!(
                event = "writes_lost",
                lost = c.lost,
                checked = c.checked,
                rpo_seconds = format!("{:.3}", c.rpo_seconds),
                "acknowledged writes are missing on the primary"
            );
            if c.at_least {
                tracing::warn!(
                    lost = c.lost,
                    rpo_seconds = format!("{:.3}", c.rpo_seconds),
                    "the oldest write checked was lost too, and older ones went out of \
                     --verify-window unchecked: the loss and the RPO are at least these; a \
                     longer --verify-window checks further back"
                );
            }
        } else {
            tracing::info!(
                event = "verified",
                checked = c.checked,
                unknown_committed = c.unknown_committed,
                unknown_not_committed = c.unknown_not_committed,
                seconds = format!("{:.3}", c.seconds),
                "every acknowledged write survived"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpo::ledger::tests::found;
    use crate::rpo::ledger::SLICE;

    #[test]
    fn a_read_back_starts_a_little_below_the_run_and_never_below_its_first_id() {
        // The run's first rows: not the users' 10,000 before them.
        assert_eq!(read_back_from(Some(200_000), Some(199_990)), 199_990);
        assert_eq!(read_back_from(None, Some(199_990)), 199_990);
        // Later: the slack for ids that concurrent connections drew out of order.
        assert_eq!(read_back_from(Some(300_000), Some(199_990)), 290_000);
        // No floor drawn (no trial INSERT yet): the slack alone, negative ids included.
        assert_eq!(read_back_from(Some(-5_000), None), -15_000);
        assert_eq!(read_back_from(None, None), -ID_SLACK);
        assert_eq!(read_back_from(Some(i64::MIN), None), i64::MIN);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rpo_is_the_lost_span_rounded_up_by_a_slice() {
        // Acknowledged 0..100 over 1 s; the new primary has everything but 40..50.
        let mut ledger = Ledger::new(Duration::from_secs(30));
        let t0 = Instant::now();
        for seq in 0..100u64 {
            ledger.ack(seq, 1_000 + seq as i64, Instant::now());
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        ledger.unknown(100, Instant::now(), Instant::now());
        let end = Instant::now();
        let snapshot = ledger.snapshot(end);
        let present = found(&snapshot, (0..40).chain(50..101));
        let check = snapshot.judge(&present, Some(end));
        assert_eq!(check.checked, 100);
        assert_eq!(check.lost, 10);
        assert_eq!(check.lost_seqs, (40..50).collect::<Vec<_>>());
        assert_eq!(
            (check.unknown_committed, check.unknown_not_committed),
            (1, 0)
        );
        // Lost from ~0.4 s after t0 up to the end of the window, plus one slice.
        let span = (end - t0).as_secs_f64() - 0.4;
        assert!(check.rpo_seconds >= span, "{} < {span}", check.rpo_seconds);
        assert!(check.rpo_seconds <= span + 2.0 * SLICE.as_secs_f64() + 0.01);
    }
}
