//! The lab against real PostgreSQL servers: failovers, switchovers, a detached standby, a
//! node stopped and started. Each test owns its servers, temporary directory and ports, so
//! they can run in parallel with anything else.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pgdrill_lab::{Lab, LabOptions, Node, ReplicationMode, StopMode};
use tokio::time::timeout;

use crate::support::{self, connect, eventually, exec, start_lab_with, try_connect};

const SQL_LIMIT: Duration = Duration::from_secs(10);
/// The most rows the switchover test's writer inserts: far more than it gets to before the
/// switchover ends its session.
const WRITER_LIMIT: i64 = 1_000_000;

async fn lab(standby: Option<ReplicationMode>, password: Option<&str>) -> Lab {
    start_lab_with(LabOptions {
        standby,
        password: password.map(str::to_string),
        ..LabOptions::default()
    })
    .await
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    support::count(client, sql, &[]).await
}

/// Table `t` with row 1 on the primary (A), waited for on the standby (B).
async fn seed_row_on_both(lab: &Lab) -> (tokio_postgres::Client, tokio_postgres::Client) {
    let a = connect(&lab.dsn(Node::A)).await;
    exec(
        &a,
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)",
    )
    .await;
    let b = connect(&lab.dsn(Node::B)).await;
    // Sync commit waits for the standby's flush, not its replay: visibility can lag a little.
    eventually(SQL_LIMIT, "row 1 visible on the standby", || async {
        b.query_one("SELECT count(*) FROM t WHERE id = 1", &[])
            .await
            .map(|r| r.get::<_, i64>(0) == 1)
            .unwrap_or(false)
    })
    .await;
    (a, b)
}

async fn server_port(client: &tokio_postgres::Client) -> u16 {
    let port: i32 = client
        .query_one("SELECT inet_server_port()", &[])
        .await
        .expect("inet_server_port()")
        .get(0);
    u16::try_from(port).expect("port fits u16")
}

/// Sync pair with a password: replication works, a forced failover makes the standby a
/// writable primary that does not wait for a (nonexistent) sync standby, and the multi-host
/// DSN follows the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_forced_failover_promotes_standby_and_multi_host_dsn_follows() {
    let lab = lab(Some(ReplicationMode::Sync), Some(r"s3cr'et\pw")).await;
    assert_eq!((lab.primary(), lab.standby()), (Node::A, Some(Node::B)));

    // scram on TCP: no password, no entry.
    let no_pw = format!(
        "host=127.0.0.1 port={} user=pgdrill dbname=pgdrill",
        lab.port(Node::A)
    );
    assert!(
        try_connect(&no_pw).await.is_err(),
        "connected without a password"
    );

    seed_row_on_both(&lab).await;

    let m = connect(&lab.multi_host_dsn()).await;
    assert_eq!(server_port(&m).await, lab.port(Node::A));

    let report = lab.force_failover().await.expect("force_failover");
    println!("forced failover: {report}");
    assert!(report.stop_begun.mono <= report.stopped.mono);
    assert!(report.stopped.mono <= report.promote_requested.mono);
    assert!(report.promote_requested.mono <= report.writable.mono);
    // How long it took is printed above, not bounded: a bound would measure the machine.
    assert_eq!((lab.primary(), lab.standby()), (Node::B, None));

    // A fresh multi-host connection skips the dead A and lands on B, which takes writes at once.
    let m = connect(&lab.multi_host_dsn()).await;
    assert_eq!(server_port(&m).await, lab.port(Node::B));
    exec(&m, "INSERT INTO t VALUES (2)").await;
    assert_eq!(count(&m, "SELECT count(*) FROM t").await, 2);
    lab.shutdown().await;
}

