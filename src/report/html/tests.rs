//! The report and live pages on synthetic runs.

use std::collections::BTreeMap;

use super::chart::{fmt_step, latency_label, nice_axis};
use super::grid::step_at_least;
use super::*;
use crate::failover::machine::FailoverState;
use crate::failover::outages::{OutageRecord, StateChange};
use crate::report::summary::{Flag, Percentiles, RunCounts, Summary};
use crate::telemetry::timeline::{Event, EventKind, Second, State, Timeline};

/// `s` run with an RTO objective of `rto` seconds, no write lost.
/// `s` with the run's objectives set to `rto` and its own lost-write limit (a drill's own
/// objectives would win, so `s` has none).
pub(super) fn judged(s: &Summary, rto: f64) -> Summary {
    assert!(s.drill.is_none(), "a drill is judged by its own objectives");
    let objectives = Objectives {
        rto: std::time::Duration::from_secs_f64(rto),
        max_lost_writes: s.objectives.map_or(0, |o| o.max_lost_writes),
    };
    Summary {
        objectives: Some(objectives),
        ..s.clone()
    }
}

/// The page of `s`, judged against a 30 s objective (the synthetic drill's).
pub(super) fn render_30(s: &Summary) -> String {
    render(&judged(s, 30.0))
}

#[test]
fn a_drill_shows_its_own_verdict_objective_and_trigger_figures() {
    let summary = serde_json::json!({
        "run_id": 7,
        "transactions": 1000,
        "outages": [{"index": 1, "start_unix": 1800000030.05, "end_unix": 1800000030.3,
                     "write_unavailable_seconds": 0.25, "lost_writes": 0}],
        "drill": {
            "command": "az postgres flexible-server restart --failover Forced",
            "objectives": {"rto_seconds": 30.0, "max_lost_writes": 0},
            "shell": false,
            "planned_triggers": 1,
            "triggers": [{"index": 1, "planned_unix": 1800000030.0, "started_unix": 1800000030.0,
                          "ended_unix": 1800000125.5, "duration_seconds": 95.5,
                          "outcome": {"kind": "exited_non_zero", "code": 1},
                          "stdout_tail": "", "stderr_tail": "", "output_truncated": false}],
            "baselines": [],
            "drills": [{"trigger": 1, "outage": 1, "later_outages": [],
                        "trigger_to_first_failed_write_seconds": 0.05,
                        "trigger_to_new_primary_write_seconds": 0.31,
                        "write_unavailable_seconds": 0.25, "lost_writes": 0,
                        "trigger_seconds": 95.5}],
            "distribution": {},
            "verdict": {"verdict": "invalid", "failed": [],
                        "invalid": ["trigger 1 exited with status 1"]}
        }
    });
    let s = crate::report::summary_from_json(summary).unwrap();
    let page = render(&s);
    assert!(page.contains("objective 30.00 s; ") && !page.contains("(default)"));
    assert!(
        page.contains(">INVALID<"),
        "the drill's verdict, not the report's PASS"
    );
    assert!(page.contains("trigger 1 exited with status 1"));
    assert!(page.contains("<h2>Failover triggers</h2>"));
    for cell in [
        "exited_non_zero",
        "1 min 35.500 s",
        "50 ms",
        "310 ms",
        "250 ms",
    ] {
        assert!(page.contains(&format!("<td>{cell}</td>")), "{cell}");
    }
    // Without a drill (a canary), the report judges by itself and shows no triggers.
    let canary =
        crate::report::summary_from_json(serde_json::json!({"run_id": 7, "transactions": 1}));
    let page = render(&canary.unwrap());
    assert!(!page.contains("Failover triggers") && page.contains(">PASS<"));
}

