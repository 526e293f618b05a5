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
use crate::telemetry::timeline::LossWithoutOutage;

/// What to judge a drill against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Objectives {
    /// Longest acceptable write unavailability of each failover.
    #[serde(rename = "rto_seconds", with = "seconds")]
    pub rto: Duration,
    /// Most acknowledged writes that may be lost in the run.
    pub max_lost_writes: u64,
}

/// A duration as seconds, read back by `pgdrill report`.
mod seconds {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = <f64 as serde::Deserialize>::deserialize(d)?;
        Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom)
    }
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
    /// A loss it counted is a lower bound ([`lower_bound`]).
    pub lost_writes_at_least: bool,
    /// When its run ended (Unix seconds): how long an outage still open then had lasted.
    pub run_end_unix: f64,
}

/// Whether a run's lost writes are a lower bound: a verification's oldest write checked was
/// lost too, and older ones had gone out of `--verify-window` unchecked (in an outage, one
/// whose record was let go, or a primary change without one).
pub fn lower_bound(
    outages: &[OutageRecord],
    earlier: &EarlierOutages,
    lone: &[LossWithoutOutage],
) -> bool {
    earlier.lost_writes_at_least
        || outages.iter().any(|o| o.lost_writes_at_least)
        || lone.iter().any(|l| l.at_least)
}

/// "at least " before a figure that is a lower bound.
pub fn at_least(lower_bound: bool) -> &'static str {
    if lower_bound {
        "at least "
    } else {
        ""
    }
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

    let lower_bound = members.iter().any(|m| m.lost_writes_at_least);
    if lost_writes > objectives.max_lost_writes {
        failed.push(format!(
            "{}{lost_writes} acknowledged writes lost, over the RPO objective (at most {})",
            at_least(lower_bound),
            objectives.max_lost_writes
        ));
    } else if lower_bound {
        // Within the objective as counted, but more may have been lost.
        invalid.push(format!(
            "the {lost_writes} acknowledged writes counted lost are a lower bound: a \
             verification's oldest write checked was lost too, and older ones had gone out \
             of --verify-window unchecked; a longer window checks further back"
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
            ..Judge::default()
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
        let verdict = match (lost_decides, invalid.is_empty(), failed.is_empty()) {
            (true, _, _) | (false, true, false) => VerdictKind::Fail,
            (false, false, _) => VerdictKind::Invalid,
            (false, true, true) => VerdictKind::Pass,
        };
        Verdict {
            verdict,
            failed,
            invalid,
        }
    }
}

/// Rules 2 and 3 for one member's outages against the RTO objective (`rto` seconds).
#[derive(Default)]
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
#[path = "verdict_tests.rs"]
mod tests;
