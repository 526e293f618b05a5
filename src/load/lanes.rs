//! Lanes: each takes due jobs from the backlog, checks a connection out of the
//! pool, and runs up to `pipeline_depth` independent INSERTs on it at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_channel::Receiver;
use futures_util::stream::{FuturesUnordered, StreamExt};
use rand::rngs::SmallRng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::db::connect::{Conn, STAGGER, SUSPECT_AFTER};
use crate::db::pool::DbPool;
use crate::db::table::{Row, Workload};
use crate::error::ErrorClass;
use crate::load::outcomes::{Failure, Job, LaneOutcomes};
use crate::retry::Backoff;

/// Pause after a fast checkout failure (5–10 ms, at most 25–50 ms), only against spinning (a
/// password command failing at once): the connector already backs off per address, and a
/// longer pause here added to it (a frozen Patroni leader's HAProxy replacement seen 0.3 s late).
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(50));

/// A lane gives its connection back at least this often while jobs keep waiting (a saturated
/// load): the identity probe, which checks out a pooled connection every 5 s to see a switch
/// behind a pooler, gets one within its second, and `--max-connection-lifetime` applies.
const HOLD_AT_MOST: Duration = Duration::from_secs(1);

/// What every lane shares.
pub struct Shared {
    pub pool: DbPool,
    pub workload: Arc<Workload>,
    pub pipeline_depth: usize,
    /// Client bound on one INSERT (statement_timeout plus slack): for a server that never answers.
    pub client_timeout: Duration,
    pub max_connection_lifetime: Duration,
    /// Lanes waiting for a job with nothing in flight. A busy lane pipelines another job only
    /// when this is zero: load spreads over connections first (no job behind another's commit).
    pub idle_lanes: AtomicUsize,
    /// Signalled when the last idle lane takes a job, so that busy lanes waiting
    /// only on their in-flight writes (a stalled link) start pipelining at once.
    pub all_busy: tokio::sync::Notify,
    /// The backlog's span at the target rate (`None`: unlimited). A job due longer ago is let go
    /// unstarted: after an outage, writes resume on a fresh client's schedule, and their latency
    /// is not the time a stale job sat in pgdrill's own queue.
    pub stale_after: Option<Duration>,
    /// Cancelled when the schedule ends: a lane still waiting for a connection lets its job
    /// go unsent (skipped), not held for the shutdown grace and then called abandoned.
    pub load_over: CancellationToken,
}

/// How one attempt ended.
struct Outcome {
    job: Job,
    sent: Instant,
    done: Instant,
    result: Result<i64, Failure>,
    /// The connection's prepared statement broke (a pooler): replace the connection.
    retire: bool,
}

impl Shared {
    /// One INSERT, with no timer of its own: the lane's [`Watch`] cancels `give_up` when the oldest
    /// write on the connection waited too long (or its server went silent), failing all waiting.
    async fn execute(
        &self,
        conn: &Conn,
        job: Job,
        row: Row,
        give_up: &CancellationToken,
    ) -> Outcome {
        let sent = Instant::now();
        let insert = async {
            match self
                .workload
                .insert(&conn.client, conn.insert.as_ref(), row)
                .await
            {
                // The named statement did not stay with the session (a transaction-mode
                // pooler): the INSERT did not run, so it is sent again unnamed, once, and
                // the connection replaced; not a failed write, not an outage.
                Err(err) if conn.insert.is_some() && self.pool.prepared_statements_broke(&err) => {
                    (self.workload.insert(&conn.client, None, row).await, true)
                }
                other => (other, false),
            }
        };
        // `retire` matters only on success: a failure that ends the wait discards anyway.
        let (result, retire) = tokio::select! {
            (done, retire) = insert => {
                let done = done.map_err(|err| Failure::from_query(&err));
                (done.and_then(|id| id.ok_or_else(Failure::no_row)), retire)
            }
            () = give_up.cancelled() => (Err(Failure {
                class: ErrorClass::NoResponse,
                // The server never answered; it may still commit.
                unknown: true,
                message: if conn.silence.is_silent() {
                    format!("{} stopped answering", conn.silence.endpoint)
                } else {
                    format!("no answer within {}", humantime::format_duration(self.client_timeout))
                },
                sqlstate: None,
            }), false),
        };
        Outcome {
            job,
            sent,
            done: Instant::now(),
            result,
            retire,
        }
    }
}

/// The writes waiting on one connection, with one timer for all (not one or two per INSERT): a
/// write unanswered for [`SUSPECT_AFTER`] has its server checked (again every [`SUSPECT_AFTER`]);
/// one unanswered for the client timeout fails, with every write behind it.
struct Watch<'a> {
    report: &'a LaneOutcomes,
    /// Send instants of the writes in flight (at most the pipeline depth).
    waiting: Vec<(u64, Instant)>,
    /// When to look next; `None` with nothing in flight.
    look_at: Option<Instant>,
    give_up: CancellationToken,
    last_sent: Instant,
    /// Writes in flight when they were given up on.
    given_up: usize,
}

