//! Query modes through a real PgBouncer 1.18 in `pool_mode = transaction` in front of the lab
//! primary: unnamed and simple sustain the load, prepared breaks and `auto` falls back from it
//! without failing a write. (Outages behind PgBouncer are timed in `crate::timed::pgbouncer`.)

use crate::support::bouncer::Bouncer;
use crate::support::drill::Drill;
use crate::support::{rows_of_run, start_lab};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_modes_through_transaction_pooling() {
    let lab = start_lab(None).await;
    let bouncer = Bouncer::start(&lab, lab.port(lab.primary())).await;
    let dsn = bouncer.dsn();
    // Enough concurrency that transactions of one client land on different server connections.
    let load = ["--rate", "1500", "--pool-size", "16", "--duration", "4s"];
    for mode in ["unnamed", "simple", "auto", "prepared"] {
        let mut args = vec!["--dsn", dsn.as_str(), "--query-mode", mode];
        args.extend_from_slice(&load);
        let summary = Drill::start(&args).await.finish().await;
        println!("{mode}: {summary}");
        match mode {
            // Sustained: every write started succeeded and is a row (counts, not a rate, so a
            // busy machine cannot fail it; in flight at the end may have committed too).
            "unnamed" | "simple" => {
                assert!(
                    summary.counts.errors.is_empty(),
                    "{mode}: {:?}",
                    summary.counts.errors
                );
                assert!(summary.counts.successes > 0, "{mode}: {summary}");
                assert_eq!(
                    summary.counts.successes, summary.counts.transactions,
                    "{mode}: {summary}"
                );
                let rows = rows_of_run(&lab, lab.primary(), summary.run_id).await as u64;
                assert!(
                    (summary.counts.successes..=summary.counts.successes + summary.abandoned)
                        .contains(&rows),
                    "{mode}: {rows} rows for {summary}"
                );
            }
            // auto starts prepared (the port is not 6432), sees 26000/42P05, switches once
            // and sends those INSERTs again unnamed: no failed write, no outage.
            "auto" => {
                assert!(summary.counts.errors.is_empty(), "auto: {summary}");
                assert!(summary.outages.is_empty(), "auto: {summary}");
                assert_eq!(
                    summary.counts.successes, summary.counts.transactions,
                    "auto: {summary}"
                );
            }
            _ => assert!(
                summary.counts.errors.get("other").copied().unwrap_or(0) >= 10,
                "prepared should break through transaction pooling: {summary}"
            ),
        }
    }
    drop(bouncer);
    lab.shutdown().await;
}
