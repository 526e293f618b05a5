//! One verdict from the summaries of a drill run by several processes (`pgdrill report A.json
//! B.json …`): the triggers from the member that ran them, each member's outages timed from them,
//! and the same rules ([`judge_members`]) over all of them. Nothing is merged silently: whatever
//! does not fit (another drill's summary, a missing, duplicated or misplaced member, a member not
//! running around a trigger) makes the drill INVALID, naming it. Merging one summary gives the
//! verdict the run gave itself.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::drill::timing::{attribute, Baseline, Distribution, DrillTiming};
use crate::drill::trigger::TriggerRun;
use crate::drill::verdict::{judge_members, MemberFacts, Verdict, VerdictKind};
use crate::drill::{DrillReport, Objectives};
use crate::report::summary::{Member, RunCounts, Summary, DEFAULT_OBJECTIVES};
use crate::telemetry::timeline::{Bucket, Timeline};

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
    /// How far this member's clock was ahead of the triggering member's (negative:
    /// behind), through the database server's clock, which both read at the end.
    pub clock_ahead_seconds: Option<f64>,
    /// The two readings' uncertainty (half their round trips) added up.
    pub clock_uncertainty_seconds: Option<f64>,
    pub started_at: String,
    pub duration_seconds: f64,
    pub target_rate: Option<f64>,
    #[serde(flatten)]
    pub counts: RunCounts,
    pub outages: usize,
    /// The load before each trigger as this member saw it.
    pub baselines: Vec<Baseline>,
    /// Its outages attributed to the triggers and timed from them.
    pub drills: Vec<DrillTiming>,
    /// The longest write unavailability attributed to a trigger.
    pub worst_write_unavailable_seconds: Option<f64>,
    /// That outage had not ended when the run did: the figure is its time so far.
    pub worst_still_open: bool,
    /// An outage attributed to a trigger (the worst or another) had not ended then.
    pub outage_still_open: bool,
    /// Its writes before an outage were never verified: its lost writes are unknown, not 0.
    pub lost_writes_unverified: bool,
    /// Its lost writes are a lower bound, as its own summary says.
    pub lost_writes_at_least: bool,
    /// What it left unverified (outages, primary changes), as its own summary says it.
    pub unverified: Vec<String>,
}

/// The member with the longest write unavailability.
#[derive(Debug, Clone, Serialize)]
pub struct Worst {
    pub member: String,
    pub write_unavailable_seconds: f64,
    /// Its outage had not ended when its run did: the time so far.
    pub still_open: bool,
}

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
    /// The members' counts added up; lost writes each verified by its own member.
    #[serde(flatten)]
    pub counts: RunCounts,
    /// A lone canary's is the one its page shows; its exit status is 0 all the same.
    pub verdict: Verdict,
    /// One summary of a canary run (no member of a drill by several, no trigger).
    pub canary: bool,
}

impl FleetReport {
    /// 0 pass (and a lone canary, whatever its verdict), 3 fail, 4 invalid, as for one process.
    pub fn exit_code(&self) -> u8 {
        match self.canary {
            true => 0,
            false => self.verdict.verdict.exit_code(),
        }
    }
}

pub struct Input {
    pub file: String,
    pub summary: Summary,
}

/// How far a member's run may end before a trigger it should have seen, or start after
/// it, before it counts as not running then (its start is taken before it connects).
const SPAN_SLACK: f64 = 1.0;

/// Clocks further apart than this (beyond the measurement's uncertainty) disagree: the
/// figures timed from the trigger would be off by as much.
pub const CLOCK_TOLERANCE: f64 = 0.1;

