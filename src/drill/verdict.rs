//! PASS, FAIL or INVALID, with the reasons, and the exit status a pipeline gates on: one
//! engine for drills, canaries (each outage judged on its own) and `pgdrill report`.
//!
//! The rules, in order (docs/drills.md): 1. more acknowledged writes lost than
//! `--rpo-objective` allows FAIL, whatever else happened; 2. anything that makes the
//! measurement untrustworthy is INVALID; 3. an outage attributed to a trigger over
//! `--rto-objective` (or still going after longer) FAILs; 4. otherwise PASS. The reasons of
//! every rule that applied are listed, so nothing hides behind the one that decided.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::exceeds;
use crate::drill::timing::{attributed, Baseline, DrillTiming};
use crate::drill::trigger::{TriggerOutcome, TriggerRun};
use crate::failover::outages::{EarlierOutages, OutageRecord, MAX_OUTAGES};

/// What to judge a drill against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Objectives {
    /// Longest acceptable write unavailability of each failover.
    #[serde(
        rename = "rto_seconds",
        serialize_with = "seconds",
        deserialize_with = "from_seconds"
    )]
    pub rto: Duration,
    /// Most acknowledged writes that may be lost in the run.
    pub max_lost_writes: u64,
}

/// Reads what [`seconds`] wrote (a summary read back by `pgdrill report`).
pub(crate) fn from_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = <f64 as serde::Deserialize>::deserialize(d)?;
    Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom)
}

pub(crate) fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Exit status of a run whose drill missed an objective (1 and 2 are runtime and usage
/// errors). A canary's exit status stays 0: its verdict is shown, not gated on.
pub const EXIT_FAIL: u8 = 3;
/// Exit status of a run whose drill could not be judged (see the module rules).
pub const EXIT_INVALID: u8 = 4;

labelled! {
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum VerdictKind {
        Pass = "pass",
        Fail = "fail",
        Invalid = "invalid",
    }
}

impl VerdictKind {
    pub fn exit_code(self) -> u8 {
        match self {
            VerdictKind::Pass => 0,
            VerdictKind::Fail => EXIT_FAIL,
            VerdictKind::Invalid => EXIT_INVALID,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub verdict: VerdictKind,
    /// Objectives missed.
    pub failed: Vec<String>,
    /// Why the drill could not be judged.
    pub invalid: Vec<String>,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.verdict.as_str().to_uppercase())?;
        for reason in self.failed.iter().chain(&self.invalid) {
            write!(f, "\n  - {reason}")?;
        }
        Ok(())
    }
}

/// What one process measured of a drill, for [`judge_members`].
#[derive(Debug, Clone, Copy)]
pub struct MemberFacts<'a> {
    /// Put before each of its reasons; `None` for the process that is the whole drill.
    pub name: Option<&'a str>,
    /// The load before each trigger, as this process saw it.
    pub baselines: &'a [Baseline],
    /// Its outages attributed to the triggers (see [`crate::drill::attribute`]).
    pub drills: &'a [DrillTiming],
    pub outages: &'a [OutageRecord],
    pub earlier: &'a EarlierOutages,
    /// Primary changes without an outage whose verification never answered.
    pub unverified_changes: usize,
    /// When its run ended (Unix seconds): how long an outage still open then had lasted.
    pub run_end_unix: f64,
}

