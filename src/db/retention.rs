//! Continuous canary retention (docs/configuration.md#canary-retention): rows older than
//! `--retention` are deleted in small batches, each a short transaction on a connection of its own,
//! with pauses in between: no lock held for long, no pool connection taken from the load.
//!
//! A batch takes the oldest `batch_size` rows by primary key (an index range scan, cheap however
//! large the table) and deletes those older than the window. `transaction_id` grows with
//! `created_at`, so a batch that deletes fewer rows than it looked at ends the sweep: no index on
//! `created_at` is needed. Other runs' rows go only once a day old ([`OTHER_RUNS_AFTER`]); this
//! run's rows behind them get a sweep of their own (`sweep_both`).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::db::connect::Conn;
use crate::db::pool::DbPool;
use crate::db::table::{Expiry, Table, Workload};
use crate::db::table_check::guarded_delete;
use crate::db::Deleted;
use crate::error::{classify, ErrorClass};
use crate::retry::Throttle;
use crate::telemetry::metrics::Metrics;

/// Pause between two batches of one sweep: gives autovacuum and the load room.
const BATCH_PAUSE: Duration = Duration::from_millis(50);
const ERROR_BACKOFF: Duration = Duration::from_secs(5);
/// Each kind of failure is logged at most this often: an outage retried every 5 s for ten
/// minutes is a handful of lines, each with the repeats held back since the last.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// A batch unanswered this long is given up with its connection: the server is hung (its
/// `statement_timeout` would have ended a merely slow one).
const BATCH_TIMEOUT: Duration = Duration::from_secs(60);
/// A batch under way when retention is stopped may finish this long: the rows it deletes
/// (committed, perhaps, as the stop came) are then counted. A hung server's is abandoned.
pub const FINISH_ON_STOP: Duration = Duration::from_secs(2);

/// Other runs' rows are deleted only once this old (or older than the window, if longer): another
/// pgdrill may still read them back to verify its writes, and its ledger can span long, at a low
/// rate and through an outage. Canaries sharing a table still clean up the rows of runs that ended.
pub const OTHER_RUNS_AFTER: Duration = Duration::from_secs(86_400);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Rows older than this are deleted.
    pub window: Duration,
    pub batch_size: u32,
    /// Time between sweeps: a tenth of the window, between 1 s and 1 min.
    pub interval: Duration,
    /// `--allow-table-triggers`: a sweep may fire the table's DELETE triggers and rules.
    pub fired_allowed: bool,
}

impl RetentionSettings {
    pub fn new(window: Duration, batch_size: u32) -> RetentionSettings {
        RetentionSettings {
            window,
            batch_size,
            interval: (window / 10).clamp(Duration::from_secs(1), Duration::from_secs(60)),
            fired_allowed: false,
        }
    }
}

