//! The core daemon against a real PostgreSQL: load, metrics, outages, flags,
//! signals and secrets.

use std::time::Duration;

use pgdrill_lab::{Lab, LabOptions, StopMode};
use tokio::time::Instant;

use crate::drill::{http_get, metric, metric_sum, try_http_get, Binary, Drill};
use crate::support::{connect, eventually};

async fn single(password: Option<&str>) -> Lab {
    Lab::start(LabOptions {
        password: password.map(str::to_string),
        ..LabOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("starting PostgreSQL: {e}"))
}

async fn rows_of_run(lab: &Lab, run_id: i64) -> i64 {
    let client = connect(&lab.dsn(lab.primary())).await;
    client
        .query_one(
            "SELECT count(*) FROM transactions WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .expect("count rows")
        .get(0)
}

/// Every family the issue promises, present on a live scrape.
const FAMILIES: &[&str] = &[
    "pgdrill_build_info",
    "pgdrill_target_rate",
    "pgdrill_transactions_total",
    "pgdrill_transaction_errors_total",
    "pgdrill_transactions_skipped_total",
    "pgdrill_transaction_duration_seconds_bucket",
    "pgdrill_service_duration_seconds_bucket",
    "pgdrill_connection_attempts_total",
    "pgdrill_connection_errors_total",
    "pgdrill_pool_connections",
    "pgdrill_pool_max_connections",
    "pgdrill_schedule_lag_seconds",
    "pgdrill_last_success_timestamp_seconds",
    "pgdrill_failover_state",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_load_rows_match_metrics_and_rate_holds() {
    let lab = single(None).await;
    let dsn = lab.dsn(lab.primary());
    let drill = Drill::start(&["--dsn", &dsn, "--rate", "500", "--duration", "5s"]).await;

    // Live scrape mid-run: every family is there and the numbers agree.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let text = drill.scrape().await;
    for family in FAMILIES {
        assert!(text.contains(family), "{family} missing from /metrics");
    }
    assert_eq!(metric(&text, "pgdrill_target_rate"), 500.0);
    let states: f64 = ["healthy", "degraded", "outage", "recovering"]
        .iter()
        .map(|s| metric(&text, &format!("pgdrill_failover_state{{state=\"{s}\"}}")))
        .sum();
    assert_eq!(states, 1.0, "exactly one failover state is 1");
    let total = metric(&text, "pgdrill_transactions_total");
    let errors = metric_sum(&text, "pgdrill_transaction_errors_total");
    let observed = metric(&text, "pgdrill_transaction_duration_seconds_count");
    assert!(total > 1000.0, "transactions so far: {total}");
    assert!(
        (total - errors - observed).abs() <= 8.0,
        "successes {} vs latency observations {observed}",
        total - errors
    );
    let idle = metric(&text, "pgdrill_pool_connections{state=\"idle\"}");
    let in_use = metric(&text, "pgdrill_pool_connections{state=\"in_use\"}");
    let max = metric(&text, "pgdrill_pool_max_connections");
    assert!(
        idle + in_use >= 1.0 && idle + in_use <= max,
        "{idle}+{in_use} of {max}"
    );
    let last_success = metric(&text, "pgdrill_last_success_timestamp_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64();
    assert!(
        (now - last_success).abs() < 2.0,
        "last success {last_success} vs now {now}"
    );

    let summary = drill.finish().await;
    let rows = rows_of_run(&lab, summary.run_id).await;
    let failed: u64 = summary.errors.values().sum();
    assert_eq!(
        rows as u64,
        summary.transactions - failed,
        "rows == transactions − errors"
    );
    assert_eq!(summary.successes as i64, rows);
    let achieved = summary.successes as f64 / 5.0;
    assert!(
        (achieved - 500.0).abs() <= 10.0,
        "achieved {achieved}/s is not within 2 % of 500/s"
    );
    println!("{summary}");
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_with_the_database_down_and_recovers_without_restart() {
    let lab = single(None).await;
    let node = lab.primary();
    lab.stop(node, StopMode::Fast)
        .await
        .expect("stop PostgreSQL");
    let dsn = lab.dsn(node);
    let drill = Drill::start(&["--dsn", &dsn, "--rate", "200"]).await;

    let refused = "pgdrill_transaction_errors_total{class=\"connect_refused\"}";
    eventually(
        Duration::from_secs(10),
        "connect_refused counted",
        || async { drill.metric(refused).await >= 5.0 },
    )
    .await;
    eventually(Duration::from_secs(5), "state is outage", || async {
        drill
            .metric("pgdrill_failover_state{state=\"outage\"}")
            .await
            == 1.0
    })
    .await;
    assert!(
        drill
            .metric("pgdrill_connection_errors_total{class=\"connect_refused\"}")
            .await
            >= 5.0
    );

    lab.start_node(node).await.expect("start PostgreSQL");
    let before = drill.metric("pgdrill_transactions_total").await
        - metric_sum(&drill.scrape().await, "pgdrill_transaction_errors_total");
    eventually(Duration::from_secs(15), "writes succeed again", || async {
        let text = drill.scrape().await;
        let ok = metric(&text, "pgdrill_transactions_total")
            - metric_sum(&text, "pgdrill_transaction_errors_total");
        ok > before + 200.0
    })
    .await;
    let summary = drill.stop().await;
    assert_eq!(summary.outages.len(), 1, "{summary}");
    assert!(summary.outages[0].write_unavailable_seconds.is_some());
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_stopped_mid_run_is_classified_and_memory_stays_bounded() {
    let lab = single(None).await;
    let node = lab.primary();
    let dsn = lab.dsn(node);
    let listen = format!("127.0.0.1:{}", crate::support::free_port());
    let dir = tempfile::tempdir().expect("temp dir");
    let json_path = dir.path().join("summary.json");
    let json_arg = json_path.display().to_string();
    let bin = Binary::spawn(&[
        "--dsn",
        &dsn,
        "--rate",
        "2000",
        "--listen",
        &listen,
        "--shutdown-grace",
        "5s",
        "--summary-json",
        &json_arg,
        "--log-format",
        "json",
    ]);
    let addr = listen.parse().expect("addr");
    let scrape = || http_get(addr, "/metrics");
    eventually(Duration::from_secs(15), "load running", || async {
        let text = try_http_get(addr, "/metrics").await.unwrap_or_default();
        metric(&text, "pgdrill_transactions_total") > 2000.0
    })
    .await;
    let rss_before = metric(&scrape().await, "process_resident_memory_bytes");

    // A fast shutdown terminates sessions with 57P01; then connections are refused.
    lab.stop(node, StopMode::Fast)
        .await
        .expect("stop PostgreSQL");
    let outage_began = Instant::now();
    let mut rss_max: f64 = rss_before;
    while outage_began.elapsed() < Duration::from_secs(5) {
        rss_max = rss_max.max(metric(&scrape().await, "process_resident_memory_bytes"));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let text = scrape().await;
    let closed = metric(
        &text,
        "pgdrill_transaction_errors_total{class=\"admin_shutdown\"}",
    ) + metric(
        &text,
        "pgdrill_transaction_errors_total{class=\"connection_closed\"}",
    );
    let refused = metric(
        &text,
        "pgdrill_transaction_errors_total{class=\"connect_refused\"}",
    );
    assert!(
        closed >= 1.0,
        "sessions killed by the shutdown are classified:\n{text}"
    );
    assert!(refused >= 10.0, "refused connections counted: {refused}");
    assert_eq!(
        metric(&text, "pgdrill_transaction_errors_total{class=\"other\"}"),
        0.0
    );
    assert!(metric(&text, "pgdrill_transactions_skipped_total") > 5_000.0);
    assert!(metric(&text, "pgdrill_transactions_in_flight") <= 8.0);
    assert!(
        rss_max - rss_before < 16.0 * 1024.0 * 1024.0,
        "RSS grew from {rss_before} to {rss_max} during a 5 s outage at 2,000/s"
    );
    println!(
        "RSS before {:.1} MB, max during outage {:.1} MB",
        rss_before / 1e6,
        rss_max / 1e6
    );

    lab.start_node(node).await.expect("start PostgreSQL");
    bin.signal(libc::SIGTERM);
    let (status, out, err) = bin.wait(Duration::from_secs(20)).await;
    assert!(status.success(), "exit {status:?}\n{err}");
    assert!(out.contains("summary"), "{out}");
    assert!(err.contains("SIGTERM"), "{err}");
    for line in err.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("--log-format json wrote a non-JSON line ({e}): {line}"));
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_path).expect("summary JSON written"))
            .expect("summary JSON parses");
    assert!(json["transactions"].as_u64().unwrap_or(0) > 2000, "{json}");
    assert!(
        json["errors"]["connect_refused"].as_u64().unwrap_or(0) >= 10,
        "{json}"
    );
    assert_eq!(json["outages"].as_array().map(Vec::len), Some(1), "{json}");
    assert!(json["latency"]["p99_ms"].as_f64().is_some(), "{json}");
    lab.shutdown().await;
}

#[tokio::test]
async fn bad_flags_exit_non_zero_naming_flag_value_and_reason() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_addr = busy.local_addr().expect("addr").to_string();
    let cases: &[(&[&str], &[&str])] = &[
        (&["--rate", "-3"], &["--rate", "-3"]),
        (&["--rate", "fast"], &["--rate", "fast"]),
        (&["--duration", "5 parsecs"], &["--duration", "5 parsecs"]),
        (&["--no-such-flag"], &["--no-such-flag"]),
        (
            &["--dsn", "host=h port=notaport password=hunter2"],
            &["--dsn", "port"],
        ),
        (
            &["--listen", &busy_addr],
            &["--listen", &busy_addr, "in use"],
        ),
        (&["--pipeline-depth", "0"], &["--pipeline-depth", "0"]),
    ];
    for (args, expect) in cases {
        let (status, out, err) = Binary::spawn(args).wait(Duration::from_secs(10)).await;
        assert!(!status.success(), "{args:?} must fail");
        assert_eq!(status.code(), Some(2), "{args:?}: usage errors exit 2");
        for word in *expect {
            assert!(
                err.contains(word),
                "{args:?}: stderr lacks {word:?}:\n{err}"
            );
        }
        assert!(
            !err.contains("hunter2") && !out.contains("hunter2"),
            "password leaked: {err}"
        );
        assert!(
            !out.contains("summary"),
            "{args:?}: nothing may start:\n{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_appears_nowhere() {
    const SECRET: &str = "pw-Zq7x-never-print-me";
    let lab = single(Some(SECRET)).await;
    let dsn = lab.dsn(lab.primary());
    assert!(dsn.contains(SECRET), "the lab DSN carries the password");
    let url = format!(
        "postgres://pgdrill:{SECRET}@127.0.0.1:{}/pgdrill",
        lab.port(lab.primary())
    );
    let wrong = format!(
        "postgres://pgdrill:{SECRET}-wrong@127.0.0.1:{}/pgdrill",
        lab.port(lab.primary())
    );
    for (dsn, expect_auth) in [
        (dsn.as_str(), false),
        (url.as_str(), false),
        (wrong.as_str(), true),
    ] {
        let listen = format!("127.0.0.1:{}", crate::support::free_port());
        let bin = Binary::spawn(&[
            "--dsn",
            dsn,
            "--rate",
            "50",
            "--duration",
            "3s",
            "--listen",
            &listen,
            "--log-filter",
            "debug,tokio_postgres=debug",
        ]);
        let addr = listen.parse().expect("addr");
        eventually(Duration::from_secs(10), "/metrics up", || async {
            try_http_get(addr, "/healthz").await.is_ok()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let metrics = http_get(addr, "/metrics").await;
        let page = http_get(addr, "/").await;
        let (status, out, err) = bin.wait(Duration::from_secs(20)).await;
        assert!(status.success(), "{err}");
        for (what, text) in [
            ("/metrics", &metrics),
            ("/", &page),
            ("stdout", &out),
            ("stderr", &err),
        ] {
            assert!(!text.contains(SECRET), "password found in {what}:\n{text}");
        }
        assert!(
            page.contains("REDACTED"),
            "the page shows the target, redacted: {page}"
        );
        let auth = metric(&metrics, "pgdrill_transaction_errors_total{class=\"auth\"}");
        assert_eq!(auth > 0.0, expect_auth, "auth errors {auth}:\n{err}");
    }
    lab.shutdown().await;
}
