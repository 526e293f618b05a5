//! Several canaries at once, through a real Prometheus evaluating the shipped
//! rules: three pgdrill processes of job `pgdrill` in cluster `east` write to a
//! lab that fails over; one process of the same job in cluster `west` writes
//! to another database that does not. The job-level rules fold the replicas of
//! `east` into one series and keep `west` apart; each replica verifies its own
//! writes (its own `run_id`); the page beyond the objective fires once for
//! `east`, never per replica and never for `west`.
//!
//! The two documented parameters are set for the test, everything else is the
//! shipped file: the RTO objective is 2 s instead of 120 s, so that an 8 s
//! outage stands for one beyond the objective without the test waiting minutes
//! (the expressions compare against `pgdrill:rto_objective_seconds`, whatever
//! its value), and job `pgdrill` expects 3 replicas. Scrapes and evaluations
//! run every second (`support::prometheus::INTERVAL_S`); the cadences of production are the
//! promtool tests' subject. Load is 25 writes/s per process.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use pgdrill_lab::sys::Signal;
use pgdrill_lab::{ReplicationMode, StopMode};
use serde_json::Value;
use tokio::time::Instant;

use crate::support::drill::{metric, try_http_get, Binary};
use crate::support::prometheus::INTERVAL_S;
use crate::support::prometheus::{rules_with, Prometheus, ScrapeJob};
use crate::support::{connect, count, eventually, free_port, start_lab};

const RATE: &str = "25";
/// How long the primary of `east` stays down before the standby is promoted: the page must
/// fire before the outage ends, after the objective (2 s), a scrape and an evaluation (1 s
/// each), and the time `pg_ctl stop` took; 5 s left about a second for a busy machine.
const OUTAGE: Duration = Duration::from_secs(8);
/// The objective the test sets (the shipped one is 120 s).
const OBJECTIVE_S: f64 = 2.0;

/// One pgdrill process: the real binary, its address and its summary file.
struct Canary {
    bin: Binary,
    addr: SocketAddr,
    summary: PathBuf,
    _dir: tempfile::TempDir,
}

impl Canary {
    fn start(dsn: &str) -> Canary {
        let dir = tempfile::tempdir().expect("temp dir");
        let summary = dir.path().join("summary.json");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        let bin = Binary::spawn(&[
            "--dsn",
            dsn,
            "--rate",
            RATE,
            // A stall of a busy test machine is not the failover under test; the outage is
            // still dated back to the first failed write.
            "--outage-threshold",
            "1s",
            "--listen",
            &addr.to_string(),
            "--summary-json",
            &summary.display().to_string(),
        ]);
        Canary {
            bin,
            addr,
            summary,
            _dir: dir,
        }
    }

    /// SIGTERM, wait for the exit, read the summary.
    async fn stop(self) -> Value {
        self.bin.signal(Signal::Term);
        let (status, _out, err) = self.bin.wait(Duration::from_secs(30)).await;
        assert!(status.success(), "pgdrill exited {status}: {err}");
        let text = std::fs::read_to_string(&self.summary).expect("summary JSON");
        serde_json::from_str(&text).expect("summary parses")
    }
}

fn job(cluster: &str, canaries: &[&Canary]) -> ScrapeJob {
    ScrapeJob {
        name: "pgdrill".into(),
        targets: canaries.iter().map(|c| c.addr).collect(),
        labels: [("cluster".to_string(), cluster.to_string())].into(),
    }
}

/// `cluster` of every sample, sorted (one entry per series).
fn clusters(samples: &[(Value, f64)]) -> Vec<String> {
    let mut out: Vec<String> = samples
        .iter()
        .map(|(m, _)| m["cluster"].as_str().unwrap_or("?").to_string())
        .collect();
    out.sort();
    out
}

fn clusters_of(alerts: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = alerts
        .iter()
        .map(|m| m["cluster"].as_str().unwrap_or("?").to_string())
        .collect();
    out.sort();
    out
}

