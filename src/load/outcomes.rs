//! The one recorder the lanes report to: each finished write goes, in one place, to the metrics,
//! the latency recorders, failure detection, the acknowledged-write ledger, and a [`Tally`] of
//! plain counts for the summary and the progress line (they never read Prometheus counters back).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use tokio::time::Instant;

use crate::clock::unix_now;
use crate::db::identity::IdentityTracker;
use crate::error::{classify, ErrorClass};
use crate::failover::machine::Detector;
use crate::rpo::ledger::Ledger;
use crate::supervisor::Fatal;
use crate::telemetry::latency::{LatencyBook, LatencyStats};
use crate::telemetry::metrics::Metrics;

/// One scheduled transaction: its client sequence number and when it should start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job {
    pub seq: u64,
    pub intended: Instant,
}

const NO_ROW: &str = "the INSERT returned no row: a trigger or rule on the table suppressed it";

/// Why one write failed.
pub(crate) struct Failure {
    pub class: ErrorClass,
    /// The server may have committed it: verification decides.
    pub unknown: bool,
    pub message: String,
    pub sqlstate: Option<String>,
}

impl Failure {
    /// The INSERT returned no row (a trigger or rule added since the start): certainly not written.
    pub fn no_row() -> Failure {
        Failure {
            class: ErrorClass::Rejected,
            unknown: false,
            message: NO_ROW.to_string(),
            sqlstate: None,
        }
    }

    /// Whether the connection it failed on must go.
    pub fn discards_connection(&self) -> bool {
        self.unknown || self.class.discards_connection(self.sqlstate.as_deref())
    }

    pub fn from_query(err: &tokio_postgres::Error) -> Failure {
        let class = classify(err);
        let never_sent = err.as_db_error().is_some_and(|db| {
            class == ErrorClass::Pooler && crate::error::pooler_never_sent(db.message())
        });
        Failure {
            class,
            unknown: class.outcome_unknown_after_send() && !never_sent,
            message: match err.as_db_error() {
                Some(db) => format!("{err}: {}", db.message()),
                None => err.to_string(),
            },
            sqlstate: err.code().map(|c| c.code().to_string()),
        }
    }
}

/// Counts of what happened to the scheduled writes, as plain numbers. Each finished write is
/// in one counter only (successes, or its error class), so no snapshot taken between two
/// increments can count a failure as a success.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    successes: AtomicU64,
    errors: [AtomicU64; ErrorClass::ALL.len()],
    skipped: AtomicU64,
    unknown_outcome: AtomicU64,
}

/// A copy of the [`Tally`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TallySnapshot {
    /// Finished, successful or not: the successes and the failures read.
    pub transactions: u64,
    pub errors: [u64; ErrorClass::ALL.len()],
    pub skipped: u64,
    pub unknown_outcome: u64,
}

impl TallySnapshot {
    pub fn failed(&self) -> u64 {
        self.errors.iter().sum()
    }

    pub fn successes(&self) -> u64 {
        self.transactions.saturating_sub(self.failed())
    }
}

/// What every lane reports to; see the module documentation.
pub(crate) struct Outcomes {
    pub metrics: Arc<Metrics>,
    pub detector: Arc<Detector>,
    pub ledger: Arc<Mutex<Ledger>>,
    pub latency: LatencyBook,
    pub identity: Arc<IdentityTracker>,
    pub tally: Tally,
    /// Told of the first success (before it, a wrong target ends the run).
    pub fatal: Arc<Fatal>,
}

impl Outcomes {
    /// A recorder for one lane, with its share of the latency recorders.
    pub fn lane(self: &Arc<Self>) -> LaneOutcomes {
        LaneOutcomes {
            outcomes: self.clone(),
            latency: self.latency.lane(),
        }
    }

