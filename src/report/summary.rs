//! The end-of-run summary, human and JSON, from the one place each figure is counted: program
//! state, or the counter where that is the only count (primary changes, server restarts,
//! retention deletes).

use std::collections::BTreeMap;
use std::fmt;
use std::iter::Sum;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::db::clock::ClockOffset;
use crate::db::identity::Identity;
pub use crate::drill::verdict::at_least;
use crate::drill::{judge_members, DrillReport, MemberFacts, Objectives, Verdict};
use crate::error::{ErrorClass, StartError};
use crate::failover::outages::{EarlierOutages, OutageRecord, StateChange};
use crate::load::outcomes::TallySnapshot;
use crate::rpo::verify::RpoTotals;
use crate::telemetry::errors::ErrorKind;
use crate::telemetry::latency::LatencyBook;
use crate::telemetry::timeline::{LossWithoutOutage, Timeline};

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// This process's place in a drill run by several; recorded in the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// 0-based; member 0 runs the trigger.
    pub index: u32,
    /// How many processes run the drill.
    pub of: u32,
}

impl Member {
    pub fn triggers(&self) -> bool {
        self.index == 0
    }
}

/// A command-line setting as run (long name without dashes, value); passwords are left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Flag {
    pub name: String,
    pub value: String,
}

/// The writes of one run, or of a drill's members added up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunCounts {
    pub transactions: u64,
    pub successes: u64,
    pub errors: BTreeMap<String, u64>,
    /// Acknowledged writes looked for on a new primary: after outages, and after switches
    /// seen without one (a pooler's), which no outage record holds.
    pub checked_writes: u64,
    pub lost_writes: u64,
    pub unknown_outcome_writes: u64,
    pub unknown_outcome_committed: u64,
    pub unknown_outcome_not_committed: u64,
    /// Unknown outcomes never resolved (the primary could not be asked, or too many).
    pub unknown_outcome_unresolved: u64,
}

impl RunCounts {
    /// The counts of the load's tally and the verifications' totals so far.
    pub(crate) fn of(t: &TallySnapshot, rpo: RpoTotals) -> RunCounts {
        let mut counts = RunCounts {
            transactions: t.transactions,
            successes: t.successes(),
            errors: ErrorClass::ALL
                .iter()
                .map(|c| (c.as_str().to_string(), t.errors[c.index()]))
                .filter(|(_, n)| *n > 0)
                .collect(),
            checked_writes: rpo.checked_writes,
            lost_writes: rpo.lost_writes,
            unknown_outcome_writes: t.unknown_outcome,
            unknown_outcome_committed: rpo.unknown_committed,
            unknown_outcome_not_committed: rpo.unknown_not_committed,
            unknown_outcome_unresolved: 0,
        };
        counts.unknown_outcome_unresolved = counts.unresolved();
        counts
    }

    /// Unknown outcomes resolved neither way (computed: an older summary lacks the field).
    pub(crate) fn unresolved(&self) -> u64 {
        self.unknown_outcome_writes.saturating_sub(
            self.unknown_outcome_committed
                .saturating_add(self.unknown_outcome_not_committed),
        )
    }
}

impl Sum for RunCounts {
    fn sum<I: Iterator<Item = RunCounts>>(iter: I) -> RunCounts {
        // Saturating: a report's inputs hold any number; a wrapped sum of lost writes would pass.
        iter.fold(RunCounts::default(), |mut all, one| {
            for (class, n) in one.errors {
                let sum = all.errors.entry(class).or_insert(0);
                *sum = sum.saturating_add(n);
            }
            macro_rules! add {
                ($($field:ident),*) => { $(all.$field = all.$field.saturating_add(one.$field);)* };
            }
            add!(
                transactions,
                successes,
                checked_writes,
                lost_writes,
                unknown_outcome_writes,
                unknown_outcome_committed,
                unknown_outcome_not_committed,
                unknown_outcome_unresolved
            );
            all
        })
    }
}

