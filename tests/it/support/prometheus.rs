//! A real Prometheus server for a test: temporary storage, a free loopback port,
//! a generated configuration, and a copy of the repository's rules with their
//! documented parameters (the RTO objective, the expected replicas) set by the
//! test. Stopped by its PID when dropped.
//!
//! Needs `/usr/bin/prometheus` (Debian/Ubuntu package `prometheus`, or
//! `PROMETHEUS=/path/to/prometheus`); without it the test fails and says so.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::drill::try_http_get;
use super::free_port;

/// Scrape and rule-evaluation interval of the test servers, in seconds.
///
/// Production runs 15–60 s scrapes and 1 m evaluation; the rules' windows
/// (2m–1h) hold at least four scrapes at any of these, and at 1 s too, so the
/// same expressions answer the same way, sooner. The cadences themselves are
/// covered by the promtool tests (prometheus/tests/cadence.test.yml).
pub const INTERVAL_S: u64 = 1;

/// The shipped rule file.
pub fn shipped_rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("prometheus/rules/pgdrill.rules.yml")
}

/// The shipped rules, the expected replicas' group appended, with their two
/// documented parameters changed: each `(from, to)` must occur exactly once, so
/// a reworded rule file fails here instead of silently testing the defaults.
pub fn rules_with(edits: &[(&str, &str)]) -> String {
    let path = shipped_rules();
    let read = |path: &Path| {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    };
    let expected = read(&path.with_file_name("pgdrill-expected.rules.yml"));
    let (_, groups) = expected
        .split_once("groups:\n")
        .expect("pgdrill-expected.rules.yml has groups");
    let mut text = read(&path) + groups;
    for (from, to) in edits {
        assert_eq!(
            text.matches(from).count(),
            1,
            "{from:?} should occur once in {}",
            path.display()
        );
        text = text.replacen(from, to, 1);
    }
    text
}

/// One target group: its job name, targets and extra target labels (e.g. `cluster`).
pub struct ScrapeJob {
    pub name: String,
    pub targets: Vec<SocketAddr>,
    pub labels: BTreeMap<String, String>,
}

pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn binary() -> PathBuf {
    let path = std::env::var_os("PROMETHEUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus"));
    assert!(
        path.is_file(),
        "{} not found: this test needs the Prometheus server. Install it \
         (Debian/Ubuntu: `apt-get install prometheus`, or scripts/deps) or set \
         PROMETHEUS=/path/to/prometheus",
        path.display()
    );
    path
}

impl Prometheus {
    /// Starts a server scraping `jobs` every [`INTERVAL_S`] and evaluating
    /// `rules` (the text of one rule file); waits until it is ready.
    pub async fn start(jobs: &[ScrapeJob], rules: &str) -> Prometheus {
        Prometheus::start_with(jobs, rules, |_| json!({})).await
    }

