//! An independent client, the ground truth for "what a well-behaved fresh client saw" (see
//! LAB-FACTS): a few tasks, each opening a fresh connection every 100 ms through the same DSN
//! and inserting one row into the probe's own table. Attempts start on schedule whether or not
//! earlier ones have finished (each bounded), so a connection that hangs delays nobody else;
//! the longest gap between successful inserts is the service's unavailability.

use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// Tasks, started a third of a period apart: one success every ~33 ms while all is well.
const TASKS: u32 = 3;
const PERIOD: Duration = Duration::from_millis(100);
/// libpq's `connect_timeout` per host address (a multi-host DSN moves on after it).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Bound on one attempt: connect (to each host in turn) and insert.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(3);
/// The probe's table, created in the DSN's database if missing.
const TABLE: &str = "pgdrill_probe";

pub struct Probe {
    stop: CancellationToken,
    started: Instant,
    tasks: Vec<JoinHandle<(u64, Vec<Instant>)>>,
}

/// What the probe saw.
#[derive(Debug, Clone, Copy)]
pub struct ProbeReport {
    pub attempts: u64,
    pub successes: usize,
    /// Longest time between two consecutive successful inserts, in seconds.
    pub longest_gap: f64,
    /// When that gap began, in seconds since the probe started.
    pub gap_began: f64,
}

impl Probe {
    /// Creates the probe's table through `dsn` and starts the tasks.
    pub async fn start(dsn: &str) -> Probe {
        let client = super::connect(dsn).await;
        super::exec(
            &client,
            &format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (task int NOT NULL, \
                 at timestamptz NOT NULL DEFAULT clock_timestamp())"
            ),
        )
        .await;
        let mut config: tokio_postgres::Config = dsn.parse().expect("probe DSN parses");
        config.connect_timeout(CONNECT_TIMEOUT);
        let stop = CancellationToken::new();
        let started = Instant::now();
        let tasks = (0..TASKS)
            .map(|t| {
                let first = started + PERIOD * t / TASKS;
                tokio::spawn(run_task(config.clone(), t as i32, first, stop.clone()))
            })
            .collect();
        Probe {
            stop,
            started,
            tasks,
        }
    }

    /// Stops the tasks (attempts still pending are dropped) and reports.
    pub async fn stop(self) -> ProbeReport {
        self.stop.cancel();
        let mut attempts = 0;
        let mut acks = Vec::new();
        for task in self.tasks {
            let (n, mut a) = task.await.expect("probe task does not panic");
            attempts += n;
            acks.append(&mut a);
        }
        acks.sort();
        let (gap, began) = acks
            .windows(2)
            .map(|w| (w[1] - w[0], w[0]))
            .max_by_key(|(gap, _)| *gap)
            .unwrap_or((Duration::ZERO, self.started));
        ProbeReport {
            attempts,
            successes: acks.len(),
            longest_gap: gap.as_secs_f64(),
            gap_began: (began - self.started).as_secs_f64(),
        }
    }
}

/// One task: an attempt every [`PERIOD`] from `first`; returns (attempts, success times).
async fn run_task(
    config: tokio_postgres::Config,
    task: i32,
    first: Instant,
    stop: CancellationToken,
) -> (u64, Vec<Instant>) {
    let mut tick = tokio::time::interval_at(first, PERIOD);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut pending = JoinSet::new();
    let mut attempts = 0;
    let mut acks = Vec::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                attempts += 1;
                pending.spawn(attempt(config.clone(), task));
            }
            Some(done) = pending.join_next(), if !pending.is_empty() => {
                if let Ok(Some(at)) = done {
                    acks.push(at);
                }
            }
        }
    }
    pending.abort_all();
    (attempts, acks)
}

/// A fresh connection and one INSERT; the time it was acknowledged, or None.
async fn attempt(config: tokio_postgres::Config, task: i32) -> Option<Instant> {
    let once = async {
        let (client, conn) = config.connect(tokio_postgres::NoTls).await.ok()?;
        // Bounded: a connection to a server that froze after the insert must not linger.
        tokio::spawn(tokio::time::timeout(ATTEMPT_LIMIT, conn));
        client
            .execute(&format!("INSERT INTO {TABLE} (task) VALUES ($1)"), &[&task])
            .await
            .ok()?;
        Some(Instant::now())
    };
    tokio::time::timeout(ATTEMPT_LIMIT, once).await.ok().flatten()
}