    pub fn tally(&self) -> TallySnapshot {
        let t = &self.tally;
        let errors = t.errors.each_ref().map(|n| n.load(Ordering::Relaxed));
        TallySnapshot {
            transactions: t.successes.load(Ordering::Relaxed) + errors.iter().sum::<u64>(),
            errors,
            skipped: t.skipped.load(Ordering::Relaxed),
            unknown_outcome: t.unknown_outcome.load(Ordering::Relaxed),
        }
    }

    /// Gives up the writes still in flight at shutdown: counted as abandoned, no longer
    /// as in flight on /metrics (the detector keeps them, for an outage still open).
    pub fn abandon_in_flight(&self) -> u64 {
        let abandoned = self.detector.in_flight().max(0) as u64;
        self.metrics.abandoned.inc_by(abandoned);
        self.metrics.in_flight.sub(abandoned as i64);
        abandoned
    }

    /// A due write the schedule never started (backlog full, or queued at shutdown).
    pub fn skipped(&self) {
        self.metrics.skipped.inc();
        self.tally.skipped.fetch_add(1, Ordering::Relaxed);
    }

    /// Out of flight; a transaction unless it is not `counted`.
    fn finished(&self, counted: bool) {
        self.metrics.in_flight.dec();
        self.detector.finished();
        if counted {
            self.metrics.transactions.inc();
        }
    }
}

/// One lane's handle on [`Outcomes`].
pub(crate) struct LaneOutcomes {
    pub outcomes: Arc<Outcomes>,
    latency: Arc<Mutex<LatencyStats>>,
}

impl LaneOutcomes {
    /// A write was taken from the backlog.
    pub fn started(&self) {
        self.outcomes.metrics.in_flight.inc();
        self.outcomes.detector.started();
    }

    /// A write taken from the backlog let go before it was sent (the load is over).
    pub fn unsent(&self) {
        self.outcomes.finished(false);
        self.outcomes.skipped();
    }

    /// Acknowledged as `id` at `done`; it was sent at `sent`.
    pub fn succeeded(&self, job: Job, sent: Instant, done: Instant, id: i64) {
        let (o, m) = (&*self.outcomes, &self.outcomes.metrics);
        o.finished(true);
        o.tally.successes.fetch_add(1, Ordering::Relaxed);
        let latency = done - job.intended;
        let service = done - sent;
        m.transaction_duration.observe(latency.as_secs_f64());
        m.service_duration.observe(service.as_secs_f64());
        m.schedule_lag.observe((sent - job.intended).as_secs_f64());
        m.last_success_timestamp.set(unix_now());
        self.latency.lock().record(latency, service);
        o.detector.success(sent, done);
        o.identity.acknowledged(done);
        o.ledger.lock().ack(job.seq, id, done);
        o.fatal.wrote();
    }