#[test]
fn a_canary_is_judged_by_its_own_objectives_as_its_alerts_are() {
    // A 45 s outage and 3 lost writes: within the 120 s default, over the run's 30 s and 2.
    let canary = |objectives: serde_json::Value| {
        crate::report::summary_from_json(serde_json::json!({
            "run_id": 7, "transactions": 1000, "lost_writes": 3, "objectives": objectives,
            "outages": [{"index": 1, "start_unix": 1800000030.0, "end_unix": 1800000075.0,
                         "write_unavailable_seconds": 45.0, "lost_writes": 3}],
        }))
        .unwrap()
    };
    let own = canary(serde_json::json!({"rto_seconds": 30.0, "max_lost_writes": 2}));
    let verdict = own.verdict(&own.objectives.unwrap());
    assert_eq!(
        verdict.verdict,
        crate::drill::verdict::VerdictKind::Fail,
        "{verdict}"
    );
    assert!(
        verdict.failed.iter().any(|f| f.contains("at most 2")),
        "{verdict}"
    );
    assert!(verdict.failed.iter().any(|f| f.contains("45")), "{verdict}");
    let page = render(&own);
    assert!(page.contains(">FAIL<") && page.contains("objective 30.00 s; "));
    assert!(!page.contains("(default)"));
    // A summary from before the objectives were recorded: the defaults, said so.
    let old = canary(serde_json::Value::Null);
    assert!(render(&old).contains("objective 2 min 00 s (default)"));
}

const CLASSES: [&str; 14] = [
    "connect_refused",
    "connect_timeout",
    "dns",
    "tls",
    "auth",
    "too_many_connections",
    "read_only",
    "admin_shutdown",
    "crash_shutdown",
    "cannot_connect_now",
    "connection_closed",
    "statement_timeout",
    "pool_timeout",
    "other",
];