/// The end-of-run summary, as `--summary-json` writes it and `pgdrill report` reads it
/// (fields an older summary lacks read as their defaults).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    pub version: String,
    pub run_id: i64,
    /// `--drill-id`: shared by the processes of one drill.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drill_id: Option<String>,
    /// `--member-index` of `--members`: this process's place in a drill run by several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<Member>,
    /// With `--drill-id`: the database server's clock against this run's, measured at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_clock: Option<ClockOffset>,
    pub target: String,
    /// The table written to; every row pgdrill wrote carries `run_id`.
    pub table: String,
    /// The connect timeout in force and where it came from (flag, DSN, environment, default).
    pub connect_timeout_seconds: f64,
    pub connect_timeout_from: String,
    pub started_at: String,
    pub duration_seconds: f64,
    pub target_rate: Option<f64>,
    /// Flattened: the same top-level keys as always.
    #[serde(flatten)]
    pub counts: RunCounts,
    pub skipped: u64,
    /// In flight when the shutdown grace ran out: outcome never seen.
    pub abandoned: u64,
    /// Successful / attempted writes, a skipped one attempted and not served: the SLI of
    /// the SLO rules (`job:pgdrill_write_success:ratio_rate5m`).
    pub success_ratio: f64,
    pub achieved_rate: f64,
    pub latency: Percentiles,
    pub service_time: Percentiles,
    /// Intended start to send, of successful transactions (pgbench `-R`'s schedule lag).
    pub schedule_lag: Percentiles,
    pub primary_changes: u64,
    /// The primary came back restarted in place (same system, timeline and address): not a change.
    pub server_restarts: u64,
    /// For each primary change, when the new primary acknowledged its first write (Unix
    /// seconds on the outages' clock): `pgdrill report` times a member's failover with it.
    pub new_primary_writes_unix: Vec<f64>,
    /// The latest 1,000 outages; `earlier_outages` adds up the ones before them.
    pub outages: Vec<OutageRecord>,
    pub earlier_outages: EarlierOutages,
    /// Primary changes without an outage whose verification never answered.
    pub unverified_primary_changes: usize,
    /// Verifications of primary changes without an outage (latest 1,000): when, and what was lost.
    pub losses_without_outage: Vec<LossWithoutOutage>,
    /// Every change of the failover state (the latest 1,000).
    pub state_changes: Vec<StateChange>,
    /// Every distinct (class, SQLSTATE) of failures, with its count and first message.
    pub error_kinds: Vec<ErrorKind>,
    /// Rows `--retention` deleted during the run (pgdrill's rows only: `run_id` set).
    pub retention_rows_deleted: u64,
    /// The primary when the run began and when it ended.
    pub identity_first: Option<Identity>,
    pub identity_last: Option<Identity>,
    /// Set by the caller ([`Summary::set_flags`]).
    pub flags: Vec<Flag>,
    /// Second by second, with the events; what `pgdrill report` draws.
    pub timeline: Timeline,
    /// As run, with or without a trigger (a canary's report is judged by them, as its alerts
    /// are); `None` in older summaries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objectives: Option<Objectives>,
    /// Only with a failover trigger: the triggers, the figures timed from them, the verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillReport>,
    /// The error that ended the run after its first write: its figures stand, judging nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crashed: Option<String>,
}

impl Summary {
    /// What the load's own counts give a run that lasted `elapsed`; the wiring adds the rest.
    pub(crate) fn of_load(
        t: TallySnapshot,
        elapsed: Duration,
        book: &LatencyBook,
        rpo: RpoTotals,
    ) -> Summary {
        let counts = RunCounts::of(&t, rpo);
        let secs = elapsed.as_secs_f64().max(1e-9);
        Summary {
            version: env!("CARGO_PKG_VERSION").to_string(),
            duration_seconds: elapsed.as_secs_f64(),
            skipped: t.skipped,
            success_ratio: success_ratio(&t),
            achieved_rate: counts.successes as f64 / secs,
            latency: Percentiles::of(&book.merged(|s| &mut s.latency, false)),
            service_time: Percentiles::of(&book.merged(|s| &mut s.service, false)),
            schedule_lag: Percentiles::of(&book.merged(|s| &mut s.lag, false)),
            counts,
            ..Summary::default()
        }
    }

