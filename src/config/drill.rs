//! The drill flags, validated once into a [`DrillConfig`]: trigger, [`Schedule`], objectives.

use std::time::Duration;

use clap::Args;

use crate::config::fleet::{Fleet, FleetArgs};
use crate::config::{at_least, between, duration, needs, positive, text};
use crate::drill::plan::{Schedule, TriggerAction, TriggerCommand, TriggerConfig};
use crate::drill::Objectives;
use crate::error::ConfigError;

/// `--failover-after` when only `--failover-command` is given.
pub const DEFAULT_FAILOVER_AFTER: Duration = Duration::from_secs(30);
const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_secs(600);

/// A trigger needs at least this much load before it: its baseline.
pub const MIN_BASELINE: Duration = Duration::from_secs(2);

/// More failovers than this in one run is a mistake, and would make the report unreadable.
pub const MAX_FAILOVERS: u32 = 1000;

/// The last trigger must be planned within this much of the start (a year and a day).
pub const MAX_SCHEDULE: Duration = Duration::from_secs(366 * 86_400);

#[derive(Debug, Clone, Args)]
pub struct DrillArgs {
    /// Trigger the failover with this command (e.g. `az postgres flexible-server restart
    /// --failover Forced --resource-group RG --name SERVER`), run --failover-after into the
    /// run. It is split into words like a shell would but runs without one; add
    /// --failover-shell for pipes, variables or redirections. The run then ends with a
    /// verdict: exit 0 pass, 3 fail, 4 invalid.
    #[arg(long, env = "PGDRILL_FAILOVER_COMMAND", hide_env_values = true)]
    pub failover_command: Option<String>,

    /// Run --failover-command with `sh -c`.
    #[arg(long, env = "PGDRILL_FAILOVER_SHELL",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub failover_shell: bool,

    /// Start the (first) trigger this long after the load starts; the load before it is the
    /// baseline, which must be healthy for a valid drill [default: 30s].
    #[arg(value_parser = duration, long, env = "PGDRILL_FAILOVER_AFTER")]
    pub failover_after: Option<humantime::Duration>,

    /// How many failovers to trigger in this run.
    #[arg(long, env = "PGDRILL_FAILOVERS")]
    pub failovers: Option<u32>,

    /// Time between the starts of consecutive triggers (with --failovers 2 or more).
    #[arg(value_parser = duration, long, env = "PGDRILL_FAILOVER_EVERY")]
    pub failover_every: Option<humantime::Duration>,

    /// Kill the trigger (its whole process group) if it runs longer than this; the drill is
    /// then invalid [default: 10m].
    #[arg(value_parser = duration, long, env = "PGDRILL_FAILOVER_TIMEOUT")]
    pub failover_timeout: Option<humantime::Duration>,

    /// Longest acceptable write unavailability per failover; the same number as the
    /// pgdrill:rto_objective_seconds recording rule.
    #[arg(value_parser = duration, long, env = "PGDRILL_RTO_OBJECTIVE", default_value = "120s")]
    pub rto_objective: humantime::Duration,

    /// Most acknowledged writes that may be lost in the run (found missing by
    /// verification after each outage); 0 = none may be lost.
    #[arg(long, env = "PGDRILL_RPO_OBJECTIVE", default_value_t = 0)]
    pub rpo_objective: u64,

    /// A drill run by several processes: its id and this process's place in it.
    #[command(flatten)]
    pub fleet: FleetArgs,
}

/// A validated drill configuration; only [`DrillArgs::validate`] makes one.
#[derive(Debug, Clone)]
pub struct DrillConfig {
    /// `None`: a canary run, which has no verdict and exits 0, or a member of a drill run
    /// by several processes other than member 0 (it measures only).
    pub trigger: Option<TriggerConfig>,
    pub objectives: Objectives,
    pub fleet: Fleet,
}

/// Why a trigger needs [`MIN_BASELINE`] of load before it.
const BASELINE: &str =
    ": the load before each trigger is the baseline that shows the database was healthy";

