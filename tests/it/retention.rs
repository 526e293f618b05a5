//! Continuous retention at 1,000/s with a 10 s window over 40 s: the table stays bounded,
//! every write is a row left or a row deleted, and the load is not disturbed (no failed or
//! skipped write; the p99 with cleanup is printed).

use std::time::Duration;

use tokio::time::Instant;

use pgdrill::Summary;

use crate::support::drill::{metric, Drill};
use crate::support::{connect, count, eventually, exec, start_lab};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_table_bounded_without_disturbing_the_load() {
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    let client = connect(&dsn).await;
    // Deleted rows' space is reused once (auto)vacuum ran; its default 1 min nap would not
    // fit in a 40 s test, so the lab naps 1 s (on a real server the steady state is the same).
    let admin = connect(&lab.admin_dsn(lab.primary())).await;
    admin
        .batch_execute("ALTER SYSTEM SET autovacuum_naptime = '1s'")
        .await
        .expect("autovacuum_naptime");
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .expect("reload");

    let drill = Drill::start(&[
        "--dsn",
        &dsn,
        "--rate",
        "1000",
        "--duration",
        "40s",
        "--retention",
        "10s",
        "--verify-window",
        "5s",
    ])
    .await;
    let began = Instant::now();
    let mut samples = Vec::new();
    let mut text = String::new();
    // Skipped writes at the first scrape at least 5 s after one that showed writes: the load
    // under way (a busy machine's slow start, the first connection and the table, can leave
    // the 1 s backlog's writes skipped before any cleanup ran; the cleanup's first deletes
    // come 10 s in).
    let (mut writing, mut skipped_under_way) = (false, None);
    for i in 0..8 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        if i < 7 {
            // The last sample is taken as the run ends; /metrics is gone then.
            text = drill.scrape().await;
            if writing && skipped_under_way.is_none() {
                let skipped = metric(&text, "pgdrill_transactions_skipped_total");
                skipped_under_way = Some((i, skipped));
            }
            writing |= metric(&text, "pgdrill_transactions_total") > 0.0;
        }
        let row = client
            .query_one(
                "SELECT count(*), pg_total_relation_size('pgdrill_writes'), \
                 coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 \
                 FROM pgdrill_writes",
                &[],
            )
            .await
            .expect("table size");
        let sample: (i64, i64, f64) = (row.get(0), row.get(1), row.get(2));
        println!(
            "t={:>4.1}s rows={:>6} size={:>5} kB oldest={:.1}s",
            began.elapsed().as_secs_f64(),
            sample.0,
            sample.1 / 1024,
            sample.2
        );
        samples.push(sample);
    }
    let deleted = metric(&text, "pgdrill_retention_rows_deleted_total");
    let summary = drill.finish().await;
    // Every write of the run is a row still in the table or one the cleanup deleted.
    let remaining = count(&client, "SELECT count(*) FROM pgdrill_writes", &[]).await as u64;
    println!(
        "with cleanup: p99 {:.2} ms max {:.2} ms; deleted {deleted} (scraped), {} (summary), \
         {remaining} rows left",
        summary.latency.p99_ms, summary.latency.max_ms, summary.retention_rows_deleted
    );

    // Bounded: never much more than window + one sweep interval of rows, after the first 15 s.
    // (The oldest row's bound is the rows' one, 4 s past the window: a sweep every second,
    // on a busy machine sometimes a few seconds late, not a row 20-40 s old.)
    for (rows, _, oldest) in &samples[2..] {
        assert!(*rows <= 14_000, "{rows} rows kept with a 10 s window");
        assert!(*oldest <= 14.0, "oldest row {oldest:.1}s old");
    }
    // Size stops growing: the last sample is no bigger than 1.5x the one at 20 s
    // (space of deleted rows is reused once autovacuum ran).
    let at_20s = samples[3].1 as f64;
    let last = samples[7].1 as f64;
    assert!(
        last <= at_20s * 1.5,
        "table grew from {at_20s} to {last} bytes"
    );
    assert!(deleted > 0.0, "deleted {deleted}");
    let errors: f64 = [
        "other",
        "rejected",
        "connection_closed",
        "statement_timeout",
    ]
    .iter()
    .map(|c| {
        metric(
            &text,
            &format!("pgdrill_retention_errors_total{{class=\"{c}\"}}"),
        )
    })
    .sum();
    assert_eq!(errors, 0.0);
    // Not disturbed: every transaction succeeded and none was skipped while the load ran
    // (from the scrape under way to the last one; a write released just as the run stops is
    // counted skipped at the shutdown, whatever the cleanup did). How much latency the cleanup adds is printed
    // above; a bound on it would measure the machine's neighbours (timing belongs in bench/,
    // not in a test a busy CI machine can fail).
    assert!(
        summary.counts.errors.is_empty(),
        "{:?}",
        summary.counts.errors
    );
    assert_eq!(
        summary.counts.successes, summary.counts.transactions,
        "{summary}"
    );
    // From 15 s at the latest: at least 20 s of load with the cleanup deleting are checked.
    let (from, skipped_under_way) = skipped_under_way.expect("writes by the 30 s scrape");
    assert!(from <= 2, "writes first seen at the {} s scrape", from * 5);
    assert_eq!(
        metric(&text, "pgdrill_transactions_skipped_total"),
        skipped_under_way,
        "skipped while loaded"
    );
    // The summary counts the deletions too: at least what the last scrape (a few seconds
    // before the end) saw.
    let counted = summary.retention_rows_deleted as f64;
    assert!(counted >= deleted, "summary {counted} < scraped {deleted}");
    // Ground truth, not a rate: the rows written (acknowledged, and any in flight at the
    // end) are the rows left plus the rows deleted.
    let written = summary.retention_rows_deleted + remaining;
    assert!(
        (summary.counts.successes..=summary.counts.successes + summary.abandoned)
            .contains(&written),
        "{remaining} left + {counted} deleted != {} acknowledged ({} abandoned)",
        summary.counts.successes,
        summary.abandoned
    );
    lab.shutdown().await;
}

