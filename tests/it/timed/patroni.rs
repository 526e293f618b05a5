//! Drills against a real Patroni 3.0 cluster (etcd 3.4, two PostgreSQL 15 members, HAProxy 2.6
//! with the standard Patroni checks; `support::patroni`), through HAProxy and through a
//! multi-host DSN: a planned switchover, the leader killed, the leader frozen. Each asserts
//! pgdrill's write unavailability against the rows' `created_at` gap (±0.1 s) and against an
//! independent fresh-connection probe (`support::probe`, ±0.2 s): the RTO must be the service's,
//! not pgdrill's own connect waits (issue 18).
//!
//! Run alone: `cargo test --test it patroni -- --test-threads 1 --nocapture`. Each test prints
//! one `patroni drill:` line per drill with the three figures.

use std::time::Duration;

use crate::support::drill::Drill;
use crate::support::patroni::PatroniCluster;
use crate::support::probe::{Probe, ProbeReport, CONNECT_TIMEOUT, TASKS};
use crate::support::{connect, count};

/// pgdrill's figure against its own rows (server `created_at`).
const ROWS_BOUND: f64 = 0.1;
/// pgdrill's figure against the independent probe (one attempt per ~17 ms).
const PROBE_BOUND: f64 = 0.2;
/// The probe's tasks for a frozen leader behind HAProxy: two, 20 fresh connections a second.
/// Only there does the probe's own volume move the figure it measures: HAProxy keeps sending
/// new connections to the frozen leader (up to the server's `maxconn 100`, then into its
/// queue) until its checks fail, then holds them (`timeout queue`, 4 s) and hands them all
/// to the new leader the instant it is up, abandoned ones included. With the default six
/// tasks (60 a second) ~200 connections reached the new leader's postmaster together and
/// pgdrill's first connection waited 0.68 s behind them while the probe's oldest waiting one
/// went first (HAProxy's `option tcplog` lines, 2026-12-03): pgdrill read +0.34 and +0.43 s
/// more than the probe in 2 of 3 runs (and +0.33 to +0.50 s in 5 of 5 with the probe on a
/// HAProxy frontend of its own: the new leader's postmaster is shared). With two tasks, 4 of 4
/// within 0.1 s (+0.015 to +0.096 s); with one, 3 of 3 within 0.05 s. Bounding the probe's
/// pending attempts instead broke the switchover drill (its attempts then all hung on the
/// demoted node). A killed leader refuses, so nothing is held; in a switchover the demoted
/// node, still up for HAProxy, takes the connections and they hang there.
const HUNG_PROXY_PROBE_TASKS: u32 = 2;
/// Write rate of every drill.
const RATE: &str = "500";

#[derive(Debug, Clone, Copy)]
enum Via {
    HaProxy,
    MultiHost,
}

#[derive(Debug, Clone, Copy)]
enum Failure {
    /// `patronictl switchover --force`.
    Switchover,
    /// SIGKILL of the leader's Patroni and PostgreSQL.
    LeaderKilled,
    /// SIGSTOP of the leader's PostgreSQL.
    LeaderFrozen,
}

/// One drill's figures, in seconds.
struct Measured {
    label: String,
    /// pgdrill's longest `write_unavailable_seconds` (summary `outages`).
    pgdrill: f64,
    outages: usize,
    /// Longest gap between consecutive rows of the run, by `created_at`.
    rows: f64,
    probe: ProbeReport,
}

impl Measured {
    /// Both agreement bounds, as failure messages (empty when both hold).
    fn disagreements(&self) -> Vec<String> {
        let mut out = Vec::new();
        let vs_rows = self.pgdrill - self.rows;
        if vs_rows.abs() > ROWS_BOUND {
            out.push(format!(
                "{}: pgdrill {:.3}s vs rows {:.3}s: off by {vs_rows:+.3}s (bound ±{ROWS_BOUND}s)",
                self.label, self.pgdrill, self.rows
            ));
        }
        let vs_probe = self.pgdrill - self.probe.longest_gap;
        if vs_probe.abs() > PROBE_BOUND {
            out.push(format!(
                "{}: pgdrill {:.3}s vs probe {:.3}s: off by {vs_probe:+.3}s (bound ±{PROBE_BOUND}s)\n{}",
                self.label,
                self.pgdrill,
                self.probe.longest_gap,
                self.probe.around_gap.join("\n")
            ));
        }
        out
    }
}

