//! Merging summaries: one, three, and the ways a merge is refused.
use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::config::drill::DrillArgs;
use crate::drill::timing::tests::trigger;
use crate::drill::{DrillReport, RunFacts};
use crate::failover::outages::OutageRecord;

const T0: f64 = 1_800_000_000.0;

/// A member's summary as JSON: 60 s at 100/s from T0, one outage from T0 + 30.05 s
/// lasting `unavailable`; with `rto` the member ran the trigger at T0 + 30 s.
pub(crate) fn pod(
    index: u32,
    drill: &str,
    unavailable: f64,
    lost: u64,
    rto: Option<&str>,
) -> Value {
    let start = T0 + 30.05;
    let outage = OutageRecord {
        index: 1,
        start_unix: start,
        end_unix: Some(start + unavailable),
        write_unavailable_seconds: Some(unavailable),
        lost_writes: Some(lost),
        rpo_seconds: Some(0.0),
        ..OutageRecord::default()
    };
    let buckets: Vec<Value> = (0..60)
        .map(|s| json!({"at": T0 as u64 + s, "attempts": 100, "successes": 100}))
        .collect();
    let mut v = json!({
        "run_id": 100 + i64::from(index),
        "drill_id": drill,
        "member": {"index": index, "of": 3},
        "started_at": crate::clock::rfc3339(T0),
        "duration_seconds": 60.0,
        "target_rate": 100.0,
        "transactions": 6000,
        "successes": 5990,
        "errors": {"connection_closed": 10},
        "lost_writes": lost,
        "unknown_outcome_writes": 2,
        "unknown_outcome_committed": 1,
        "unknown_outcome_not_committed": 1,
        "new_primary_writes_unix": [start + unavailable],
        "outages": [outage],
        "timeline": {"classes": ["connection_closed"], "buckets": buckets},
        "server_clock": {"offset_seconds": 0.0, "uncertainty_seconds": 0.001},
    });
    if let Some(rto) = rto {
        let config = DrillArgs {
            failover_command: Some("pg_ctl promote -D /x".into()),
            failover_shell: false,
            failover_after: None,
            failovers: None,
            failover_every: None,
            failover_timeout: "1m".parse().ok(),
            rto_objective: rto.parse().unwrap(),
            rpo_objective: 0,
            fleet: Default::default(),
        }
        .validate(Some(Duration::from_secs(60)))
        .unwrap();
        let report = DrillReport::build(
            &config.trigger.unwrap(),
            config.objectives,
            RunFacts {
                triggers: vec![trigger(1, T0 + 30.0, 0.2)],
                baselines: vec![Baseline {
                    trigger: 1,
                    from_unix: T0 + 20.0,
                    to_unix: T0 + 30.0,
                    successes: 1000,
                    errors: 0,
                    target_rate: Some(100.0),
                }],
                outages: vec![outage],
                earlier_outages: Default::default(),
                unverified_changes: 0,
                new_primary_writes_unix: vec![start + unavailable],
                lost_writes_in_run: lost,
                losses_without_outage: Vec::new(),
                run_end_unix: T0 + 60.0,
            },
        );
        v["drill"] = serde_json::to_value(report).unwrap();
    }
    v
}

/// A drill by three: member 0 triggered (objective 120 s), members 1 and 2 measured.
pub(crate) fn members() -> [Value; 3] {
    [
        pod(0, "d1", 0.3, 0, Some("120s")),
        pod(1, "d1", 0.5, 0, None),
        pod(2, "d1", 0.4, 0, None),
    ]
}

pub(crate) fn inputs(pods: &[Value]) -> Vec<Input> {
    pods.iter()
        .enumerate()
        .map(|(n, v)| Input {
            file: format!("pod-{n}.json"),
            summary: serde_json::from_value(v.clone()).unwrap(),
        })
        .collect()
}

fn verdict(pods: &[Value]) -> Verdict {
    merge(&inputs(pods)).verdict
}

