//! Lanes: each takes due jobs from the backlog, checks a connection out of the
//! pool, and runs up to `pipeline_depth` independent INSERTs on it at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_channel::Receiver;
use futures_util::stream::{FuturesUnordered, StreamExt};
use rand::rngs::SmallRng;
use tokio::time::Instant;

use crate::db::connect::SUSPECT_AFTER;
use crate::db::pool::{Conn, DbPool};
use crate::db::table::{Row, Workload};
use crate::error::ErrorClass;
use crate::load::outcomes::{Failure, LaneOutcomes};
use crate::load::scheduler::Job;

/// Reconnect backoff bounds: short enough to see a failover end within ~100 ms.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_millis(100);

/// What every lane shares.
pub struct Shared {
    pub pool: DbPool,
    pub workload: Arc<Workload>,
    pub pipeline_depth: usize,
    /// Client-side bound on one INSERT: the server's statement_timeout plus slack,
    /// for the case where the server never answers at all.
    pub client_timeout: Duration,
    pub max_connection_lifetime: Duration,
    /// Lanes waiting for a job with nothing in flight. A busy lane pipelines another
    /// job only when this is zero, so on a fast link load spreads over connections
    /// (no job queues behind another's commit) and pipelining starts when they are all busy.
    pub idle_lanes: AtomicUsize,
    /// Signalled when the last idle lane takes a job, so that busy lanes waiting
    /// only on their in-flight writes (a stalled link) start pipelining at once.
    pub all_busy: tokio::sync::Notify,
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
    /// Reports `outcome`; returns whether the connection must be discarded.
    fn record(&self, outcome: Outcome, report: &LaneOutcomes) -> bool {
        match outcome.result {
            Ok(id) => {
                report.succeeded(outcome.job, outcome.sent, outcome.done, id);
                outcome.retire
            }
            Err(failure) => {
                report.failed(outcome.job, outcome.sent, &failure);
                failure.class.discards_connection() || failure.unknown
            }
        }
    }

    async fn execute(&self, conn: &Conn, job: Job, row: Row) -> Outcome {
        let sent = Instant::now();
        let retire = std::sync::atomic::AtomicBool::new(false);
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
                    retire.store(true, Ordering::Relaxed);
                    self.workload.insert(&conn.client, None, row).await
                }
                other => other,
            }
        };
        // A write unanswered for SUSPECT_AFTER has its server checked; a server found
        // silent fails every write on its connections at once (no_response).
        let watchdog = async {
            let mut every = tokio::time::interval_at(sent + SUSPECT_AFTER, SUSPECT_AFTER);
            loop {
                every.tick().await;
                conn.silence.suspect();
            }
        };
        let result = tokio::select! {
            done = tokio::time::timeout(self.client_timeout, insert) => match done {
                Ok(Ok(id)) => Ok(id),
                Ok(Err(err)) => Err(Failure::from_query(&err)),
                Err(_) => Err(Failure {
                    class: ErrorClass::NoResponse,
                    // The server never answered; it may still commit.
                    unknown: true,
                    message: format!("no answer within {:?}", self.client_timeout),
                    sqlstate: None,
                }),
            },
            _ = conn.silence.declared() => Err(Failure {
                class: ErrorClass::NoResponse,
                unknown: true,
                message: format!("{} stopped answering", conn.silence.endpoint()),
                sqlstate: None,
            }),
            _ = watchdog => unreachable!("the watchdog never ends"),
        };
        Outcome {
            job,
            sent,
            done: Instant::now(),
            result,
            retire: retire.into_inner(),
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
    let mut backoff = BACKOFF_MIN;
    let mut taken: u64 = 0;
    loop {
        shared.idle_lanes.fetch_add(1, Ordering::Relaxed);
        let next = jobs.recv().await;
        if shared.idle_lanes.fetch_sub(1, Ordering::Relaxed) == 1 {
            shared.all_busy.notify_waiters();
        }
        let Ok(first) = next else { break };
        taken += 1;
        crate::test_hooks::lane_took(taken);
        report.started();
        let started = Instant::now();
        let mut conn = match shared.pool.checkout().await {
            Ok(conn) => conn,
            Err(err) => {
                let failure = Failure {
                    class: err.class,
                    unknown: false,
                    message: err.message,
                    sqlstate: err.sqlstate,
                };
                report.failed(first, started, &failure);
                // Jitter keeps lanes from reconnecting in lockstep.
                let jitter = rand::Rng::random_range(&mut rng, 0..=backoff.as_micros() as u64 / 2);
                tokio::time::sleep(backoff + Duration::from_micros(jitter)).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        let broken = run_on(&shared, &conn, first, &jobs, &report, &mut rng).await;
        if broken || conn.created.elapsed() >= shared.max_connection_lifetime {
            conn.broken = true;
        }
    }
}

/// Runs jobs on one connection while they keep coming; returns whether the
/// connection must be discarded.
async fn run_on(
    shared: &Shared,
    conn: &Conn,
    first: Job,
    jobs: &Receiver<Job>,
    report: &LaneOutcomes,
    rng: &mut SmallRng,
) -> bool {
    let mut in_flight = FuturesUnordered::new();
    in_flight.push(shared.execute(conn, first, Row::random(rng, first.seq)));
    let mut broken = false;
    let mut closed = false;
    loop {
        // Registered before the check, so a lane turning busy in between still wakes us.
        let all_busy = shared.all_busy.notified();
        tokio::pin!(all_busy);
        let can_take = !broken && !closed && in_flight.len() < shared.pipeline_depth;
        if can_take {
            all_busy.as_mut().enable();
        }
        let room = can_take && shared.idle_lanes.load(Ordering::Relaxed) == 0;
        tokio::select! {
            biased;
            Some(outcome) = in_flight.next() => {
                broken |= shared.record(outcome, report);
            }
            _ = &mut all_busy, if can_take && !room => {}
            job = jobs.recv(), if room => match job {
                Ok(job) => {
                    report.started();
                    in_flight.push(shared.execute(conn, job, Row::random(rng, job.seq)));
                }
                Err(_) => closed = true,
            },
        }
        if in_flight.is_empty() {
            if broken || closed {
                return broken;
            }
            // Keep the connection only while work is waiting; otherwise give it back.
            match jobs.try_recv() {
                Ok(job) => {
                    report.started();
                    in_flight.push(shared.execute(conn, job, Row::random(rng, job.seq)));
                }
                Err(_) => return false,
            }
        }
    }
}
