//! Drills as code: pgdrill runs the failover trigger itself, times the failover from the
//! trigger, and passes or fails the drill against objectives.
//!
//! - [`args`]: the `--failover-*` and objective flags, validated into a [`DrillConfig`].
//! - [`schedule`]: when each trigger runs (a pure function of the run start).
//! - [`trigger`]: runs the command (argv without a shell unless asked), bounded in time and
//!   output, with its output scrubbed of passwords.
//! - [`timing`]: which outage belongs to which trigger, and the figures timed from the trigger.
//! - [`verdict`]: PASS / FAIL / INVALID with reasons, and the exit codes a pipeline gates on.
//! - [`stats`]: the distribution of each figure over repeated drills.
//!
//! Everything here but [`trigger::run`] is pure and tested without a database.

pub mod args;
pub mod schedule;
pub mod scrub;
pub mod stats;
pub mod timing;
pub mod trigger;
pub mod verdict;

use serde::Serialize;

pub use args::{DrillArgs, DrillConfig, Objectives, TriggerConfig};
pub use schedule::Schedule;
pub use stats::{Distribution, DrillDistribution};
pub use timing::{attribute, baseline_span, Baseline, DrillTiming, OutageFacts};
pub use trigger::{TriggerCommand, TriggerOutcome, TriggerRun};
pub use verdict::{judge, Verdict, VerdictKind, EXIT_FAIL, EXIT_INVALID};

/// Everything the summary JSON and the report show about the drills of one run.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    /// The command as configured, passwords removed.
    pub command: String,
    pub shell: bool,
    pub objectives: Objectives,
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
    /// One per trigger that ran (see [`timing::baseline_span`]).
    pub baselines: Vec<Baseline>,
    pub outages: Vec<OutageFacts>,
    /// For each primary change, when the new primary acknowledged its first write.
    pub new_primary_writes_unix: Vec<f64>,
    /// Every acknowledged write found missing during the run, in an outage or not.
    pub lost_writes_in_run: u64,
    pub run_end_unix: f64,
}

impl DrillReport {
    pub fn build(config: &TriggerConfig, objectives: Objectives, facts: RunFacts) -> DrillReport {
        let drills = attribute(
            &facts.triggers,
            &facts.outages,
            &facts.new_primary_writes_unix,
            facts.run_end_unix,
        );
        let distribution = DrillDistribution::of(&drills);
        let verdict = judge(
            &objectives,
            config.schedule.count,
            &facts.triggers,
            &facts.baselines,
            &drills,
            &facts.outages,
            facts.lost_writes_in_run,
        );
        DrillReport {
            command: config.command.display.clone(),
            shell: config.command.shell,
            objectives,
            triggers: facts.triggers,
            baselines: facts.baselines,
            drills,
            distribution,
            verdict,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::timing::tests::{outage, trigger};

    #[test]
    fn a_report_serializes_every_part() {
        let config = DrillArgs {
            failover_command: Some("pg_ctl promote -D /tmp/x".into()),
            failover_shell: false,
            failover_after: None,
            failovers: None,
            failover_every: None,
            failover_timeout: "1m".parse().unwrap(),
            rto_objective: "30s".parse().unwrap(),
            rpo_objective: 0,
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
                new_primary_writes_unix: vec![t0 + 30.32],
                lost_writes_in_run: 0,
                run_end_unix: t0 + 60.0,
            },
        );
        assert_eq!(
            report.verdict.verdict,
            VerdictKind::Pass,
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
    }
}