#[test]
fn one_summary_merges_into_the_verdict_the_run_gave_itself() {
    for rto in ["120s", "100ms"] {
        let mut one = pod(0, "d1", 0.3, 0, Some(rto));
        one["member"] = Value::Null;
        let own: Verdict = serde_json::from_value(one["drill"]["verdict"].clone()).unwrap();
        assert_eq!(verdict(&[one]), own, "{rto}");
    }
    // A canary: the verdict its page shows, in --json too, and exit 0 as its run's.
    let mut canary = pod(0, "d1", 0.3, 0, None);
    canary["member"] = Value::Null;
    let merged = merge(&inputs(&[canary.clone()]));
    assert_eq!(merged.verdict.verdict, VerdictKind::Pass);
    assert_eq!(merged.exit_code(), 0);
    canary["objectives"] = json!({"rto_seconds": 0.1, "max_lost_writes": 0});
    let merged = merge(&inputs(&[canary]));
    assert_eq!(merged.verdict.verdict, VerdictKind::Fail);
    assert_eq!(merged.exit_code(), 0);
    // One member's summary of a drill run by three: the others are missing.
    let v = verdict(&[pod(0, "d1", 0.3, 0, Some("120s"))]);
    assert_eq!(v.verdict, VerdictKind::Invalid, "{v}");
    assert!(v.invalid[0].contains("member 1 of 3 is missing"), "{v}");
    // A member count from a hand-edited file: a few named, the rest counted.
    let mut huge = pod(0, "d1", 0.3, 0, Some("120s"));
    huge["member"]["of"] = json!(4_000_000_000u32);
    let mut out_of_range = pod(1, "d1", 0.3, 0, None);
    out_of_range["member"] = json!({"index": 4_100_000_000u32, "of": 4_000_000_000u32});
    let v = verdict(&[huge, out_of_range]);
    assert_eq!(v.invalid.len(), 12, "{v}");
    assert!(
        v.invalid[10].contains("3999999989 more of the 4000000000 members"),
        "{v}"
    );
    assert!(
        v.invalid[11].contains("member 4100000000 of 4000000000"),
        "{v}"
    );
}

#[test]
fn three_members_give_one_verdict_with_each_ones_figures_and_the_worst() {
    let pods = members();
    let r = merge(&inputs(&pods));
    let v = r.verdict.clone();
    assert_eq!(v.verdict, VerdictKind::Pass, "{v}");
    assert_eq!(r.exit_code(), 0);
    assert_eq!(r.members.len(), 3);
    assert_eq!(r.trigger_member.as_deref(), Some("member 0 (pod-0.json)"));
    let worst = r.worst.as_ref().unwrap();
    assert_eq!(worst.member, "member 1 (pod-1.json)");
    assert!((worst.write_unavailable_seconds - 0.5).abs() < 1e-9);
    let d = r.write_unavailable_seconds.unwrap();
    assert_eq!((d.samples, d.min, d.max), (3, 0.3, 0.5));
    // Each member's failover timed from member 0's trigger.
    let first = r.members[2].drills[0]
        .trigger_to_first_failed_write_seconds
        .unwrap();
    assert!((first - 0.05).abs() < 1e-6, "{first}");
    assert_eq!(r.members[1].baselines[0].successes, 1000);
    assert_eq!(
        (r.counts.transactions, r.counts.unknown_outcome_writes),
        (18_000, 6)
    );
    assert_eq!(r.counts.errors["connection_closed"], 30);

    // Member 1 missed the objective: FAIL, naming it.
    let strict = [
        pod(0, "d1", 0.3, 0, Some("450ms")),
        pod(1, "d1", 0.5, 0, None),
        pod(2, "d1", 0.4, 0, None),
    ];
    let v = verdict(&strict);
    assert_eq!(v.verdict, VerdictKind::Fail, "{v}");
    assert_eq!(v.failed.len(), 1, "{v}");
    assert!(
        v.failed[0].starts_with("member 1 (pod-1.json): trigger 1: writes unavailable for 0.500 s"),
        "{v}"
    );

    // Lost writes add up over the members, each verified by its own.
    let lossy = [
        pod(0, "d1", 0.3, 0, Some("120s")),
        pod(1, "d1", 0.5, 2, None),
        pod(2, "d1", 0.4, 1, None),
    ];
    let v = verdict(&lossy);
    assert_eq!(v.verdict, VerdictKind::Fail, "{v}");
    assert_eq!(
        v.failed,
        ["3 acknowledged writes lost, over the RPO objective (at most 0)"]
    );
}