    /// Like [`Prometheus::start`], with more keys for the scrape config of
    /// each job name (`scheme`, `tls_config`, `basic_auth`, …).
    pub async fn start_with(
        jobs: &[ScrapeJob],
        rules: &str,
        options: impl Fn(&str) -> Value,
    ) -> Prometheus {
        let binary = binary();
        let dir = tempfile::tempdir().expect("temp dir");
        let rules_path = dir.path().join("pgdrill.rules.yml");
        std::fs::write(&rules_path, rules).expect("write the rules");
        // Jobs of one name are one scrape config with a target group each, so
        // that one job can run in several clusters (told apart by labels).
        let mut by_name: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        for j in jobs {
            by_name.entry(&j.name).or_default().push(json!({
                "targets": j.targets.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                "labels": j.labels,
            }));
        }
        let scrape_configs: Vec<Value> = by_name
            .into_iter()
            .map(|(name, groups)| {
                let mut config = json!({"job_name": name, "static_configs": groups});
                if let (Some(c), Value::Object(more)) = (config.as_object_mut(), options(name)) {
                    c.extend(more);
                }
                config
            })
            .collect();
        // JSON is YAML: no quoting surprises in paths.
        let config = json!({
            "global": {
                "scrape_interval": format!("{INTERVAL_S}s"),
                "scrape_timeout": format!("{INTERVAL_S}s"),
                "evaluation_interval": format!("{INTERVAL_S}s"),
            },
            "rule_files": [rules_path.to_string_lossy()],
            "scrape_configs": scrape_configs,
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

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// GET an API path; the JSON `data` of a successful answer.
    pub async fn api(&self, path_and_query: &str) -> Value {
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
    pub async fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        self.query_path(
            promql,
            format!("/api/v1/query?query={}", url_encode(promql)),
        )
        .await
    }

    /// Instant query evaluated at unix time `at` (e.g. a rule evaluation's).
    pub async fn query_at(&self, promql: &str, at: f64) -> Vec<(Value, f64)> {
        self.query_path(
            promql,
            format!("/api/v1/query?query={}&time={at:.3}", url_encode(promql)),
        )
        .await
    }

    async fn query_path(&self, promql: &str, path: String) -> Vec<(Value, f64)> {
        let data = self.api(&path).await;
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
    pub async fn scalar(&self, promql: &str) -> f64 {
        let samples = self.query(promql).await;
        assert_eq!(samples.len(), 1, "{promql}: {samples:?}");
        samples[0].1
    }

    /// The value of a query returning at most one sample.
    pub async fn optional(&self, promql: &str) -> Option<f64> {
        let samples = self.query(promql).await;
        assert!(samples.len() <= 1, "{promql}: {samples:?}");
        samples.first().map(|s| s.1)
    }

    /// Every rule Prometheus loaded, as (group, rule) JSON.
    pub async fn rules(&self) -> Vec<(String, Value)> {
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

    /// Rules whose last evaluation failed, as `group/name: health error`.
    pub async fn unhealthy_rules(&self) -> Vec<String> {
        self.rules()
            .await
            .into_iter()
            .filter(|(_, r)| r["health"] != "ok")
            .map(|(g, r)| format!("{g}/{}: {} {}", r["name"], r["health"], r["lastError"]))
            .collect()
    }

    /// Waits for one more evaluation of the rule group after this call, so
    /// that everything scraped before it has been seen by the rules.
    pub async fn next_evaluation(&self) {
        let last = || async {
            self.api("/api/v1/rules").await["groups"][0]["lastEvaluation"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        let seen = last().await;
        super::eventually(
            Duration::from_secs(10),
            "a later rule evaluation",
            || async { last().await != seen },
        )
        .await;
    }

    /// `(job, health, lastError)` of every scrape target.
    pub async fn targets(&self) -> Vec<(String, String, String)> {
        let data = self.api("/api/v1/targets").await;
        data["activeTargets"]
            .as_array()
            .expect("activeTargets")
            .iter()
            .map(|t| {
                let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
                (s(&t["labels"]["job"]), s(&t["health"]), s(&t["lastError"]))
            })
            .collect()
    }

    /// Label sets of the `alert` series in `state` (firing or pending) now.
    pub async fn alerts(&self, alert: &str, state: &str) -> Vec<Value> {
        self.query(&format!(
            "ALERTS{{alertname=\"{alert}\",alertstate=\"{state}\"}}"
        ))
        .await
        .into_iter()
        .map(|(m, _)| m)
        .collect()
    }

    /// Unix time of the first evaluation in the last `window` (a PromQL duration) at which
    /// `alert` fired. Prometheus keeps it in `ALERTS`, so a test compares it with the
    /// exported outage timestamps instead of polling at the right moment.
    pub async fn first_firing(&self, alert: &str, window: &str) -> Option<f64> {
        let promql = format!("ALERTS{{alertname=\"{alert}\",alertstate=\"firing\"}}[{window}]");
        let data = self
            .api(&format!("/api/v1/query?query={}", url_encode(&promql)))
            .await;
        assert_eq!(data["resultType"], "matrix", "{promql}: {data}");
        data["result"]
            .as_array()
            .expect("result list")
            .iter()
            .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v[0].as_f64())
            .reduce(f64::min)
    }

    /// `(alertstate, labels)` of every `alert` series active at any evaluation
    /// in the last `window` (a PromQL duration).
    pub async fn ever_active(&self, alert: &str, window: &str) -> Vec<(String, Value)> {
        self.query(&format!(
            "max_over_time(ALERTS{{alertname=\"{alert}\"}}[{window}])"
        ))
        .await
        .into_iter()
        .map(|(m, _)| (m["alertstate"].as_str().unwrap_or_default().to_string(), m))
        .collect()
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
pub fn url_encode(s: &str) -> String {
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
