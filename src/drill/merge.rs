//! One verdict from the summaries of a drill run by several processes (`pgdrill report
//! A.json B.json …`): the trigger(s) from the member that ran them, each member's outages
//! timed from them, and the same rules ([`judge_members`]) over all of them.
//!
//! Nothing is merged silently: a summary of another drill is left out and named, and a
//! missing, duplicated or misplaced member, a second triggering member or none, a member
//! that was not running (or whose clock disagrees) around a trigger make the drill INVALID
//! with the member's name. Merging one summary gives the verdict the run gave itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::drill::fleet::Member;
use crate::drill::stats::Distribution;
use crate::drill::timing::{attribute, Baseline, DrillTiming, OutageFacts};
use crate::drill::trigger::TriggerRun;
use crate::drill::verdict::{judge_members, MemberFacts, Verdict, VerdictKind};
use crate::drill::Objectives;
use crate::telemetry::timeline::Timeline;

/// What the merge reads of a summary (field names as the summary JSON).
#[derive(Debug, Clone, Deserialize)]
pub struct MemberSummary {
    pub run_id: i64,
    #[serde(default)]
    pub drill_id: Option<String>,
    #[serde(default)]
    pub member: Option<Member>,
    pub started_at: String,
    pub duration_seconds: f64,
    #[serde(default)]
    pub target_rate: Option<f64>,
    pub transactions: u64,
    pub successes: u64,
    #[serde(default)]
    pub errors: BTreeMap<String, u64>,
    #[serde(default)]
    pub lost_writes: u64,
    #[serde(default)]
    pub unknown_outcome_writes: u64,
    #[serde(default)]
    pub unknown_outcome_committed: u64,
    #[serde(default)]
    pub unknown_outcome_not_committed: u64,
    #[serde(default)]
    pub unknown_outcome_unresolved: u64,
    #[serde(default)]
    pub new_primary_writes_unix: Vec<f64>,
    #[serde(default)]
    pub outages: Vec<OutageFacts>,
    #[serde(default)]
    pub timeline: Timeline,
    #[serde(default)]
    pub drill: Option<MemberDrill>,
}

/// The `drill` object of the summary of the member that ran the trigger.
#[derive(Debug, Clone, Deserialize)]
pub struct MemberDrill {
    pub command: String,
    pub objectives: Objectives,
    /// Absent in summaries older than the field: as many as ran.
    #[serde(default)]
    pub planned_triggers: Option<u32>,
    pub triggers: Vec<TriggerRun>,
    pub baselines: Vec<Baseline>,
    pub drills: Vec<DrillTiming>,
    pub verdict: Verdict,
}

/// One member's figures in the merged report.
#[derive(Debug, Clone, Serialize)]
pub struct MemberFigures {
    /// `member 2 (pod-2.json)`, or the file name without `--member-index`.
    pub name: String,
    pub file: String,
    pub run_id: i64,
    pub drill_id: Option<String>,
    pub member: Option<Member>,
    pub ran_trigger: bool,
    /// The verdict the triggering member gave its own run.
    pub own_verdict: Option<VerdictKind>,
    pub started_at: String,
    pub duration_seconds: f64,
    pub target_rate: Option<f64>,
    pub transactions: u64,
    pub successes: u64,
    pub errors: BTreeMap<String, u64>,
    pub lost_writes: u64,
    pub unknown_outcome_writes: u64,
    pub unknown_outcome_committed: u64,
    pub unknown_outcome_not_committed: u64,
    pub unknown_outcome_unresolved: u64,
    pub outages: usize,
    /// The load before each trigger as this member saw it (from its timeline, or the
    /// trigger member's own).
    pub baselines: Vec<Baseline>,
    /// Its outages attributed to the triggers and timed from them.
    pub drills: Vec<DrillTiming>,
    /// The longest write unavailability attributed to a trigger.
    pub worst_write_unavailable_seconds: Option<f64>,
}

/// The member with the longest write unavailability.
#[derive(Debug, Clone, Serialize)]
pub struct Worst {
    pub member: String,
    pub write_unavailable_seconds: f64,
}

/// A summary left out of the merge, and why.
#[derive(Debug, Clone, Serialize)]
pub struct NotMerged {
    pub file: String,
    pub reason: String,
}