#[test]
fn foreign_missing_or_absent_members_make_it_invalid_naming_them() {
    // A summary of another drill: left out, named.
    let pods = [
        pod(0, "d1", 0.3, 0, Some("120s")),
        pod(1, "d1", 0.5, 0, None),
        pod(2, "other", 0.4, 0, None),
    ];
    let r = merge(&inputs(&pods));
    let v = r.verdict.clone();
    assert_eq!(v.verdict, VerdictKind::Invalid, "{v}");
    assert_eq!(r.exit_code(), 4);
    assert_eq!(r.members.len(), 2);
    assert_eq!(r.not_merged[0].file, "pod-2.json");
    assert!(
        v.invalid[0].contains("member 2 (pod-2.json) not merged: drill id \"other\""),
        "{v}"
    );
    assert!(v.invalid[1].contains("member 2 of 3 is missing"), "{v}");

    // No triggering member.
    let v = verdict(&[pod(1, "d1", 0.5, 0, None), pod(2, "d1", 0.4, 0, None)]);
    assert_eq!(v.verdict, VerdictKind::Invalid, "{v}");
    assert!(
        v.invalid
            .iter()
            .any(|r| r.contains("member 0 of 3 is missing")),
        "{v}"
    );
    assert!(
        v.invalid
            .iter()
            .any(|r| r.contains("no summary holds the failover trigger")),
        "{v}"
    );

    // Two triggering members; a duplicated member (two processes given index 1).
    let mut second_one = pod(1, "d1", 0.4, 0, None);
    second_one["run_id"] = json!(201);
    let v = verdict(&[
        pod(0, "d1", 0.3, 0, Some("120s")),
        pod(1, "d1", 0.5, 0, Some("120s")),
        second_one,
    ]);
    assert!(
        v.invalid
            .iter()
            .any(|r| r.contains("member 1 appears 2 times")),
        "{v}"
    );
    assert!(
        v.invalid
            .iter()
            .any(|r| r.contains("each ran failover triggers")),
        "{v}"
    );
}

#[test]
fn a_member_not_running_at_the_trigger_or_unhealthy_before_it_is_named() {
    // Its clock 100 s ahead: its run does not cover the trigger, its baseline is empty.
    let mut late = pod(2, "d1", 0.4, 0, None);
    late["started_at"] = json!(crate::clock::rfc3339(T0 + 100.0));
    let buckets: Vec<Value> = (100..160)
        .map(|s| json!({"at": T0 as u64 + s, "attempts": 100, "successes": 100}))
        .collect();
    late["timeline"]["buckets"] = json!(buckets);
    let v = verdict(&[
        pod(0, "d1", 0.3, 0, Some("120s")),
        pod(1, "d1", 0.5, 0, None),
        late,
    ]);
    assert_eq!(v.verdict, VerdictKind::Invalid, "{v}");
    assert!(
        v.invalid
            .iter()
            .any(|r| r.starts_with("member 2 (pod-2.json): its run")
                && r.contains("clock disagrees")),
        "{v}"
    );
    assert!(
        v.invalid
            .iter()
            .any(|r| r.contains("no load recorded in the baseline window")),
        "{v}"
    );

    // Failed writes in member 1's baseline.
    let mut sick = pod(1, "d1", 0.5, 0, None);
    sick["timeline"]["buckets"][25]["errors"] = json!([[0, 3]]);
    let v = verdict(&[
        pod(0, "d1", 0.3, 0, Some("120s")),
        sick,
        pod(2, "d1", 0.4, 0, None),
    ]);
    assert_eq!(v.verdict, VerdictKind::Invalid, "{v}");
    assert!(
        v.invalid[0].starts_with(
            "member 1 (pod-1.json): the baseline before trigger 1 was unhealthy: 3 failed writes"
        ),
        "{v}"
    );
}