    /// Failed; `started` is when it was sent (or taken by its lane, if it never got a connection).
    pub fn failed(&self, job: Job, started: Instant, failure: &Failure) {
        let (o, m) = (&*self.outcomes, &self.outcomes.metrics);
        // A run ended before its first write (a wrong target) shows only why, no figures:
        // counting this write would only repeat that (a first error, a state change, a line).
        let news = o.fatal.has_written() || !o.fatal.is_set();
        o.finished(news);
        if !news {
            return;
        }
        // How late it began, whether or not it got through: an outage's lag is news too.
        m.schedule_lag
            .observe((started - job.intended).as_secs_f64());
        m.transaction_errors.inc(failure.class);
        o.tally.errors[failure.class.index()].fetch_add(1, Ordering::Relaxed);
        o.detector.failure(started, failure.class);
        m.errors
            .note(failure.class, failure.sqlstate.as_deref(), &failure.message);
        if failure.unknown {
            m.unknown_outcome_writes.inc();
            o.tally.unknown_outcome.fetch_add(1, Ordering::Relaxed);
            o.ledger.lock().unknown(job.seq, started, Instant::now());
        }
        tracing::debug!(class = %failure.class, seq = job.seq, error = %failure.message, "transaction failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn outcomes() -> (Arc<Outcomes>, Arc<Metrics>, Arc<Detector>) {
        let metrics = Metrics::new(&[]);
        let detector = Arc::new(Detector::default());
        let ledger = Arc::new(Mutex::new(Ledger::new(Duration::from_secs(30))));
        let outcomes = Arc::new(Outcomes {
            metrics: metrics.clone(),
            detector: detector.clone(),
            ledger,
            latency: LatencyBook::new(1),
            identity: Arc::new(IdentityTracker::new(
                Vec::new(),
                metrics.clone(),
                crate::clock::WallClock::now(),
            )),
            tally: Default::default(),
            fatal: Arc::default(),
        });
        (outcomes, metrics, detector)
    }

    #[tokio::test(start_paused = true)]
    async fn tally_and_metrics_move_together() {
        let (outcomes, metrics, detector) = outcomes();
        let lane = outcomes.lane();
        let t0 = Instant::now();
        let job = |seq| Job { seq, intended: t0 };
        for _ in 0..3 {
            lane.started();
        }
        assert_eq!(detector.in_flight(), 3);
        lane.succeeded(job(0), t0, t0 + Duration::from_millis(2), 10);
        let closed = Failure {
            class: ErrorClass::ConnectionClosed,
            unknown: true,
            message: String::new(),
            sqlstate: None,
        };
        lane.failed(job(1), t0, &closed);
        let refused = Failure {
            class: ErrorClass::ConnectRefused,
            unknown: false,
            message: String::new(),
            sqlstate: None,
        };
        lane.failed(job(2), t0 + Duration::from_millis(1500), &refused);
        outcomes.skipped();
        let lag = &metrics.schedule_lag;
        let lags = (lag.get_sample_count(), lag.get_sample_sum());
        assert_eq!(lags, (3, 1.5), "a failed write's lag counts too");

        let t = outcomes.tally();
        assert_eq!((t.transactions, t.successes(), t.failed()), (3, 1, 2));
        assert_eq!((t.skipped, t.unknown_outcome), (1, 1));
        assert_eq!(t.errors[ErrorClass::ConnectionClosed.index()], 1);
        assert_eq!(detector.in_flight(), 0);
        // The exported series say the same.
        assert_eq!(metrics.transactions.get(), t.transactions);
        let failed: f64 = ErrorClass::ALL
            .iter()
            .filter_map(|c| {
                metrics.sample(&format!(
                    "pgdrill_transaction_errors_total{{class=\"{c}\"}}"
                ))
            })
            .sum();
        assert_eq!(failed as u64, t.failed());
        assert_eq!(metrics.skipped.get(), t.skipped);
        assert_eq!(metrics.unknown_outcome_writes.get(), t.unknown_outcome);
        assert_eq!(metrics.in_flight.get(), 0);
        assert_eq!(metrics.transaction_duration.get_sample_count(), 1);
    }
    /// Failures recorded on one thread while another reads the tally: no read may count one
    /// as a success (with one counter for all finished writes, a read between it and the
    /// error class's did).
    #[test]
    fn no_tally_read_counts_a_failure_as_a_success() {
        let (outcomes, _, _) = outcomes();
        let lane = outcomes.lane();
        let failure = Failure {
            class: ErrorClass::ConnectRefused,
            unknown: false,
            message: String::new(),
            sqlstate: None,
        };
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let t0 = Instant::now();
                for seq in 0..200_000 {
                    lane.started();
                    lane.failed(Job { seq, intended: t0 }, t0, &failure);
                }
                done.store(true, Ordering::Release);
            });
            let mut reads = 0u64;
            while !done.load(Ordering::Acquire) && reads < 50_000_000 {
                let t = outcomes.tally();
                assert_eq!(t.successes(), 0, "read {reads}: {t:?}");
                reads += 1;
            }
        });
        assert_eq!(outcomes.tally().failed(), 200_000);
    }
}
