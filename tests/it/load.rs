//! Steady load against a real PostgreSQL: rows in the table match the metrics, the pacer
//! issues exactly rate x duration, and every promised metric family is on the scrape; the
//! server the writes reach is named by one statement.

use crate::support::drill::{metric, metric_sum, Drill};
use std::time::Duration;

use crate::support::{connect, exec, rows_of_run, start_single as single};

/// Every family the issue promises, present on a live scrape.
const FAMILIES: &[&str] = &[
    "pgdrill_build_info",
    "pgdrill_target_rate",
    "pgdrill_transactions_total",
    "pgdrill_transaction_errors_total",
    "pgdrill_transactions_skipped_total",
    "pgdrill_transaction_duration_seconds_bucket",
    "pgdrill_service_duration_seconds_bucket",
    "pgdrill_connection_attempts_total",
    "pgdrill_connection_errors_total",
    "pgdrill_pool_connections",
    "pgdrill_pool_max_connections",
    "pgdrill_schedule_lag_seconds_bucket",
    "pgdrill_last_success_timestamp_seconds",
    "pgdrill_load_running",
    "pgdrill_failover_state",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_load_rows_match_metrics_and_rate_holds() {
    let lab = single(None).await;
    let dsn = lab.dsn(lab.primary());
    let began = std::time::SystemTime::now();
    let drill = Drill::start(&["--dsn", &dsn, "--rate", "500", "--duration", "5s"]).await;

    // Live scrape mid-run, once writes are under way (seconds before the run's end): every
    // family is there and the numbers agree.
    drill.wait_for_transactions(100.0).await;
    let text = drill.scrape().await;
    for family in FAMILIES {
        assert!(text.contains(family), "{family} missing from /metrics");
    }
    assert_eq!(metric(&text, "pgdrill_target_rate"), 500.0);
    let states: f64 = ["healthy", "degraded", "outage", "recovering"]
        .iter()
        .map(|s| metric(&text, &format!("pgdrill_failover_state{{state=\"{s}\"}}")))
        .sum();
    assert_eq!(states, 1.0, "exactly one failover state is 1");
    let total = metric(&text, "pgdrill_transactions_total");
    let errors = metric_sum(&text, "pgdrill_transaction_errors_total");
    let observed = metric(&text, "pgdrill_transaction_duration_seconds_count");
    assert!(total > 0.0, "transactions so far: {total}");
    assert!(
        (total - errors - observed).abs() <= 8.0,
        "successes {} vs latency observations {observed}",
        total - errors
    );
    let idle = metric(&text, "pgdrill_pool_connections{state=\"idle\"}");
    let in_use = metric(&text, "pgdrill_pool_connections{state=\"in_use\"}");
    let max = metric(&text, "pgdrill_pool_max_connections");
    assert!(
        idle + in_use >= 1.0 && idle + in_use <= max,
        "{idle}+{in_use} of {max}"
    );
    let last_success = metric(&text, "pgdrill_last_success_timestamp_seconds");
    let unix = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs_f64()
    };
    // A success of this run, so between its start and this scrape (same clock): an
    // ordering, where "within 2 s of now" would measure the machine.
    let (began, now) = (unix(began), unix(std::time::SystemTime::now()));
    assert!(
        began <= last_success && last_success <= now,
        "last success {last_success} not between the start {began} and now {now}"
    );

    let summary = drill.finish().await;
    let rows = rows_of_run(&lab, lab.primary(), summary.run_id).await;
    let failed: u64 = summary.counts.errors.values().sum();
    assert_eq!(
        rows as u64,
        summary.counts.transactions - failed,
        "rows == transactions − errors"
    );
    assert_eq!(summary.counts.successes as i64, rows);
    // The rate holds where pgdrill owns it: the pacer issues every transaction due in the
    // 5 s at 500/s (finished, skipped, or abandoned in flight at the end), however busy the
    // machine and the database are. The achieved rate is theirs: printed, not asserted.
    let issued = summary.counts.transactions + summary.skipped + summary.abandoned;
    assert_eq!(issued, 2500, "{summary}");
    println!("{summary}");
    lab.shutdown().await;
}

