//! What pgdrill writes and reads is the table it checked: reading its rows back after a
//! failover, on a table it shares with the users, reads none of the users' rows (through
//! pgdrill's partial index, never the primary key, which leads through every row written
//! between two of pgdrill's); and a table of the same name that a session's `search_path`
//! finds first is never written.

use std::time::Duration;

use pgdrill_lab::StopMode;

use crate::support::drill::Drill;
use crate::support::{connect, count, eventually, exec, start_lab};

use super::{admin_app_dsn, users_table_sql};

/// Index entries read through the index `name` (`pg_stat_user_indexes.idx_tup_read`).
const ENTRIES_READ: &str =
    "SELECT coalesce(sum(idx_tup_read), 0)::int8 FROM pg_stat_user_indexes WHERE indexrelname = $1";
/// Scans of the index `name`.
const SCANS: &str =
    "SELECT coalesce(sum(idx_scan), 0)::int8 FROM pg_stat_user_indexes WHERE indexrelname = $1";

/// The users' 100,000 rows go in between pgdrill's; a restart makes an outage, whose
/// verification reads pgdrill's rows back from before the users' rows to after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_reads_none_of_the_users_rows() {
    const USERS_ROWS: i64 = 100_000;
    let lab = start_lab(None).await;
    let node = lab.primary();
    let dsn = lab.dsn(node);
    let owner = connect(&dsn).await;
    exec(&owner, &users_table_sql("theirs", "bigserial")).await;
    // Without --retention: before, pgdrill took the primary key as enough to read back by.
    let drill = Drill::start(&[
        "--dsn",
        &dsn,
        "--table",
        "theirs",
        "--alter-table",
        "--rate",
        "200",
        "--duration",
        "90s",
    ])
    .await;
    drill.wait_for_transactions(200.0).await;
    exec(
        &owner,
        &format!(
            "INSERT INTO theirs (customer_id, merchant_id, amount, status) \
             SELECT i, i, 1, 'completed' FROM generate_series(1, {USERS_ROWS}) i"
        ),
    )
    .await;
    let after = drill.metric("pgdrill_transactions_total").await;
    drill.wait_for_transactions(after + 200.0).await;
    let ours = count(&owner, SCANS, &[&"theirs_pgdrill_rows"]).await;
    let primary_key_read = count(&owner, ENTRIES_READ, &[&"theirs_pkey"]).await;
    drop(owner);

    lab.stop(node, StopMode::Fast).await.expect("stop");
    tokio::time::sleep(Duration::from_secs(1)).await;
    lab.start_node(node).await.expect("start");
    drill.wait_for_outage_over(Duration::from_secs(30)).await;
    eventually(Duration::from_secs(30), "a verification", || async {
        drill.metric("pgdrill_verifications_total").await >= 1.0
    })
    .await;
    let summary = drill.stop().await;
    assert_eq!(summary.counts.lost_writes, 0, "{summary}");
    assert!(
        summary.counts.checked_writes > 0,
        "nothing read back: {summary}"
    );
    // A backend's statistics reach the views when it flushes them (idle, at most every 10 s,
    // or as it exits), so a look now could miss the read-back. A clean stop ends every
    // backend, each flushing, and keeps the statistics: after it, the views hold every read of
    // the run, the verification's included.
    lab.stop(node, StopMode::Fast).await.expect("stop");
    lab.start_node(node).await.expect("start");
    let owner = connect(&dsn).await;
    let scans = count(&owner, SCANS, &[&"theirs_pgdrill_rows"]).await - ours;
    let read = count(&owner, ENTRIES_READ, &[&"theirs_pkey"]).await - primary_key_read;
    println!("{scans} scans of pgdrill's index, {read} primary key entries read");
    assert!(
        scans > 0,
        "the verification did not read through pgdrill's index"
    );
    assert!(
        read < USERS_ROWS / 10,
        "{read} entries of the primary key read since the users' {USERS_ROWS} rows went in"
    );
    lab.shutdown().await;
}

/// Made after the check, in a schema a new session's `search_path` reads first (a role's
/// setting, or a pooler's other client's `SET`): the writes stay on the table checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_of_the_same_name_found_first_later_is_never_written() {
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    let drill = Drill::start(&[
        "--dsn",
        &dsn,
        "--rate",
        "200",
        "--duration",
        "60s",
        "--verify-window",
        "1s",
        "--retention",
        "2s",
    ])
    .await;
    drill.wait_for_transactions(100.0).await;
    let admin = connect(&admin_app_dsn(&lab)).await;
    exec(
        &admin,
        "CREATE SCHEMA decoy; \
         CREATE TABLE decoy.pgdrill_writes (LIKE public.pgdrill_writes INCLUDING ALL); \
         GRANT USAGE ON SCHEMA decoy TO pgdrill; \
         GRANT SELECT, INSERT ON decoy.pgdrill_writes TO pgdrill; \
         ALTER ROLE pgdrill SET search_path = decoy, public; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
           WHERE usename = 'pgdrill' AND pid <> pg_backend_pid()",
    )
    .await;
    let after = drill.metric("pgdrill_transactions_total").await;
    drill.wait_for_transactions(after + 400.0).await;
    // Retention goes on deleting from the table checked, not the one found first.
    let deleted = drill.metric("pgdrill_retention_rows_deleted_total").await;
    let d = &drill;
    let more =
        move || async move { d.metric("pgdrill_retention_rows_deleted_total").await > deleted };
    eventually(
        Duration::from_secs(20),
        "retention deletes after the new search_path",
        more,
    )
    .await;
    let summary = drill.stop().await;
    assert!(summary.counts.successes > 500, "{summary}");
    let decoy = count(&admin, "SELECT count(*) FROM decoy.pgdrill_writes", &[]).await;
    assert_eq!(
        decoy, 0,
        "rows written to the table found first by search_path"
    );
    lab.shutdown().await;
}
