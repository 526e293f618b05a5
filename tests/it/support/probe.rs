//! An independent client, the ground truth for "what a well-behaved fresh client saw" (see
//! LAB-FACTS): a few tasks, each opening a fresh connection every 100 ms through the same DSN
//! and inserting one row into the probe's own table. Attempts start on schedule whether or not
//! earlier ones have finished (each bounded), so a connection that hangs delays nobody else;
//! the longest gap between successful inserts is the service's unavailability.

use std::time::{Duration, SystemTime};

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Tasks, started a sixth of a period apart: one success every ~17 ms while all is well. A
/// probe's gap is its outage plus up to one spacing on either side (the last success before
/// may come well before the outage began); with three tasks that alone read up to 0.15 s
/// more than pgdrill's own figure at 500 writes/s.
pub const TASKS: u32 = 6;
const PERIOD: Duration = Duration::from_millis(100);
/// Like libpq's `connect_timeout`: a bound on establishing the connection to one host (TCP,
/// startup, authentication, the read-write check), after which a multi-host DSN moves on.
/// tokio-postgres' own `connect_timeout` covers only the TCP handshake, which a frozen server's
/// kernel still completes, so the probe bounds each host itself. pgdrill's default (2 s); a
/// drill with another gives the probe its own: a proxy may hold a connection longer
/// than the shorter of two timeouts before passing it to the new primary (HAProxy, 0.8 s
/// after a switchover), and that one then counts as a failure for one and a success for
/// the other (at 1 s against pgdrill's 2 s: 0.32 s apart).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on the INSERT once connected.
const INSERT_TIMEOUT: Duration = Duration::from_secs(2);
/// The probe's table, created in the DSN's database if missing.
const TABLE: &str = "pgdrill_probe";

pub struct Probe {
    stop: CancellationToken,
    started: Instant,
    wall: SystemTime,
    /// The probe's own thread and runtime: pgdrill runs in the test's runtime, and its burst
    /// of queued writes after an outage delayed the probe's own successes there by 0.3 s.
    /// Taken by [`Probe::stop`].
    thread: Option<std::thread::JoinHandle<Vec<Attempt>>>,
}

/// A test that panics before [`Probe::stop`] still ends the probe's tasks (its thread
/// then ends by itself), rather than leaving them connecting to a lab being torn down.
impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One attempt: when it began and ended, and how.
#[derive(Debug, Clone)]
struct Attempt {
    began: Instant,
    ended: Instant,
    outcome: Result<(), String>,
}

/// What the probe saw.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub attempts: u64,
    pub successes: usize,
    /// Longest time between two consecutive successful inserts, in seconds.
    pub longest_gap: f64,
    /// When that gap began, in seconds since the probe started.
    pub gap_began: f64,
    /// The attempts that ended within that gap (and the two successes around it), one line
    /// each with wall-clock times, to compare with pgdrill's log when the figures disagree.
    pub around_gap: Vec<String>,
}

impl Probe {
    /// Creates the probe's table through `dsn` and starts `tasks` tasks (an attempt every
    /// `PERIOD / tasks`; [`TASKS`] unless there is a reason), each connection bounded by
    /// `connect_timeout` ([`CONNECT_TIMEOUT`] unless pgdrill runs with another).
    pub async fn with(dsn: &str, tasks: u32, connect_timeout: Duration) -> Probe {
        let client = super::connect(dsn).await;
        super::exec(
            &client,
            &format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (task int NOT NULL, \
                 at timestamptz NOT NULL DEFAULT clock_timestamp())"
            ),
        )
        .await;
        let hosts = per_host(dsn);
        let stop = CancellationToken::new();
        let started = Instant::now();
        let task_stop = stop.clone();
        let thread = super::on_own_thread(async move {
            let tasks: Vec<_> = (0..tasks)
                .map(|t| {
                    let first = started + PERIOD * t / tasks;
                    tokio::spawn(run_task(
                        hosts.clone(),
                        t as i32,
                        first,
                        connect_timeout,
                        task_stop.clone(),
                    ))
                })
                .collect();
            let mut all = Vec::new();
            for task in tasks {
                all.append(&mut task.await.expect("probe task does not panic"));
            }
            all
        });
        Probe {
            stop,
            started,
            wall: SystemTime::now(),
            thread: Some(thread),
        }
    }

    /// Stops the tasks (attempts still pending are dropped) and reports.
    pub async fn stop(mut self) -> ProbeReport {
        self.stop.cancel();
        let thread = self.thread.take().expect("stopped once");
        let mut all = tokio::task::spawn_blocking(move || thread.join())
            .await
            .expect("joining the probe thread")
            .expect("probe thread does not panic");
        all.sort_by_key(|a| a.ended);
        let acks: Vec<Instant> = all
            .iter()
            .filter(|a| a.outcome.is_ok())
            .map(|a| a.ended)
            .collect();
        let (gap, began) = acks
            .windows(2)
            .map(|w| (w[1] - w[0], w[0]))
            .max_by_key(|(gap, _)| *gap)
            .unwrap_or((Duration::ZERO, self.started));
        let wall = |at: Instant| {
            humantime::format_rfc3339_millis(self.wall + at.saturating_duration_since(self.started))
        };
        let around_gap = all
            .iter()
            .filter(|a| a.ended >= began && a.ended <= began + gap)
            .map(|a| {
                format!(
                    "probe attempt {} -> {}: {}",
                    wall(a.began),
                    wall(a.ended),
                    a.outcome
                        .as_ref()
                        .map_or_else(|e| e.as_str(), |()| "inserted")
                )
            })
            .collect();
        ProbeReport {
            attempts: all.len() as u64,
            successes: acks.len(),
            longest_gap: gap.as_secs_f64(),
            gap_began: (began - self.started).as_secs_f64(),
            around_gap,
        }
    }
}

