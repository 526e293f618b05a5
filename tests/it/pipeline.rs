//! Pipelining keeps every transaction's own outcome: acknowledged ids are in the table, a
//! connection killed mid-pipeline makes exactly its in-flight writes unknown-outcome, and a
//! failing statement keeps its error class without taking its neighbours down.

use std::time::Duration;

use pgdrill::config::Table;
use pgdrill_lab::Lab;

use crate::support::drill::{metric, Drill};
use crate::support::{self, connect, eventually, start_lab};

async fn count(lab: &Lab, sql: &str, run_id: i64) -> i64 {
    let client = connect(&lab.dsn(lab.primary())).await;
    support::count(&client, sql, &[&run_id]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_16_every_acknowledged_write_is_in_the_table_once() {
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    // --rate 0 keeps both connections busy, so each carries a full pipeline.
    let drill = Drill::start(&[
        "--dsn",
        &dsn,
        "--rate",
        "0",
        "--pool-size",
        "2",
        "--pipeline-depth",
        "16",
        "--duration",
        "3s",
    ])
    .await;
    eventually(
        Duration::from_secs(10),
        "more in flight than connections",
        || async { drill.metric("pgdrill_transactions_in_flight").await > 2.0 },
    )
    .await;
    let summary = drill.finish().await;
    assert!(
        summary.counts.errors.is_empty(),
        "errors: {:?}",
        summary.counts.errors
    );
    assert!(summary.counts.successes > 100, "{summary}");
    // The queue left at the end is pgdrill's own stock at --rate 0, not skipped writes.
    assert_eq!(summary.skipped, 0, "{summary}");
    let run = summary.run_id;
    let rows = count(
        &lab,
        "SELECT count(*) FROM pgdrill_writes WHERE run_id = $1",
        run,
    )
    .await;
    let seqs = count(
        &lab,
        "SELECT count(DISTINCT seq) FROM pgdrill_writes WHERE run_id = $1",
        run,
    )
    .await;
    assert_eq!(
        rows as u64, summary.counts.successes,
        "rows vs acknowledged"
    );
    assert_eq!(seqs, rows, "each seq written once");
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_pipeline_exactly_the_in_flight_writes_are_unknown() {
    let lab = start_lab(None).await;
    let (proxy, dsn) = support::proxied(&lab, lab.primary(), Duration::ZERO).await;
    let drill = Drill::start(&[
        "--dsn",
        &dsn,
        "--rate",
        "1000",
        "--pool-size",
        "2",
        "--pipeline-depth",
        "16",
        // Nothing may time out while the link holds the writes.
        "--statement-timeout",
        "60s",
        "--connect-timeout",
        "1s",
    ])
    .await;
    // Both pool connections open (set up, not only attempted: on a busy machine the second
    // one's setup can outlast the first 200 writes), so no write below waits for a connect.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = drill.scrape().await;
        let open = metric(&text, "pgdrill_pool_connections{state=\"idle\"}")
            + metric(&text, "pgdrill_pool_connections{state=\"in_use\"}");
        let writes = metric(&text, "pgdrill_transactions_total");
        if open == 2.0 && writes > 200.0 {
            break;
        }
        let attempts = metric(&text, "pgdrill_connection_attempts_total");
        assert!(
            tokio::time::Instant::now() < deadline,
            "pool not warm within 20 s: {open} connections open, {attempts} attempted, {writes} writes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Hold every byte: both lanes fill their pipelines and stay there.
    proxy.blackhole(true);
    eventually(Duration::from_secs(10), "both pipelines full", || async {
        drill.metric("pgdrill_transactions_in_flight").await == 32.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = drill.scrape().await;
    let in_flight = metric(&before, "pgdrill_transactions_in_flight");
    assert_eq!(in_flight, 32.0, "stable while held");
    assert_eq!(metric(&before, "pgdrill_unknown_outcome_writes_total"), 0.0);

    proxy.drop_connections();
    eventually(
        Duration::from_secs(10),
        "in-flight writes failed",
        || async { drill.metric("pgdrill_unknown_outcome_writes_total").await >= in_flight },
    )
    .await;
    // Reconnects are held by the blackhole too: nothing else is sent in the meantime.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = drill.scrape().await;
    assert_eq!(
        metric(&after, "pgdrill_unknown_outcome_writes_total"),
        in_flight
    );
    assert_eq!(
        metric(
            &after,
            "pgdrill_transaction_errors_total{class=\"connection_closed\"}"
        ),
        in_flight,
        "every killed write is classified connection_closed"
    );

    proxy.blackhole(false);
    eventually(Duration::from_secs(20), "writes resume", || async {
        let text = drill.scrape().await;
        metric(&text, "pgdrill_transaction_duration_seconds_count")
            > metric(&after, "pgdrill_transaction_duration_seconds_count") + 100.0
    })
    .await;
    let summary = drill.stop().await;
    assert_eq!(
        summary.counts.unknown_outcome_writes as f64, in_flight,
        "{summary}"
    );
    // Every row is an acknowledged write or one of the unknown ones, never anything else.
    let rows = count(
        &lab,
        "SELECT count(*) FROM pgdrill_writes WHERE run_id = $1",
        summary.run_id,
    )
    .await as u64;
    assert!(
        (summary.counts.successes
            ..=summary.counts.successes + summary.counts.unknown_outcome_writes)
            .contains(&rows),
        "{rows} rows; {summary}"
    );
    proxy.shutdown().await;
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pipelined_write_keeps_its_class_and_spares_its_neighbours() {
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    // pgdrill's own table, plus a trigger that cancels every seventh write (SQLSTATE 57014).
    let table = Table::parse("pipe_err").expect("table name");
    let ddl = table.create_sql();
    let client = connect(&dsn).await;
    client
        .batch_execute(&format!(
            "{ddl};
             CREATE FUNCTION reject_some() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF NEW.seq % 7 = 3 THEN
                 RAISE EXCEPTION 'rejected seq %', NEW.seq USING ERRCODE = '57014';
               END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER reject_some BEFORE INSERT ON pipe_err
               FOR EACH ROW EXECUTE FUNCTION reject_some();"
        ))
        .await
        .expect("table and trigger");
    let drill = Drill::start(&[
        "--dsn",
        &dsn,
        "--table",
        "pipe_err",
        "--allow-table-triggers",
        "--rate",
        "0",
        "--pool-size",
        "2",
        "--pipeline-depth",
        "16",
        "--duration",
        "2s",
        // /metrics stays up with the final figures, so the scrape cannot come too late; the
        // stop below ends it.
        "--linger",
        "60s",
    ])
    .await;
    drill.wait_for_load_over(Duration::from_secs(30)).await;
    // Over the whole run, less one connection per verification: the first writes' errors can
    // form an outage of their own (no write acknowledged for longer than the threshold),
    // verified after it. A verification's connection is counted as it opens, the
    // verification once done: one still under way in the drain is waited for (the count
    // only falls to 2 as it ends; a connection lost to a statement error never does).
    let mut attempts = f64::NAN;
    let limit = Duration::from_secs(15);
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        let text = drill.scrape().await;
        attempts = metric(&text, "pgdrill_connection_attempts_total")
            - metric(&text, "pgdrill_verifications_total");
        if attempts == 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let summary = drill.stop().await;

    let failed = summary.counts.transactions - summary.counts.successes;
    assert!(failed > 0, "{summary}");
    assert_eq!(
        summary.counts.errors.get("statement_timeout").copied(),
        Some(failed),
        "every failure keeps its class: {:?}",
        summary.counts.errors
    );
    assert_eq!(
        summary.counts.errors.len(),
        1,
        "{:?}",
        summary.counts.errors
    );
    assert_eq!(
        summary.counts.unknown_outcome_writes, 0,
        "a server error is a known outcome"
    );
    assert_eq!(
        attempts, 2.0,
        "a statement error does not cost the connection (within {limit:?} of the load's end)"
    );
    // One in seven is rejected, the other six of each seven commit.
    let ratio = failed as f64 / summary.counts.transactions as f64;
    assert!(
        (0.10..0.18).contains(&ratio),
        "failed {failed} of {summary}"
    );
    let run = summary.run_id;
    let rows = count(&lab, "SELECT count(*) FROM pipe_err WHERE run_id = $1", run).await;
    assert_eq!(rows as u64, summary.counts.successes);
    let rejected = count(
        &lab,
        "SELECT count(*) FROM pipe_err WHERE run_id = $1 AND seq % 7 = 3",
        run,
    )
    .await;
    assert_eq!(rejected, 0);
    lab.shutdown().await;
}

/// A slow link (300 ms round trips) with the default timeouts: the first connection's table
/// check takes a round trip per query, more than `--connect-timeout`, and is not cut off by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_link_starts_with_the_default_timeouts() {
    let lab = support::start_single(None).await;
    let (_proxy, dsn) = support::proxied(&lab, lab.primary(), Duration::from_millis(150)).await;
    let drill = Drill::start(&["--dsn", &dsn, "--rate", "20", "--duration", "12s"]).await;
    let summary = drill.finish().await;
    assert!(summary.counts.successes > 0, "{:?}", summary.counts);
    assert_eq!(
        summary.counts.errors.values().sum::<u64>(),
        0,
        "{:?}",
        summary.counts.errors
    );
}

/// On a slow link a connect races more attempts while the first is unanswered (a hung server
/// looks the same at first); once one answered, the others go as soon as they answer too,
/// rather than each holding a connection slot until the table check (here held by a lock)
/// is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_links_raced_attempts_do_not_hold_connection_slots() {
    let lab = support::start_single(None).await;
    let (_proxy, dsn) = support::proxied(&lab, lab.primary(), Duration::from_millis(150)).await;
    let admin = connect(&lab.dsn(lab.primary())).await;
    admin
        .batch_execute(&Table::parse("pgdrill_writes").expect("name").create_sql())
        .await
        .expect("pgdrill's table");
    let locker = connect(&lab.dsn(lab.primary())).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE pgdrill_writes IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock it");
    let args = ["--dsn", &dsn, "--rate", "20", "--pool-size", "4"];
    let drill = Drill::start(&[&args[..], &["--statement-timeout", "60s"]].concat()).await;
    let backends = || async {
        let sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgdrill'";
        admin
            .query_one(sql, &[])
            .await
            .expect("count")
            .get::<_, i64>(0)
    };
    // Raced: more than one lane's attempt reached the server.
    eventually(Duration::from_secs(20), "attempts raced", || async {
        backends().await > 4
    })
    .await;
    eventually(
        Duration::from_secs(20),
        "one connection per lane left",
        || async { backends().await <= 4 },
    )
    .await;
    locker.batch_execute("ROLLBACK").await.expect("unlock");
    drill.wait_for_transactions(20.0).await;
    let summary = drill.stop().await;
    assert_eq!(
        summary.counts.errors.values().sum::<u64>(),
        0,
        "{:?}",
        summary.counts.errors
    );
}
