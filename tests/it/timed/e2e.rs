//! End-to-end proof for the rules and dashboards: the metric names they read
//! exist on a live scrape, and a real Prometheus evaluating the shipped
//! `prometheus/rules/pgdrill.rules.yml`, unchanged, against a real failover
//! within the RTO objective agrees with pgdrill's own RTO, tells what happened
//! (info alerts) and does not page.
//! Several canaries, several clusters and a failover beyond the objective:
//! `canaries.rs`.

use std::collections::BTreeSet;
use std::time::Duration;

use pgdrill_lab::{ReplicationMode, StopMode};
use serde_json::Value;
use tokio::time::Instant;

use crate::rules::{known_metric_names, metric_names_used};
use crate::support::drill::Drill;
use crate::support::prometheus::{rules_with, Prometheus, ScrapeJob, INTERVAL_S};
use crate::support::{connect, eventually, start_lab};

/// How long the primary stays down before the standby is promoted.
const OUTAGE: Duration = Duration::from_secs(4);

// ---------------------------------------------------------------------------
// The live exposition.

/// Sample names (`name` of `name{labels} value`) of a text exposition.
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// Whether a metric family (histograms by base name) has samples in `samples`.
fn family_present(samples: &BTreeSet<String>, family: &str) -> bool {
    samples.contains(family)
        || ["_bucket", "_sum", "_count"]
            .iter()
            .all(|suffix| samples.contains(&format!("{family}{suffix}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_name_of_the_fixture_dashboards_and_rules_is_on_a_live_scrape() {
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    let drill = Drill::start(&["--dsn", &dsn, "--rate", "200"]).await;
    // Wait for writes, so that nothing is absent only because nothing happened yet.
    eventually(Duration::from_secs(15), "acknowledged writes", || async {
        drill.metric("pgdrill_last_success_timestamp_seconds").await > 0.0
    })
    .await;
    let samples = sample_names(&drill.scrape().await);

    let fixture = known_metric_names();
    let used = metric_names_used();
    let missing = |names: &BTreeSet<String>| -> Vec<String> {
        names
            .iter()
            .filter(|n| !family_present(&samples, n))
            .cloned()
            .collect()
    };
    let missing_fixture = missing(&fixture);
    let missing_used = missing(&used);
    println!(
        "live scrape: {} sample names; fixture {} families, {} missing; \
         dashboards+rules use {} families, {} missing",
        samples.len(),
        fixture.len(),
        missing_fixture.len(),
        used.len(),
        missing_used.len()
    );
    drill.stop().await;
    lab.shutdown().await;
    assert!(
        missing_fixture.is_empty() && missing_used.is_empty(),
        "not on a live /metrics scrape:\n  from tests/fixtures/metric_names.txt: \
         {missing_fixture:?}\n  read by grafana/dashboards or prometheus/rules: {missing_used:?}"
    );
}

// ---------------------------------------------------------------------------
// A failover within the objective, through a real Prometheus.

const WRITES_UNAVAILABLE: &str = "PgdrillWritesUnavailable";
const RTO_MISSED: &str = "PgdrillRTOObjectiveMissed";
const WRITES_LOST: &str = "PgdrillAcknowledgedWritesLost";
const FAILOVER_IN_PROGRESS: &str = "PgdrillFailoverInProgress";
const PRIMARY_CHANGED: &str = "PgdrillPrimaryChanged";
const CANARY_ABSENT: &str = "PgdrillCanaryAbsent";
const CANARY_DOWN: &str = "PgdrillCanaryDown";

/// Labels that must not survive a job-level rule or alert.
const PER_TARGET: [&str; 2] = ["instance", "state"];

fn labels_of(alerts: &[Value]) -> Vec<String> {
    alerts.iter().map(Value::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_within_the_objective_is_measured_and_does_not_page() {
    let began = Instant::now();
    let lab = start_lab(Some(ReplicationMode::Sync)).await;
    let primary = lab.primary();
    let standby = lab.standby().expect("a standby");
    let dsn = lab.multi_host_dsn();
    // --outage-threshold 1s: a stall of a busy test machine is not the failover under test;
    // the outage is still dated back to the first failed write.
    let drill = Drill::start(&["--dsn", &dsn, "--rate", "200", "--outage-threshold", "1s"]).await;
    // The shipped rules as they are: objective 120 s, two replicas expected
    // for job `pgdrill` (this test runs one).
    let prom = Prometheus::start(
        &[ScrapeJob {
            name: "pgdrill".into(),
            targets: vec![drill.addr],
            labels: [("cluster".to_string(), "lab".to_string())].into(),
        }],
        &rules_with(&[]),
    )
    .await;
    let prom_started = Instant::now();
    let rules = prom.rules().await;
    assert!(
        rules.iter().any(|(_, r)| r["name"] == WRITES_UNAVAILABLE),
        "rules loaded: {}",
        rules.len()
    );
    eventually(Duration::from_secs(20), "healthy scrapes", || async {
        prom.optional("sum_over_time(pgdrill_failover_state{state=\"healthy\"}[1m])")
            .await
            .unwrap_or(0.0)
            >= 3.0
    })
    .await;
    let admin = connect(&lab.admin_dsn(standby)).await;

    // The forced failover, stretched: the primary is down for OUTAGE before the
    // standby is promoted, so that the outage spans several scrapes.
    let stop_begun = Instant::now();
    lab.stop(primary, StopMode::Immediate)
        .await
        .expect("stop the primary");
    let mut in_progress_after = None;
    let mut unavailable_live: f64 = 0.0;
    while stop_begun.elapsed() < OUTAGE {
        if in_progress_after.is_none()
            && !prom.alerts(FAILOVER_IN_PROGRESS, "firing").await.is_empty()
        {
            in_progress_after = Some(stop_begun.elapsed());
        }
        if let Some(v) = prom
            .optional("job:pgdrill_writes_unavailable_seconds:scrape")
            .await
        {
            unavailable_live = unavailable_live.max(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let promote_at = Instant::now();
    admin
        .query_one("SELECT pg_promote()", &[])
        .await
        .expect("pg_promote() on the standby");
    let promoted = Instant::now();

    // Prometheus sees the outage end, the writes verified and the new primary.
    eventually(
        Duration::from_secs(30),
        "outage over and verified, in Prometheus",
        || async {
            prom.optional(
                "pgdrill_outage_end_timestamp_seconds > pgdrill_outage_start_timestamp_seconds \
                 and on (instance) pgdrill_verifications_total >= 1",
            )
            .await
            .is_some()
        },
    )
    .await;
    eventually(
        Duration::from_secs(15),
        "the primary-change alert",
        || async { !prom.alerts(PRIMARY_CHANGED, "firing").await.is_empty() },
    )
    .await;
    prom.next_evaluation().await;

    // What the rules say, read while pgdrill is still being scraped.
    let window = format!("{}s", prom_started.elapsed().as_secs() + 2);
    let rto_in_prom = prom
        .scalar("pgdrill_outage_end_timestamp_seconds - pgdrill_outage_start_timestamp_seconds")
        .await;
    let gauge_in_prom = prom.scalar("pgdrill_last_outage_duration_seconds").await;
    let unavailable = prom
        .query(&format!(
            "max_over_time(job:pgdrill_writes_unavailable_seconds:scrape[{window}])"
        ))
        .await;
    let unavailable_now = prom
        .query("job:pgdrill_writes_unavailable_seconds:scrape")
        .await;
    let error_ratio = prom
        .query("job:pgdrill_transaction_errors:ratio_rate5m")
        .await;
    let rate_ratio = prom
        .query("job:pgdrill_transactions_succeeded:ratio_target5m")
        .await;
    let reporting = prom.query("job:pgdrill_canaries_reporting:count").await;
    let lost_in_prom = prom
        .scalar(&format!(
            "max_over_time(pgdrill_lost_writes_total[{window}])"
        ))
        .await;
    let mut ever = Vec::new();
    for alert in [
        WRITES_UNAVAILABLE,
        RTO_MISSED,
        WRITES_LOST,
        CANARY_DOWN,
        FAILOVER_IN_PROGRESS,
    ] {
        ever.push((alert, prom.ever_active(alert, &window).await));
    }
    let in_progress_at = prom.first_firing(FAILOVER_IN_PROGRESS, &window).await;
    let outage_end = prom.scalar("pgdrill_outage_end_timestamp_seconds").await;
    let primary_changed = prom.alerts(PRIMARY_CHANGED, "firing").await;
    let absent_pending = prom.alerts(CANARY_ABSENT, "pending").await;
    let unhealthy = prom.unhealthy_rules().await;
    let summary = drill.stop().await;
    drop(prom);
    lab.shutdown().await;

    assert_eq!(summary.outages.len(), 1, "{summary}");
    let daemon = summary.outages[0]
        .write_unavailable_seconds
        .expect("the outage ended");
    println!("{summary}");
    println!(
        "primary down {:.3}s before pg_promote(), which took {:.3}s",
        (promote_at - stop_begun).as_secs_f64(),
        (promoted - promote_at).as_secs_f64()
    );
    println!(
        "RTO: daemon {daemon:.3}s; in Prometheus: end - start {rto_in_prom:.3}s, gauge \
         {gauge_in_prom:.3}s; job:pgdrill_writes_unavailable_seconds:scrape max {unavailable:?} \
         (polled live {unavailable_live:.3}s), now {unavailable_now:?}"
    );
    println!(
        "job rules: error ratio {error_ratio:?}, rate/target {rate_ratio:?}, reporting \
         {reporting:?}; {FAILOVER_IN_PROGRESS} firing {in_progress_after:?} after the stop"
    );
    println!("ever active in {window}: {ever:?}");
    println!("e2e test took {:.1}s", began.elapsed().as_secs_f64());

    // (a) The RTO from the exported timestamps is pgdrill's own, to the
    // millisecond (both timestamps are pgdrill's; only float rounding differs).
    assert!(
        daemon > OUTAGE.as_secs_f64() - 0.5 && daemon < 120.0,
        "the primary was down {OUTAGE:?}, pgdrill measured {daemon:.3}s"
    );
    assert!(
        (gauge_in_prom - daemon).abs() < 1e-6,
        "{gauge_in_prom} vs {daemon}"
    );
    assert!(
        (rto_in_prom - daemon).abs() <= 0.01,
        "{rto_in_prom} vs {daemon}"
    );
    // (b) The live unavailability is measured on the scrape's clock: one series
    // for the job (no instance), never above what pgdrill reports afterwards
    // (the promise that keeps a failover within the objective from paging),
    // at most two scrape intervals below it; gone once writes are back.
    assert_eq!(unavailable.len(), 1, "{unavailable:?}");
    let (labels, max_seen) = &unavailable[0];
    assert_eq!(labels["job"], "pgdrill", "{labels}");
    assert_eq!(labels["cluster"], "lab", "{labels}");
    for l in PER_TARGET {
        assert!(labels.get(l).is_none(), "{l} kept: {labels}");
    }
    assert!(
        *max_seen <= daemon + 0.05,
        "scrape-side unavailability {max_seen:.3}s exceeds pgdrill's {daemon:.3}s"
    );
    let tolerance = 2.0 * INTERVAL_S as f64 + 0.5;
    assert!(
        *max_seen >= daemon - tolerance,
        "scrape-side unavailability {max_seen:.3}s, pgdrill {daemon:.3}s (tolerance {tolerance}s)"
    );
    assert!(
        unavailable_live > 0.0,
        "never seen while the primary was down"
    );
    assert!(unavailable_now.is_empty(), "{unavailable_now:?}");
    // (c) The job-level ratios: one series each, the errors of the failover
    // counted, the achieved rate below target but not nothing. (It is far
    // below: rate() divides by the 5m window, of which only the test's few
    // seconds hold samples; in production a new canary reads low for its
    // first minutes, which the 10m hold of PgdrillRateBelowTarget outlasts.)
    assert_eq!(error_ratio.len(), 1, "{error_ratio:?}");
    assert!(
        error_ratio[0].1 > 0.0 && error_ratio[0].1 < 1.0,
        "{error_ratio:?}"
    );
    assert_eq!(rate_ratio.len(), 1, "{rate_ratio:?}");
    assert!(
        rate_ratio[0].1 > 0.0 && rate_ratio[0].1 < 1.0,
        "{rate_ratio:?}"
    );
    // (d) Within the objective nothing pages or warns: the two outage alerts,
    // the lost-writes alert (sync replication: nothing lost) and CanaryDown
    // were never even pending.
    for (alert, states) in &ever[..4] {
        assert!(states.is_empty(), "{alert}: {states:?}");
    }
    assert_eq!(summary.counts.lost_writes, 0, "{summary}");
    assert_eq!(summary.outages[0].lost_writes, Some(0), "{summary}");
    assert_eq!(lost_in_prom, 0.0);
    // (e) The info alerts tell what happened, once for the job: the failover
    // while the primary was down, the new primary after.
    let (_, in_progress) = &ever[4];
    assert!(
        in_progress.iter().any(|(s, _)| s == "firing"),
        "{FAILOVER_IN_PROGRESS}: {in_progress:?}"
    );
    // While writes were unavailable: its first firing evaluation precedes the outage's end
    // as pgdrill exported it (one clock), not a deadline the test's polling had to meet.
    assert!(
        in_progress_at.is_some_and(|t| t <= outage_end),
        "{FAILOVER_IN_PROGRESS} first fired at {in_progress_at:?}, the outage ended at \
         {outage_end:.3} (polled: {in_progress_after:?} after the stop)"
    );
    assert_eq!(
        primary_changed.len(),
        1,
        "{:?}",
        labels_of(&primary_changed)
    );
    for alert in in_progress.iter().map(|(_, l)| l).chain(&primary_changed) {
        assert_eq!(alert["job"], "pgdrill", "{alert}");
        assert!(alert.get("instance").is_none(), "{alert}");
    }
    // (f) Coverage: one replica reporting of the two the shipped rules expect
    // for job `pgdrill`, so PgdrillCanaryAbsent is pending for this job.
    assert_eq!(reporting.len(), 1, "{reporting:?}");
    assert_eq!(reporting[0].1, 1.0, "{reporting:?}");
    assert_eq!(absent_pending.len(), 1, "{:?}", labels_of(&absent_pending));
    assert_eq!(absent_pending[0]["cluster"], "lab");
    // Every rule evaluated cleanly against live data.
    assert!(unhealthy.is_empty(), "rules not healthy: {unhealthy:?}");
}

#[test]
fn rules_with_rejects_an_edit_that_does_not_match_once() {
    let shipped = rules_with(&[]);
    assert!(shipped.contains("pgdrill:rto_objective_seconds"));
    let missing = std::panic::catch_unwind(|| rules_with(&[("no such text", "x")]));
    assert!(missing.is_err());
    let edited = rules_with(&[("expr: vector(120)", "expr: vector(3)")]);
    assert!(edited.contains("expr: vector(3)") && !edited.contains("vector(120)"));
}