/// Merges the summaries of one drill and judges it.
pub fn merge(inputs: &[Input]) -> FleetReport {
    let mut inputs: Vec<&Input> = inputs.iter().collect();
    let mut invalid = Vec::new();
    let single = inputs.len() == 1;
    let lone_canary =
        single && inputs[0].summary.member.is_none() && inputs[0].summary.drill.is_none();
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
    let mut runs = std::collections::HashMap::new();
    if !single {
        // By position: two files of one name (a/m0.json, b/m0.json) are still two.
        let mut position = 0;
        inputs.retain(|i| {
            let (run, at) = (i.summary.run_id, position);
            position += 1;
            let (first_at, first) = *runs.entry(run).or_insert((at, i.file.as_str()));
            let reason = match (&i.summary.drill_id, &drill_id) {
                _ if first_at != at => format!("the same run ({run}) as {first}, given twice"),
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
    invalid.extend(member_problems(&inputs, single, &name));

    let mut trigger_inputs = inputs.clone();
    trigger_inputs.retain(|i| i.summary.drill.is_some());
    let trigger_input = match trigger_inputs.as_slice() {
        [] if lone_canary => None,
        [] => {
            invalid.push(
                "no summary holds the failover trigger: the triggering member (member 0) is \
                 missing or its summary was not given"
                    .to_string(),
            );
            None
        }
        [one] => {
            if let Some(m) = one.summary.member.filter(|m| m.index != 0) {
                invalid.push(format!(
                    "{} ran the failover trigger: member 0 triggers, member {} measures only",
                    name(one),
                    m.index
                ));
            }
            Some(*one)
        }
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

    let members: Vec<MemberFigures> = inputs
        .iter()
        .map(|i| figures(i, name(i), trigger_input, drill, &mut invalid))
        .collect();
    // Without the triggering member's reading, no other member can be timed: said once, of it.
    if let Some(t) = trigger_input.filter(|t| t.summary.server_clock.is_none() && inputs.len() > 1)
    {
        invalid.push(format!(
            "{}: the triggering member has no reading of the database server's clock (the \
             server did not answer at the end of its run, or an older pgdrill), so no other \
             member's failover can be timed from its trigger",
            name(t)
        ));
    }

    let counts: RunCounts = members.iter().map(|m| m.counts.clone()).sum();
    let verdict = match drill {
        Some(d) => {
            let facts: Vec<MemberFacts<'_>> = (members.iter().zip(&inputs))
                .map(|(m, i)| MemberFacts {
                    name: (!single).then_some(m.name.as_str()),
                    baselines: &m.baselines,
                    drills: &m.drills,
                    ..i.summary.facts()
                })
                .collect();
            // 0: a summary older than the field; as many as ran were planned.
            let planned = match d.planned_triggers {
                0 => u32::try_from(d.triggers.len()).unwrap_or(u32::MAX),
                n => n,
            };
            judge_members(
                &d.objectives,
                planned,
                &d.triggers,
                &facts,
                counts.lost_writes,
                invalid,
            )
        }
        // A canary is judged as its page judges it, against its own objectives; its exit
        // status stays 0 ([`FleetReport::exit_code`]), as the run's.
        None if lone_canary => {
            let s = &inputs[0].summary;
            s.verdict(&s.objectives.unwrap_or(DEFAULT_OBJECTIVES))
        }
        // Nothing to judge the members by, which is itself the reason (INVALID).
        None => Verdict::decide(false, Vec::new(), invalid),
    };
    let each = |f: fn(&DrillTiming) -> Option<f64>| {
        Distribution::of(members.iter().flat_map(|m| m.drills.iter().filter_map(f)))
    };
    let worsts = (members.iter()).filter_map(|m| Some((m, m.worst_write_unavailable_seconds?)));
    let worst = worsts.clone().max_by(|a, b| a.1.total_cmp(&b.1));
    let worst = worst.map(|(m, w)| Worst {
        member: m.name.clone(),
        write_unavailable_seconds: w,
        still_open: m.worst_still_open,
    });
    FleetReport {
        drill_id,
        write_unavailable_seconds: Distribution::of(worsts.map(|(_, w)| w)),
        worst,
        trigger_to_first_failed_write_seconds: each(|d| d.trigger_to_first_failed_write_seconds),
        trigger_to_new_primary_write_seconds: each(|d| d.trigger_to_new_primary_write_seconds),
        counts,
        trigger_member: trigger_input.map(name),
        command: drill.map(|d| d.command.clone()),
        objectives: drill.map(|d| d.objectives),
        triggers: drill.map(|d| d.triggers.clone()).unwrap_or_default(),
        not_merged,
        members,
        verdict,
        canary: lone_canary,
    }
}

const MAX_NAMED_MISSING: usize = 10;

/// Members that are missing, duplicated, or disagree on how many there are.
fn member_problems(
    inputs: &[&Input],
    single: bool,
    name: &dyn Fn(&Input) -> String,
) -> Vec<String> {
    let crashed = |i: &&Input| {
        let error = i.summary.crashed.as_ref()?;
        // One summary alone is worded as its run worded it (`Summary::crashed_with`).
        let who = if single { "the run".into() } else { name(i) };
        Some(format!("{who} crashed: {error}"))
    };
    let mut invalid: Vec<String> = inputs.iter().filter_map(crashed).collect();
    let counted: Vec<(&Input, Member)> = inputs
        .iter()
        .filter_map(|&i| i.summary.member.map(|m| (i, m)))
        .collect();
    if counted.is_empty() {
        return invalid;
    }
    for i in inputs.iter().filter(|i| i.summary.member.is_none()) {
        let who = name(i);
        invalid.push(format!("{who} has no --member-index, unlike the others"));
    }
    let of = counted[0].1.of;
    for (i, m) in counted.iter().filter(|(_, m)| m.of != of) {
        let (who, says, first) = (name(i), m.of, name(counted[0].0));
        invalid.push(format!(
            "{who} says the drill has {says} members, {first} says {of}"
        ));
    }
    let mut by_index: BTreeMap<u32, Vec<&Input>> = BTreeMap::new();
    for (i, m) in &counted {
        by_index.entry(m.index).or_default().push(i);
    }
    // Named one by one up to a few: `of` comes from a file and can be anything.
    let present = by_index.range(..of).count() as u64;
    let missing = (0..of).filter(|k| !by_index.contains_key(k));
    for index in missing.take(MAX_NAMED_MISSING) {
        invalid.push(format!(
            "member {index} of {of} is missing: no summary from it (it failed, or its \
             summary was not collected)"
        ));
    }
    let unnamed = (u64::from(of) - present).saturating_sub(MAX_NAMED_MISSING as u64);
    if unnamed > 0 {
        invalid.push(format!("{unnamed} more of the {of} members are missing"));
    }
    for (index, with) in &by_index {
        match with.as_slice() {
            _ if *index >= of => invalid.push(format!(
                "{} says it is member {index} of {of}: indices count from 0",
                name(with[0])
            )),
            [_] => {}
            more => {
                let files: Vec<&str> = more.iter().map(|i| i.file.as_str()).collect();
                let (times, files) = (more.len(), files.join(", "));
                invalid.push(format!("member {index} appears {times} times: {files}"))
            }
        }
    }
    invalid
}

/// One member's figures: the trigger member's own drills and baselines; for the others,
/// their outages and timeline over the trigger member's triggers and baseline windows.
fn figures(
    i: &Input,
    name: String,
    trigger_input: Option<&Input>,
    drill: Option<&DrillReport>,
    invalid: &mut Vec<String>,
) -> MemberFigures {
    let s = &i.summary;
    let is_trigger = trigger_input.is_some_and(|t| std::ptr::eq(t, i));
    let reference = trigger_input.and_then(|t| t.summary.server_clock);
    let skew = reference.zip(s.server_clock).map(|(r, own)| {
        let ahead = r.offset_seconds - own.offset_seconds;
        (ahead, r.uncertainty_seconds + own.uncertainty_seconds)
    });
    match skew {
        _ if is_trigger || reference.is_none() => {}
        None => invalid.push(format!(
            "{name}: its clock could not be compared with the triggering member's (a summary \
             without a reading of the database server's clock: the server did not answer at \
             the end of a run, or an older pgdrill), so its failover cannot be timed from \
             the trigger"
        )),
        Some((ahead, within)) if ahead.abs() - within > CLOCK_TOLERANCE => invalid.push(format!(
            "{name}: its clock was {ahead:+.3} s (± {within:.3} s) off the triggering member's, \
             read through the database server's clock: more than {CLOCK_TOLERANCE} s, so its \
             failover cannot be timed from the trigger"
        )),
        Some((ahead, within)) if within > CLOCK_TOLERANCE => invalid.push(format!(
            "{name}: its clock was {ahead:+.3} s ± {within:.3} s off the triggering member's: \
             read with more uncertainty than {CLOCK_TOLERANCE} s (slow round trips to the \
             database server), so its failover cannot be timed from the trigger"
        )),
        Some(_) => {}
    }
    let (baselines, drills) = match (is_trigger, drill) {
        (true, Some(d)) => (d.baselines.clone(), d.drills.clone()),
        (_, Some(d)) => {
            // The trigger member's times on this member's clock, by the offset measured: the
            // figures are then differences on one clock, only its uncertainty left.
            let ahead = skew.map_or(0.0, |(ahead, _)| ahead);
            let (mut triggers, mut windows) = (d.triggers.clone(), d.baselines.clone());
            for w in &mut windows {
                (w.from_unix, w.to_unix) = (w.from_unix + ahead, w.to_unix + ahead);
            }
            let (start, end) = s.span_unix();
            for t in &mut triggers {
                (t.started_unix, t.ended_unix) = (t.started_unix + ahead, t.ended_unix + ahead);
                if t.started_unix < start - SPAN_SLACK || t.started_unix > end + SPAN_SLACK {
                    invalid.push(format!(
                        "{name}: its run ({} for {:.1} s) does not cover trigger {} at {}: it \
                         ran at another time, or its clock disagrees",
                        s.started_at,
                        s.duration_seconds,
                        t.index,
                        crate::clock::rfc3339(t.started_unix)
                    ));
                }
            }
            let baselines = windows
                .iter()
                .filter_map(|w| {
                    baseline(&s.timeline, w, s.target_rate).or_else(|| {
                        invalid.push(format!(
                            "{name}: no load recorded in the baseline window before trigger {}: \
                             it was not running then, or its clock disagrees",
                            w.trigger
                        ));
                        None
                    })
                })
                .collect();
            // A summary older than its own list: the verifications its event log still holds.
            let losses = match s.losses_without_outage.is_empty() {
                true => s.timeline.events.losses_without_outage(),
                false => s.losses_without_outage.clone(),
            };
            let drills = attribute(
                &triggers,
                &windows,
                &s.outages,
                (&s.new_primary_writes_unix, &losses),
                end,
            );
            (baselines, drills)
        }
        _ => (Vec::new(), Vec::new()),
    };
    let attributed = || crate::drill::timing::attributed(&drills, &s.outages);
    let worst = attributed()
        .filter_map(|o| Some((o.write_unavailable_seconds?, o.end_unix.is_none())))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let outage_still_open = attributed().any(|o| o.end_unix.is_none());
    MemberFigures {
        name,
        file: i.file.clone(),
        run_id: s.run_id,
        drill_id: s.drill_id.clone(),
        member: s.member,
        ran_trigger: is_trigger,
        own_verdict: drill.filter(|_| is_trigger).map(|d| d.verdict.verdict),
        clock_ahead_seconds: skew.map(|(ahead, _)| ahead),
        clock_uncertainty_seconds: skew.map(|(_, within)| within),
        started_at: s.started_at.clone(),
        duration_seconds: s.duration_seconds,
        target_rate: s.target_rate,
        counts: s.counts.clone(),
        outages: s.outage_count(),
        baselines,
        drills,
        worst_write_unavailable_seconds: worst.map(|(w, _)| w),
        worst_still_open: worst.is_some_and(|(_, open)| open),
        outage_still_open,
        lost_writes_unverified: s.lost_writes_unverified(),
        lost_writes_at_least: s.lost_writes_at_least(),
        unverified: s.unverified_outages(),
    }
}

/// The load a member's timeline holds within the trigger member's baseline window: the whole
/// buckets inside it, else (a window shorter than its buckets: a second, or a minute once
/// coarsened) those it overlaps that end by the trigger, else the last that ends by it; never one
/// running past the trigger, which holds the failover's own failures. `None` when it holds none.
fn baseline(t: &Timeline, window: &Baseline, target_rate: Option<f64>) -> Option<Baseline> {
    let from = window.from_unix.ceil() as u64;
    let to = window.to_unix.floor() as u64;
    let mut inside: Vec<_> = t.iter().filter(|b| b.at >= from && b.end() <= to).collect();
    let before = |b: &&Bucket| (b.end() as f64) <= window.to_unix;
    if inside.is_empty() {
        let overlaps = |b: &&Bucket| (b.end() as f64) > window.from_unix;
        inside = t.iter().filter(before).filter(overlaps).collect();
    }
    if inside.is_empty() {
        inside = t.iter().filter(before).last().into_iter().collect();
    }
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

#[cfg(test)]
#[path = "merge_tests.rs"]
pub(crate) mod tests;