impl<'a> Watch<'a> {
    fn new(report: &'a LaneOutcomes, give_up: CancellationToken) -> Watch<'a> {
        Watch {
            report,
            waiting: Vec::new(),
            look_at: None,
            give_up,
            last_sent: Instant::now(),
            given_up: 0,
        }
    }

    fn sent(&mut self, seq: u64, at: Instant) {
        self.last_sent = at;
        self.waiting.push((seq, at));
        self.look_at.get_or_insert(at + SUSPECT_AFTER);
    }

    /// `seq` was answered at `at`: the server is answering, and the writes queued behind it on
    /// the connection begin only now (behind a lock, each waits its own `statement_timeout`,
    /// which is the server's answer to give, not the client's silence to guess).
    fn answered(&mut self, seq: u64, at: Instant) {
        if let Some(i) = self.waiting.iter().position(|(s, _)| *s == seq) {
            self.waiting.swap_remove(i);
        }
        for (_, sent) in &mut self.waiting {
            *sent = (*sent).max(at);
        }
    }

    /// The timer fired: checks the oldest waiting write, sets when to look again (lazily: a
    /// healthy connection's timer fires at most once per [`SUSPECT_AFTER`]); whether suspect.
    fn look(&mut self, client_timeout: Duration, now: Instant) -> bool {
        let Some(oldest) = self.waiting.iter().map(|(_, at)| *at).min() else {
            self.look_at = None;
            return false;
        };
        let give_up_at = oldest + client_timeout;
        if now >= give_up_at {
            self.given_up = self.waiting.len();
            self.give_up.cancel();
            self.look_at = None;
            return false;
        }
        let waited = now.saturating_duration_since(oldest);
        // The next multiple of SUSPECT_AFTER after `oldest`.
        let periods = waited.as_nanos() / SUSPECT_AFTER.as_nanos() + 1;
        let next = oldest + SUSPECT_AFTER * periods as u32;
        self.look_at = Some(next.min(give_up_at));
        waited >= SUSPECT_AFTER
    }
}

impl Drop for Watch<'_> {
    /// A lane that panicked never reads these answers: the writes fail, their outcome unknown,
    /// rather than staying in flight (on /metrics and the stall detector's books) for good.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let failure = Failure {
            class: ErrorClass::Other,
            unknown: true,
            message: "the lane sending it panicked".into(),
            sqlstate: None,
        };
        for &(seq, sent) in &self.waiting {
            self.report.failed(
                Job {
                    seq,
                    intended: sent,
                },
                sent,
                &failure,
            );
        }
    }
}

/// One lane: runs until the backlog is closed and empty.
pub async fn lane(
    shared: Arc<Shared>,
    jobs: Receiver<Job>,
    report: LaneOutcomes,
    mut rng: SmallRng,
) {
    let mut failures = 0;
    let mut taken: u64 = 0;
    loop {
        shared.idle_lanes.fetch_add(1, Ordering::Relaxed);
        let next = next_job(&jobs, shared.stale_after, &report).await;
        if shared.idle_lanes.fetch_sub(1, Ordering::Relaxed) == 1 {
            shared.all_busy.notify_waiters();
        }
        let Ok(first) = next else { break };
        taken += 1;
        crate::test_hooks::lane_took(taken);
        report.started();
        let started = Instant::now();
        let checkout = tokio::select! {
            checkout = shared.pool.checkout(false) => checkout,
            () = shared.load_over.cancelled() => {
                report.unsent();
                break;
            }
        };
        let mut conn = match checkout {
            Ok(conn) => {
                report.outcomes.detector.ready();
                conn
            }
            Err(err) => {
                let failure = Failure {
                    class: err.class,
                    unknown: false,
                    message: err.message,
                    sqlstate: err.sqlstate,
                };
                report.failed(first, started, &failure);
                // No pause after a slow failure (a connect timeout), as in the connector: it would
                // leave a gap with no attempt, longer than a fresh client's.
                if started.elapsed() < STAGGER {
                    failures += 1;
                    tokio::time::sleep(BACKOFF.jittered(failures, &mut rng)).await;
                }
                continue;
            }
        };
        failures = 0;
        let (broken, gave_up) = run_on(&shared, &conn, first, &jobs, &report, &mut rng).await;
        if broken {
            conn.broken = true;
            conn.gave_up = gave_up;
        } else if !shared.pool.still_current(&conn) {
            conn.retired = true;
        } else {
            // Given back to the pool, where a checkout ahead may be waiting for it.
            drop(conn);
            shared.pool.make_way().await;
        }
    }
}