/// Restarts `node` (down 3 s: longer than the outage threshold at 2/s, three intervals of
/// 1.5 s, however fast the lab stops and starts; down 1 s, a fast start once left no outage),
/// waits for the outage's verification and stops the run.
async fn restart_and_verify(
    lab: &pgdrill_lab::Lab,
    node: pgdrill_lab::Node,
    drill: Drill,
) -> Summary {
    lab.stop(node, pgdrill_lab::StopMode::Fast)
        .await
        .expect("stop PostgreSQL");
    tokio::time::sleep(Duration::from_secs(3)).await;
    lab.start_node(node).await.expect("start PostgreSQL");
    drill.wait_for_outage_over(Duration::from_secs(30)).await;
    eventually(Duration::from_secs(15), "the outage verified", || async {
        drill.metric("pgdrill_verifications_total").await >= 1.0
    })
    .await;
    drill.stop().await
}

/// At a canary's low rate the verification ledger spans longer than a short retention window
/// (it keeps a number of slices, one per acknowledgement here): retention leaves the rows a
/// verification may still read back, so an outage after it finds every write, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_never_deletes_what_a_verification_still_reads_back() {
    let lab = start_lab(None).await;
    let node = lab.primary();
    let drill = Drill::start(&[
        "--dsn",
        &lab.dsn(node),
        "--rate",
        "2",
        "--retention",
        "3s",
        "--verify-window",
        "2s",
    ])
    .await;
    // 32 writes over 16 s: the ledger holds the last 21 (10.5 s), retention sweeps every
    // second and may delete only what is older.
    drill.wait_for_transactions(32.0).await;
    let summary = restart_and_verify(&lab, node, drill).await;
    println!("{summary}");
    assert!(summary.retention_rows_deleted > 0, "{summary}");
    assert_eq!(summary.outages[0].lost_writes, Some(0), "{summary}");
    assert_eq!(summary.counts.lost_writes, 0, "{summary}");
    lab.shutdown().await;
}