/// The merged JSON (`pgdrill report … --json`).
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    pub drill_id: Option<String>,
    pub members: Vec<MemberFigures>,
    pub not_merged: Vec<NotMerged>,
    /// The member whose summary holds the triggers.
    pub trigger_member: Option<String>,
    pub command: Option<String>,
    pub objectives: Option<Objectives>,
    pub triggers: Vec<TriggerRun>,
    /// Each member's longest attributed write unavailability, across members.
    pub write_unavailable_seconds: Option<Distribution>,
    pub worst: Option<Worst>,
    pub trigger_to_first_failed_write_seconds: Option<Distribution>,
    pub trigger_to_new_primary_write_seconds: Option<Distribution>,
    pub transactions: u64,
    pub successes: u64,
    pub errors: BTreeMap<String, u64>,
    /// The sum of the members' lost writes, each verified by its own member.
    pub lost_writes: u64,
    pub unknown_outcome_writes: u64,
    pub unknown_outcome_committed: u64,
    pub unknown_outcome_not_committed: u64,
    pub unknown_outcome_unresolved: u64,
    /// `None`: one summary of a canary run (no trigger, no verdict, as the run itself).
    pub verdict: Option<Verdict>,
}

impl FleetReport {
    /// 0 pass (and a lone canary), 3 fail, 4 invalid: as the run of one process.
    pub fn exit_code(&self) -> u8 {
        self.verdict.as_ref().map_or(0, |v| v.verdict.exit_code())
    }
}

/// A summary read from `file`.
pub struct Input {
    pub file: String,
    pub summary: MemberSummary,
}

/// How far a member's run may end before a trigger it should have seen, or start after
/// it, before it counts as not running then (its start is taken before it connects).
const SPAN_SLACK: f64 = 1.0;

/// Merges the summaries of one drill and judges it.
pub fn merge(mut inputs: Vec<Input>) -> FleetReport {
    let mut invalid = Vec::new();
    let single = inputs.len() == 1;
    inputs.sort_by_key(|i| i.summary.member.map_or(u32::MAX, |m| m.index));
    let name = |i: &Input| match i.summary.member {
        Some(m) => format!("member {} ({})", m.index, i.file),
        None => i.file.clone(),
    };

    // The trigger member decides which drill this is; summaries of another are left out.
    let drill_id = inputs
        .iter()
        .find(|i| i.summary.drill.is_some())
        .or(inputs.first())
        .and_then(|i| i.summary.drill_id.clone());
    let mut not_merged = Vec::new();
    if !single {
        inputs.retain(|i| {
            let reason = match (&i.summary.drill_id, &drill_id) {
                (None, _) => {
                    "no drill id (--drill-id): it cannot be told apart from another drill's"
                        .to_string()
                }
                (Some(id), Some(ours)) if id != ours => {
                    format!("drill id {id:?} is not this drill's ({ours:?})")
                }
                _ => return true,
            };
            invalid.push(format!("{} not merged: {reason}", name(i)));
            not_merged.push(NotMerged {
                file: i.file.clone(),
                reason,
            });
            false
        });
    }
    invalid.extend(member_problems(&inputs, &name));

    let trigger_inputs: Vec<&Input> = inputs
        .iter()
        .filter(|i| i.summary.drill.is_some())
        .collect();
    let trigger_input = match trigger_inputs.as_slice() {
        [] if single => None,
        [] => {
            invalid.push(
                "no summary holds the failover trigger: the triggering member (member 0) is \
                 missing or its summary was not given"
                    .to_string(),
            );
            None
        }
        [one] => Some(*one),
        more => {
            let names: Vec<String> = more.iter().map(|i| name(i)).collect();
            invalid.push(format!(
                "{} each ran failover triggers: one member of a drill triggers, the others \
                 measure only",
                names.join(", ")
            ));
            Some(more[0])
        }
    };
    let drill = trigger_input.and_then(|i| i.summary.drill.as_ref());
    let triggers: Vec<TriggerRun> = drill.map(|d| d.triggers.clone()).unwrap_or_default();

    let members: Vec<MemberFigures> = inputs
        .iter()
        .map(|i| {
            let is_trigger = trigger_input.is_some_and(|t| std::ptr::eq(t, i));
            figures(i, name(i), is_trigger, drill, &triggers, &mut invalid)
        })
        .collect();

    let lost: u64 = members.iter().map(|m| m.lost_writes).sum();
    let verdict = match drill {
        Some(d) => {
            let facts: Vec<MemberFacts<'_>> = members
                .iter()
                .zip(&inputs)
                .map(|(m, i)| MemberFacts {
                    name: (!single).then_some(m.name.as_str()),
                    baselines: &m.baselines,
                    drills: &m.drills,
                    outages: &i.summary.outages,
                })
                .collect();
            let planned = d
                .planned_triggers
                .unwrap_or(u32::try_from(d.triggers.len()).unwrap_or(u32::MAX));
            Some(judge_members(
                &d.objectives,
                planned,
                &triggers,
                &facts,
                lost,
                invalid,
            ))
        }
        // One canary summary: no verdict, as the run itself had none.
        None if single => None,
        // Nothing to judge the members by, which is itself the reason.
        None => Some(Verdict {
            verdict: VerdictKind::Invalid,
            failed: Vec::new(),
            invalid,
        }),
    };
    let trigger_member = trigger_input.map(name);
    totals(
        drill_id,
        members,
        not_merged,
        trigger_member,
        drill,
        triggers,
        verdict,
    )
}