/// Runs sweeps until `stop`; a batch in progress gets [`FINISH_ON_STOP`] to finish (and be
/// counted), then is abandoned with its connection. Rows of this run
/// from `floor()` on (writes a verification may still read back) are left: at a low rate the
/// verification ledger spans longer than the window, and a row it looks for would read as lost.
pub async fn run(
    pool: DbPool,
    workload: Arc<Workload>,
    settings: RetentionSettings,
    metrics: Arc<Metrics>,
    floor: impl Fn() -> Option<i64>,
    stop: CancellationToken,
) {
    let others = settings.window.max(OTHER_RUNS_AFTER);
    tracing::info!(
        window = %humantime::format_duration(settings.window),
        other_runs_after = %humantime::format_duration(others),
        batch_size = settings.batch_size,
        interval = %humantime::format_duration(settings.interval),
        table = %workload.table.name,
        "retention started: deletes this run's rows older than the window and other pgdrill runs' (run_id set) older than other_runs_after, no other row"
    );
    let mut conn: Option<Conn> = None;
    // What holds the deletes back (a trigger added since the start, …), said when it changes.
    let mut held: Option<String> = None;
    // Where this run's next own batch starts: none of its rows is below it. Set once the
    // table check drew the first id.
    let mut own_from: Option<i64> = None;
    let mut wait = settings.interval;
    let mut warned = Throttle::new(WARN_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = settings.interval;
        let mut c = match conn.take() {
            // Kept across sweeps, as long as the pool's would be: a name that moved to a new
            // primary while the old one stays writable leaves no sweep on the old.
            Some(c) if !c.client.is_closed() && pool.still_current(&c) => c,
            // A connect to a hung server takes connect timeouts: never past a stop.
            _ => match stop.run_until_cancelled(pool.dedicated()).await {
                None => return,
                Some(Ok(c)) => c,
                Some(Err(err)) => {
                    metrics.retention_errors.inc(err.class);
                    if let Some(repeats) = warned.hit_keyed("connect", Instant::now()) {
                        tracing::warn!(error = %err, repeats, "retention: cannot connect; will retry");
                    }
                    wait = ERROR_BACKOFF;
                    continue;
                }
            },
        };
        let expiry = Expiry {
            run_id: workload.run_id,
            window: settings.window,
            floor: floor(),
            others,
        };
        own_from = own_from.or(workload.id_floor.get().copied());
        // Read now: a connection made means the table check ran and pinned its schema
        // (a `search_path` may find another table of the same name first).
        let table = workload.target();
        let swept = sweep_both(&c, table, &expiry, &mut own_from, settings, &metrics, &stop);
        match swept.await {
            Ok(Err(hazard)) => {
                metrics.retention_errors.inc(ErrorClass::Other);
                if held.as_ref() != Some(&hazard) {
                    tracing::warn!(table = %table.name, "retention deletes nothing while this holds: {hazard}");
                }
                held = Some(hazard);
                conn = Some(c);
            }
            Ok(Ok(deleted)) => {
                if held.take().is_some() {
                    tracing::info!(table = %table.name, "retention deletes again");
                }
                if deleted > 0 {
                    tracing::info!(
                        deleted,
                        table = %table.name,
                        "retention deleted pgdrill's rows (run_id set): this run's older than the window, other runs' older than other_runs_after"
                    );
                }
                conn = Some(c);
            }
            Err(None) => {
                metrics.retention_errors.inc(ErrorClass::NoResponse);
                if let Some(repeats) = warned.hit_keyed("no answer", Instant::now()) {
                    let limit = humantime::format_duration(BATCH_TIMEOUT);
                    tracing::warn!(
                        class = %ErrorClass::NoResponse,
                        repeats,
                        "retention batch got no answer within {limit}; its connection is closed; will retry"
                    );
                }
                wait = ERROR_BACKOFF;
                c.broken = true;
            }
            Err(Some(err)) => {
                let class = classify(&err);
                metrics.retention_errors.inc(class);
                let detail = err
                    .as_db_error()
                    .map_or_else(|| err.to_string(), |d| d.message().to_string());
                if let Some(repeats) = warned.hit_keyed(&detail, Instant::now()) {
                    tracing::warn!(%class, error = %detail, repeats, "retention batch failed; will retry");
                }
                wait = ERROR_BACKOFF;
                if !class.discards_connection(err.code().map(|c| c.code())) {
                    conn = Some(c);
                }
            }
        }
    }
}

/// Rows deleted, or why nothing was (the table has what pgdrill's DELETE must not reach or
/// set off); `Err(None)`: no answer within [`BATCH_TIMEOUT`].
type Swept = Result<Result<u64, String>, Option<tokio_postgres::Error>>;