#[test]
fn clocks_that_disagree_through_the_server_make_it_invalid() {
    let clock = |offset: f64| json!({"offset_seconds": offset, "uncertainty_seconds": 0.001});
    let mut pods = members();
    pods[0]["server_clock"] = clock(10.0);
    pods[1]["server_clock"] = clock(10.05);
    pods[2]["server_clock"] = clock(9.5);
    let r = merge(&inputs(&pods));
    let v = r.verdict.clone();
    assert_eq!(v.verdict, VerdictKind::Invalid, "{v}");
    assert_eq!(v.invalid.len(), 1, "{v}");
    assert!(
        v.invalid[0].starts_with("member 2 (pod-2.json): its clock was +0.500 s (± 0.002 s)"),
        "{v}"
    );
    // 50 ms behind is within the tolerance, and reported.
    let behind = r.members[1].clock_ahead_seconds.unwrap();
    assert!((behind + 0.05).abs() < 1e-9, "{behind}");
    assert_eq!(r.members[0].clock_ahead_seconds, Some(0.0));
}

#[test]
fn a_members_measured_clock_offset_is_taken_out_of_its_figures() {
    let clock = |offset: f64| json!({"offset_seconds": offset, "uncertainty_seconds": 0.001});
    let mut pods = members();
    // Member 1's clock runs 0.08 s ahead: its outage, at T0 + 30.05 on member 0's clock,
    // is dated T0 + 30.13 on its own.
    pods[1]["server_clock"] = clock(-0.08);
    let outage = &mut pods[1]["outages"][0];
    let f = |v: &Value| v.as_f64().expect("a number");
    let (start, end) = (
        f(&outage["start_unix"]) + 0.08,
        f(&outage["end_unix"]) + 0.08,
    );
    (outage["start_unix"], outage["end_unix"]) = (json!(start), json!(end));
    let r = merge(&inputs(&pods));
    let first_failed = r.members[1].drills[0].trigger_to_first_failed_write_seconds;
    assert!(
        first_failed.is_some_and(|s| (s - 0.05).abs() < 1e-6),
        "{first_failed:?}"
    );
    assert_eq!(r.verdict.verdict, VerdictKind::Pass);
}

#[test]
fn a_member_that_crashed_after_writing_makes_the_drill_invalid_naming_it() {
    let mut pods = members();
    pods[2]["crashed"] = "a lane panicked 6 times".into();
    let v = verdict(&pods);
    assert_eq!(v.verdict, VerdictKind::Invalid, "{v}");
    assert!(
        v.invalid
            .iter()
            .any(|i| i == "member 2 (pod-2.json) crashed: a lane panicked 6 times"),
        "{v}"
    );
    // Its own summary says so too: a canary's is judged invalid, a drill's pass is.
    let mut own: Summary = serde_json::from_value(pod(0, "d1", 0.3, 0, Some("120s"))).unwrap();
    assert_eq!(
        own.verdict(&own.drill.clone().unwrap().objectives).verdict,
        VerdictKind::Pass
    );
    own.crashed_with("a task ended".into());
    let objectives = own.drill.clone().unwrap().objectives;
    assert_eq!(own.verdict(&objectives).verdict, VerdictKind::Invalid);
    let mut canary: Summary = serde_json::from_value(pod(1, "d1", 0.5, 0, None)).unwrap();
    canary.crashed_with("a task ended".into());
    assert_eq!(canary.verdict(&objectives).verdict, VerdictKind::Invalid);
    assert!(canary.to_string().contains("CRASHED       a task ended"));
    // The run and `pgdrill report` on its summary give one verdict: a drill that missed its
    // RTO and crashed is invalid; one that lost writes fails, crashed or not.
    for (lost, rto, trigger_failed, kind) in [
        (0, "100ms", false, VerdictKind::Invalid),
        (3, "120s", false, VerdictKind::Fail),
        // Two reasons: the crash and the trigger's exit, in one order in both.
        (0, "120s", true, VerdictKind::Invalid),
    ] {
        let mut one = pod(0, "d1", 0.3, lost, Some(rto));
        one["member"] = Value::Null;
        if trigger_failed {
            one["drill"]["triggers"][0]["outcome"] = json!({"kind": "exited_non_zero", "code": 1});
            // As the run judged itself before it crashed.
            one["drill"]["verdict"] = serde_json::to_value(verdict(&[one.clone()])).unwrap();
        }
        let mut run: Summary = serde_json::from_value(one).unwrap();
        run.crashed_with("a task ended".into());
        let objectives = run.drill.clone().unwrap().objectives;
        assert_eq!(run.verdict(&objectives).verdict, kind, "{rto}");
        let written = serde_json::to_value(&run).unwrap();
        let merged = verdict(&[written]);
        assert_eq!(merged.verdict, kind, "{rto}");
        // In the same words.
        assert_eq!(merged.invalid, run.verdict(&objectives).invalid, "{rto}");
    }
}

