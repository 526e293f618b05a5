//! The verdict's rules on synthetic drills.

use std::time::Duration;

use super::*;
use crate::drill::timing::attribute;
use crate::drill::timing::tests::{outage, trigger};
use crate::drill::trigger::TriggerOutcome;

const T0: f64 = 1_800_000_000.0;

fn objectives(rto_ms: u64) -> Objectives {
    Objectives {
        rto: Duration::from_millis(rto_ms),
        max_lost_writes: 0,
    }
}

fn healthy(trigger: usize, to: f64) -> Baseline {
    Baseline {
        trigger,
        from_unix: to - 10.0,
        to_unix: to,
        successes: 10_000,
        errors: 0,
        target_rate: Some(1000.0),
    }
}

struct Case {
    triggers: Vec<TriggerRun>,
    baselines: Vec<Baseline>,
    outages: Vec<OutageRecord>,
    earlier: EarlierOutages,
    primaries: Vec<f64>,
    lost: u64,
    planned: u32,
    unverified_changes: usize,
}

impl Case {
    /// One forced failover: trigger at +30 s, outage 0.3 s, new primary at +0.45 s.
    fn forced() -> Case {
        Case {
            triggers: vec![trigger(1, T0 + 30.0, 0.2)],
            baselines: vec![healthy(1, T0 + 30.0)],
            outages: vec![outage(1, T0 + 30.1, Some(0.3), 0)],
            earlier: EarlierOutages::default(),
            primaries: vec![T0 + 30.45],
            lost: 0,
            planned: 1,
            unverified_changes: 0,
        }
    }

    fn judge(&self, objectives: Objectives) -> Verdict {
        let drills = attribute(
            &self.triggers,
            &self.baselines,
            &self.outages,
            (&self.primaries, &[]),
            T0 + 60.0,
        );
        let run = MemberFacts {
            name: None,
            baselines: &self.baselines,
            drills: &drills,
            outages: &self.outages,
            earlier: &self.earlier,
            unverified_changes: self.unverified_changes,
            lost_writes_at_least: lower_bound(&self.outages, &self.earlier, &[]),
            run_end_unix: T0 + 60.0,
        };
        judge_members(
            &objectives,
            self.planned,
            &self.triggers,
            &[run],
            self.lost,
            Vec::new(),
        )
    }
}

#[test]
fn a_failover_within_the_objective_passes_and_fails_with_a_tight_one() {
    let case = Case::forced();
    let v = case.judge(objectives(120_000));
    assert_eq!(v.verdict, VerdictKind::Pass, "{v}");
    assert!(v.failed.is_empty() && v.invalid.is_empty());
    assert_eq!(v.verdict.exit_code(), 0);

    let v = case.judge(objectives(1));
    assert_eq!(v.verdict, VerdictKind::Fail, "{v}");
    assert_eq!(v.verdict.exit_code(), EXIT_FAIL);
    assert_eq!(
        v.failed,
        ["trigger 1: writes unavailable for 0.300 s (outage 1), over the RTO objective (0.001 s)"]
    );
    assert_eq!(
        v.to_string(),
        "FAIL\n  - trigger 1: writes unavailable for 0.300 s (outage 1), over the RTO objective (0.001 s)"
    );

    // Judged as printed, to the millisecond: 0.3004 s is 0.300 s, within 300 ms.
    let mut case = Case::forced();
    case.outages[0].write_unavailable_seconds = Some(0.3004);
    assert_eq!(case.judge(objectives(300)).verdict, VerdictKind::Pass);
    case.outages[0].write_unavailable_seconds = Some(0.3006);
    assert_eq!(case.judge(objectives(300)).verdict, VerdictKind::Fail);
}