/// `job`, unless it was due longer ago than `stale_after`: then it is counted as skipped.
/// Without a rate (`--rate 0`, no `stale_after`) nothing is due at a time: the job starts
/// when taken, so that no latency holds its wait behind the others in pgdrill's queue.
fn fresh(mut job: Job, stale_after: Option<Duration>, report: &LaneOutcomes) -> Option<Job> {
    match stale_after {
        Some(stale) if job.intended.elapsed() > stale => {
            report.outcomes.skipped();
            return None;
        }
        Some(_) => {}
        None => job.intended = Instant::now(),
    }
    Some(job)
}

/// The next job still [`fresh`].
async fn next_job(
    jobs: &Receiver<Job>,
    stale_after: Option<Duration>,
    report: &LaneOutcomes,
) -> Result<Job, async_channel::RecvError> {
    loop {
        if let Some(job) = fresh(jobs.recv().await?, stale_after, report) {
            return Ok(job);
        }
    }
}

/// Runs jobs on one connection while they keep coming; returns whether to discard the
/// connection, and how many writes on it were given up on.
async fn run_on(
    shared: &Shared,
    conn: &Conn,
    first: Job,
    jobs: &Receiver<Job>,
    report: &LaneOutcomes,
    rng: &mut SmallRng,
) -> (bool, usize) {
    let give_up = conn.silence.child();
    let mut watch = Watch::new(report, give_up.clone());
    let mut in_flight = FuturesUnordered::new();
    let far = Instant::now() + Duration::from_secs(86_400);
    let timer = tokio::time::sleep_until(far);
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    let send =
        |in_flight: &mut FuturesUnordered<_>, watch: &mut Watch, job: Job, rng: &mut SmallRng| {
            watch.sent(job.seq, Instant::now());
            in_flight.push(shared.execute(conn, job, Row::random(rng, job.seq), &give_up));
        };
    send(&mut in_flight, &mut watch, first, rng);
    let mut broken = false;
    let mut closed = false;
    let lifetime_over = conn.created.checked_add(shared.max_connection_lifetime);
    let give_back_at = (Instant::now() + HOLD_AT_MOST).min(lifetime_over.unwrap_or(far));
    loop {
        // Read off the last send's clock: no clock read of its own per turn.
        let due = watch.last_sent >= give_back_at;
        if armed != watch.look_at {
            armed = watch.look_at;
            timer.as_mut().reset(armed.unwrap_or(far));
        }
        // Registered before the check, so a lane turning busy in between still wakes us.
        let all_busy = shared.all_busy.notified();
        tokio::pin!(all_busy);
        let can_take = !broken && !closed && !due && in_flight.len() < shared.pipeline_depth;
        if can_take {
            all_busy.as_mut().enable();
        }
        let room = can_take && shared.idle_lanes.load(Ordering::Relaxed) == 0;
        tokio::select! {
            biased;
            Some(outcome) = in_flight.next() => {
                watch.answered(outcome.job.seq, outcome.done);
                // A kept error the server sent as FATAL closed the connection all the same.
                broken |= match outcome.result {
                    Ok(id) => {
                        report.succeeded(outcome.job, outcome.sent, outcome.done, id);
                        outcome.retire
                    }
                    Err(failure) => {
                        report.failed(outcome.job, outcome.sent, &failure);
                        failure.discards_connection()
                    }
                } || conn.client.is_closed();
            }
            () = &mut timer, if armed.is_some() => {
                if watch.look(shared.client_timeout, Instant::now()) {
                    conn.silence.suspect();
                }
            }
            _ = &mut all_busy, if can_take && !room => {}
            job = next_job(jobs, shared.stale_after, report), if room => match job {
                Ok(job) => {
                    report.started();
                    send(&mut in_flight, &mut watch, job, rng);
                }
                Err(_) => closed = true,
            },
        }
        if in_flight.is_empty() {
            if broken || closed {
                return (broken, watch.given_up);
            }
            if due {
                return (false, 0);
            }
            // Keep the connection only while work is waiting; otherwise give it back.
            let waiting = std::iter::from_fn(|| jobs.try_recv().ok())
                .find_map(|job| fresh(job, shared.stale_after, report));
            let Some(job) = waiting else {
                return (false, 0);
            };
            report.started();
            send(&mut in_flight, &mut watch, job, rng);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Sources;

    fn sources() -> Sources {
        use crate::telemetry::timeline::{Recorder, Timeline};
        let classes = crate::report::sampler::class_names();
        Sources::for_tests(Arc::new(Recorder::new(Timeline::new(&classes))))
    }

    #[tokio::test(start_paused = true)]
    async fn one_timer_watches_every_write_on_a_connection() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(2);
        let report = sources().outcomes.lane();
        let mut watch = Watch::new(&report, CancellationToken::new());
        assert_eq!(watch.look_at, None);
        watch.sent(1, t0);
        watch.sent(2, t0 + Duration::from_millis(100));
        assert_eq!(watch.look_at, Some(t0 + SUSPECT_AFTER));
        // The oldest was answered: the next look is for the one behind it, not a suspicion.
        let second = t0 + Duration::from_millis(100);
        watch.answered(1, second);
        assert!(!watch.look(timeout, t0 + SUSPECT_AFTER));
        assert_eq!(watch.look_at, Some(second + SUSPECT_AFTER));
        // Unanswered: suspected every SUSPECT_AFTER, then given up at the client timeout.
        assert!(watch.look(timeout, second + SUSPECT_AFTER));
        assert_eq!(watch.look_at, Some(second + SUSPECT_AFTER * 2));
        assert!(!watch.give_up.is_cancelled());
        assert!(!watch.look(timeout, second + timeout));
        assert!(watch.give_up.is_cancelled());
        // Each write given up on gets its cancel: one was still waiting.
        assert_eq!(watch.given_up, 1);
        assert_eq!(watch.look_at, None);
        // Nothing waiting: the timer is disarmed.
        let mut idle = Watch::new(&report, CancellationToken::new());
        idle.sent(3, t0);
        idle.answered(3, t0);
        assert!(!idle.look(timeout, t0 + SUSPECT_AFTER));
        assert_eq!(idle.look_at, None);
        // Behind a write the server answered late (its statement_timeout, behind a lock), the
        // next one's wait begins at that answer: the server is answering, not silent.
        let mut queued = Watch::new(&report, CancellationToken::new());
        queued.sent(4, t0);
        queued.sent(5, t0);
        let late = t0 + Duration::from_millis(1500);
        queued.answered(4, late);
        queued.look(timeout, t0 + timeout);
        assert!(
            !queued.give_up.is_cancelled(),
            "given up 2 s after its send"
        );
        queued.look(timeout, late + timeout);
        assert!(queued.give_up.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_due_longer_ago_than_the_backlog_span_is_skipped_not_started() {
        let sources = sources();
        let report = sources.outcomes.lane();
        let (tx, jobs) = async_channel::bounded(8);
        let t0 = Instant::now();
        for seq in 0..4 {
            let intended = t0 + Duration::from_millis(500 * seq);
            tx.try_send(Job { seq, intended }).expect("room");
        }
        // At t0 + 2 s with a 1 s span: jobs 0 and 1 (due 2 s and 1.5 s ago) are let go.
        tokio::time::advance(Duration::from_secs(2)).await;
        let span = Some(Duration::from_secs(1));
        let job = next_job(&jobs, span, &report).await.expect("a job");
        assert_eq!(job.seq, 2);
        assert_eq!(sources.outcomes.tally().skipped, 2);
        // Unlimited rate: no span, every job is started however late, and from when it is
        // taken: its minute in the queue is no latency.
        tokio::time::advance(Duration::from_secs(60)).await;
        let job = next_job(&jobs, None, &report).await.expect("a job");
        assert_eq!((job.seq, job.intended), (3, Instant::now()));
        assert_eq!(sources.outcomes.tally().skipped, 2);
    }

    /// The supervisor starts a panicked lane again; the writes it had in flight must not stay
    /// in flight for the rest of the run (a stall outage, a wrong gauge), nor vanish.
    #[tokio::test(start_paused = true)]
    async fn a_panicking_lane_fails_its_writes_in_flight_with_an_unknown_outcome() {
        let sources = sources();
        let report = sources.outcomes.lane();
        let t0 = Instant::now();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut watch = Watch::new(&report, CancellationToken::new());
            for seq in 0..3 {
                report.started();
                watch.sent(seq, t0);
            }
            watch.answered(0, t0);
            report.succeeded(
                Job {
                    seq: 0,
                    intended: t0,
                },
                t0,
                t0,
                1,
            );
            panic!("a bug");
        }));
        assert!(panicked.is_err());
        let outcomes = &sources.outcomes;
        assert_eq!(outcomes.detector.in_flight(), 0);
        assert_eq!(outcomes.metrics.in_flight.get(), 0);
        let tally = outcomes.tally();
        assert_eq!((tally.successes(), tally.failed()), (1, 2));
        assert_eq!(tally.errors[ErrorClass::Other.index()], 2);
        assert_eq!(tally.unknown_outcome, 2);
        // A lane dropped without a panic (the shutdown grace ran out) leaves its writes to
        // the shutdown, which counts them abandoned.
        let mut watch = Watch::new(&report, CancellationToken::new());
        report.started();
        watch.sent(3, t0);
        drop(watch);
        assert_eq!(outcomes.tally().failed(), 2);
        assert_eq!(outcomes.detector.in_flight(), 1);
    }
}
