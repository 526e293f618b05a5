//! Drills as code: pgdrill runs the failover trigger itself, times the failover from it, and
//! judges the drill against objectives. All but the trigger runner is pure.

pub mod command;
pub mod daemon;
pub mod plan;
pub mod timing;
pub mod trigger;
pub mod verdict;

use serde::{Deserialize, Serialize};

use crate::clock::rfc3339;
use crate::failover::outages::{EarlierOutages, OutageRecord};
use crate::telemetry::timeline::LossWithoutOutage;

pub use daemon::{DrillRun, Sources};
pub use plan::TriggerConfig;
pub use timing::{attribute, Baseline, DrillDistribution, DrillTiming};
pub use trigger::TriggerRun;
pub use verdict::{judge_members, MemberFacts, Objectives, Verdict};

/// Everything the summary JSON and the report show about the drills of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillReport {
    /// The command as configured, passwords removed.
    pub command: String,
    pub shell: bool,
    pub objectives: Objectives,
    /// `--failovers`; 0 only in a summary older than the field (a schedule has at least one).
    #[serde(default)]
    pub planned_triggers: u32,
    pub triggers: Vec<TriggerRun>,
    pub baselines: Vec<Baseline>,
    pub drills: Vec<DrillTiming>,
    pub distribution: DrillDistribution,
    pub verdict: Verdict,
}

/// What the daemon observed during a run with triggers, for [`DrillReport::build`].
#[derive(Debug, Clone)]
pub struct RunFacts {
    pub triggers: Vec<TriggerRun>,
    /// One per trigger that ran.
    pub baselines: Vec<Baseline>,
    pub outages: Vec<OutageRecord>,
    pub earlier_outages: EarlierOutages,
    /// Primary changes without an outage whose verification never answered.
    pub unverified_changes: usize,
    /// For each primary change, when the new primary acknowledged its first write.
    pub new_primary_writes_unix: Vec<f64>,
    /// Every acknowledged write found missing, in an outage or not.
    pub lost_writes_in_run: u64,
    /// When each verification that closed no outage ran, and what it found lost.
    pub losses_without_outage: Vec<LossWithoutOutage>,
    pub run_end_unix: f64,
}

impl DrillReport {
    pub fn build(config: &TriggerConfig, objectives: Objectives, facts: RunFacts) -> DrillReport {
        let drills = attribute(
            &facts.triggers,
            &facts.baselines,
            &facts.outages,
            (&facts.new_primary_writes_unix, &facts.losses_without_outage),
            facts.run_end_unix,
        );
        let distribution = DrillDistribution::of(&drills);
        // One process alone: the same rules as for the members of a drill run by several.
        let run = MemberFacts {
            name: None,
            baselines: &facts.baselines,
            drills: &drills,
            outages: &facts.outages,
            earlier: &facts.earlier_outages,
            unverified_changes: facts.unverified_changes,
            lost_writes_at_least: verdict::lower_bound(
                &facts.outages,
                &facts.earlier_outages,
                &facts.losses_without_outage,
            ),
            run_end_unix: facts.run_end_unix,
        };
        let verdict = judge_members(
            &objectives,
            config.schedule.count,
            &facts.triggers,
            &[run],
            facts.lost_writes_in_run,
            Vec::new(),
        );
        DrillReport {
            command: config.action.display().to_string(),
            shell: config.action.shell(),
            objectives,
            planned_triggers: config.schedule.count,
            triggers: facts.triggers,
            baselines: facts.baselines,
            drills,
            distribution,
            verdict,
        }
    }
}

/// Seconds with a sign, for figures that can be slightly negative; `-` when not measured.
fn signed(v: Option<f64>) -> String {
    // No "-0.000 s" for a figure that rounds to zero.
    let Some(v) = v else { return "-".into() };
    format!("{:+.3} s", if v.abs() < 0.0005 { 0.0 } else { v })
}