#[test]
fn a_failed_trigger_or_an_unhealthy_baseline_makes_it_invalid() {
    let mut case = Case::forced();
    case.triggers[0].outcome = TriggerOutcome::ExitedNonZero {
        code: Some(1),
        signal: None,
    };
    let v = case.judge(objectives(1));
    assert_eq!(v.verdict, VerdictKind::Invalid, "{v}");
    assert_eq!(v.verdict.exit_code(), EXIT_INVALID);
    assert_eq!(v.invalid, ["trigger 1 exited with status 1"]);
    // The missed objective is still reported.
    assert_eq!(v.failed.len(), 1);

    let mut case = Case::forced();
    case.baselines[0].errors = 250;
    case.baselines[0].successes = 0;
    let v = case.judge(objectives(120_000));
    assert_eq!(v.verdict, VerdictKind::Invalid, "{v}");
    assert!(
        v.invalid[0].contains("baseline before trigger 1 was unhealthy"),
        "{v}"
    );

    let mut case = Case::forced();
    case.triggers[0].outcome = TriggerOutcome::TimedOut {
        after_seconds: 600.0,
    };
    case.outages.clear();
    case.primaries.clear();
    let v = case.judge(objectives(120_000));
    assert_eq!(v.verdict, VerdictKind::Invalid, "{v}");
    assert_eq!(v.invalid.len(), 1, "a timed-out trigger is one reason: {v}");
    assert!(v.invalid[0].contains("--failover-timeout"), "{v}");
}

#[test]
fn lost_writes_fail_even_an_invalid_drill() {
    let mut case = Case::forced();
    case.triggers[0].outcome = TriggerOutcome::CannotStart {
        reason: "az: No such file or directory".into(),
    };
    case.lost = 3;
    let v = case.judge(objectives(120_000));
    assert_eq!(v.verdict, VerdictKind::Fail, "{v}");
    assert_eq!(
        v.failed,
        ["3 acknowledged writes lost, over the RPO objective (at most 0)"]
    );
    assert_eq!(v.invalid.len(), 1);
    // Within a tolerant objective, it passes.
    let mut case = Case::forced();
    case.lost = 3;
    let v = case.judge(Objectives {
        rto: Duration::from_secs(60),
        max_lost_writes: 3,
    });
    assert_eq!(v.verdict, VerdictKind::Pass, "{v}");
    // Counted as a lower bound: within the objective it cannot pass, over it fails saying so.
    case.outages[0].lost_writes_at_least = true;
    let v = case.judge(Objectives {
        rto: Duration::from_secs(60),
        max_lost_writes: 3,
    });
    assert_eq!(v.verdict, VerdictKind::Invalid, "{v}");
    assert!(
        v.invalid[0].contains("3 acknowledged writes counted lost are a lower bound"),
        "{v}"
    );
    let v = case.judge(objectives(120_000));
    assert_eq!(v.verdict, VerdictKind::Fail, "{v}");
    assert!(v.failed[0].starts_with("at least 3 acknowledged"), "{v}");
}

#[test]
fn nothing_happening_or_an_unfinished_outage_is_not_a_pass() {
    let mut case = Case::forced();
    case.outages.clear();
    case.primaries.clear();
    let v = case.judge(objectives(120_000));
    assert_eq!(v.verdict, VerdictKind::Invalid, "{v}");
    assert!(
        v.invalid[0].contains("failover may not have happened"),
        "{v}"
    );

    // A transparent switchover: a new primary, no outage over the threshold.
    let mut case = Case::forced();
    case.outages.clear();
    assert_eq!(case.judge(objectives(1)).verdict, VerdictKind::Pass);

    // Still down at the end of the run (T0 + 60 s): 29.9 s so far.
    let mut case = Case::forced();
    case.outages = vec![outage(1, T0 + 30.1, None, 0)];
    let v = case.judge(objectives(120_000));
    assert_eq!(v.verdict, VerdictKind::Invalid, "{v}");
    assert!(v.invalid[0].contains("run ended during outage 1"), "{v}");
    let v = case.judge(objectives(10_000));
    assert_eq!(v.verdict, VerdictKind::Fail, "{v}");
    assert!(v.failed[0].contains("29.900 s after outage 1 began"), "{v}");

    // As the record says it at shutdown: still open, with its duration until the load
    // stopped (not an ended outage whose writes were never verified).
    let mut case = Case::forced();
    case.outages = vec![OutageRecord {
        write_unavailable_seconds: Some(9.989),
        ..outage(1, T0 + 30.1, None, 0)
    }];
    let v = case.judge(objectives(3_000));
    assert_eq!(v.verdict, VerdictKind::Fail, "{v}");
    assert!(v.failed[0].contains("9.989 s after outage 1 began"), "{v}");
    assert!(v.invalid.is_empty(), "{v}");
    let v = case.judge(objectives(120_000));
    assert_eq!(v.verdict, VerdictKind::Invalid, "{v}");
    assert!(
        v.invalid[0].contains("shorter than the RTO objective"),
        "{v}"
    );

    // Verification never finished: invalid, and a missed RTO is still reported.
    let mut case = Case::forced();
    case.outages[0].lost_writes = None;
    let v = case.judge(objectives(120_000));
    assert_eq!(v.verdict, VerdictKind::Invalid, "{v}");
    assert!(v.invalid[0].contains("never verified"), "{v}");
    let v = case.judge(objectives(100));
    assert_eq!((v.failed.len(), v.invalid.len()), (1, 1), "{v}");
}

