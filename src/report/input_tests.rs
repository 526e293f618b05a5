//! `pgdrill report` on summaries no run would write: hand-edited, from older versions, or
//! absurd. Each is read, judged and drawn without a panic, unbounded memory, a leaked
//! secret or two outputs that disagree.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::fleet::merge_summary_files;
use super::merge::tests::{members, pod};
use crate::drill::verdict::VerdictKind;

/// Writes each summary to its own file and reads them back as `pgdrill report` does.
fn report(summaries: &[Value]) -> super::fleet::Merged {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths: Vec<PathBuf> = summaries
        .iter()
        .enumerate()
        .map(|(n, s)| {
            let path = dir.path().join(format!("member-{n}.json"));
            std::fs::write(&path, s.to_string()).expect("write summary");
            path
        })
        .collect();
    merge_summary_files(&paths).expect("read")
}

/// A drill by two: member 0 triggered (objective 120 s), member 1 measured.
fn pair() -> [Value; 2] {
    let mut pods = [
        pod(0, "d1", 0.3, 0, Some("120s")),
        pod(1, "d1", 0.5, 0, None),
    ];
    pods.iter_mut().for_each(|p| p["member"]["of"] = json!(2));
    pods
}

fn alone(mut s: Value) -> Value {
    s["member"] = Value::Null;
    s
}

