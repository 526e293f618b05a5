//! Through a real PgBouncer 1.18 in `pool_mode = transaction` in front of the lab primary, timed
//! against the rows: a PgBouncer restart is an outage pgdrill measures and recovers from; a
//! failover behind PgBouncer (retargeted by rewriting its ini + RELOAD) is measured. The query
//! modes are tested in `crate::pgbouncer`.

use std::sync::Arc;
use std::time::Duration;

use pgdrill_lab::ReplicationMode;

use crate::support::bouncer::Bouncer;
use crate::support::drill::Drill;
use crate::support::{ground_truth_gap, start_lab};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_restart_is_a_measured_outage() {
    let lab = start_lab(None).await;
    let mut bouncer = Bouncer::start(&lab, lab.port(lab.primary())).await;
    let dsn = bouncer.dsn();
    let drill = Drill::start(&["--dsn", &dsn, "--rate", "500", "--query-mode", "unnamed"]).await;
    // Writes flowing through PgBouncer (a second of them) before it goes.
    drill.wait_for_transactions(500.0).await;
    bouncer.stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    bouncer.restart().await;
    drill.wait_for_outage_over(Duration::from_secs(20)).await;
    let summary = drill.stop().await;
    println!("{summary}");
    let outage = summary.outages.first().expect("an outage");
    let down = outage.write_unavailable_seconds.expect("outage ended");
    // PgBouncer was down at least 1 s; how much longer its restart took is the machine's,
    // so the upper side is the rows' gap, not a bound.
    let truth = ground_truth_gap(&lab, lab.primary(), summary.run_id).await;
    println!("write unavailability: pgdrill {down:.3}s, rows {truth:.3}s");
    assert!(down >= 0.9, "writes unavailable {down}s");
    assert!(
        (down - truth).abs() <= 0.1,
        "pgdrill measured {down:.3}s, the rows say {truth:.3}s"
    );
    assert_eq!(summary.counts.lost_writes, 0);
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_behind_pgbouncer_is_measured() {
    let lab = Arc::new(start_lab(Some(ReplicationMode::Sync)).await);
    let bouncer = Bouncer::start(&lab, lab.port(lab.primary())).await;
    let dsn = bouncer.dsn();
    let drill = Drill::start(&["--dsn", &dsn, "--rate", "500", "--query-mode", "unnamed"]).await;
    // Writes flowing through PgBouncer (a second of them) before the failover.
    drill.wait_for_transactions(500.0).await;
    let report = lab.force_failover().await.expect("failover");
    // Repointing PgBouncer takes an operator or automation a moment; a lab failover
    // alone (~50 ms) can be shorter than the outage threshold.
    tokio::time::sleep(Duration::from_secs(1)).await;
    bouncer.retarget(lab.port(report.new_primary));
    drill.wait_for_outage_over(Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let summary = drill.stop().await;
    println!("{report}\n{summary}");
    let outage = summary.outages.first().expect("an outage");
    let down = outage.write_unavailable_seconds.expect("outage ended");
    let truth = ground_truth_gap(&lab, report.new_primary, summary.run_id).await;
    println!("write unavailability: pgdrill {down:.3}s, rows {truth:.3}s");
    assert!(
        down >= 1.0,
        "writes unavailable {down}s (PgBouncer pointed nowhere for 1 s)"
    );
    assert!(
        (down - truth).abs() <= 0.1,
        "pgdrill measured {down:.3}s, the rows say {truth:.3}s"
    );
    assert!(summary.primary_changes >= 1, "{summary}");
    // The record names the server written to after the outage, though PgBouncer kept
    // pgdrill's connections while it switched servers behind them.
    let after = outage.identity_after.as_ref().and_then(|i| i.server_port);
    assert_eq!(after, Some(lab.port(report.new_primary)), "{summary}");
    assert_eq!(
        summary.counts.lost_writes, 0,
        "sync replication loses nothing"
    );
    drop(bouncer);
    if let Ok(lab) = Arc::try_unwrap(lab) {
        lab.shutdown().await;
    }
}