#[test]
fn repeated_drills_judge_every_failover_and_count_the_triggers() {
    let case = Case {
        triggers: vec![
            trigger(1, T0 + 30.0, 0.2),
            trigger(2, T0 + 90.0, 0.2),
            trigger(3, T0 + 150.0, 0.2),
        ],
        baselines: vec![
            healthy(1, T0 + 30.0),
            healthy(2, T0 + 90.0),
            healthy(3, T0 + 150.0),
        ],
        outages: vec![
            outage(1, T0 + 30.1, Some(0.3), 0),
            outage(2, T0 + 90.1, Some(2.5), 0),
            // A second outage after trigger 3's failover (flapping).
            outage(3, T0 + 150.1, Some(0.2), 0),
            outage(4, T0 + 155.0, Some(1.5), 0),
        ],
        primaries: vec![T0 + 30.5, T0 + 92.7, T0 + 150.4],
        lost: 0,
        earlier: EarlierOutages::default(),
        planned: 4,
        unverified_changes: 0,
    };
    let v = case.judge(objectives(1_000));
    assert_eq!(v.verdict, VerdictKind::Invalid, "{v}");
    assert_eq!(
        v.invalid,
        ["only 3 of 4 failover triggers finished before the run ended"]
    );
    assert_eq!(v.failed.len(), 2, "{v}");
    assert!(
        v.failed[0].starts_with("trigger 2: writes unavailable for 2.500 s"),
        "{v}"
    );
    assert!(
        v.failed[1].starts_with("trigger 3: writes unavailable for 1.500 s (outage 4)"),
        "{v}"
    );
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["verdict"], "invalid");
    assert_eq!(json["failed"].as_array().unwrap().len(), 2);
}

#[test]
fn exit_codes_do_not_clash_with_usage_or_runtime_errors() {
    let all = [VerdictKind::Pass, VerdictKind::Fail, VerdictKind::Invalid];
    let codes: Vec<u8> = all.iter().map(|k| k.exit_code()).collect();
    assert_eq!(codes, [0, 3, 4]);
    assert!(!codes.contains(&1) && !codes.contains(&2));
    for kind in all {
        assert!(crate::telemetry::metrics::DRILL_VERDICTS.contains(&kind.as_str()));
    }
}