fn value_in(samples: &[(Value, f64)], cluster: &str) -> Option<f64> {
    samples
        .iter()
        .find(|(m, _)| m["cluster"] == cluster)
        .map(|(_, v)| *v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_canaries_one_job_two_clusters_through_a_failover() {
    let began = Instant::now();
    let east_lab = start_lab(Some(ReplicationMode::Sync)).await;
    let west_lab = start_lab(None).await;
    let east_dsn = east_lab.multi_host_dsn();
    let east: Vec<Canary> = (0..3).map(|_| Canary::start(&east_dsn)).collect();
    let west = Canary::start(&west_lab.dsn(west_lab.primary()));
    for c in east.iter().chain([&west]) {
        eventually(Duration::from_secs(20), "canary writing", || async {
            let text = try_http_get(c.addr, "/metrics").await.unwrap_or_default();
            metric(&text, "pgdrill_last_success_timestamp_seconds") > 0.0
        })
        .await;
    }
    let rules = rules_with(&[
        ("expr: vector(120)", "expr: vector(2)"),
        (
            "label_replace(vector(2), \"job\", \"pgdrill\", \"\", \"\")",
            "label_replace(vector(3), \"job\", \"pgdrill\", \"\", \"\")",
        ),
    ]);
    let east_refs: Vec<&Canary> = east.iter().collect();
    let prom = Prometheus::start(&[job("east", &east_refs), job("west", &[&west])], &rules).await;
    let prom_started = Instant::now();
    eventually(Duration::from_secs(20), "every replica scraped", || async {
        prom.query("job:pgdrill_canaries_reporting:count")
            .await
            .iter()
            .map(|(_, v)| v)
            .sum::<f64>()
            == 4.0
    })
    .await;
    let objective = prom.scalar("pgdrill:rto_objective_seconds").await;
    assert_eq!(objective, OBJECTIVE_S);

    // The failover of `east`, stretched to OUTAGE.
    let primary = east_lab.primary();
    let standby = east_lab.standby().expect("a standby");
    let admin = connect(&east_lab.admin_dsn(standby)).await;
    let stop_begun = Instant::now();
    east_lab
        .stop(primary, StopMode::Immediate)
        .await
        .expect("stop the primary");
    let mut paged_after = None;
    while stop_begun.elapsed() < OUTAGE {
        if paged_after.is_none()
            && !prom
                .alerts("PgdrillWritesUnavailable", "firing")
                .await
                .is_empty()
        {
            paged_after = Some(stop_begun.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    admin
        .query_one("SELECT pg_promote()", &[])
        .await
        .expect("pg_promote() on the standby");

    // Every replica of east saw the outage end and verified its writes.
    eventually(
        Duration::from_secs(30),
        "three outages over and verified, in Prometheus",
        || async {
            prom.query(
                "pgdrill_outage_end_timestamp_seconds > pgdrill_outage_start_timestamp_seconds \
                 and on (instance) pgdrill_verifications_total >= 1",
            )
            .await
            .len()
                == 3
        },
    )
    .await;
    eventually(
        Duration::from_secs(15),
        "the objective-missed warning",
        || async {
            !prom
                .alerts("PgdrillRTOObjectiveMissed", "firing")
                .await
                .is_empty()
        },
    )
    .await;
    prom.next_evaluation().await;

    let window = format!("{}s", prom_started.elapsed().as_secs() + 2);
    let paged_at = prom.first_firing("PgdrillWritesUnavailable", &window).await;
    let east_outage_end = prom
        .scalar("max(pgdrill_outage_end_timestamp_seconds{cluster=\"east\"})")
        .await;
    let reporting = prom.query("job:pgdrill_canaries_reporting:count").await;
    // The recorded ratios at their last evaluations, and the same ratios summed by hand
    // over the replicas at those instants: what "job level" means. Each at its own rule's
    // samples: a shared instant taken from another rule of the group could be one whose
    // evaluation had not yet reached this rule when the test asked. The last two
    // evaluations: a scrape that began before an evaluation but was stored after it is in
    // the sum by hand and not in the rule's (Prometheus 2.42 has no rule_query_offset).
    let evaluated = |rule: &'static str, by_hand: &'static str| {
        let prom = &prom;
        async move {
            let stamp = format!("timestamp({rule})");
            let first = |t: Vec<(Value, f64)>| t.first().map(|(_, t)| *t).expect("a sample");
            let last = first(prom.query(&stamp).await);
            let before = first(prom.query_at(&stamp, last - INTERVAL_S as f64).await);
            let mut pairs = Vec::new();
            for at in [last, before] {
                pairs.push((
                    prom.query_at(rule, at).await,
                    prom.query_at(by_hand, at).await,
                ));
            }
            pairs
        }
    };
    let error_ratios = evaluated(
        "job:pgdrill_transaction_errors:ratio_rate5m",
        "sum by (job, cluster) (rate(pgdrill_transaction_errors_total[5m])) \
         / sum by (job, cluster) (rate(pgdrill_transactions_total[5m]))",
    )
    .await;
    let rate_ratios = evaluated(
        "job:pgdrill_transactions_succeeded:ratio_target5m",
        "(sum by (job, cluster) (rate(pgdrill_transactions_total[5m])) \
          - sum by (job, cluster) (rate(pgdrill_transaction_errors_total[5m]))) \
         / sum by (job, cluster) (last_over_time(pgdrill_target_rate[5m]))",
    )
    .await;
    let error_ratio = error_ratios[0].0.clone();
    let unavailable_max = prom
        .query(&format!(
            "max_over_time(job:pgdrill_writes_unavailable_seconds:scrape[{window}])"
        ))
        .await;
    let target_info = prom.query("pgdrill_target_info").await;
    let mut ever = BTreeMap::new();
    for alert in [
        "PgdrillWritesUnavailable",
        "PgdrillRTOObjectiveMissed",
        "PgdrillFailoverInProgress",
        "PgdrillAcknowledgedWritesLost",
        "PgdrillCanaryDown",
    ] {
        let series: BTreeSet<String> = prom
            .ever_active(alert, &window)
            .await
            .into_iter()
            .map(|(state, m)| format!("{state} {}", m["cluster"].as_str().unwrap_or("?")))
            .collect();
        ever.insert(alert, series);
    }
    let paging_now = prom.alerts("PgdrillWritesUnavailable", "firing").await;
    let primary_changed = prom.alerts("PgdrillPrimaryChanged", "firing").await;
    let absent_pending = prom.alerts("PgdrillCanaryAbsent", "pending").await;
    let unhealthy = prom.unhealthy_rules().await;
    drop(prom);

    let mut summaries = Vec::new();
    for c in east {
        summaries.push(c.stop().await);
    }
    let west_summary = west.stop().await;
    let new_primary = connect(&east_lab.dsn(standby)).await;
    let mut rows = Vec::new();
    for s in &summaries {
        let run_id = s["run_id"].as_i64().expect("run_id");
        rows.push(
            count(
                &new_primary,
                "SELECT count(*) FROM pgdrill_writes WHERE run_id = $1",
                &[&run_id],
            )
            .await,
        );
    }
    east_lab.shutdown().await;
    west_lab.shutdown().await;

    let rtos: Vec<f64> = summaries
        .iter()
        .map(|s| {
            s["outages"][0]["write_unavailable_seconds"]
                .as_f64()
                .unwrap_or(f64::NAN)
        })
        .collect();
    println!(
        "east RTOs (daemon) {rtos:?}; paged {paged_after:?} after the stop; \
         scrape-side unavailability max {unavailable_max:?}"
    );
    println!("reporting {reporting:?}");
    println!("error ratios (rule, by hand) at the last two evaluations {error_ratios:?}");
    println!("rate ratios (rule, by hand) at the last two evaluations {rate_ratios:?}");
    println!("ever active in {window}: {ever:?}");
    println!(
        "east run_ids {:?}, rows {rows:?}, successes {:?}",
        summaries
            .iter()
            .map(|s| s["run_id"].clone())
            .collect::<Vec<_>>(),
        summaries
            .iter()
            .map(|s| s["successes"].clone())
            .collect::<Vec<_>>()
    );
    println!("canaries test took {:.1}s", began.elapsed().as_secs_f64());

    // Each replica of east: its own run, one outage beyond the objective,
    // its own writes verified on the new primary, nothing lost.
    let run_ids: BTreeSet<i64> = summaries
        .iter()
        .filter_map(|s| s["run_id"].as_i64())
        .collect();
    assert_eq!(run_ids.len(), 3, "three distinct run_ids");
    for ((s, rto), rows) in summaries.iter().zip(&rtos).zip(&rows) {
        assert_eq!(s["outages"].as_array().map(Vec::len), Some(1), "{s}");
        assert!(*rto > OBJECTIVE_S && *rto < 30.0, "RTO {rto}");
        assert_eq!(
            s["outages"][0]["lost_writes"], 0,
            "verified, nothing lost: {s}"
        );
        assert_eq!(s["lost_writes"], 0, "{s}");
        let successes = s["successes"].as_i64().expect("successes");
        let transactions = s["transactions"].as_i64().expect("transactions");
        assert!(
            *rows >= successes && *rows <= transactions,
            "rows of run {}: {rows}, acknowledged {successes}, attempted {transactions}",
            s["run_id"]
        );
    }
    // West never had an outage.
    assert_eq!(
        west_summary["outages"].as_array().map(Vec::len),
        Some(0),
        "{west_summary}"
    );

    // Job-level rules: one series per (job, cluster), the replicas summed.
    assert_eq!(clusters(&reporting), ["east", "west"]);
    assert_eq!(value_in(&reporting, "east"), Some(3.0));
    assert_eq!(value_in(&reporting, "west"), Some(1.0));
    for evaluations in [&error_ratios, &rate_ratios] {
        for (rule, _) in evaluations {
            assert_eq!(clusters(rule), ["east", "west"], "{rule:?}");
            for (m, _) in rule.iter() {
                assert!(m.get("instance").is_none(), "{m}");
            }
        }
        for cluster in ["east", "west"] {
            let agree = evaluations.iter().any(|(rule, by_hand)| {
                matches!((value_in(rule, cluster), value_in(by_hand, cluster)),
                    (Some(a), Some(b)) if (a - b).abs() < 1e-9)
            });
            assert!(agree, "{cluster}: rule and sum by hand {evaluations:?}");
        }
    }
    assert!(value_in(&error_ratio, "east").unwrap_or(0.0) > 0.0);
    assert_eq!(value_in(&error_ratio, "west"), Some(0.0));
    assert_eq!(clusters(&unavailable_max), ["east"]);
    // Target info: east names both lab hosts, west its one; no password anywhere.
    assert_eq!(
        target_info.len(),
        3 * 2 + 1,
        "one series per configured host per replica: {target_info:?}"
    );
    for (m, v) in &target_info {
        assert_eq!(*v, 1.0);
        assert_eq!(m["database"], "pgdrill", "{m}");
        assert_eq!(m["pooler"], "none", "{m}");
    }

    // Alerts once per job: the page and the warning for east only, one series
    // each although three replicas saw the outage; the page fired while the
    // primary was down and still fires (the "just over" branch, same labels).
    // During the outage: the page's first firing evaluation precedes the end of east's
    // outage as the replicas exported it (one clock), not a deadline the test's polling had
    // to meet.
    assert!(
        paged_at.is_some_and(|t| t <= east_outage_end),
        "paged first at {paged_at:?}, east's outage ended at {east_outage_end:.3} \
         (polled: {paged_after:?} after the stop)"
    );
    let once_east: BTreeSet<String> = ["firing east".to_string()].into();
    assert_eq!(ever["PgdrillWritesUnavailable"], once_east);
    assert_eq!(ever["PgdrillRTOObjectiveMissed"], once_east);
    assert_eq!(ever["PgdrillFailoverInProgress"], once_east);
    assert_eq!(clusters_of(&paging_now), ["east"]);
    assert_eq!(clusters_of(&primary_changed), ["east"]);
    assert!(ever["PgdrillAcknowledgedWritesLost"].is_empty());
    assert!(ever["PgdrillCanaryDown"].is_empty());
    // Coverage: west has 1 of the 3 replicas job `pgdrill` expects, east all 3.
    assert_eq!(clusters_of(&absent_pending), ["west"]);
    assert!(unhealthy.is_empty(), "rules not healthy: {unhealthy:?}");
}