    /// The longest write unavailability of every outage, kept or not (a canary's RTO).
    pub fn longest_unavailability(&self) -> Option<f64> {
        let earlier = &self.earlier_outages;
        let earlier = (earlier.count > 0).then_some(earlier.longest_write_unavailable_seconds);
        self.outages
            .iter()
            .filter_map(|o| o.write_unavailable_seconds)
            .chain(earlier)
            .reduce(f64::max)
    }

    /// Every outage of the run, kept or not.
    pub fn outage_count(&self) -> usize {
        let kept = self.outages.len();
        self.earlier_outages.count.saturating_add(kept)
    }

    /// Start and end of the run in Unix seconds, from `started_at`, else from its timeline.
    pub fn span_unix(&self) -> (f64, f64) {
        let start = humantime::parse_rfc3339(&self.started_at)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64())
            .or_else(|| self.timeline.span().map(|(a, _)| a as f64))
            .unwrap_or(0.0);
        (start, start + self.duration_seconds)
    }

    /// The run's verdict: a drill's; else the run judged as a canary against `objectives`.
    pub fn verdict(&self, objectives: &Objectives) -> Verdict {
        if let Some(d) = &self.drill {
            return d.verdict.clone();
        }
        let crashed = self.crashed.iter().map(|c| format!("the run crashed: {c}"));
        judge_members(
            objectives,
            0,
            &[],
            &[self.facts()],
            self.counts.lost_writes,
            crashed.collect(),
        )
    }

    /// What the verdict judges of this run alone; `pgdrill report` adds a member's name and drills.
    pub(crate) fn facts(&self) -> MemberFacts<'_> {
        MemberFacts {
            name: None,
            baselines: &[],
            drills: &[],
            outages: &self.outages,
            earlier: &self.earlier_outages,
            unverified_changes: self.unverified_primary_changes,
            lost_writes_at_least: self.lost_writes_at_least(),
            run_end_unix: self.span_unix().1,
        }
    }

    /// The run crashed after its first write with `error`: said in every output, and a drill
    /// is judged INVALID (as `pgdrill report` judges this summary), unless lost writes fail it.
    pub fn crashed_with(&mut self, error: String) {
        if let Some(d) = &mut self.drill {
            let lost_decides = self.counts.lost_writes > d.objectives.max_lost_writes;
            let (failed, mut invalid) = (d.verdict.failed.clone(), d.verdict.invalid.clone());
            // First, as `pgdrill report` lists a summary's crash before what it judges.
            invalid.insert(0, format!("the run crashed: {error}"));
            d.verdict = Verdict::decide(lost_decides, failed, invalid);
        }
        self.crashed = Some(error);
    }

    /// The outages (open at the end, or no verification answered) and primary changes never
    /// verified: they checked nothing, so "0 lost" would claim what was never looked at.
    pub fn unverified_outages(&self) -> Vec<String> {
        let (n, count) = (self.earlier_outages.unverified, self.earlier_outages.count);
        let not_kept = (n > 0).then(|| format!("{n} of outages 1-{count} not verified"));
        let changes = match self.unverified_primary_changes {
            0 => None,
            1 => Some("1 primary change not verified".to_string()),
            n => Some(format!("{n} primary changes not verified")),
        };
        let kept = self
            .outages
            .iter()
            .filter(|o| o.lost_writes.is_none())
            .map(|o| match o.end_unix {
                None => format!("outage {} still open at the end", o.index),
                Some(_) => format!("outage {} not verified", o.index),
            });
        not_kept.into_iter().chain(kept).chain(changes).collect()
    }

    /// A verification's lost writes are a lower bound (its oldest write checked was lost, and
    /// older ones had gone out of `--verify-window` unchecked): "at least", in every output.
    pub fn lost_writes_at_least(&self) -> bool {
        crate::drill::verdict::lower_bound(
            &self.outages,
            &self.earlier_outages,
            &self.losses_without_outage,
        )
    }

    /// Lost writes as the summary line and the demo say them (`then` follows the count):
    /// "unverified" while nothing was checked and an outage went unverified.
    pub fn lost_writes_text(&self, then: &str) -> String {
        let not = self.unverified_outages();
        if self.lost_writes_unverified() {
            return format!("unverified ({})", not.join(", "));
        }
        let lost = at_least(self.lost_writes_at_least());
        let lost = format!("{lost}{}{then}", self.counts.lost_writes);
        match not.is_empty() {
            true => lost,
            // Some checked, some not: both said, as the report's card says them.
            false => format!("{lost} ({})", not.join(", ")),
        }
    }

    /// Nothing was checked and an outage went unverified: lost writes are unknown, not 0
    /// (those found, by a switch verified with no outage, are shown whatever else was not).
    pub fn lost_writes_unverified(&self) -> bool {
        self.counts.lost_writes == 0
            && self.counts.checked_writes == 0
            && !self.unverified_outages().is_empty()
    }

    // The sections of the text summary, in the order it prints them.
    fn fmt_load(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (run_id, table) = (self.run_id, &self.table);
        writeln!(f, "pgdrill {} summary (run {run_id})", self.version)?;
        writeln!(f, "  target        {}", self.target)?;
        write!(f, "  table         {table} (rows with run_id {run_id})")?;
        match self.retention_rows_deleted {
            0 => writeln!(f)?,
            n => writeln!(f, "; retention deleted {n} of pgdrill's rows")?,
        }
        match (&self.drill_id, self.member) {
            (Some(id), Some(m)) => {
                let role = match m.triggers() {
                    true => "runs the trigger",
                    false => "measures only; member 0 runs the trigger",
                };
                let (index, of) = (m.index, m.of);
                writeln!(f, "  drill         {id}, member {index} of {of} ({role})")?
            }
            (Some(id), None) => writeln!(f, "  drill         {id}")?,
            _ => {}
        }
        let (timeout, from) = (self.connect_timeout_seconds, &self.connect_timeout_from);
        writeln!(f, "  connect timeout {timeout}s ({from})")?;
        writeln!(
            f,
            "  duration      {:.1}s   target rate {}   achieved {:.1}/s",
            self.duration_seconds,
            self.target_rate
                .map_or_else(|| "unlimited".to_string(), |r| format!("{r}/s")),
            self.achieved_rate
        )?;
        writeln!(
            f,
            "  transactions  {} ({} ok, {} failed); skipped {}; success ratio {:.4} (skipped not served); abandoned {}",
            self.counts.transactions,
            self.counts.successes,
            self.counts.transactions - self.counts.successes,
            self.skipped,
            self.success_ratio,
            self.abandoned
        )
    }

    fn fmt_latencies(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, l) in [
            ("latency (from intended start)", &self.latency),
            ("service time", &self.service_time),
            ("schedule lag", &self.schedule_lag),
        ] {
            if l.count == 0 {
                writeln!(f, "  {name:<29} - (nothing acknowledged)")?;
                continue;
            }
            writeln!(
                f,
                "  {name:<29} p50 {:.2} ms  p95 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
                l.p50_ms, l.p95_ms, l.p99_ms, l.p999_ms, l.max_ms
            )?;
        }
        Ok(())
    }

    fn fmt_errors(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors = &self.counts.errors;
        if !errors.is_empty() {
            let each: Vec<String> = errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
            writeln!(f, "  errors        {}", each.join(" "))?;
        }
        for k in &self.error_kinds {
            let sqlstate = Some(k.sqlstate.as_str()).filter(|s| !s.is_empty());
            let sqlstate = sqlstate.unwrap_or("-");
            writeln!(
                f,
                "  error {sqlstate:<5} {:<20} x{:<8} {}",
                k.class, k.count, k.message
            )?;
        }
        Ok(())
    }

    fn fmt_outages(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.earlier_outages;
        if e.count > 0 {
            writeln!(
                f,
                "  outages #1-#{} (records not kept): longest #{} {:.3}s, checked {}, unverified {}",
                e.count, e.longest_outage, e.longest_write_unavailable_seconds, e.checked_writes, e.unverified
            )?;
        }
        for o in &self.outages {
            writeln!(
                f,
                "  outage #{}: writes unavailable {}{} (from {} to {}), full rate after {}, errors [{}]{}, lost {}, RPO {}{}",
                o.index,
                opt_secs(o.write_unavailable_seconds),
                if o.open_at_shutdown { " so far" } else { "" },
                o.started_at,
                o.ended_at
                    .as_deref()
                    .unwrap_or(if o.open_at_shutdown { "shutdown, still open" } else { "-" }),
                opt_secs(o.time_to_full_rate_seconds),
                o.error_classes.join(","),
                match (&o.identity_before, &o.identity_after) {
                    (Some(b), Some(a)) => format!(", {}", Identity::change_word(b, a)),
                    _ => String::new(),
                },
                match o.lost_writes {
                    None => "unverified".to_string(),
                    Some(n) => format!("{}{n}", at_least(o.lost_writes_at_least)),
                },
                at_least(o.lost_writes_at_least),
                opt_secs(o.rpo_seconds)
            )?;
        }
        Ok(())
    }

    /// The exit status: the drill's verdict's (0 for a canary), or [`Summary::nothing_written`]'s
    /// when not one write succeeded, whatever a drill's verdict says.
    pub fn exit_code(&self) -> u8 {
        match (&self.drill, self.nothing_written()) {
            (_, Some(nothing)) => nothing.exit_code(),
            (Some(d), None) => d.verdict.verdict.exit_code(),
            (None, None) => 0,
        }
    }

    /// The error a run that wrote nothing exits with, when nothing else said it: the run
    /// ended (`--duration`, a signal) before a write succeeded or `--startup-timeout` ran out.
    pub fn nothing_written(&self) -> Option<StartError> {
        let (n, seconds) = (self.counts.transactions, self.duration_seconds);
        let why = format!("none of the run's {n} writes succeeded in {seconds:.3}s (errors above)");
        (self.counts.successes == 0).then_some(StartError::Target(why))
    }

    /// `--summary-json -`: the summary as one line of JSON, scrubbed as the file is.
    pub fn json_line(&self) -> serde_json::Result<String> {
        let mut json = serde_json::to_value(self)?;
        crate::secrets::scrub_json(&mut json);
        serde_json::to_string(&json)
    }

    /// `--summary-json`: the summary, pretty-printed.
    pub fn write_json(&self, path: &std::path::Path) -> std::io::Result<()> {
        let mut json = serde_json::to_value(self).map_err(std::io::Error::other)?;
        crate::secrets::scrub_json(&mut json);
        let text = serde_json::to_string_pretty(&json).map_err(std::io::Error::other)?;
        std::fs::write(path, text)
    }

    /// The summary as printed at the end of a run, without any secret pgdrill knows.
    pub fn printable(&self) -> String {
        crate::secrets::scrub(&self.to_string())
    }
}