/// A synthetic drill: `secs` seconds at 1,000 writes/s with one forced failover
/// at `fail_at`: 3 s without acknowledgements, then 4 s of recovery.
pub(super) fn drill(secs: u64, fail_at: u64) -> Summary {
    let t0: u64 = 1_795_000_200;
    let mut t = Timeline::new(&CLASSES);
    let mut x: u64 = 12345;
    let mut noise = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) as f64 / (1u64 << 31) as f64
    };
    for i in 0..secs {
        let mut s = Second::second(t0 + i);
        let since = i as i64 - fail_at as i64;
        s.attempts = 1000;
        s.pool_in_use = 6 + (noise() * 4.0) as u32;
        s.p50 = (0.0011 + noise() * 0.0003) as f32;
        s.p99 = (0.0035 + noise() * 0.002) as f32;
        s.max = s.p99 * (1.5 + noise() as f32 * 2.0);
        match since {
            0 => {
                s.successes = 340;
                s.errors[10] = 24; // connection_closed
                s.errors[8] = 16; // crash_shutdown
                s.errors[0] = 620; // connect_refused
                s.state = State::Outage;
                s.p99 = 0.9;
                s.max = 0.98;
            }
            1..=2 => {
                s.successes = 0;
                s.errors[0] = 700;
                s.errors[6] = 300; // read_only
                s.state = State::Outage;
                s.p50 = 0.0;
                s.p99 = 0.0;
                s.max = 0.0;
            }
            3 => {
                s.successes = 1900;
                s.attempts = 2000;
                s.errors[0] = 100;
                s.state = State::Recovering;
                s.p50 = 1.4;
                s.p99 = 3.1;
                s.max = 3.3;
            }
            4..=6 => {
                s.successes = 1000;
                s.state = State::Recovering;
                s.p99 = 0.02;
            }
            7..=20 => {
                s.successes = 1000;
                s.state = if since < 9 {
                    State::Degraded
                } else {
                    State::Healthy
                };
            }
            _ => s.successes = 1000,
        }
        t.push(s);
    }
    let at = (t0 + fail_at) as f64;
    let ev = |dt: f64, kind| Event { at: at + dt, kind };
    t.events.push(ev(
        0.05,
        EventKind::FailoverTrigger {
            how: "pg_ctl stop -m immediate (primary 127.0.0.1:54321)".into(),
        },
    ));
    t.events
        .push(ev(0.061, EventKind::OutageStart { outage: 1 }));
    t.events.push(ev(
        3.02,
        EventKind::PrimaryChange {
            before: "127.0.0.1:54321 timeline 1".into(),
            after: "127.0.0.1:54322 timeline 2".into(),
        },
    ));
    t.events.push(ev(
        3.035,
        EventKind::OutageEnd {
            outage: 1,
            unavailable_seconds: Some(2.974),
        },
    ));
    t.events.push(ev(
        33.1,
        EventKind::Verification {
            outage: Some(1),
            checked: 30_000,
            lost: 0,
            rpo_seconds: 0.0,
            at_least: false,
            unknown_committed: 1,
            unknown_not_committed: 23,
        },
    ));
    let before = Identity {
        server_addr: Some("127.0.0.1".into()),
        server_port: Some(54321),
        in_recovery: Some(false),
        system_identifier: Some("7312345678901234567".into()),
        timeline: Some(1),
        postmaster_start: Some("2026-11-27 08:00:01.123+00".into()),
        synchronous_commit: Some("on".into()),
        synchronous_standby_names: Some("ANY 1 (s1, s2)".into()),
        ..Identity::default()
    };
    let after = Identity {
        server_port: Some(54322),
        timeline: Some(2),
        postmaster_start: Some("2026-11-27 08:00:03.456+00".into()),
        ..before.clone()
    };
    let outage = OutageRecord {
        index: 1,
        started_at: utc(at + 0.061),
        ended_at: Some(utc(at + 3.035)),
        start_unix: at + 0.061,
        end_unix: Some(at + 3.035),
        write_unavailable_seconds: Some(2.974),
        time_to_full_rate_seconds: Some(1.2),
        error_classes: vec![
            "connect_refused",
            "connection_closed",
            "crash_shutdown",
            "read_only",
        ],
        identity_before: Some(before.clone()),
        identity_after: Some(after.clone()),
        checked_writes: Some(30_000),
        lost_writes: Some(0),
        rpo_seconds: Some(0.0),
        unknown_outcome_committed: Some(1),
        unknown_outcome_not_committed: Some(23),
        verification_seconds: Some(0.4),
        ..OutageRecord::default()
    };
    let transactions = t.iter().map(|b| u64::from(b.attempts)).sum();
    let successes = t.iter().map(|b| u64::from(b.successes)).sum();
    let mut errors = BTreeMap::new();
    for b in t.iter() {
        for (k, n) in b.errors.iter().enumerate() {
            if *n > 0 {
                *errors.entry(CLASSES[k].to_string()).or_insert(0) += u64::from(*n);
            }
        }
    }
    Summary {
        version: "0.1.0".into(),
        run_id: 4_242_424_242,
        target: "host=127.0.0.1,127.0.0.1 port=54321,54322 user=drill dbname=drill target_session_attrs=read-write sslmode=disable".into(),
        started_at: utc(t0 as f64),
        duration_seconds: secs as f64,
        target_rate: Some(1000.0),
        achieved_rate: successes as f64 / secs as f64,
        counts: RunCounts {
            transactions,
            successes,
            errors,
            unknown_outcome_writes: 24,
            unknown_outcome_committed: 1,
            unknown_outcome_not_committed: 23,
            ..RunCounts::default()
        },
        latency: Percentiles {
            count: successes,
            p50_ms: 1.21,
            p95_ms: 3.9,
            p99_ms: 5.4,
            p999_ms: 1400.0,
            max_ms: 3300.0,
        },
        primary_changes: 1,
        outages: vec![outage],
        state_changes: [
            (0.07, FailoverState::Healthy, FailoverState::Outage),
            (3.04, FailoverState::Outage, FailoverState::Recovering),
        ]
        .map(|(dt, from, to)| StateChange {
            at: utc(at + dt),
            from,
            to,
        })
        .to_vec(),
        identity_first: Some(before),
        identity_last: Some(after),
        flags: [
            ("rate", "1000"),
            ("pool-size", "16"),
            ("duration", &format!("{secs}s")),
            ("outage-threshold", "20ms"),
            ("verify-window", "30s"),
            ("password", "hunter2"),
        ]
        .map(|(name, value)| Flag {
            name: name.into(),
            value: value.into(),
        })
        .to_vec(),
        timeline: t,
        ..Summary::default()
    }
}