impl DrillArgs {
    /// Checks the drill flags against each other and against the run's `--duration`.
    pub fn validate(&self, duration: Option<Duration>) -> Result<DrillConfig, ConfigError> {
        let objectives = Objectives {
            rto: positive("--rto-objective", self.rto_objective)?,
            max_lost_writes: self.rpo_objective,
        };
        let fleet = self.fleet.validate()?;
        let trigger = match &self.failover_command {
            None => {
                // Checked here, not by clap: PGDRILL_FAILOVER_SHELL=false is not a use.
                let of = "--failover-command";
                needs("--failover-shell", self.failover_shell.then_some(true), of)?;
                needs("--failover-after", self.failover_after, of)?;
                needs("--failovers", self.failovers, of)?;
                needs("--failover-every", self.failover_every, of)?;
                needs("--failover-timeout", self.failover_timeout, of)?;
                None
            }
            Some(raw) => {
                let command = TriggerCommand::parse(raw, self.failover_shell)?;
                let timeout = self
                    .failover_timeout
                    .unwrap_or(DEFAULT_FAILOVER_TIMEOUT.into());
                let timeout = positive("--failover-timeout", timeout)?;
                let schedule = self.schedule()?;
                duration.map_or(Ok(()), |d| fits_in_run(&schedule, d))?;
                // Every member checks the trigger flags; only member 0 runs the trigger.
                let triggers = fleet.member.is_none_or(|m| m.triggers());
                triggers.then_some(TriggerConfig {
                    action: TriggerAction::Command(command),
                    schedule,
                    timeout,
                })
            }
        };
        Ok(DrillConfig {
            trigger,
            objectives,
            fleet,
        })
    }

    /// `--failover-after`, `--failovers` and `--failover-every` as one checked schedule.
    fn schedule(&self) -> Result<Schedule, ConfigError> {
        let after = self
            .failover_after
            .map_or(DEFAULT_FAILOVER_AFTER, Duration::from);
        let after = at_least("--failover-after", after, MIN_BASELINE, BASELINE)?;
        let count = between("--failovers", self.failovers.unwrap_or(1), MAX_FAILOVERS)?;
        let every = match self.failover_every {
            Some(every) if count == 1 => {
                let why =
                    "needs --failovers 2 or more: with one failover there is nothing to repeat";
                return Err(ConfigError::new("--failover-every", every, why));
            }
            Some(every) => Some(at_least("--failover-every", every, MIN_BASELINE, BASELINE)?),
            None if count > 1 => {
                let why =
                    "more than one failover needs --failover-every (the time between triggers)";
                return Err(ConfigError::new("--failovers", count, why));
            }
            None => None,
        };
        // Checked, so that the schedule's own arithmetic can never overflow.
        let last = every
            .map_or(Some(Duration::ZERO), |e| e.checked_mul(count - 1))
            .and_then(|span| after.checked_add(span))
            .filter(|last| *last <= MAX_SCHEDULE);
        if last.is_none() {
            let (option, value) = match self.failover_every {
                Some(every) => ("--failover-every", every.to_string()),
                None => ("--failover-after", text(after)),
            };
            let max = text(MAX_SCHEDULE);
            let why = format!("the last failover would start more than {max} into the run");
            return Err(ConfigError::new(option, value, why));
        }
        Ok(Schedule {
            after,
            every,
            count,
        })
    }
}