/// Async pair, standby detached: writes acknowledged after the detach are lost by a failover,
/// earlier ones survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_detached_standby_loses_later_writes_on_failover() {
    let lab = lab(Some(ReplicationMode::Async), None).await;
    let (a, _) = seed_row_on_both(&lab).await;

    lab.detach_standby().await.expect("detach_standby");
    for id in 2..=11 {
        exec(&a, &format!("INSERT INTO t VALUES ({id})")).await;
    }
    assert_eq!(count(&a, "SELECT count(*) FROM t").await, 11);

    let report = lab.force_failover().await.expect("force_failover");
    println!("async forced failover: {report}");
    let b = connect(&lab.dsn(Node::B)).await;
    assert_eq!(count(&b, "SELECT count(*) FROM t").await, 1);
    assert_eq!(count(&b, "SELECT count(*) FROM t WHERE id = 1").await, 1);
    lab.shutdown().await;
}

/// Sync pair, planned switchover under a steady writer: every acknowledged row is on the new
/// primary, and at most one more (committed, never acknowledged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_switchover_loses_no_acknowledged_write() {
    let lab = lab(Some(ReplicationMode::Sync), None).await;
    let a = connect(&lab.dsn(Node::A)).await;
    exec(&a, "CREATE TABLE t (id bigint PRIMARY KEY)").await;

    let acked = Arc::new(AtomicI64::new(0));
    let writer = tokio::spawn({
        let acked = acked.clone();
        async move {
            let stmt = a
                .prepare("INSERT INTO t VALUES ($1)")
                .await
                .expect("prepare");
            // Bounded, so that a switchover that never ends the session ends the writer too.
            for id in 1_i64..=WRITER_LIMIT {
                match timeout(SQL_LIMIT, a.execute(&stmt, &[&id])).await {
                    Ok(Ok(_)) => acked.store(id, Ordering::SeqCst),
                    Ok(Err(e)) => {
                        // The switchover ends the session.
                        return e
                            .as_db_error()
                            .map_or(e.to_string(), |d| d.message().to_string());
                    }
                    Err(_) => panic!("INSERT {id} hung"),
                }
            }
            panic!("{WRITER_LIMIT} writes, and the switchover never ended the session")
        }
    });
    eventually(SQL_LIMIT, "100 acknowledged writes", || async {
        acked.load(Ordering::SeqCst) >= 100
    })
    .await;

    let report = lab.switchover().await.expect("switchover");
    let writer_error = timeout(SQL_LIMIT, writer)
        .await
        .expect("writer stops after the switchover")
        .expect("writer task");
    let acked = acked.load(Ordering::SeqCst);
    println!("switchover: {report}; writer acked {acked}, then: {writer_error}");

    let b = connect(&lab.dsn(Node::B)).await;
    let on_b = count(&b, "SELECT count(*) FROM t").await;
    let max_b = count(&b, "SELECT coalesce(max(id), 0) FROM t").await;
    assert_eq!(on_b, max_b, "rows on B are 1..=max without gaps");
    assert!(
        on_b >= acked,
        "lost acknowledged writes: acked {acked}, on B {on_b}"
    );
    assert!(on_b <= acked + 1, "acked {acked}, on B {on_b}");
    exec(&b, "INSERT INTO t VALUES (-1)").await;
    lab.shutdown().await;
}

/// A single node stops and starts again with its data; clients see the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_stops_and_starts() {
    let lab = lab(None, None).await;
    assert_eq!((lab.primary(), lab.standby()), (Node::A, None));
    let a = connect(&lab.dsn(Node::A)).await;
    exec(&a, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)").await;

    lab.stop(Node::A, StopMode::Fast).await.expect("stop");
    let err = a
        .simple_query("SELECT 1")
        .await
        .expect_err("query on a stopped server");
    println!("after stop: {err}");
    assert!(try_connect(&lab.dsn(Node::A)).await.is_err());

    lab.start_node(Node::A).await.expect("start");
    let a = connect(&lab.dsn(Node::A)).await;
    assert_eq!(count(&a, "SELECT count(*) FROM t").await, 1);
    lab.shutdown().await;
}