#[test]
fn one_summary_shows_the_verdict_its_exit_status_gives() {
    // Edited after the run: 5 lost writes, the stored verdict still a pass.
    let mut s = alone(pod(0, "d1", 0.3, 0, Some("120s")));
    s["lost_writes"] = json!(5);
    let merged = report(&[s]);
    let verdict = merged.report.verdict.clone();
    assert_eq!(verdict.verdict, VerdictKind::Fail, "{verdict}");
    assert!(merged.page.contains(r#"<span class="big">FAIL</span>"#));
}

#[test]
fn sums_of_absurd_counts_saturate_instead_of_wrapping_to_a_pass() {
    let mut a = pod(0, "d1", 0.3, 0, Some("120s"));
    a["member"]["of"] = json!(2);
    a["lost_writes"] = json!(u64::MAX);
    let mut b = pod(1, "d1", 0.3, 0, None);
    b["member"]["of"] = json!(2);
    b["lost_writes"] = json!(1);
    let merged = report(&[a, b]);
    assert_eq!(merged.report.counts.lost_writes, u64::MAX);
    let verdict = merged.report.verdict;
    assert_eq!(verdict.verdict, VerdictKind::Fail, "{verdict}");
}

#[test]
fn times_beyond_year_9999_and_buckets_out_of_order_draw_a_bounded_page() {
    let mut s = alone(pod(0, "d1", 0.3, 0, None));
    s["outages"][0]["start_unix"] = json!(3e11);
    s["timeline"]["buckets"] = json!([
        {"at": 1_700_000_000u64, "span": 1, "attempts": 1},
        {"at": 100_000_000_000_000u64, "span": 600, "attempts": 1},
        {"at": 1_800_000_000u64, "span": 600, "attempts": 1},
    ]);
    let merged = report(&[s]);
    assert!(
        merged
            .page
            .contains(r#"<td class="num">12-31 23:59:59.000</td>"#),
        "the outage's start, clamped to 9999-12-31"
    );
    assert!(merged.page.len() < 200_000, "{} bytes", merged.page.len());
}

#[test]
fn an_older_summary_reads_as_a_run_would_write_it() {
    let mut s = alone(pod(0, "d1", 0.3, 0, None));
    // Written before `unknown_outcome_unresolved`: derived, the same in every output.
    s["unknown_outcome_writes"] = json!(10);
    s["unknown_outcome_committed"] = json!(3);
    s["unknown_outcome_not_committed"] = json!(2);
    // Never scrubbed: a secret in a flag's value, as JSON in a trigger command.
    s["flags"] =
        json!([{"name": "failover-command", "value": r#"curl -d {"password":"hunter2"}"#}]);
    // Written before `checked_writes`: its outages' verifications, in every output.
    s.as_object_mut()
        .expect("an object")
        .remove("checked_writes");
    s["outages"][0]["checked_writes"] = json!(100);
    // More outages than a run keeps.
    let outage = s["outages"][0].clone();
    s["outages"] = (1..=1005)
        .map(|i| {
            let mut o = outage.clone();
            o["index"] = json!(i);
            o
        })
        .collect();
    let merged = report(&[s]);
    assert_eq!(merged.report.counts.unknown_outcome_unresolved, 5);
    assert_eq!(merged.report.counts.checked_writes, 100_500);
    assert!(merged.page.contains("100,500"), "the page says the same");
    assert!(
        merged.page.contains("0 not found, 5 unresolved") || merged.page.contains("5 unresolved")
    );
    assert!(!merged.page.contains("hunter2"));
    assert!(
        merged.page.contains("Outages 1–5 are not listed"),
        "folded as a run does"
    );
    assert_eq!(merged.report.members[0].outages, 1005);
}

#[test]
fn a_drills_rto_is_the_attributed_outages_in_every_output() {
    // A 30 s outage before the trigger, then the failover's 0.3 s: objective 20 s.
    let mut s = alone(pod(0, "d1", 0.3, 0, Some("20s")));
    let mut before = s["outages"][0].clone();
    before["index"] = json!(2);
    before["start_unix"] = json!(1_800_000_005.0);
    before["end_unix"] = json!(1_800_000_035.0);
    before["write_unavailable_seconds"] = json!(30.0);
    s["outages"].as_array_mut().expect("outages").push(before);
    let merged = report(&[s]);
    assert_eq!(
        merged
            .report
            .worst
            .as_ref()
            .map(|w| w.write_unavailable_seconds),
        Some(0.3)
    );
    let verdict = merged.report.verdict.clone();
    assert_eq!(verdict.verdict, VerdictKind::Pass, "{verdict}");
    assert!(merged.page.contains(r#"<div class="card ok"><div class="d">RTO — longest write unavailability</div><div class="v">300 ms</div>"#));
    assert!(merged
        .page
        .contains("the longest of all, 30.000 s, followed no trigger"));
}

#[test]
fn a_member_alone_that_did_not_trigger_shows_the_verdict_its_exit_status_gives() {
    let merged = report(&[pod(1, "d1", 0.3, 0, None)]);
    let verdict = merged.report.verdict.clone();
    assert_eq!(verdict.verdict, VerdictKind::Invalid, "{verdict}");
    assert!(merged.page.contains(r#"<span class="big">INVALID</span>"#));
}

#[test]
fn a_member_that_never_verified_its_writes_is_not_shown_as_none_lost() {
    let mut pods = pair();
    pods[1]["outages"][0]["lost_writes"] = Value::Null;
    pods[1]["checked_writes"] = json!(0);
    let merged = report(&pods);
    assert!(merged.page.contains("1 member(s) never verified theirs"));
    assert!(merged.page.contains("<td class=\"num\">unverified</td>"));
}

#[test]
fn one_summary_given_twice_under_one_name_is_merged_once() {
    let pods = pair();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut paths = Vec::new();
    for (dir, s) in dirs
        .iter()
        .zip([&pods[0], &pods[0]])
        .chain([(&dirs[1], &pods[1])])
    {
        let name = if std::ptr::eq(s, &pods[0]) {
            "m0.json"
        } else {
            "m1.json"
        };
        let path = dir.path().join(name);
        std::fs::write(&path, s.to_string()).unwrap();
        paths.push(path);
    }
    let merged = merge_summary_files(&paths).expect("read");
    assert_eq!(
        merged.report.not_merged.len(),
        1,
        "{:?}",
        merged.report.not_merged
    );
    assert_eq!(merged.report.counts.transactions, 12_000);
}

#[test]
fn a_triggering_member_without_a_clock_reading_is_named_once() {
    let mut pods = members();
    pods[0]["server_clock"] = Value::Null;
    let merged = report(&pods);
    let invalid = merged.report.verdict.invalid;
    let clock: Vec<_> = invalid.iter().filter(|r| r.contains("clock")).collect();
    assert_eq!(clock.len(), 1, "{invalid:?}");
    assert!(clock[0].starts_with("member 0"), "{clock:?}");
}

#[test]
fn the_fleet_page_draws_every_members_classes_and_the_triggers_facts() {
    let mut pods = pair();
    // Only member 1's timeline has failed writes: the legend names their class all the same.
    pods[1]["timeline"]["buckets"][30]["errors"] = json!([[0, 5]]);
    let server = |addr: &str, timeline: u32| {
        json!({"server_addr": addr, "server_port": 5432, "in_recovery": false,
               "system_identifier": "1", "timeline": timeline, "postmaster_start": addr})
    };
    pods[0]["outages"][0]["identity_before"] = server("10.0.0.1", 1);
    pods[0]["outages"][0]["identity_after"] = server("10.0.0.2", 2);
    let merged = report(&pods);
    assert!(merged.page.contains("></i>connection_closed</span>"));
    // What the first write reached, as the triggering member's own page says it.
    assert!(merged.page.contains(" (new primary)</td>"));
    // T on the measuring member's chart only: the triggering one's has its own mark.
    assert_eq!(
        merged.page.matches("trigger 1 (by ").count(),
        1,
        "{}",
        merged.page
    );
}

#[test]
fn a_summary_holding_more_events_than_a_run_keeps_draws_a_bounded_page() {
    let mut s = alone(pod(0, "d1", 0.3, 0, None));
    let event = |n: u64| json!({"at": 1_800_000_000.0 + n as f64 * 0.001, "kind": "restart", "what": "x".repeat(200)});
    s["timeline"]["events"] = json!({"list": (0..20_000).map(event).collect::<Vec<_>>()});
    let change = json!({"at": "2027-01-15T08:00:00Z", "from": "healthy", "to": "degraded"});
    s["state_changes"] = json!(vec![change; 20_000]);
    // What a run's own cap gives (1,000 events, 1,000 state changes): ~1 MB, not 20 times it.
    let merged = report(&[s]);
    assert!(merged.page.len() < 1_500_000, "{} bytes", merged.page.len());
}

#[test]
fn a_summary_from_a_newer_pgdrill_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("member-0.json");
    let mut s = alone(pod(0, "d1", 0.3, 0, None));
    s["version"] = json!("99.0.0");
    std::fs::write(&path, s.to_string()).expect("write summary");
    let Err(e) = merge_summary_files(&[path]) else {
        panic!("a summary of pgdrill 99.0.0 was read");
    };
    assert!(e.contains("member-0.json") && e.contains("99.0.0"), "{e}");
    s["version"] = json!("0.0.1");
    let older = dir.path().join("older.json");
    std::fs::write(&older, s.to_string()).expect("write summary");
    assert!(merge_summary_files(&[older]).is_ok());
}