/// Two runs share pgdrill's table: B without retention, started first, and A with a 2 s
/// window and batches smaller than B's head start. A deletes its own old rows, behind B's at
/// the start of the table, and not one of B's: another pgdrill may still read its rows back
/// (B's verification would count each missing one as lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_its_own_runs_rows_and_leaves_another_runs() {
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    let other = Drill::start(&["--dsn", &dsn, "--rate", "50"]).await;
    other.wait_for_transactions(100.0).await;
    let canary = Drill::start(&[
        "--dsn",
        &dsn,
        "--rate",
        "50",
        "--duration",
        "8s",
        "--retention",
        "2s",
        "--verify-window",
        "1s",
        "--retention-batch-size",
        "20",
    ])
    .await;
    let canary = canary.finish().await;
    let other = other.stop().await;
    println!("canary:\n{canary}\nother:\n{other}");
    let client = connect(&dsn).await;
    let rows = "SELECT count(*) FROM pgdrill_writes WHERE run_id = $1";
    // Every write the other run acknowledged (and any in flight as it stopped) is there.
    let kept = count(&client, rows, &[&other.run_id]).await as u64;
    let acknowledged = other.counts.successes;
    assert!(
        (acknowledged..=acknowledged + other.abandoned).contains(&kept),
        "{kept} rows of the other run left, {acknowledged} acknowledged"
    );
    let left = count(&client, rows, &[&canary.run_id]).await as u64;
    // Deleted behind the other run's rows, more than a batch of them at the table's start.
    assert!(canary.retention_rows_deleted > 0, "{canary}");
    // Its own rows are each left or deleted, once.
    let written = left + canary.retention_rows_deleted;
    let acknowledged = canary.counts.successes;
    assert!(
        (acknowledged..=acknowledged + canary.abandoned).contains(&written),
        "{left} left + {} deleted, {acknowledged} acknowledged\n{canary}",
        canary.retention_rows_deleted
    );
    lab.shutdown().await;
}

/// Reads back and deletes reach the table's own rows and no other table's: a partitioned
/// table's through its partitions (every write found, rows deleted), and never an
/// inheritance child added to pgdrill's table during the run (the check at start refuses
/// a table that has one; read-backs and deletes name the table with ONLY).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_backs_and_deletes_reach_partitions_and_never_an_added_child() {
    let lab = start_lab(None).await;
    let node = lab.primary();
    let dsn = lab.dsn(node);
    exec(
        &connect(&dsn).await,
        "CREATE TABLE tx_parted (transaction_id bigserial PRIMARY KEY, \
           customer_id integer NOT NULL, merchant_id integer NOT NULL, \
           amount numeric(12,2) NOT NULL, status text NOT NULL, \
           created_at timestamptz NOT NULL DEFAULT now(), run_id bigint NOT NULL, \
           seq bigint NOT NULL) PARTITION BY RANGE (transaction_id); \
         CREATE TABLE tx_parted_a PARTITION OF tx_parted FOR VALUES FROM (MINVALUE) TO (20); \
         CREATE TABLE tx_parted_b PARTITION OF tx_parted FOR VALUES FROM (20) TO (MAXVALUE); \
         COMMENT ON TABLE tx_parted IS 'pgdrill: made by the test'",
    )
    .await;
    // Scans of `table` so far, as sessions report them: as they end, or idle for 10 s.
    let scans = |table: &'static str| {
        let dsn = dsn.clone();
        async move {
            let sql = "SELECT coalesce(sum(seq_scan + coalesce(idx_scan, 0)), 0)::bigint \
                       FROM pg_stat_user_tables WHERE relname = $1";
            count(&connect(&dsn).await, sql, &[&table]).await
        }
    };
    // Retention on the partitioned table only: on the other, the only scans are the test's
    // copy and the read-back.
    let retention = ["--retention", "3s", "--verify-window", "2s"];
    for (table, extra) in [("tx_parted", &retention[..]), ("tx_plain", &[][..])] {
        let mut args = vec!["--dsn", dsn.as_str(), "--table", table, "--rate", "20"];
        args.extend_from_slice(extra);
        let drill = Drill::start(&args).await;
        drill.wait_for_transactions(60.0).await;
        if table == "tx_plain" {
            exec(
                &connect(&dsn).await,
                "CREATE TABLE tx_kid (note text) INHERITS (tx_plain); \
                 INSERT INTO tx_kid SELECT * FROM ONLY tx_plain",
            )
            .await;
            // The copy's own scan, reported as its session ended.
            eventually(Duration::from_secs(10), "the copy counted", || async {
                scans(table).await > 0
            })
            .await;
        } else {
            eventually(Duration::from_secs(30), "retention deletes", || async {
                drill.metric("pgdrill_retention_rows_deleted_total").await > 0.0
            })
            .await;
        }
        let before = scans(table).await;
        let summary = restart_and_verify(&lab, node, drill).await;
        println!("{table}:\n{summary}");
        assert_eq!(summary.outages[0].lost_writes, Some(0), "{summary}");
        assert!(summary.counts.checked_writes > 0, "{summary}");
        if table == "tx_parted" {
            assert!(summary.retention_rows_deleted > 0, "{summary}");
            continue;
        }
        // The read-back scanned the parent alone (the child's count would come in the same
        // report as the parent's).
        eventually(Duration::from_secs(20), "the read-back counted", || async {
            scans(table).await > before
        })
        .await;
        assert_eq!(scans("tx_kid").await, 0, "the child was scanned");
        let kid = "SELECT count(*) FROM tx_kid";
        assert!(
            count(&connect(&dsn).await, kid, &[]).await >= 60,
            "the child's rows"
        );
    }
    lab.shutdown().await;
}