/// One sweep: this run's rows from `own_from` on (moved past what it deletes), then every
/// run's from the start of the table. A row of this run committed after the first sweep
/// passed its id (its write slower than the window) is left to the second.
async fn sweep_both(
    conn: &Conn,
    table: &Table,
    expiry: &Expiry,
    own_from: &mut Option<i64>,
    settings: RetentionSettings,
    metrics: &Metrics,
    stop: &CancellationToken,
) -> Swept {
    let mut own = 0;
    if let Some(from) = own_from {
        let sql = |partitioned, from| {
            table.own_retention_delete_sql(partitioned, settings.batch_size, expiry, from)
        };
        match sweep(conn, table, sql, from, settings, metrics, stop).await? {
            Ok(deleted) => own = deleted,
            held => return Ok(held),
        }
        if stop.is_cancelled() {
            return Ok(Ok(own));
        }
    }
    let sql = |partitioned, _| table.retention_delete_sql(partitioned, settings.batch_size, expiry);
    let mut from = i64::MIN;
    let swept = sweep(conn, table, sql, &mut from, settings, metrics, stop).await?;
    Ok(swept.map(|deleted| own + deleted))
}

/// Deletes batches until one comes back short or `stop`, each after a look at the table
/// (triggers, rules, foreign keys and inheritance children can be added at any time), and
/// moves `from` past the ids a batch returns.
async fn sweep(
    conn: &Conn,
    table: &Table,
    sql: impl Fn(bool, i64) -> String,
    from: &mut i64,
    settings: RetentionSettings,
    metrics: &Metrics,
    stop: &CancellationToken,
) -> Swept {
    let mut total = 0;
    loop {
        let at = *from;
        let one = guarded_delete(&conn.client, table, |p| sql(p, at), settings.fired_allowed);
        let one = tokio::time::timeout(BATCH_TIMEOUT, one);
        tokio::pin!(one);
        let deleted = tokio::select! {
            deleted = &mut one => deleted,
            () = stop.cancelled() => match tokio::time::timeout(FINISH_ON_STOP, &mut one).await {
                Ok(deleted) => deleted,
                Err(_) => return Ok(Ok(total)),
            },
        };
        let Deleted { rows, last_id } = match deleted.map_err(|_| None)?.map_err(Some)? {
            Ok(deleted) => deleted,
            Err(hazard) => return Ok(Err(hazard)),
        };
        if let Some(last) = last_id {
            *from = last.saturating_add(1);
        }
        metrics.retention_rows_deleted.inc_by(rows);
        total += rows;
        if rows < u64::from(settings.batch_size) || stop.is_cancelled() {
            return Ok(Ok(total));
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(Ok(total)),
            _ = tokio::time::sleep(BATCH_PAUSE) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_during_a_connect_to_a_hung_server_ends_retention_at_once() {
        // Accepts (the kernel's backlog) and never answers: a connect takes its timeout.
        let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = hung.local_addr().expect("addr").port();
        let metrics = Metrics::new(&[]);
        let timeout = Duration::from_secs(30);
        let (pool, _) = crate::db::pool::tests::unconnected_at(metrics.clone(), port, timeout);
        let table = Table::parse("t").expect("a plain table name");
        let workload = Arc::new(Workload::new(table, 1, crate::db::table::QueryMode::Simple));
        let settings = RetentionSettings::new(Duration::from_secs(10), 100);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            pool,
            workload,
            settings,
            metrics,
            || None,
            stop.clone(),
        ));
        // Past the first interval (1 s): the connect has begun.
        tokio::time::sleep(settings.interval + Duration::from_millis(500)).await;
        stop.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert!(ended.is_ok(), "retention held the stop for its connect");
    }

    #[test]
    fn sweeps_are_a_tenth_of_the_window_within_bounds() {
        assert_eq!(
            RetentionSettings::new(Duration::from_secs(10), 5000).interval,
            Duration::from_secs(1)
        );
        assert_eq!(
            RetentionSettings::new(Duration::from_secs(300), 5000).interval,
            Duration::from_secs(30)
        );
        assert_eq!(
            RetentionSettings::new(Duration::from_secs(7 * 86400), 5000).interval,
            Duration::from_secs(60)
        );
    }
}