/// The objectives of a summary that records none: the flags' defaults.
pub const DEFAULT_OBJECTIVES: Objectives = Objectives {
    rto: Duration::from_secs(120),
    max_lost_writes: 0,
};

fn opt_secs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |s| format!("{s:.3}s"))
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_load(f)?;
        self.fmt_latencies(f)?;
        self.fmt_errors(f)?;
        writeln!(
            f,
            "  primary changes {} (restarts in place {})   lost writes {}   unknown outcome {} (found afterwards {}, not found {}{})",
            self.primary_changes,
            self.server_restarts,
            self.lost_writes_text(&format!(" of {} checked", self.counts.checked_writes)),
            self.counts.unknown_outcome_writes,
            self.counts.unknown_outcome_committed,
            self.counts.unknown_outcome_not_committed,
            match self.counts.unknown_outcome_unresolved {
                0 => String::new(),
                n => format!(", unresolved {n}"),
            }
        )?;
        // What the lost-writes figure is to be read against.
        let durability = |id: &Option<Identity>| id.as_ref().and_then(Identity::durability);
        let (first, last) = (&self.identity_first, &self.identity_last);
        let commits = match (durability(first), durability(last)) {
            (Some(first), Some(last)) if first != last => {
                Some(format!("{first} at start; {last} at end"))
            }
            (first, last) => last.or(first),
        };
        if let Some(commits) = commits {
            writeln!(f, "  commits       {commits}")?;
        }
        self.fmt_outages(f)?;
        if let Some(error) = &self.crashed {
            writeln!(f, "  CRASHED       {error}")?;
        }
        if let Some(drill) = &self.drill {
            writeln!(f, "{drill}")?;
        }
        Ok(())
    }
}

