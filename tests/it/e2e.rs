//! End-to-end proof for the rules and dashboards: the metric names they read
//! exist on a live scrape, and a real Prometheus evaluating
//! `prometheus/rules/*.yml` against a real failover agrees with pgdrill's own
//! RTO and fires (or does not fire) the right alerts.
//!
//! Needs `/usr/bin/prometheus` (Debian/Ubuntu package `prometheus`, or
//! `PROMETHEUS=/path/to/prometheus`); without it the test fails and says so.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pgdrill_lab::{Lab, ReplicationMode, StopMode};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::rules::{known_metric_names, metric_names_used};
use crate::support::drill::{try_http_get, Drill};
use crate::support::{connect, eventually, free_port};

/// Scrape and rule-evaluation interval of the test Prometheus, in seconds.
const INTERVAL_S: u64 = 1;
/// How long the primary stays down before the standby is promoted.
const OUTAGE: Duration = Duration::from_secs(4);
/// How long the load goes on after the promotion.
const AFTER_PROMOTION: Duration = Duration::from_secs(10);

async fn lab(mode: Option<ReplicationMode>) -> Lab {
    crate::support::start_lab(mode).await
}

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
    let lab = lab(None).await;
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
// A real Prometheus.

fn prometheus_binary() -> PathBuf {
    let path = std::env::var_os("PROMETHEUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus"));
    assert!(
        path.is_file(),
        "{} not found: this test needs the Prometheus server. Install it \
         (Debian/Ubuntu: `apt-get install prometheus`) or set PROMETHEUS=/path/to/prometheus",
        path.display()
    );
    path
}

