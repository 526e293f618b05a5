//! The drill report: a real drill with one forced failover, run by the real binary with
//! `--report` and `--summary-json`; the page is checked against the summary's figures,
//! and `pgdrill report` renders the same page from the JSON.

use std::time::Duration;

use pgdrill_lab::ReplicationMode;

use crate::support::drill::{metric, try_http_get, Binary};
use crate::support::{eventually, free_port};

/// The text of every element `<tag …attr="value"…>…</tag>` (no nesting of the same tag).
pub fn elements<'a>(html: &'a str, open: &str, close: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(open) {
        let from = &rest[i..];
        let Some(j) = from.find(close) else { break };
        out.push(&from[..j + close.len()]);
        rest = &from[j + close.len()..];
    }
    out
}

/// The value of `attr="…"` in `element`.
pub fn attr<'a>(element: &'a str, attr: &str) -> Option<&'a str> {
    let key = format!("{attr}=\"");
    let i = element.find(&key)? + key.len();
    let end = element[i..].find('"')?;
    Some(&element[i..i + end])
}

/// Nothing on the page can make a browser fetch anything: no script, stylesheet link,
/// image, frame, font or CSS url, and every link is to the page itself.
pub fn assert_self_contained(html: &str) {
    let lower = html.to_ascii_lowercase();
    for bad in [
        "<script",
        "<link",
        "<img",
        "<iframe",
        "<object",
        "<embed",
        "@import",
        "url(",
        "@font-face",
    ] {
        assert!(!lower.contains(bad), "the page contains {bad}");
    }
    for key in ["src=\"", "href=\""] {
        for (i, _) in lower.match_indices(key) {
            let value = &lower[i + key.len()..];
            assert!(
                value.starts_with('#'),
                "external reference {}",
                &html[i..(i + 80).min(html.len())]
            );
        }
    }
    // The only absolute URL allowed is the SVG namespace, which is a name, not a fetch.
    let urls = lower.matches("http://").count() + lower.matches("https://").count();
    let namespaces = lower
        .matches("xmlns=\"http://www.w3.org/2000/svg\"")
        .count();
    assert_eq!(
        urls, namespaces,
        "absolute URLs other than the SVG namespace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_failover_drill_renders_its_report_and_the_json_renders_the_same_page() {
    let lab = crate::support::start_lab(Some(ReplicationMode::Sync)).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let report = dir.path().join("report.html");
    let json = dir.path().join("summary.json");
    let listen = format!("127.0.0.1:{}", free_port());
    let dsn = lab.multi_host_dsn();
    let (report_s, json_s) = (report.display().to_string(), json.display().to_string());
    let drill = Binary::spawn(&[
        "--dsn",
        &dsn,
        "--rate",
        "500",
        "--duration",
        "14s",
        // A run without a trigger (a canary's) is judged by its own objective too.
        "--rto-objective",
        "90s",
        "--listen",
        &listen,
        "--report",
        &report_s,
        "--summary-json",
        &json_s,
    ]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Promoted 0.3 s after the crash: the report needs an outage, and a failover faster
    // than the 20 ms outage threshold (seen on tmpfs: 32 ms in all) is rightly none.
    let truth = lab
        .force_failover_after(Duration::from_millis(300))
        .await
        .expect("forced failover");
    let (status, out, err) = drill.wait(Duration::from_secs(90)).await;
    println!("{out}\nlab: {truth}");
    assert!(status.success(), "{status}: {err}");
    for written in [
        format!("drill report written to {report_s}"),
        format!("summary written to {json_s}"),
    ] {
        assert!(err.contains(&written), "{err}");
    }

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("summary file"))
            .expect("summary JSON");
    let html = std::fs::read_to_string(&report).expect("report file");
    assert_self_contained(&html);
    assert!(html.len() < 300_000, "{} bytes", html.len());

    // The summary carries the timeline: one bucket a second, and the events.
    let buckets = summary["timeline"]["buckets"]
        .as_array()
        .expect("timeline buckets");
    assert!(
        (13..=17).contains(&buckets.len()),
        "{} buckets for a 14 s run",
        buckets.len()
    );
    let attempts: u64 = buckets.iter().filter_map(|b| b["attempts"].as_u64()).sum();
    assert_eq!(
        Some(attempts),
        summary["transactions"].as_u64(),
        "every finished write is in some second"
    );
    let kinds: Vec<&str> = summary["timeline"]["events"]["list"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    for kind in [
        "outage_start",
        "outage_end",
        "primary_change",
        "verification",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }

    // The verdict: sync replication loses nothing, and a local failover is far inside
    // the run's 90 s objective, which the summary records.
    let outages = summary["outages"].as_array().expect("outages");
    assert_eq!(outages.len(), 1, "{out}");
    assert_eq!(summary["lost_writes"].as_u64(), Some(0));
    assert!(
        html.contains(r#"<div class="verdict pass"><span class="big">PASS</span>"#),
        "verdict"
    );
    assert_eq!(summary["objectives"]["rto_seconds"].as_f64(), Some(90.0));
    assert!(
        html.contains("objective 1 min 30 s;"),
        "the run's objective, not the default"
    );

    // The flags as run, the DSN as the redacted target.
    assert!(html.contains(r#"<th class="mono">--rate</th><td class="mono">500</td>"#));
    let target = summary["target"].as_str().unwrap_or_default();
    assert!(html.contains(&format!(
        r#"<th class="mono">--dsn</th><td class="mono">{target}</td>"#
    )));

    // One outage row, showing the summary's measured RTO.
    let rows = elements(&html, "<tr data-outage=", "</tr>");
    assert_eq!(rows.len(), 1, "{rows:?}");
    let rto = outages[0]["write_unavailable_seconds"]
        .as_f64()
        .expect("the outage ended");
    let shown: f64 = attr(rows[0], "data-seconds")
        .and_then(|s| s.parse().ok())
        .expect("data-seconds");
    assert_eq!(shown, rto);
    // To the millisecond, with the text summary's digits (`{:.3}`).
    let digits = format!("{rto:.3}");
    let text = match digits.strip_prefix("0.") {
        Some(ms) => format!("<b>{} ms</b>", ms.trim_start_matches('0')),
        None => format!("<b>{digits} s</b>"),
    };
    assert!(rows[0].contains(&text), "{text} in {}", rows[0]);
    assert!(html.contains(&format!("<div class=\"v\">{}", &text[3..text.len() - 4])));

    // The markers: outage start and end, the primary change, a verification without loss.
    let markers = elements(&html, "<g class=\"mk\"", "</g>");
    let kinds: Vec<&str> = markers
        .iter()
        .filter_map(|m| attr(m, "data-kind"))
        .collect();
    for kind in [
        "outage_start",
        "outage_end",
        "primary_change",
        "verification",
    ] {
        assert!(kinds.contains(&kind), "marker {kind} in {kinds:?}");
    }
    assert!(html.contains(">O1</text>") && html.contains(">E1</text>"));
    assert!(html.contains(">V✓</text>"));
    // The primary change names both servers, as the lab saw them.
    let change = markers
        .iter()
        .find(|m| attr(m, "data-kind") == Some("primary_change"))
        .expect("primary change marker");
    for port in [lab.port(truth.old_primary), lab.port(truth.new_primary)] {
        assert!(change.contains(&format!(":{port}")), "{port} in {change}");
    }

    // The same page from the JSON.
    let again = dir.path().join("again.html");
    let render = Binary::spawn(&["report", &json_s, "-o", &again.display().to_string()]);
    let (status, _, err) = render.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "{err}");
    let html2 = std::fs::read_to_string(&again).expect("rendered page");
    assert!(html2 == html, "pgdrill report gave a different page");
    lab.shutdown().await;
}

#[tokio::test]
async fn bad_report_input_is_a_usage_error_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{ not json").expect("write");
    let not_summary = dir.path().join("other.json");
    std::fs::write(&not_summary, "[1, 2]").expect("write");
    let out = dir.path().join("out.html").display().to_string();
    let cases = [
        (
            vec!["report".to_string(), bad.display().to_string(), "-o".into(), out.clone()],
            "is not valid JSON",
        ),
        (
            vec!["report".into(), not_summary.display().to_string(), "-o".into(), out.clone()],
            "not a pgdrill summary",
        ),
        (
            vec!["report".into(), dir.path().join("missing.json").display().to_string(), "-o".into(), out.clone()],
            "cannot read",
        ),
        (
            vec!["report".into(), bad.display().to_string(), "-o".into(), "/nonexistent-dir/x.html".into()],
            "for --output: directory /nonexistent-dir does not exist",
        ),
        (
            vec!["--dsn".into(), "postgres://127.0.0.1:1/x".into(), "--report".into(), "/nonexistent-dir/r.html".into()],
            "invalid value '/nonexistent-dir/r.html' for --report: directory /nonexistent-dir does not exist",
        ),
    ];
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, _, err) = Binary::spawn(&args).wait(Duration::from_secs(20)).await;
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    assert!(!dir.path().join("out.html").exists());
}

/// A summary file that cannot be written at the end (its directory removed during the run)
/// is said, and the report is written all the same; the exit status is 1, not success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summary_that_cannot_be_written_leaves_the_report_written() {
    let lab = crate::support::start_lab(None).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let gone = dir.path().join("gone");
    std::fs::create_dir(&gone).expect("create the summary's directory");
    let json = gone.join("summary.json").display().to_string();
    let report = dir.path().join("report.html");
    let report_s = report.display().to_string();
    let dsn = lab.dsn(lab.primary());
    let listen = format!("127.0.0.1:{}", free_port());
    let args = [
        "--dsn",
        &dsn,
        "--rate",
        "50",
        "--duration",
        "5s",
        "--listen",
        &listen,
        "--summary-json",
        &json,
        "--report",
        &report_s,
    ];
    let drill = Binary::spawn(&args);
    // Removed only once the run writes: its options (the summary's directory among them) were
    // checked at the start, and the end, when the summary is written, is seconds away.
    let addr = listen.parse().expect("addr");
    eventually(Duration::from_secs(20), "writes under way", || async {
        let text = try_http_get(addr, "/metrics").await.unwrap_or_default();
        metric(&text, "pgdrill_transactions_total") > 0.0
    })
    .await;
    std::fs::remove_dir(&gone).expect("remove the summary's directory, still empty");
    let (status, _, err) = drill.wait(Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("cannot write --summary-json"), "{err}");
    assert!(report.exists(), "{err}");
    assert!(err.contains("drill report written to"), "{err}");
    lab.shutdown().await;
}