#[test]
fn a_canary_has_each_outage_judged_by_the_same_rules() {
    let canary = |outages: Vec<OutageRecord>| Case {
        triggers: Vec::new(),
        baselines: Vec::new(),
        outages,
        earlier: EarlierOutages::default(),
        primaries: Vec::new(),
        lost: 0,
        planned: 0,
        unverified_changes: 0,
    };
    let v = canary(Vec::new()).judge(objectives(1_000));
    assert_eq!(v.verdict, VerdictKind::Pass, "{v}");

    let v = canary(vec![
        outage(1, T0 + 5.0, Some(0.3), 0),
        outage(2, T0 + 20.0, Some(2.5), 0),
    ])
    .judge(objectives(1_000));
    assert_eq!(v.verdict, VerdictKind::Fail, "{v}");
    assert_eq!(
        v.failed,
        ["writes unavailable for 2.500 s (outage 2), over the RTO objective (1 s)"]
    );

    let mut unverified = outage(1, T0 + 5.0, Some(0.3), 0);
    unverified.lost_writes = None;
    let v = canary(vec![unverified]).judge(objectives(1_000));
    assert_eq!(v.verdict, VerdictKind::Invalid, "{v}");
    assert_eq!(
        v.invalid,
        ["the acknowledged writes before outage 1 were never verified"]
    );

    // A primary change without an outage (a pooler's switch) whose check never answered:
    // as unverified as an outage's, for a canary and for a drill.
    let mut case = canary(Vec::new());
    case.unverified_changes = 1;
    let v = case.judge(objectives(1_000));
    assert_eq!(v.verdict, VerdictKind::Invalid, "{v}");
    let never = "the acknowledged writes before 1 primary change(s) without an outage were \
                 never verified";
    assert_eq!(v.invalid, [never]);
    let mut case = Case::forced();
    case.unverified_changes = 1;
    let v = case.judge(objectives(120_000));
    assert_eq!(
        (v.verdict, &v.invalid[..]),
        (VerdictKind::Invalid, &[never.to_string()][..])
    );

    // Open at the end of the run (T0 + 60 s): 0.5 s cannot be judged, 10 s failed.
    let v = canary(vec![outage(1, T0 + 59.5, None, 0)]).judge(objectives(1_000));
    assert_eq!(v.verdict, VerdictKind::Invalid, "{v}");
    let v = canary(vec![outage(1, T0 + 50.0, None, 0)]).judge(objectives(1_000));
    assert_eq!(v.verdict, VerdictKind::Fail, "{v}");
    assert!(v.failed[0].contains("10.000 s after outage 1 began"), "{v}");
}

#[test]
fn outages_whose_records_were_let_go_still_count() {
    let earlier = EarlierOutages {
        count: 5,
        checked_writes: 500,
        unverified: 0,
        longest_write_unavailable_seconds: 9.0,
        longest_outage: 3,
        ..EarlierOutages::default()
    };
    let mut canary = Case {
        triggers: Vec::new(),
        baselines: Vec::new(),
        outages: vec![outage(6, T0 + 50.0, Some(0.3), 0)],
        earlier,
        primaries: Vec::new(),
        lost: 0,
        planned: 0,
        unverified_changes: 0,
    };
    let v = canary.judge(objectives(10_000));
    assert_eq!(v.verdict, VerdictKind::Pass, "{v}");
    let v = canary.judge(objectives(1_000));
    assert_eq!(v.verdict, VerdictKind::Fail, "{v}");
    assert_eq!(
        v.failed,
        [
            "writes unavailable for 9.000 s (outage 3, the longest of outages 1-5), over the \
          RTO objective (1 s)"
        ]
    );
    canary.earlier.unverified = 2;
    let v = canary.judge(objectives(10_000));
    assert_eq!(v.verdict, VerdictKind::Invalid, "{v}");
    assert!(v.invalid[0].contains("before 2 of outages 1-5"), "{v}");

    // A drill cannot attribute outages it no longer holds.
    let mut drill = Case::forced();
    drill.earlier.count = 1;
    let v = drill.judge(objectives(120_000));
    assert_eq!(v.verdict, VerdictKind::Invalid, "{v}");
    assert!(v.invalid[0].contains("of 2 outages were kept"), "{v}");
    // A hand-edited summary's count does not wrap (it would name 0 outages).
    drill.earlier.count = usize::MAX;
    let v = drill.judge(objectives(120_000));
    let all = format!("of {} outages were kept", usize::MAX);
    assert!(v.invalid[0].contains(&all), "{v}");
}