/// The server a connection reaches is probed in one statement (one round trip, and one
/// server behind a transaction pooler); where a function is refused to the user, fact by
/// fact, which costs only that fact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_is_probed_in_one_statement_or_fact_by_fact() {
    let lab = single(None).await;
    // In pgdrill's database: a function's privileges are each database's own.
    let admin = connect(&format!("{} dbname=pgdrill", lab.admin_dsn(lab.primary()))).await;
    exec(&admin, "ALTER ROLE pgdrill SET log_statement = 'all'").await;
    // What an acknowledgement waits for, as pgdrill's sessions see it: its role's own setting,
    // and the server's (a standby that does not exist: with `local`, commits do not wait).
    exec(&admin, "SET synchronous_commit = 'local'").await;
    let local = "ALTER ROLE pgdrill SET synchronous_commit = 'local'";
    exec(&admin, local).await;
    let names = "ANY 1 (nobody)";
    exec(
        &admin,
        &format!("ALTER SYSTEM SET synchronous_standby_names = '{names}'"),
    )
    .await;
    exec(&admin, "SELECT pg_reload_conf()").await;
    // Times read alike whatever the session's time zone and date style.
    let tokyo = "ALTER ROLE pgdrill SET timezone = 'Asia/Tokyo'";
    exec(&admin, tokyo).await;
    exec(&admin, "ALTER ROLE pgdrill SET datestyle = 'SQL, DMY'").await;
    let started: String = admin
        .query_one(
            "SELECT to_char(pg_postmaster_start_time() AT TIME ZONE 'UTC', \
             'YYYY-MM-DD HH24:MI:SS.US\"+00\"')",
            &[],
        )
        .await
        .expect("start time")
        .get(0);
    let dsn = lab.dsn(lab.primary());
    crate::support::eventually(Duration::from_secs(10), "the reload", || async {
        let fresh = connect(&dsn).await;
        let row = fresh.query_one("SHOW synchronous_standby_names", &[]).await;
        row.is_ok_and(|r| r.get::<_, String>(0) == names)
    })
    .await;
    let args = ["--dsn", &dsn, "--rate", "50", "--duration", "1s"];
    let summary = Drill::start(&args).await.finish().await;
    let full = summary.identity_first.clone();
    let full = full.expect("the first primary is probed");
    assert_eq!(full.synchronous_commit.as_deref(), Some("local"));
    assert_eq!(full.synchronous_standby_names.as_deref(), Some(names));
    let line =
        format!("commits       synchronous_commit=local synchronous_standby_names='{names}'");
    assert!(summary.to_string().contains(&line), "{summary}");
    assert_eq!(full.in_recovery, Some(false), "{full:?}");
    assert_eq!(full.timeline, Some(1), "{full:?}");
    assert_eq!(full.server_port, Some(lab.port(lab.primary())), "{full:?}");
    assert!(full.system_identifier.is_some(), "{full:?}");
    assert_eq!(full.postmaster_start.as_deref(), Some(&*started), "in UTC");
    assert!(
        full.stats_reset
            .as_deref()
            .is_some_and(|t| t.ends_with("+00")),
        "{full:?}"
    );
    let log = std::fs::read_to_string(lab.log_path(lab.primary())).expect("server log");
    assert!(
        log.contains("statement: SELECT pg_is_in_recovery()::text, host("),
        "the one statement"
    );
    assert!(
        !log.contains("statement: SELECT pg_is_in_recovery()::text\n"),
        "no fact alone while the statement is answered"
    );

    exec(
        &admin,
        "REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC, pg_monitor",
    )
    .await;
    let partial = Drill::start(&args).await.finish().await.identity_first;
    let partial = partial.expect("the first primary is probed");
    let log = std::fs::read_to_string(lab.log_path(lab.primary())).expect("server log");
    assert!(log.contains("statement: SELECT pg_is_in_recovery()::text\n"));
    let mut expected = full;
    expected.system_identifier = None;
    assert_eq!(partial, expected, "all but the refused fact");
    lab.shutdown().await;
}