/// One task: an attempt every [`PERIOD`] on average from `first`, each interval jittered
/// by ±50 % (a strict cadence phase-locks with other periodic clients in a proxy's
/// round robin: behind HAProxy one client then always drew the demoted node); returns the
/// attempts that ended.
async fn run_task(
    hosts: Vec<tokio_postgres::Config>,
    task: i32,
    first: Instant,
    connect_timeout: Duration,
    stop: CancellationToken,
) -> Vec<Attempt> {
    let next = tokio::time::sleep_until(first);
    tokio::pin!(next);
    let mut pending = JoinSet::new();
    let mut done = Vec::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            () = &mut next => {
                let jitter = rand::random_range(0.5..1.5);
                next.as_mut().reset(Instant::now() + PERIOD.mul_f64(jitter));
                let hosts = hosts.clone();
                pending.spawn(async move {
                    let began = Instant::now();
                    let outcome = attempt(hosts, task, connect_timeout).await;
                    Attempt { began, ended: Instant::now(), outcome }
                });
            }
            Some(ended) = pending.join_next(), if !pending.is_empty() => {
                if let Ok(a) = ended {
                    done.push(a);
                }
            }
        }
    }
    pending.abort_all();
    done
}

/// One single-host configuration per host of `dsn`, in order, each with the DSN's user,
/// database, password and (read-write) `target_session_attrs`, which tokio-postgres checks
/// after connecting, as libpq does.
fn per_host(dsn: &str) -> Vec<tokio_postgres::Config> {
    let config: tokio_postgres::Config = dsn.parse().expect("probe DSN parses");
    let ports = config.get_ports();
    let read_write = dsn.contains("target_session_attrs=read-write");
    config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let mut one = tokio_postgres::Config::new();
            match host {
                tokio_postgres::config::Host::Tcp(h) => one.host(h),
                tokio_postgres::config::Host::Unix(p) => one.host_path(p),
            };
            one.port(ports.get(i).or(ports.first()).copied().unwrap_or(5432));
            if let Some(user) = config.get_user() {
                one.user(user);
            }
            if let Some(db) = config.get_dbname() {
                one.dbname(db);
            }
            if let Some(pw) = config.get_password() {
                one.password(pw);
            }
            if read_write {
                one.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
            }
            one
        })
        .collect()
}

/// A fresh connection (each host in turn, each bounded by `connect_timeout`) and one
/// INSERT; Ok once it is acknowledged, or why not (the last host's failure).
async fn attempt(
    hosts: Vec<tokio_postgres::Config>,
    task: i32,
    connect_timeout: Duration,
) -> Result<(), String> {
    let mut why = "no host".to_string();
    for config in &hosts {
        let (client, conn) = match tokio::time::timeout(
            connect_timeout,
            config.connect(tokio_postgres::NoTls),
        )
        .await
        {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                why = format!("connect: {e}");
                continue;
            }
            Err(_) => {
                why = "connect: timed out".to_string();
                continue;
            }
        };
        // Bounded: a connection to a server that froze after the insert must not linger.
        tokio::spawn(tokio::time::timeout(INSERT_TIMEOUT, conn));
        let sql = format!("INSERT INTO {TABLE} (task) VALUES ($1)");
        return match tokio::time::timeout(INSERT_TIMEOUT, client.execute(&sql, &[&task])).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("insert: {e}")),
            Err(_) => Err("insert: timed out".to_string()),
        };
    }
    Err(why)
}