/// External references a self-contained page must not have (`url(#…)` is local).
fn external_refs(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for needle in ["http://", "https://", "src=", "@import", "<script", "<link"] {
        if html.contains(needle) {
            found.push(needle.to_string());
        }
    }
    let mut rest = html;
    while let Some(i) = rest.find("url(") {
        if !rest[i + 4..].starts_with('#') {
            found.push(rest[i..(i + 30).min(rest.len())].to_string());
        }
        rest = &rest[i + 4..];
    }
    found
}

#[test]
fn a_one_hour_drill_renders_self_contained_and_small() {
    let html = render_30(&drill(3600, 1800));
    eprintln!("one-hour report: {} bytes", html.len());
    assert!(html.len() < 400_000, "{} bytes", html.len());
    assert_eq!(external_refs(&html), Vec::<String>::new());
    assert!(html.contains("<svg"), "a chart");
    assert!(html.starts_with("<!doctype html>"));
}

#[test]
fn a_week_long_canary_renders_within_the_same_size() {
    let mut r = drill(3600, 1800);
    let mut t = Timeline::new(&CLASSES);
    for i in 0..604_800 {
        let mut s = Second::second(1_795_000_200 + i);
        s.attempts = 10;
        s.successes = 10;
        s.p50 = 0.001;
        s.p99 = 0.003;
        s.max = 0.005;
        t.push(s);
    }
    r.timeline = t;
    // The drill's outage lies in the week's first day, long coarsened to 10 minutes.
    let html = render_30(&r);
    eprintln!("week report: {} bytes", html.len());
    assert!(html.len() < 400_000, "{} bytes", html.len());
    assert!(
        html.contains(">11-18 11:40:00.061<"),
        "dated times in a run over days"
    );
    let (_, closeup) = html.split_once("close-up").unwrap_or_default();
    assert!(
        closeup.contains("one column = 10 min"),
        "columns as wide as the buckets: {}",
        &closeup[..closeup.len().min(300)]
    );
}

#[test]
fn events_are_timed_from_the_runs_start_not_its_first_whole_second() {
    let mut r = drill(600, 120);
    let (first_second, _) = r.timeline.span().expect("a timeline");
    r.started_at = utc(first_second as f64 + 0.5);
    // The trigger at 120.05 s into the first whole second.
    assert!(render_30(&r).contains("+119.550 s"));
}