/// The drill part of the end-of-run summary.
impl std::fmt::Display for DrillReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "drill: {} trigger(s) of `{}`{}; objectives: write unavailability <= {} s, \
             acknowledged writes lost <= {}",
            self.triggers.len(),
            self.command,
            if self.shell { " (sh -c)" } else { "" },
            self.objectives.rto.as_secs_f64(),
            self.objectives.max_lost_writes
        )?;
        // The columns of the rows below. "first write": the first after a primary change or a
        // restart in place (which the outages' identities tell apart), as the report says it.
        let head = "    #  trigger started           outcome                ran   first failed    first write     unavailable   lost";
        writeln!(f, "{head}")?;
        for (t, d) in self.triggers.iter().zip(&self.drills) {
            let unavailable = match d.unavailable_shown() {
                Some((s, false)) => format!("{s:.3} s"),
                Some((s, true)) => format!("{s:.3} s so far"),
                None => "no outage".into(),
            };
            writeln!(
                f,
                "  {:>3}  {:<24}  {:<15}  {:>9}  {:>13}  {:>13}  {:>14}  {:>5}",
                t.index,
                rfc3339(t.started_unix),
                t.outcome.label(),
                format!("{:.3} s", t.duration_seconds),
                signed(d.trigger_to_first_failed_write_seconds),
                signed(d.trigger_to_new_primary_write_seconds),
                unavailable,
                match d.lost_writes {
                    Some(n) => format!("{}{n}", verdict::at_least(d.lost_writes_at_least)),
                    None if d.lost_unverified() => "unverified".into(),
                    None => "-".into(),
                },
            )?;
        }
        if self.drills.len() > 1 {
            let all = &self.distribution;
            let figures = [
                ("first failed", &all.trigger_to_first_failed_write_seconds),
                ("first write", &all.trigger_to_new_primary_write_seconds),
                ("unavailable", &all.write_unavailable_seconds),
            ];
            writeln!(f, "  distribution (nearest-rank):")?;
            for (name, dist) in figures {
                if let Some(d) = dist {
                    writeln!(
                        f,
                        "    {name:<13} n={} min {:.3} s, median {:.3} s, p95 {:.3} s, max {:.3} s",
                        d.samples, d.min, d.median, d.p95, d.max
                    )?;
                }
            }
        }
        write!(f, "verdict: {}", self.verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::drill::DrillArgs;
    use crate::drill::timing::tests::{outage, trigger};

    #[test]
    fn a_report_serializes_every_part() {
        let config = DrillArgs {
            failover_command: Some("pg_ctl promote -D /tmp/x".into()),
            failover_shell: false,
            failover_after: None,
            failovers: None,
            failover_every: None,
            failover_timeout: "1m".parse().ok(),
            rto_objective: "30s".parse().unwrap(),
            rpo_objective: 0,
            fleet: Default::default(),
        }
        .validate(Some(std::time::Duration::from_secs(60)))
        .unwrap();
        let trigger_config = config.trigger.unwrap();
        let t0 = 1_800_000_000.0;
        let report = DrillReport::build(
            &trigger_config,
            config.objectives,
            RunFacts {
                triggers: vec![trigger(1, t0 + 30.0, 0.1)],
                baselines: vec![Baseline {
                    trigger: 1,
                    from_unix: t0 + 20.0,
                    to_unix: t0 + 30.0,
                    successes: 1000,
                    errors: 0,
                    target_rate: Some(100.0),
                }],
                outages: vec![outage(1, t0 + 30.05, Some(0.27), 0)],
                earlier_outages: EarlierOutages::default(),
                unverified_changes: 0,
                new_primary_writes_unix: vec![t0 + 30.32],
                lost_writes_in_run: 0,
                losses_without_outage: Vec::new(),
                run_end_unix: t0 + 60.0,
            },
        );
        assert_eq!(
            report.verdict.verdict,
            verdict::VerdictKind::Pass,
            "{}",
            report.verdict
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["command"], "pg_ctl promote -D /tmp/x");
        assert_eq!(json["objectives"]["rto_seconds"], 30.0);
        assert_eq!(json["triggers"][0]["outcome"]["kind"], "ok");
        assert_eq!(json["drills"][0]["outage"], 1);
        assert_eq!(json["drills"][0]["write_unavailable_seconds"], 0.27);
        assert_eq!(
            json["distribution"]["write_unavailable_seconds"]["samples"],
            1
        );
        assert_eq!(json["verdict"]["verdict"], "pass");
        let text = report.to_string();
        assert!(
            text.contains("objectives: write unavailability <= 30 s"),
            "{text}"
        );
        assert!(
            text.contains("+0.050 s") && text.contains("+0.320 s"),
            "{text}"
        );
        assert!(
            text.contains("0.270 s") && text.ends_with("verdict: PASS"),
            "{text}"
        );
        assert!(
            !text.contains("distribution"),
            "one failover has no distribution: {text}"
        );
    }
}