/// A Prometheus server of our own: temporary storage, a free port, scraping
/// one pgdrill every [`INTERVAL_S`] and evaluating the repository's rules.
/// Stopped by its PID when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(target: SocketAddr) -> Prometheus {
        let binary = prometheus_binary();
        let dir = tempfile::tempdir().expect("temp dir");
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("prometheus/rules");
        // JSON is YAML: no quoting surprises in paths.
        let config = json!({
            "global": {
                "scrape_interval": format!("{INTERVAL_S}s"),
                "scrape_timeout": format!("{INTERVAL_S}s"),
                "evaluation_interval": format!("{INTERVAL_S}s"),
            },
            "rule_files": [
                rules.join("*.yml").to_string_lossy(),
                rules.join("*.yaml").to_string_lossy(),
            ],
            "scrape_configs": [{
                "job_name": "pgdrill",
                "static_configs": [{"targets": [target.to_string()]}],
            }],
        });
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config.to_string()).expect("write prometheus.yml");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("socket address");
        let log = dir.path().join("prometheus.log");
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", binary.display()));
        let mut prom = Prometheus {
            child,
            addr,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(resp) = try_http_get(addr, "/-/ready").await {
                if resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.1 200") {
                    break;
                }
            }
            if let Some(status) = prom.child.try_wait().expect("try_wait") {
                panic!("prometheus exited ({status}):\n{}", prom.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 30 s:\n{}",
                prom.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        prom
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// GET an API path; the JSON `data` of a successful answer.
    async fn api(&self, path_and_query: &str) -> Value {
        let resp = try_http_get(self.addr, path_and_query)
            .await
            .unwrap_or_else(|e| panic!("GET {path_and_query}: {e}\n{}", self.log_tail()));
        let (head, body) = resp
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("GET {path_and_query}: no HTTP body in {resp:?}"));
        let doc: Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("GET {path_and_query}: {e}\n{head}\n{body}"));
        assert_eq!(
            doc["status"], "success",
            "GET {path_and_query}: {head}\n{body}"
        );
        doc["data"].clone()
    }

    /// Instant query: `(labels, value)` of every sample of the result vector.
    async fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let data = self
            .api(&format!("/api/v1/query?query={}", url_encode(promql)))
            .await;
        assert_eq!(data["resultType"], "vector", "{promql}: {data}");
        data["result"]
            .as_array()
            .expect("result list")
            .iter()
            .map(|s| {
                let value = s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{promql}: sample {s}"));
                (s["metric"].clone(), value)
            })
            .collect()
    }

    /// The value of a query that must return exactly one sample.
    async fn scalar(&self, promql: &str) -> f64 {
        let samples = self.query(promql).await;
        assert_eq!(samples.len(), 1, "{promql}: {samples:?}");
        samples[0].1
    }

    /// The value of a query returning at most one sample.
    async fn optional(&self, promql: &str) -> Option<f64> {
        let samples = self.query(promql).await;
        assert!(samples.len() <= 1, "{promql}: {samples:?}");
        samples.first().map(|s| s.1)
    }

    /// Every rule Prometheus loaded, as (group, rule) JSON.
    async fn rules(&self) -> Vec<(String, Value)> {
        let data = self.api("/api/v1/rules").await;
        let mut out = Vec::new();
        for group in data["groups"].as_array().expect("groups") {
            let name = group["name"].as_str().unwrap_or_default().to_string();
            for rule in group["rules"].as_array().expect("rules") {
                out.push((name.clone(), rule.clone()));
            }
        }
        out
    }

    async fn last_evaluation(&self, alert: &str) -> String {
        self.rules()
            .await
            .into_iter()
            .find(|(_, r)| r["name"] == alert)
            .unwrap_or_else(|| panic!("no rule {alert}"))
            .1["lastEvaluation"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn firing(&self, alert: &str) -> bool {
        !self
            .query(&format!(
                "ALERTS{{alertname=\"{alert}\",alertstate=\"firing\"}}"
            ))
            .await
            .is_empty()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // By PID, ours only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query-string value (everything but RFC 3986 unreserved).
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn url_encoding() {
    assert_eq!(
        url_encode("max_over_time(ALERTS{a=\"b c\"}[5m]) > 0"),
        "max_over_time%28ALERTS%7Ba%3D%22b%20c%22%7D%5B5m%5D%29%20%3E%200"
    );
}

const WRITES_UNAVAILABLE: &str = "PgdrillWritesUnavailable";
const FAILOVER_IN_PROGRESS: &str = "PgdrillFailoverInProgress";
const WRITES_LOST: &str = "PgdrillAcknowledgedWritesLost";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_rules_measure_a_forced_failover_like_pgdrill_and_fire_the_right_alerts() {
    let began = Instant::now();
    let lab = lab(Some(ReplicationMode::Sync)).await;
    let primary = lab.primary();
    let standby = lab.standby().expect("a standby");
    let dsn = lab.multi_host_dsn();
    let drill = Drill::start(&["--dsn", &dsn, "--rate", "1000"]).await;
    let prom = Prometheus::start(drill.addr).await;
    let prom_started = Instant::now();

    // Every rule loaded; a few healthy scrapes before the failover.
    let rules = prom.rules().await;
    assert!(
        rules.iter().any(|(_, r)| r["name"] == WRITES_LOST),
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

    // The forced failover, stretched: the primary is down for OUTAGE before the
    // standby is promoted, so that the outage spans several scrapes.
    let admin = connect(&lab.admin_dsn(standby)).await;
    let stop_begun = Instant::now();
    lab.stop(primary, StopMode::Immediate)
        .await
        .expect("stop the primary");
    let mut fired_after: [Option<Duration>; 2] = [None, None];
    while stop_begun.elapsed() < OUTAGE {
        for (i, alert) in [WRITES_UNAVAILABLE, FAILOVER_IN_PROGRESS]
            .iter()
            .enumerate()
        {
            if fired_after[i].is_none() && prom.firing(alert).await {
                fired_after[i] = Some(stop_begun.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let promote_at = Instant::now();
    admin
        .query_one("SELECT pg_promote()", &[])
        .await
        .expect("pg_promote() on the standby");
    let promoted = Instant::now();

    // Prometheus sees the end of the outage; pgdrill is healthy again and has
    // verified the acknowledged writes.
    eventually(Duration::from_secs(15), "the timeline RTO", || async {
        prom.optional("instance:pgdrill_outage_duration_seconds:last")
            .await
            .is_some()
    })
    .await;
    eventually(Duration::from_secs(20), "healthy and verified", || async {
        prom.optional(
            "pgdrill_failover_state{state=\"healthy\"} == 1 \
             and on (job, instance) pgdrill_verifications_total >= 1",
        )
        .await
        .is_some()
    })
    .await;
    tokio::time::sleep_until(promoted + AFTER_PROMOTION).await;
    // One more evaluation of the alert rules after everything above was scraped.
    let seen = prom.last_evaluation(WRITES_LOST).await;
    eventually(
        Duration::from_secs(10),
        "a later rule evaluation",
        || async { prom.last_evaluation(WRITES_LOST).await != seen },
    )
    .await;

    // What the rules say, read while pgdrill is still being scraped.
    let window = format!("{}s", prom_started.elapsed().as_secs() + 2);
    let timeline = prom
        .scalar("instance:pgdrill_outage_duration_seconds:last")
        .await;
    let daemon_in_prom = prom.scalar("pgdrill_last_outage_duration_seconds").await;
    let age_max = prom
        .scalar("instance:pgdrill_last_success_age_seconds:max10m")
        .await;
    let outage_avg10m = prom
        .scalar("instance:pgdrill_failover_state_outage_seconds:avg10m")
        .await;
    let stalled_10m = prom
        .scalar("instance:pgdrill_transactions_succeeded_stalled_seconds:10m")
        .await;
    // The same two cross-checks over the samples that exist (the 10m rules
    // assume 10 minutes of history and scale by 600 s / samples).
    let outage_scrapes = prom
        .scalar(&format!(
            "sum_over_time(pgdrill_failover_state{{state=\"outage\"}}[{window}])"
        ))
        .await
        * INTERVAL_S as f64;
    let stalled = prom
        .scalar(&format!(
            "count_over_time(instance:pgdrill_transactions_succeeded:total[{window}]) - 1 \
             - changes(instance:pgdrill_transactions_succeeded:total[{window}])"
        ))
        .await
        * INTERVAL_S as f64;
    let lost_in_prom = prom
        .scalar(&format!(
            "max_over_time(pgdrill_lost_writes_total[{window}])"
        ))
        .await;
    let mut alert_max = Vec::new();
    for alert in [WRITES_UNAVAILABLE, FAILOVER_IN_PROGRESS, WRITES_LOST] {
        let q = format!("max_over_time(ALERTS{{alertname=\"{alert}\"}}[5m])");
        // Pending and firing are separate series; any of them counts for "ever active".
        let states: Vec<String> = prom
            .query(&q)
            .await
            .iter()
            .map(|(m, _)| m["alertstate"].as_str().unwrap_or_default().to_string())
            .collect();
        alert_max.push((alert, states));
    }
    let unhealthy: Vec<String> = prom
        .rules()
        .await
        .into_iter()
        .filter(|(_, r)| r["health"] != "ok")
        .map(|(g, r)| format!("{g}/{}: {} {}", r["name"], r["health"], r["lastError"]))
        .collect();
    let daemon_live = drill.metric("pgdrill_last_outage_duration_seconds").await;
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
        "RTO: daemon summary {daemon:.3}s, daemon gauge {daemon_live:.3}s (scraped by \
         Prometheus {daemon_in_prom:.3}s), rules timeline {timeline:.3}s"
    );
    println!(
        "cross-checks: newest-success age max {age_max:.3}s; outage state {outage_scrapes:.1}s \
         ({outage_avg10m:.1}s as the avg10m rule, which assumes 10 min of history); \
         counters stalled {stalled:.1}s ({stalled_10m:.1}s as the 10m rule)"
    );
    println!(
        "alerts firing after the primary stopped: {WRITES_UNAVAILABLE} {:?}, \
         {FAILOVER_IN_PROGRESS} {:?}; ever active in 5m: {alert_max:?}",
        fired_after[0], fired_after[1]
    );
    println!("e2e test took {:.1}s", began.elapsed().as_secs_f64());

    // (a) The RTO from the exported timeline agrees with pgdrill's own: the
    // brief allows two scrape intervals, but it is exact (both timestamps are
    // pgdrill's), as the README promises, so hold it to 10 ms.
    assert!(
        daemon > OUTAGE.as_secs_f64() - 0.5,
        "the primary was down {OUTAGE:?}, pgdrill measured {daemon:.3}s"
    );
    assert!(
        (daemon_live - daemon).abs() < 1e-6,
        "{daemon_live} vs {daemon}"
    );
    assert!(
        (daemon_in_prom - daemon).abs() < 1e-6,
        "{daemon_in_prom} vs {daemon}"
    );
    assert!(
        (timeline - daemon).abs() <= 0.01,
        "timeline: {timeline:.3}s, pgdrill {daemon:.3}s"
    );
    // The cross-checks sample the outage: n scrapes fall inside an outage of
    // d seconds, n in {floor(d), ceil(d)}, so they read up to two intervals
    // low; a late scrape or evaluation adds jitter, allowed for here.
    let tolerance = 2.0 * INTERVAL_S as f64;
    let jitter = 0.5;
    for (what, value) in [
        ("newest-success age", age_max),
        ("outage-state scrapes", outage_scrapes),
        ("stalled counters", stalled),
    ] {
        assert!(
            (value - daemon).abs() <= tolerance + jitter,
            "{what}: {value:.3}s, pgdrill {daemon:.3}s (tolerance {tolerance}s + {jitter}s)"
        );
    }
    // (b) Both outage alerts fired; WritesUnavailable while the primary was down.
    for (alert, states) in &alert_max[..2] {
        assert!(
            states.iter().any(|s| s == "firing"),
            "{alert} never fired: {states:?}"
        );
    }
    assert!(
        fired_after[0].is_some(),
        "{WRITES_UNAVAILABLE} did not fire during the {OUTAGE:?} the primary was down"
    );
    // (c) Sync replication: nothing lost, and the lost-writes alert never even pending.
    assert_eq!(summary.lost_writes, 0, "{summary}");
    assert_eq!(summary.outages[0].lost_writes, Some(0), "{summary}");
    assert_eq!(lost_in_prom, 0.0);
    assert!(
        alert_max[2].1.is_empty(),
        "{WRITES_LOST}: {:?}",
        alert_max[2].1
    );
    // Every rule evaluated cleanly against live data.
    assert!(unhealthy.is_empty(), "rules not healthy: {unhealthy:?}");
}