#[test]
fn every_event_gets_a_marker_and_the_outage_is_shaded() {
    let r = drill(600, 120);
    let html = render_30(&r);
    let (main, closeup) = html.split_once("Outage 1 close-up").unwrap_or_default();
    assert_eq!(
        main.matches(r#"<g class="mk" "#).count(),
        r.timeline.events.len()
    );
    // The close-up spans from 15 s before to 15 s after: all but the verification.
    let closeup = closeup.split("</svg>").next().unwrap_or_default();
    assert_eq!(closeup.matches(r#"<g class="mk" "#).count(), 4);
    assert!(closeup.contains("one column = 1 s"));
    for code in [">T<", ">O1<", ">E1<", ">P<", ">V✓<"] {
        assert!(html.contains(code), "marker {code}");
    }
    assert!(
        html.contains(r##"fill="#d7263d" fill-opacity="0.12""##),
        "shaded outage"
    );
    // The outage seconds colour the state band.
    assert!(html.contains(r##"fill="#d7263d"><title>outage"##));
    assert!(html.contains("127.0.0.1:54321 timeline 1 → 127.0.0.1:54322 timeline 2"));
    // What the lost-writes figure is read against, with the primary.
    assert!(html.contains("synchronous_commit=on synchronous_standby_names='ANY 1 (s1, s2)'"));
}

#[test]
fn text_is_escaped_and_passwords_redacted() {
    let mut r = drill(120, 30);
    r.target = "<script>alert(1)</script> host=\"x\" & 'y'".into();
    r.timeline.events.push(Event {
        at: r.outages[0].start_unix + 1.0,
        kind: EventKind::Restart {
            what: "<img src=x onerror=alert(2)>".into(),
        },
    });
    let html = render_30(&r);
    assert!(!html.contains("<script"), "no script element");
    assert!(!html.contains("<img"));
    assert!(html.contains(
        // maud leaves `'` as it is: harmless in text and in its double-quoted attributes.
        "&lt;script&gt;alert(1)&lt;/script&gt; host=&quot;x&quot; &amp; 'y'"
    ));
    assert!(!html.contains("hunter2"));
    assert!(html.contains("(redacted)"));
}

#[test]
fn the_live_page_refreshes_and_shows_fifteen_minutes() {
    let r = drill(3600, 3300);
    let live = Summary {
        target: "<b>t</b>".into(),
        counts: RunCounts {
            lost_writes: 0,
            unknown_outcome_writes: 24,
            ..r.counts.clone()
        },
        timeline: r.timeline.recent(LIVE_WINDOW),
        drill: None,
        ..r
    };
    let html = render_live(&live, State::Recovering, true);
    assert!(html.contains(r#"<meta http-equiv="refresh" content="5">"#));
    assert!(html.contains(">recovering</span>"));
    assert!(!html.contains("<b>t</b>"));
    // Apart from its own two links, nothing external.
    let stripped = html
        .replace(r#"<a href="/metrics">"#, "")
        .replace(r#"<a href="/healthz">"#, "");
    assert_eq!(external_refs(&stripped), Vec::<String>::new());
    // 15 minutes in 2-second columns, and the outage 5 minutes before the end is in view.
    assert!(html.contains("one column = 2 s"), "column width");
    assert!(html.contains(">O1<"));
    eprintln!("live page: {} bytes", html.len());
    assert!(html.len() < 200_000);

    // The outage card: every outage counted, coloured by the run's own objective.
    let outages = |html: &str| {
        html.split("Outages so far")
            .next()
            .unwrap_or_default()
            .to_string()
    };
    assert!(!outages(&html).ends_with(r#"<div class="card bad"><div class="d">"#));
    let mut strict = live.clone();
    strict.objectives = Some(Objectives {
        rto: std::time::Duration::from_secs(1),
        max_lost_writes: 0,
    });
    strict.earlier_outages.count = 7;
    let html = render_live(&strict, State::Recovering, true);
    assert!(outages(&html).ends_with(r#"<div class="card bad"><div class="d">"#));
    assert!(html.contains(r#"Outages so far</div><div class="v">8</div>"#));

    // An outage still open: its writes are not verified yet, so none lost is not a fact.
    let mut open = live.clone();
    open.counts.checked_writes = 0;
    open.outages.iter_mut().for_each(|o| {
        o.end_unix = None;
        o.lost_writes = None;
    });
    let html = render_live(&open, State::Outage, true);
    assert!(html.contains(
        r#"<div class="card warn"><div class="d">Acknowledged writes lost</div><div class="v">pending</div>"#
    ));
    assert!(html.contains(r#"<td class="num">pending</td>"#), "{html}");
    // Once the run's verifications ended (--linger), a check not done will not be.
    let html = render_live(&open, State::Outage, false);
    assert!(html.contains(
        r#"<div class="card warn"><div class="d">Acknowledged writes lost</div><div class="v">unverified</div>"#
    ));
    assert!(!html.contains("pending"), "{html}");
}

#[test]
fn empty_tiny_and_unfinished_runs_render() {
    let html = render(&Summary::default());
    assert!(html.contains("No timeline was recorded."));
    assert!(html.contains(r#"<span class="big">PASS</span>"#));
    assert!(html.contains("no outage"));

    // One second, one column.
    let mut r = Summary {
        timeline: Timeline::new(&CLASSES),
        ..Summary::default()
    };
    r.timeline.push(Second::second(1_795_000_200));
    let html = render_30(&r);
    assert!(html.contains("one column = 1 s"));
    assert!(html.contains("no failed or skipped writes"));
    assert!(html.contains("no completed writes"));

    // The run ended inside an outage: the shading runs to the end.
    let mut r = drill(300, 290);
    r.outages[0].end_unix = None;
    r.outages[0].ended_at = None;
    r.outages[0].write_unavailable_seconds = None;
    let events: Vec<Event> = r
        .timeline
        .events
        .iter()
        .filter(|e| !matches!(e.kind, EventKind::OutageEnd { .. }))
        .cloned()
        .collect();
    r.timeline.events = Default::default();
    for e in events {
        r.timeline.events.push(e);
    }
    let html = render_30(&r);
    // Shorter than the objective so far: it cannot be judged; longer: it failed.
    assert!(html.contains(r#"<span class="big">INVALID</span>"#));
    assert!(html.contains("the run ended during outage 1, 9.939 s after it began"));
    let html = render(&judged(&r, 5.0));
    assert!(html.contains(r#"<span class="big">FAIL</span>"#));
    assert!(html.contains("writes had not come back when the load stopped, 9.939 s after outage 1"));
    assert!(html.contains(">not ended<"));
    assert!(html.contains("not recovered"));
    // As shutdown records it: the time so far, said so in its row as everywhere else.
    r.outages[0].open_at_shutdown = true;
    r.outages[0].write_unavailable_seconds = Some(9.939);
    assert!(render(&r).contains("<b>9.939 s</b> so far<"));
}

/// The drill summary's JSON (as `--summary-json` writes it today) reads as a
/// report input, so `pgdrill report SUMMARY.json` needs no second format.
#[test]
fn a_summary_json_reads_as_report_input() {
    let summary = r#"{
      "version": "0.1.0", "run_id": 77, "target": "host=db port=5432 user=u",
      "started_at": "2026-11-27T08:00:00.000Z", "duration_seconds": 60.0,
      "target_rate": 500.0, "transactions": 30000, "successes": 29900,
      "errors": {"connection_closed": 100}, "skipped": 0, "abandoned": 0,
      "success_ratio": 0.996, "achieved_rate": 498.3,
      "latency": {"count": 29900, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0, "p999_ms": 900.0, "max_ms": 1200.0},
      "service_time": {"count": 29900, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0, "p999_ms": 9.0, "max_ms": 12.0},
      "schedule_lag": {"count": 29900, "p50_ms": 0.0, "p95_ms": 0.1, "p99_ms": 0.2, "p999_ms": 890.0, "max_ms": 1190.0},
      "primary_changes": 1,
      "outages": [{"index": 1, "started_at": "2026-11-27T08:00:30.000Z", "ended_at": "2026-11-27T08:00:31.250Z",
        "start_unix": 1795766430.0, "end_unix": 1795766431.25, "write_unavailable_seconds": 1.25,
        "time_to_full_rate_seconds": 0.5, "error_classes": ["connection_closed"],
        "identity_before": {"server_addr": "10.0.0.1", "server_port": 5432, "in_recovery": false,
          "system_identifier": "1", "timeline": 1, "postmaster_start": "x"},
        "identity_after": {"server_addr": "10.0.0.2", "server_port": 5432, "in_recovery": false,
          "system_identifier": "1", "timeline": 2, "postmaster_start": "y"},
        "checked_writes": 15000, "lost_writes": 0, "lost_seqs": [], "rpo_seconds": 0.0,
        "unknown_outcome_committed": 2, "unknown_outcome_not_committed": 1, "verification_seconds": 0.2}],
      "state_changes": [{"at": "2026-11-27T08:00:30.010Z", "from": "healthy", "to": "outage"}],
      "lost_writes": 0, "unknown_outcome_writes": 3, "unknown_outcome_committed": 2,
      "unknown_outcome_not_committed": 1
    }"#;
    let r: Summary = match serde_json::from_str(summary) {
        Ok(r) => r,
        Err(err) => panic!("{err}"),
    };
    assert_eq!(
        r.outages[0]
            .identity_after
            .as_ref()
            .and_then(|i| i.timeline),
        Some(2)
    );
    let html = render_30(&r);
    assert!(html.contains("<b>1.250 s</b>"));
    assert!(html.contains("10.0.0.1:5432 (tl 1)"));
    assert!(html.contains("No timeline was recorded."));
}

#[test]
fn the_input_round_trips_through_json() {
    let r = drill(300, 100);
    let json = serde_json::to_string(&r).unwrap_or_default();
    let back: Summary = match serde_json::from_str(&json) {
        Ok(b) => b,
        Err(err) => panic!("{err}"),
    };
    assert_eq!(render_30(&back), render_30(&r));
}

#[test]
fn axis_helpers_round_sensibly() {
    assert_eq!(nice_axis(1900.0 * 1.05, 5), (2000.0, 500.0));
    assert_eq!(nice_axis(1050.0, 5), (1500.0, 500.0));
    assert_eq!(nice_axis(1000.0, 5), (1000.0, 200.0));
    assert_eq!(nice_axis(2.2, 3), (3.0, 1.0));
    assert_eq!(nice_axis(0.0, 3), (1.0, 0.5));
    assert_eq!(axis_num(1500.0), "1,500");
    assert_eq!(axis_num(25_000.0), "25k");
    assert_eq!(fmt_secs(0.0), "0 ms");
    assert_eq!(fmt_secs(0.274), "274 ms");
    // A measured figure, to the millisecond as every other output gives it.
    assert_eq!(fmt_secs(65.0), "1 min 05.000 s");
    assert_eq!(fmt_secs(120.0404), "2 min 00.040 s");
    assert_eq!(fmt_secs(3599.7), "59 min 59.700 s");
    assert_eq!(fmt_secs(3629.0), "1 h 00 min 29.000 s");
    assert_eq!(fmt_secs(-0.003), "-3 ms");
    assert_eq!(fmt_secs(30.0004), "30.000 s");
    // As `{:.3}` rounds it (2.5225 is 2.52249… in binary), so as the text summary reads.
    assert_eq!(fmt_secs(2.5225), format!("{:.3} s", 2.5225));
    assert_eq!(fmt_secs(1e300), fmt_length(1e300));
    assert_eq!(fmt_secs(2.974), "2.974 s");
    assert_eq!(fmt_secs(0.29), "290 ms");
    assert_eq!(fmt_secs(0.067_072_779), "67 ms");
    assert_eq!(fmt_secs(0.9996), "1.000 s");
    assert_eq!(fmt_secs(59.9996), "1 min 00.000 s");
    assert_eq!(fmt_secs(-0.0001), "0 ms");
    assert_eq!(fmt_secs(f64::NAN), "-");
    // A run's length, to the nearest unit.
    assert_eq!(fmt_length(7200.4), "2 h 00 min");
    assert_eq!(fmt_length(7231.0), "2 h 01 min");
    assert_eq!(fmt_length(30.004), "30.00 s");
    assert_eq!(fmt_length(0.0), "0 ms");
    assert_eq!(group(1_234_567), "1,234,567");
    assert_eq!(latency_label(0.01), "10 ms");
    assert_eq!(step_at_least(7), 10);
    assert_eq!(fmt_step(600), "10 min");
    assert_eq!(fmt_step(15), "15 s");
}

#[test]
fn data_kind_is_the_events_json_kind() {
    let kinds = [
        EventKind::OutageStart { outage: 1 },
        EventKind::OutageEnd {
            outage: 1,
            unavailable_seconds: None,
        },
        EventKind::PrimaryChange {
            before: "a".into(),
            after: "b".into(),
        },
        EventKind::Verification {
            outage: None,
            checked: 0,
            lost: 0,
            rpo_seconds: 0.0,
            at_least: false,
            unknown_committed: 0,
            unknown_not_committed: 0,
        },
        EventKind::Restart { what: "r".into() },
        EventKind::FailoverTrigger { how: "t".into() },
    ];
    for k in &kinds {
        let json = serde_json::to_value(k).unwrap();
        assert_eq!(
            json["kind"].as_str(),
            Some(super::events::kind_name(k)),
            "{k:?}"
        );
    }
}