/// Successful / attempted (finished or skipped) writes; 0 when none was attempted.
fn success_ratio(t: &TallySnapshot) -> f64 {
    t.successes() as f64 / t.transactions.saturating_add(t.skipped).max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skipped_write_counts_as_not_served_as_in_the_slo_rules() {
        let mut t = TallySnapshot {
            transactions: 90,
            skipped: 10,
            ..TallySnapshot::default()
        };
        t.errors[ErrorClass::ConnectRefused.index()] = 9;
        assert!((success_ratio(&t) - 0.81).abs() < 1e-12);
        assert_eq!(success_ratio(&TallySnapshot::default()), 0.0);
    }

    #[test]
    fn a_primary_change_never_verified_leaves_lost_writes_unknown_not_zero() {
        let mut s = Summary::default();
        assert!(!s.lost_writes_unverified());
        s.unverified_primary_changes = 1;
        assert_eq!(s.unverified_outages(), ["1 primary change not verified"]);
        assert!(s.lost_writes_unverified());
        assert!(s
            .to_string()
            .contains("unverified (1 primary change not verified)"));
        // Another failover checked: its figure, and what was not checked beside it.
        s.counts.checked_writes = 100;
        assert!(!s.lost_writes_unverified());
        assert!(s
            .to_string()
            .contains("lost writes 0 of 100 checked (1 primary change not verified)"));
        // Its verdict as a canary: not a pass.
        let v = s.verdict(&Objectives {
            rto: Duration::from_secs(1),
            max_lost_writes: 0,
        });
        assert_eq!(
            v.verdict,
            crate::drill::verdict::VerdictKind::Invalid,
            "{v}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_loss_found_to_be_a_lower_bound_says_at_least_in_every_output() {
        use crate::failover::outages::{OutageRecord, Outages, MAX_OUTAGES};
        use crate::rpo::ledger::Check;
        let outages = Outages::new(crate::clock::WallClock::now());
        let t0 = tokio::time::Instant::now();
        let index = outages.started(t0, None);
        outages.ended(t0, t0 + Duration::from_secs(2), &[], None);
        let check = Check {
            checked: 500,
            lost: 12,
            rpo_seconds: 0.4,
            at_least: true,
            ..Check::default()
        };
        outages.verified(index, &check, None);
        let mut s = Summary {
            outages: outages.outages(),
            ..Summary::default()
        };
        (s.counts.checked_writes, s.counts.lost_writes) = (500, 12);
        assert!(s.outages[0].lost_writes_at_least);
        let text = s.to_string();
        assert!(
            text.contains("lost at least 12, RPO at least 0.400s"),
            "{text}"
        );
        assert!(
            text.contains("lost writes at least 12 of 500 checked"),
            "{text}"
        );
        let json = serde_json::to_value(&s).expect("JSON");
        assert_eq!(json["outages"][0]["lost_writes_at_least"], true);
        let page = crate::report::html::render(&s);
        assert!(page.contains("at least 12"), "{page}");
        // A loss found in full says no such thing.
        s.outages[0].lost_writes_at_least = false;
        assert!(!s.to_string().contains("at least"));
        // Nor is it forgotten once its record is let go with the oldest.
        let mut records = vec![OutageRecord::default(); MAX_OUTAGES + 1];
        records[0].lost_writes_at_least = true;
        s.earlier_outages.keep_latest(&mut records);
        assert!(s.to_string().contains("lost writes at least 12 of 500"));
        // What the outage left behind, when both ends were probed.
        use crate::db::identity::tests::id;
        let mut restarted = id(5001, 1);
        restarted.stats_reset = Some("after a crash".into());
        s.outages[0].identity_before = Some(id(5001, 1));
        s.outages[0].identity_after = Some(restarted);
        let text = s.to_string();
        assert!(
            text.contains("], same primary, restarted in place, lost"),
            "{text}"
        );
        s.outages[0].identity_after = Some(id(5002, 2));
        assert!(s.to_string().contains("], new primary, lost"));
        // A canary within a tolerant objective as counted: not a pass, as more may be lost.
        let tolerant = Objectives {
            rto: Duration::from_secs(60),
            max_lost_writes: 100,
        };
        let v = s.verdict(&tolerant);
        assert_eq!(
            v.verdict,
            crate::drill::verdict::VerdictKind::Invalid,
            "{v}"
        );
    }
}