/// Judges a drill measured by one process or by several with the same rules: rule 1 on the
/// writes lost by all, rule 2 with `invalid` (what is wrong with the set of processes), the
/// triggers and each member's baselines, rules 2 and 3 for each member's outages.
pub fn judge_members(
    objectives: &Objectives,
    planned: u32,
    triggers: &[TriggerRun],
    members: &[MemberFacts<'_>],
    lost_writes: u64,
    mut invalid: Vec<String>,
) -> Verdict {
    let rto = objectives.rto.as_secs_f64();
    let mut failed = Vec::new();

    if lost_writes > objectives.max_lost_writes {
        failed.push(format!(
            "{lost_writes} acknowledged writes lost, over the RPO objective (at most {})",
            objectives.max_lost_writes
        ));
    }
    let lost_decides = !failed.is_empty();

    // Rule 2 for the triggers themselves: too few ran, or one failed.
    if triggers.len() < planned as usize {
        invalid.push(format!(
            "only {} of {planned} failover triggers finished before the run ended",
            triggers.len()
        ));
    }
    for t in triggers {
        if let Some(problem) = t.outcome.problem() {
            invalid.push(format!("trigger {} {problem}", t.index));
        }
    }
    for m in members {
        let named = |reason: String| match m.name {
            Some(name) => format!("{name}: {reason}"),
            None => reason,
        };
        invalid.extend(m.baselines.iter().filter_map(Baseline::problem).map(named));
        let mut j = Judge {
            rto,
            failed: Vec::new(),
            invalid: Vec::new(),
        };
        for d in m.drills {
            j.drill(d, triggers, m);
        }
        // A canary (no trigger planned): every outage is judged on its own.
        if planned == 0 {
            j.earlier(m.earlier);
            for o in m.outages {
                j.outage("", o, m.run_end_unix);
            }
        } else if m.earlier.count > 0 {
            j.invalid.push(format!(
                "only the latest {MAX_OUTAGES} of {} outages were kept: the triggers cannot \
                 all be timed",
                m.earlier.count.saturating_add(m.outages.len())
            ));
        }
        // As an outage never verified: "0 lost" would claim what was never looked at.
        if m.unverified_changes > 0 {
            j.invalid.push(format!(
                "the acknowledged writes before {} primary change(s) without an outage were \
                 never verified",
                m.unverified_changes
            ));
        }
        failed.extend(j.failed.into_iter().map(named));
        invalid.extend(j.invalid.into_iter().map(named));
    }

    Verdict::decide(lost_decides, failed, invalid)
}

impl Verdict {
    /// Rule 1 first (`lost_decides`), then rule 2, then the objectives missed.
    pub fn decide(lost_decides: bool, failed: Vec<String>, invalid: Vec<String>) -> Verdict {
        let verdict = if lost_decides {
            VerdictKind::Fail
        } else if !invalid.is_empty() {
            VerdictKind::Invalid
        } else if !failed.is_empty() {
            VerdictKind::Fail
        } else {
            VerdictKind::Pass
        };
        Verdict {
            verdict,
            failed,
            invalid,
        }
    }
}

/// Rules 2 and 3 for one member's outages against the RTO objective (`rto` seconds).
struct Judge {
    rto: f64,
    failed: Vec<String>,
    invalid: Vec<String>,
}

impl Judge {
    /// Did a failover follow the trigger, and how did each outage attributed to it end.
    fn drill(&mut self, d: &DrillTiming, triggers: &[TriggerRun], m: &MemberFacts<'_>) {
        let ok = triggers
            .iter()
            .find(|t| t.index == d.trigger)
            .is_some_and(|t| t.outcome == TriggerOutcome::Ok);
        if ok && d.outage.is_none() && d.trigger_to_new_primary_write_seconds.is_none() {
            self.invalid.push(format!(
                "trigger {}: neither an outage nor a new primary followed it; the failover may \
                 not have happened (or happened after the run)",
                d.trigger
            ));
        }
        for o in attributed(std::slice::from_ref(d), m.outages) {
            self.outage(&format!("trigger {}: ", d.trigger), o, m.run_end_unix);
        }
    }

    /// The outages whose records were let go: the longest decides the RTO.
    fn earlier(&mut self, e: &EarlierOutages) {
        let (rto, seconds) = (self.rto, e.longest_write_unavailable_seconds);
        if e.count > 0 && exceeds(seconds, rto) {
            self.failed.push(format!(
                "writes unavailable for {seconds:.3} s (outage {}, the longest of outages \
                 1-{}), over the RTO objective ({rto} s)",
                e.longest_outage, e.count
            ));
        }
        if e.unverified > 0 {
            self.invalid.push(format!(
                "the acknowledged writes before {} of outages 1-{} were never verified",
                e.unverified, e.count
            ));
        }
    }

    /// One outage; `who` starts each reason.
    fn outage(&mut self, who: &str, o: &OutageRecord, run_end_unix: f64) {
        let (rto, index) = (self.rto, o.index);
        match (o.end_unix, o.write_unavailable_seconds) {
            (Some(_), Some(seconds)) => {
                if exceeds(seconds, rto) {
                    self.failed.push(format!(
                        "{who}writes unavailable for {seconds:.3} s (outage {index}), over the \
                         RTO objective ({rto} s)"
                    ));
                }
                if o.lost_writes.is_none() {
                    self.invalid.push(format!(
                        "{who}the acknowledged writes before outage {index} were never verified"
                    ));
                }
            }
            // Still open when the load stopped: how long it had lasted by then decides.
            (_, so_far) => {
                let lasted = so_far.unwrap_or((run_end_unix - o.start_unix).max(0.0));
                if exceeds(lasted, rto) {
                    self.failed.push(format!(
                        "{who}writes had not come back when the load stopped, {lasted:.3} s \
                         after outage {index} began, over the RTO objective ({rto} s)"
                    ));
                } else {
                    self.invalid.push(format!(
                        "{who}the run ended during outage {index}, {lasted:.3} s after it \
                         began, shorter than the RTO objective ({rto} s): it could not be \
                         judged; run longer"
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
}