/// A users' table whose statistics predate pgdrill's rows (ANALYZEd while `run_id` was all
/// NULL, autovacuum off, as on a large table between its autoanalyzes): the planner takes a
/// batch for one row. Retention still deletes pgdrill's old rows within a 1 s
/// `statement_timeout` (a batch joined in a nested loop read itself again for every row:
/// 10,000 × 5,000 rows, timed out every sweep), and no row of the users'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_in_time_on_a_table_analyzed_before_pgdrills_rows() {
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    let client = connect(&dsn).await;
    exec(
        &client,
        "CREATE TABLE ledger (transaction_id bigserial PRIMARY KEY, customer_id int, \
           merchant_id int, amount numeric, status text, \
           created_at timestamptz NOT NULL DEFAULT now(), run_id bigint, seq bigint) \
           WITH (autovacuum_enabled = false); \
         CREATE INDEX ledger_pgdrill_rows ON ledger (transaction_id) WHERE run_id IS NOT NULL; \
         COMMENT ON COLUMN ledger.run_id IS 'pgdrill: set by the test'; \
         INSERT INTO ledger (customer_id, merchant_id, amount, status) \
           SELECT i % 10000, i % 1000, i % 500, 'completed' FROM generate_series(1, 200000) i; \
         ANALYZE ledger",
    )
    .await;
    // An earlier run's rows, two days old: any pgdrill run's retention deletes them.
    exec(
        &client,
        "INSERT INTO ledger (customer_id, merchant_id, amount, status, run_id, seq, created_at) \
         SELECT 1, 1, 1, 'completed', 7, i, now() - interval '2 days' \
         FROM generate_series(1, 10000) i",
    )
    .await;
    let drill = Drill::start(&[
        "--dsn",
        &dsn,
        "--table",
        "ledger",
        "--rate",
        "5",
        "--retention",
        "10s",
        "--verify-window",
        "5s",
        "--statement-timeout",
        "1s",
    ])
    .await;
    let old = "SELECT count(*) FROM ledger WHERE run_id = 7";
    eventually(Duration::from_secs(30), "the old rows deleted", || async {
        count(&client, old, &[]).await == 0
    })
    .await;
    let summary = drill.stop().await;
    println!("{summary}");
    assert!(summary.retention_rows_deleted >= 10_000, "{summary}");
    let users = "SELECT count(*) FROM ledger WHERE run_id IS NULL";
    assert_eq!(count(&client, users, &[]).await, 200_000);
    lab.shutdown().await;
}