/// Runs pgdrill (in-process, `--rate 500`) and the probe through `via`, causes `failure` after
/// a healthy baseline, waits until pgdrill has seen the outage end (plus 2 s, so a second one
/// would show), and measures.
async fn drill(
    cluster: &mut PatroniCluster,
    via: Via,
    failure: Failure,
    extra: &[&str],
) -> Measured {
    let dsn = match via {
        Via::HaProxy => cluster.haproxy_dsn(),
        Via::MultiHost => cluster.multi_host_dsn(),
    };
    // A fresh client configured as pgdrill is: the same connect timeout.
    let connect_timeout = extra
        .iter()
        .position(|a| *a == "--connect-timeout")
        .and_then(|i| extra.get(i + 1))
        .map_or(CONNECT_TIMEOUT, |t| {
            humantime::parse_duration(t).expect("a --connect-timeout duration")
        });
    let tasks = match (via, failure) {
        (Via::HaProxy, Failure::LeaderFrozen) => HUNG_PROXY_PROBE_TASKS,
        _ => TASKS,
    };
    let probe = Probe::with(&dsn, tasks, connect_timeout).await;
    let mut args = vec!["--dsn", dsn.as_str(), "--rate", RATE, "--duration", "90s"];
    args.extend_from_slice(extra);
    let pgdrill = Drill::start(&args).await;
    pgdrill.wait_for_transactions(1000.0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let old = match failure {
        Failure::Switchover => cluster.switchover().await.0,
        Failure::LeaderKilled => cluster.kill_leader().await,
        Failure::LeaderFrozen => cluster.freeze_leader().await,
    };
    let new = cluster.wait_for_leader(Some(old)).await;
    pgdrill.wait_for_outage_over(Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let summary = pgdrill.stop().await;
    let probe = probe.stop().await;
    let rows = row_gap(&cluster.member_dsn(new), summary.run_id).await;
    let windows: Vec<String> = summary
        .outages
        .iter()
        .map(|o| {
            format!(
                "{} -> {}",
                o.started_at,
                o.ended_at.as_deref().unwrap_or("open")
            )
        })
        .collect();
    let measured = Measured {
        label: format!(
            "{failure:?} via {via:?} {} (pgdrill's outages: {})",
            extra.join(" "),
            windows.join(", ")
        ),
        pgdrill: summary
            .outages
            .iter()
            .filter_map(|o| o.write_unavailable_seconds)
            .fold(0.0, f64::max),
        outages: summary.outages.len(),
        rows,
        probe: probe.clone(),
    };
    println!(
        "patroni drill: {:<45} pgdrill {:.3}s ({} outage(s)), rows {:.3}s, probe {:.3}s \
         ({} of {} attempts, gap from {:.2}s); leader n{old} -> n{new}; lost {}, unknown {}; \
         errors {:?}",
        measured.label,
        measured.pgdrill,
        measured.outages,
        measured.rows,
        probe.longest_gap,
        probe.successes,
        probe.attempts,
        probe.gap_began,
        summary.counts.lost_writes,
        summary.counts.unknown_outcome_writes,
        summary.counts.errors,
    );
    assert!(
        measured.outages >= 1,
        "{}: pgdrill saw no outage\n{summary}",
        measured.label
    );
    measured
}

/// The longest gap between consecutive rows of `run_id` in `pgdrill_writes`, by the server's
/// `created_at` (as `failover::ground_truth_gap`).
async fn row_gap(dsn: &str, run_id: i64) -> f64 {
    let client = connect(dsn).await;
    let rows = count(
        &client,
        "SELECT count(*) FROM pgdrill_writes WHERE run_id = $1",
        &[&run_id],
    )
    .await;
    assert!(rows > 1000, "run {run_id} left {rows} rows");
    let times: Vec<f64> = client
        .query(
            "SELECT extract(epoch FROM created_at)::float8 FROM pgdrill_writes \
             WHERE run_id = $1 ORDER BY created_at",
            &[&run_id],
        )
        .await
        .expect("reading created_at")
        .iter()
        .map(|r| r.get(0))
        .collect();
    times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
}

/// Asserts every drill's bounds at once, after all were measured and printed.
fn assert_agree(measured: &[Measured]) {
    let failures: Vec<String> = measured.iter().flat_map(Measured::disagreements).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// Through HAProxy, new connections hang on the demoted member for ~2 s after a switchover.
// Before connection attempts raced (issue 18 item 1), pgdrill − probe was +0.21…+1.54 s here
// (--connect-timeout 500ms: −0.14…+0.69 s). Then, racing, up to +0.45 s in 2 of 8 drills: every
// lane's race stopped joining after one connect timeout and waited for its hung attempts, so no
// attempt started for up to a timeout (PGDRILL_TEST_LOG=info,pgdrill::db=debug shows each one).
// Past its window a race now ends at its first failure and the lane starts the next at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_through_haproxy() {
    let mut cluster = PatroniCluster::start().await;
    let first = drill(&mut cluster, Via::HaProxy, Failure::Switchover, &[]).await;
    cluster.wait_for_replica().await;
    let second = drill(
        &mut cluster,
        Via::HaProxy,
        Failure::Switchover,
        &["--connect-timeout", "500ms"],
    )
    .await;
    assert_agree(&[first, second]);
}

/// Also checks docs/drills.md's repeatable Patroni recipe: `scripts/patroni-failover` twice in
/// a row fails over each time (a fixed `--candidate` would be refused the second time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_through_multi_host_dsn() {
    let mut cluster = PatroniCluster::start().await;
    let m = drill(&mut cluster, Via::MultiHost, Failure::Switchover, &[]).await;
    // Back to back: the script itself waits until the old leader runs as a replica again.
    for _ in 0..2 {
        let before = cluster.leader().await.expect("a leader");
        let (scope, config) = cluster.patronictl_target();
        let out = tokio::process::Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/patroni-failover"
        ))
        .arg(config)
        .arg(scope)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
        let out = tokio::time::timeout(Duration::from_secs(60), out)
            .await
            .expect("scripts/patroni-failover within 60 s")
            .expect("running scripts/patroni-failover");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "scripts/patroni-failover: {text}");
        let after = cluster.wait_for_leader(Some(before)).await;
        println!("scripts/patroni-failover: n{before} -> n{after}");
    }
    assert_agree(&[m]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_through_haproxy() {
    let mut cluster = PatroniCluster::start().await;
    let m = drill(&mut cluster, Via::HaProxy, Failure::LeaderKilled, &[]).await;
    assert_agree(&[m]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_through_multi_host_dsn() {
    let mut cluster = PatroniCluster::start().await;
    let m = drill(&mut cluster, Via::MultiHost, Failure::LeaderKilled, &[]).await;
    assert_agree(&[m]);
}

/// The probe here is sparser ([`HUNG_PROXY_PROBE_TASKS`]): HAProxy holds every connection
/// made during the hang and hands them to the new leader together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_frozen_through_haproxy() {
    let mut cluster = PatroniCluster::start().await;
    let m = drill(&mut cluster, Via::HaProxy, Failure::LeaderFrozen, &[]).await;
    assert_agree(&[m]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_frozen_through_multi_host_dsn() {
    let mut cluster = PatroniCluster::start().await;
    let m = drill(&mut cluster, Via::MultiHost, Failure::LeaderFrozen, &[]).await;
    assert_agree(&[m]);
}