/// Members that are missing, duplicated, or disagree on how many there are.
fn member_problems(inputs: &[Input], name: &dyn Fn(&Input) -> String) -> Vec<String> {
    let mut invalid = Vec::new();
    let counted: Vec<(&Input, Member)> = inputs
        .iter()
        .filter_map(|i| i.summary.member.map(|m| (i, m)))
        .collect();
    if counted.is_empty() {
        return invalid;
    }
    for i in inputs.iter().filter(|i| i.summary.member.is_none()) {
        invalid.push(format!(
            "{} has no --member-index, unlike the others",
            name(i)
        ));
    }
    let of = counted[0].1.of;
    for (i, m) in &counted {
        if m.of != of {
            invalid.push(format!(
                "{} says the drill has {} members, {} says {of}",
                name(i),
                m.of,
                name(counted[0].0)
            ));
        }
    }
    for index in 0..of {
        let with: Vec<&Input> = counted
            .iter()
            .filter(|(_, m)| m.index == index)
            .map(|(i, _)| *i)
            .collect();
        match with.as_slice() {
            [] => invalid.push(format!(
                "member {index} of {of} is missing: no summary from it (it failed, or its \
                 summary was not collected)"
            )),
            [_] => {}
            more => invalid.push(format!(
                "member {index} appears {} times: {}",
                more.len(),
                more.iter()
                    .map(|i| i.file.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
    invalid
}

/// One member's figures: the trigger member's own drills and baselines; for the others
/// their outages attributed to the trigger member's triggers, and baselines from their
/// timeline over the trigger member's baseline windows.
fn figures(
    i: &Input,
    name: String,
    is_trigger: bool,
    drill: Option<&MemberDrill>,
    triggers: &[TriggerRun],
    invalid: &mut Vec<String>,
) -> MemberFigures {
    let s = &i.summary;
    let (baselines, drills) = match (is_trigger, drill) {
        (true, Some(d)) => (d.baselines.clone(), d.drills.clone()),
        (_, Some(d)) => {
            let (start, end) = run_span(s);
            for t in triggers {
                if t.started_unix < start - SPAN_SLACK || t.started_unix > end + SPAN_SLACK {
                    invalid.push(format!(
                        "{name}: its run ({} for {:.1} s) does not cover trigger {} at {}: it \
                         ran at another time, or its clock disagrees",
                        s.started_at,
                        s.duration_seconds,
                        t.index,
                        super::rfc3339(t.started_unix)
                    ));
                }
            }
            let baselines = d
                .baselines
                .iter()
                .filter_map(|w| match baseline(&s.timeline, w, s.target_rate) {
                    Some(b) => Some(b),
                    None => {
                        invalid.push(format!(
                            "{name}: no load recorded in the baseline window before trigger {}: \
                             it was not running then, or its clock disagrees",
                            w.trigger
                        ));
                        None
                    }
                })
                .collect();
            let drills = attribute(triggers, &s.outages, &s.new_primary_writes_unix, end);
            (baselines, drills)
        }
        _ => (Vec::new(), Vec::new()),
    };
    let worst = drills
        .iter()
        .filter_map(|d| d.write_unavailable_seconds)
        .reduce(f64::max);
    MemberFigures {
        name,
        file: i.file.clone(),
        run_id: s.run_id,
        drill_id: s.drill_id.clone(),
        member: s.member,
        ran_trigger: is_trigger,
        own_verdict: drill.filter(|_| is_trigger).map(|d| d.verdict.verdict),
        started_at: s.started_at.clone(),
        duration_seconds: s.duration_seconds,
        target_rate: s.target_rate,
        transactions: s.transactions,
        successes: s.successes,
        errors: s.errors.clone(),
        lost_writes: s.lost_writes,
        unknown_outcome_writes: s.unknown_outcome_writes,
        unknown_outcome_committed: s.unknown_outcome_committed,
        unknown_outcome_not_committed: s.unknown_outcome_not_committed,
        unknown_outcome_unresolved: s.unknown_outcome_unresolved,
        outages: s.outages.len(),
        baselines,
        drills,
        worst_write_unavailable_seconds: worst,
    }
}

/// Start and end of a member's run, Unix seconds on its clock: from `started_at`, else
/// from its timeline.
fn run_span(s: &MemberSummary) -> (f64, f64) {
    let start = humantime::parse_rfc3339(&s.started_at)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
        .or_else(|| s.timeline.span().map(|(a, _)| a as f64))
        .unwrap_or(0.0);
    (start, start + s.duration_seconds)
}

/// The load a member's timeline holds within the trigger member's baseline window (whole
/// seconds inside it); `None` when it holds none.
fn baseline(t: &Timeline, window: &Baseline, target_rate: Option<f64>) -> Option<Baseline> {
    let from = window.from_unix.ceil() as u64;
    let to = window.to_unix.floor() as u64;
    let inside: Vec<_> = t.iter().filter(|b| b.at >= from && b.end() <= to).collect();
    let (first, last) = (inside.first()?, inside.last()?);
    Some(Baseline {
        trigger: window.trigger,
        from_unix: first.at as f64,
        to_unix: last.end() as f64,
        successes: inside.iter().map(|b| u64::from(b.successes)).sum(),
        errors: inside.iter().map(|b| b.errors_total()).sum(),
        target_rate,
    })
}

fn totals(
    drill_id: Option<String>,
    members: Vec<MemberFigures>,
    not_merged: Vec<NotMerged>,
    trigger_member: Option<String>,
    drill: Option<&MemberDrill>,
    triggers: Vec<TriggerRun>,
    verdict: Option<Verdict>,
) -> FleetReport {
    let each = |f: fn(&DrillTiming) -> Option<f64>| {
        Distribution::of(members.iter().flat_map(|m| m.drills.iter().filter_map(f)))
    };
    let worst = members
        .iter()
        .filter_map(|m| m.worst_write_unavailable_seconds.map(|w| (m, w)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(m, w)| Worst {
            member: m.name.clone(),
            write_unavailable_seconds: w,
        });
    let mut errors = BTreeMap::new();
    for (class, n) in members.iter().flat_map(|m| &m.errors) {
        *errors.entry(class.clone()).or_insert(0) += n;
    }
    let sum = |f: fn(&MemberFigures) -> u64| members.iter().map(f).sum::<u64>();
    FleetReport {
        drill_id,
        write_unavailable_seconds: Distribution::of(
            members
                .iter()
                .filter_map(|m| m.worst_write_unavailable_seconds),
        ),
        worst,
        trigger_to_first_failed_write_seconds: each(|d| d.trigger_to_first_failed_write_seconds),
        trigger_to_new_primary_write_seconds: each(|d| d.trigger_to_new_primary_write_seconds),
        transactions: sum(|m| m.transactions),
        successes: sum(|m| m.successes),
        errors,
        lost_writes: sum(|m| m.lost_writes),
        unknown_outcome_writes: sum(|m| m.unknown_outcome_writes),
        unknown_outcome_committed: sum(|m| m.unknown_outcome_committed),
        unknown_outcome_not_committed: sum(|m| m.unknown_outcome_not_committed),
        unknown_outcome_unresolved: sum(|m| m.unknown_outcome_unresolved),
        trigger_member,
        command: drill.map(|d| d.command.clone()),
        objectives: drill.map(|d| d.objectives),
        triggers,
        not_merged,
        members,
        verdict,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{json, Value};

    use super::*;
    use crate::drill::timing::tests::trigger;
    use crate::drill::{DrillArgs, DrillReport, RunFacts};

    const T0: f64 = 1_800_000_000.0;

    /// A member's summary as JSON: 60 s at 100/s from T0, one outage from T0 + 30.05 s
    /// lasting `unavailable`; with `rto` the member ran the trigger at T0 + 30 s.
    fn pod(index: u32, drill: &str, unavailable: f64, lost: u64, rto: Option<&str>) -> Value {
        let start = T0 + 30.05;
        let outage = OutageFacts {
            index: 1,
            start_unix: start,
            end_unix: Some(start + unavailable),
            write_unavailable_seconds: Some(unavailable),
            lost_writes: Some(lost),
            rpo_seconds: Some(0.0),
        };
        let buckets: Vec<Value> = (0..60)
            .map(|s| json!({"at": T0 as u64 + s, "attempts": 100, "successes": 100}))
            .collect();
        let mut v = json!({
            "run_id": 100 + i64::from(index),
            "drill_id": drill,
            "member": {"index": index, "of": 3},
            "started_at": crate::drill::rfc3339(T0),
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
        });
        if let Some(rto) = rto {
            let config = DrillArgs {
                failover_command: Some("pg_ctl promote -D /x".into()),
                failover_shell: false,
                failover_after: None,
                failovers: None,
                failover_every: None,
                failover_timeout: "1m".parse().unwrap(),
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
                    new_primary_writes_unix: vec![start + unavailable],
                    lost_writes_in_run: lost,
                    run_end_unix: T0 + 60.0,
                },
            );
            v["drill"] = serde_json::to_value(report).unwrap();
        }
        v
    }

    fn inputs(pods: &[Value]) -> Vec<Input> {
        pods.iter()
            .enumerate()
            .map(|(n, v)| Input {
                file: format!("pod-{n}.json"),
                summary: serde_json::from_value(v.clone()).unwrap(),
            })
            .collect()
    }

    fn verdict(pods: &[Value]) -> Verdict {
        merge(inputs(pods)).verdict.expect("a verdict")
    }

    #[test]
    fn one_summary_merges_into_the_verdict_the_run_gave_itself() {
        for rto in ["120s", "100ms"] {
            let mut one = pod(0, "d1", 0.3, 0, Some(rto));
            one["member"] = Value::Null;
            let own: Verdict = serde_json::from_value(one["drill"]["verdict"].clone()).unwrap();
            assert_eq!(verdict(&[one]), own, "{rto}");
        }
        let mut canary = pod(0, "d1", 0.3, 0, None);
        canary["member"] = Value::Null;
        let merged = merge(inputs(&[canary]));
        assert_eq!(merged.verdict, None);
        assert_eq!(merged.exit_code(), 0);
        // One member's summary of a drill run by three: the others are missing.
        let v = verdict(&[pod(0, "d1", 0.3, 0, Some("120s"))]);
        assert_eq!(v.verdict, VerdictKind::Invalid, "{v}");
        assert!(v.invalid[0].contains("member 1 of 3 is missing"), "{v}");
    }

    #[test]
    fn three_members_give_one_verdict_with_each_ones_figures_and_the_worst() {
        let pods = [
            pod(0, "d1", 0.3, 0, Some("120s")),
            pod(1, "d1", 0.5, 0, None),
            pod(2, "d1", 0.4, 0, None),
        ];
        let r = merge(inputs(&pods));
        let v = r.verdict.clone().unwrap();
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
        assert_eq!((r.transactions, r.unknown_outcome_writes), (18_000, 6));
        assert_eq!(r.errors["connection_closed"], 30);

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
            v.failed[0]
                .starts_with("member 1 (pod-1.json): trigger 1: writes unavailable for 0.500 s"),
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
        let r = merge(inputs(&pods));
        let v = r.verdict.clone().unwrap();
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

        // Two triggering members; a duplicated member.
        let v = verdict(&[
            pod(0, "d1", 0.3, 0, Some("120s")),
            pod(1, "d1", 0.5, 0, Some("120s")),
            pod(1, "d1", 0.4, 0, None),
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
        late["started_at"] = json!(crate::drill::rfc3339(T0 + 100.0));
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
        assert!(v.invalid[0].starts_with("member 1 (pod-1.json): the baseline before trigger 1 was unhealthy: 3 failed writes"), "{v}");
    }
}
