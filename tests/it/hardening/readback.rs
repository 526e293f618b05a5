//! Reading pgdrill's rows back after a failover, on a table it shares with the users, reads
//! none of the users' rows: through pgdrill's partial index, never the primary key, which
//! leads through every row written between two of pgdrill's.

use std::time::Duration;

use pgdrill_lab::StopMode;

use crate::support::drill::Drill;
use crate::support::{connect, count, eventually, exec, start_lab};

use super::users_table_sql;

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
    // A backend's statistics reach the views within its idle flush interval (10 s).
    let owner = connect(&dsn).await;
    eventually(
        Duration::from_secs(30),
        "the read-back in the statistics",
        || async {
            count(&owner, SCANS, &[&"theirs_pgdrill_rows"]).await > ours
                || count(&owner, ENTRIES_READ, &[&"theirs_pkey"]).await > primary_key_read
        },
    )
    .await;
    let read = count(&owner, ENTRIES_READ, &[&"theirs_pkey"]).await - primary_key_read;
    assert!(
        read < USERS_ROWS / 10,
        "{read} entries of the primary key read since the users' {USERS_ROWS} rows went in"
    );
    let summary = drill.stop().await;
    assert_eq!(summary.counts.lost_writes, 0, "{summary}");
    lab.shutdown().await;
}