/// Every trigger of the schedule must start before `--duration` ends the run.
fn fits_in_run(schedule: &Schedule, duration: Duration) -> Result<(), ConfigError> {
    let (run, after, last) = (text(duration), text(schedule.after), text(schedule.last()));
    if schedule.after >= duration {
        let why = format!("must be shorter than --duration ({run}), or the trigger never runs");
        return Err(ConfigError::new("--failover-after", after, why));
    }
    if schedule.last() >= duration {
        let why = format!(
            "the last failover would start {last} into the run, not before --duration ({run}) \
             ends it; lengthen --duration or shorten --failover-every"
        );
        return Err(ConfigError::new("--failovers", schedule.count, why));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The drill flags as `pgdrill` parses and validates them.
    fn args(extra: &[&str]) -> Result<DrillConfig, String> {
        crate::config::tests::args(extra).map(|c| c.drill)
    }

    #[test]
    fn without_a_command_it_is_a_canary() {
        let c = args(&[]).unwrap();
        assert!(c.trigger.is_none());
        assert_eq!(c.objectives.rto, Duration::from_secs(120));
        assert_eq!(c.objectives.max_lost_writes, 0);
        // Objectives alone do nothing, and saying so is not an error.
        assert!(args(&["--rto-objective", "2m"]).is_ok());
    }

    #[test]
    fn a_single_drill_has_sensible_defaults() {
        let c = args(&[
            "--duration",
            "5m",
            "--failover-command",
            // `env`: a program that is there (`az` is looked for on PATH at start).
            "env az postgres flexible-server restart --failover Forced -g rg -n pg",
        ])
        .unwrap();
        let t = c.trigger.unwrap();
        let TriggerAction::Command(command) = &t.action else {
            panic!("{t:?}")
        };
        assert_eq!(command.argv[..2], ["env", "az"]);
        assert_eq!(command.argv.len(), 11);
        assert!(!t.action.shell());
        // A program that is not there is found at start, not when the trigger is due.
        let program = |raw: &str| {
            let c = args(&["--failover-command", raw]).unwrap();
            c.trigger.map(|t| t.action.check_program())
        };
        assert!(matches!(program("env az"), Some(Ok(()))));
        let e = program("patronictll failover")
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(e.contains("`patronictll` is not an executable file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("failover.sh");
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        let e = program(&file.display().to_string()).unwrap().unwrap_err();
        assert!(e.to_string().contains("not an executable file"), "{e}");
        assert_eq!(
            t.schedule,
            Schedule {
                after: Duration::from_secs(30),
                every: None,
                count: 1
            }
        );
        assert_eq!(t.timeout, Duration::from_secs(600));
    }

    #[test]
    fn repeated_drills_parse() {
        let c = args(&[
            "--duration",
            "10m",
            "--failover-command",
            "patronictl failover --force | tee -a log",
            "--failover-shell",
            "--failover-after",
            "1m",
            "--failovers",
            "5",
            "--failover-every",
            "100s",
            "--failover-timeout",
            "90s",
            "--rto-objective",
            "45s",
            "--rpo-objective",
            "10",
        ])
        .unwrap();
        let t = c.trigger.unwrap();
        assert!(t.action.shell());
        assert_eq!(t.schedule.last(), Duration::from_secs(60 + 4 * 100));
        assert_eq!(t.timeout, Duration::from_secs(90));
        assert_eq!(
            c.objectives,
            Objectives {
                rto: Duration::from_secs(45),
                max_lost_writes: 10
            }
        );
    }

    #[test]
    fn bad_input_names_the_flag_the_value_and_the_reason() {
        let cmd = ["--failover-command", "true"];
        let with = |extra: &[&str]| {
            let mut all = cmd.to_vec();
            all.extend_from_slice(extra);
            args(&all).unwrap_err()
        };
        let cases: Vec<(String, &[&str])> = vec![
            (
                with(&["--duration", "1m", "--failover-after", "2m"]),
                &["--failover-after", "2m", "shorter than --duration (1m)"],
            ),
            (
                with(&["--failover-after", "1s"]),
                &["--failover-after", "1s", "at least 2s"],
            ),
            (
                with(&[
                    "--duration",
                    "2m",
                    "--failovers",
                    "3",
                    "--failover-every",
                    "50s",
                ]),
                &[
                    "--failovers",
                    "'3'",
                    "would start 2m 10s",
                    "--duration (2m)",
                ],
            ),
            (
                with(&["--failovers", "3"]),
                &["--failovers", "needs --failover-every"],
            ),
            (
                with(&["--failovers", "1", "--failover-every", "30s"]),
                &["--failover-every", "30s", "needs --failovers 2 or more"],
            ),
            (
                with(&["--failovers", "0"]),
                &["--failovers", "'0'", "between 1 and 1000"],
            ),
            (
                with(&["--failover-timeout", "0s"]),
                &["--failover-timeout", "greater than zero"],
            ),
            (
                with(&["--rto-objective", "0s"]),
                &["--rto-objective", "greater than zero"],
            ),
            (
                with(&["--rto-objective", "soon"]),
                &["--rto-objective", "soon"],
            ),
            (
                args(&["--failover-command", "fail over > log"]).unwrap_err(),
                &["--failover-command", "`>`", "--failover-shell"],
            ),
            (
                args(&["--failovers", "2"]).unwrap_err(),
                &["--failover-command"],
            ),
            (
                args(&["--failover-shell"]).unwrap_err(),
                &["--failover-command"],
            ),
            (
                args(&["--failover-after", "1m"]).unwrap_err(),
                &["--failover-command"],
            ),
            (with(&["--failover-every", "1m"]), &["--failovers"]),
            (
                with(&["--failovers", "1000", "--failover-every", "30days"]),
                &["--failover-every", "would start more than 1year 18h"],
            ),
            (
                with(&["--failover-after", "400days"]),
                &["--failover-after", "would start more than 1year 18h"],
            ),
        ];
        for (err, wanted) in cases {
            for w in wanted {
                assert!(err.contains(w), "{w:?} missing from: {err}");
            }
        }
    }

    #[test]
    fn a_run_without_duration_accepts_any_schedule() {
        let c = args(&[
            "--failover-command",
            "true",
            "--failovers",
            "3",
            "--failover-every",
            "1h",
        ])
        .unwrap();
        assert_eq!(
            c.trigger.unwrap().schedule.last(),
            Duration::from_secs(30 + 7200)
        );
    }

    #[test]
    fn objectives_serialize_in_base_units() {
        let o = Objectives {
            rto: Duration::from_millis(1500),
            max_lost_writes: 0,
        };
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            r#"{"rto_seconds":1.5,"max_lost_writes":0}"#
        );
    }

    #[test]
    fn only_member_zero_of_a_fleet_runs_the_trigger() {
        let fleet = |index: &str| {
            args(&[
                "--duration",
                "5m",
                "--failover-command",
                "pg_ctl promote -D /x",
                "--drill-id",
                "d1",
                "--member-index",
                index,
                "--members",
                "3",
            ])
            .unwrap()
        };
        assert!(fleet("0").trigger.is_some());
        let measuring = fleet("2");
        assert!(measuring.trigger.is_none());
        assert_eq!(measuring.fleet.drill_id.as_deref(), Some("d1"));
        // Every member checks the trigger flags, so a bad one stops every pod.
        let err = args(&[
            "--duration",
            "5m",
            "--failover-command",
            "pg_ctl promote -D /x",
            "--failover-after",
            "10m",
            "--drill-id",
            "d1",
            "--member-index",
            "1",
            "--members",
            "3",
        ])
        .unwrap_err();
        assert!(err.contains("--failover-after"), "{err}");
    }

    #[test]
    fn one_trigger_runs_after_the_warm_up() {
        let s = Schedule {
            after: Duration::from_secs(30),
            every: None,
            count: 1,
        };
        assert_eq!(s.instants(Duration::ZERO), vec![Duration::from_secs(30)]);
        assert_eq!(s.last(), Duration::from_secs(30));
    }

    #[test]
    fn repeated_triggers_are_evenly_spaced_from_the_run_start() {
        let s = Schedule {
            after: Duration::from_secs(20),
            every: Some(Duration::from_millis(90_500)),
            count: 3,
        };
        let start = tokio::time::Instant::now();
        let at = s.instants(start);
        assert_eq!(at.len(), 3);
        assert_eq!(at[0] - start, Duration::from_secs(20));
        assert_eq!(at[1] - start, Duration::from_millis(110_500));
        assert_eq!(at[2] - start, Duration::from_secs(201));
        assert_eq!(s.last(), Duration::from_secs(201));
    }
}