#[test]
fn a_merge_names_what_it_cannot_time_or_count() {
    let has = |v: &Verdict, text: &str| v.invalid.iter().any(|r| r.contains(text));
    // One measuring member's summary alone: not a canary, its trigger member is missing.
    let r = merge(&inputs(&[pod(1, "d1", 0.3, 0, None)]));
    let v = r.verdict.clone();
    assert!(has(&v, "member 0 of 3 is missing"), "{v}");
    assert!(has(&v, "no summary holds the failover trigger"), "{v}");
    assert_eq!(r.exit_code(), 4);
    // A clock not read, or read too roughly to time a failover by.
    let mut pods = members();
    pods[1]["server_clock"] = Value::Null;
    pods[2]["server_clock"] = json!({"offset_seconds": -2.0, "uncertainty_seconds": 2.5});
    let v = verdict(&pods);
    assert!(
        has(&v, "member 1 (pod-1.json): its clock could not be compared"),
        "{v}"
    );
    assert!(
        has(
            &v,
            "member 2 (pod-2.json): its clock was +2.000 s ± 2.501 s"
        ),
        "{v}"
    );
    // The trigger run by a member other than 0.
    let v = verdict(&[
        pod(0, "d1", 0.3, 0, None),
        pod(1, "d1", 0.5, 0, Some("120s")),
        pod(2, "d1", 0.4, 0, None),
    ]);
    assert!(
        has(&v, "member 1 (pod-1.json) ran the failover trigger"),
        "{v}"
    );
    // The same run given twice, members without indices: left out, not counted twice.
    let mut pods: Vec<Value> = [
        pod(0, "d1", 0.3, 0, Some("120s")),
        pod(1, "d1", 0.5, 0, None),
    ]
    .into_iter()
    .map(|mut p| {
        p["member"] = Value::Null;
        p
    })
    .collect();
    pods.push(pods[1].clone());
    let r = merge(&inputs(&pods));
    assert_eq!(r.not_merged.len(), 1, "{:?}", r.not_merged);
    assert!(r.not_merged[0].reason.contains("given twice"));
    assert_eq!(r.counts.transactions, 12_000);
    assert_eq!(r.exit_code(), 4);
}

#[test]
fn a_baseline_window_shorter_than_a_second_reads_the_seconds_it_overlaps() {
    let mut pods = members();
    // `--failover-after 2s` leaves a window of a second, not on whole seconds; the second
    // the trigger falls in holds the failover's failures, and is not the baseline's.
    pods[0]["drill"]["baselines"][0]["from_unix"] = json!(T0 + 29.3);
    pods[0]["drill"]["baselines"][0]["to_unix"] = json!(T0 + 30.2);
    pods[1]["timeline"]["buckets"][30]["errors"] = json!([[0, 3]]);
    let r = merge(&inputs(&pods));
    let v = r.verdict.clone();
    assert_eq!(v.verdict, VerdictKind::Pass, "{v}");
    assert_eq!(r.members[1].baselines[0].successes, 100);
    // A long drill's member: its seconds before the trigger merged into one minute that runs
    // past it. The minute that ends by the trigger is read, not the one with the failover.
    let minute = |at: f64, errors: u32| {
        json!({"at": at as u64, "span": 60, "attempts": 6000, "successes": 6000 - errors,
               "errors": [[0, errors]]})
    };
    pods[1]["timeline"]["buckets"] = json!([minute(T0 - 60.0, 0), minute(T0, 10)]);
    let v = verdict(&pods);
    assert!(!v.invalid.iter().any(|r| r.contains("unhealthy")), "{v}");
}
