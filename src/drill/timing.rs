//! Which outage belongs to which trigger, the figures timed from it, and their distribution over a
//! run's failovers. Times are Unix seconds on the outage records' wall clock (`clock::WallClock`).

use serde::{Deserialize, Serialize};

use crate::drill::trigger::TriggerRun;
use crate::failover::outages::OutageRecord;
use crate::telemetry::timeline::LossWithoutOutage;

/// An outage that began this long before a trigger started still belongs to it: writes sent just
/// before the trigger fail with the failover; one older is the baseline's, judged unhealthy.
pub const ATTRIBUTION_SLACK: f64 = 1.0;

/// Baselines shorter than this (s) say nothing. The shortest schedule leaves 1 s (`--failover-after
/// 2s` minus the warm-up): only a previous trigger running into the window makes one this short.
pub const MIN_JUDGED_BASELINE: f64 = 0.5;

/// Achieved rate at or above this share of target makes a healthy baseline.
pub const BASELINE_RATE_SHARE: f64 = 0.95;

/// One triggered failover, timed from its trigger's start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillTiming {
    pub trigger: usize,
    /// The first outage that began from [`ATTRIBUTION_SLACK`] before this trigger's start to
    /// as long before the next one's (or the end of the run).
    pub outage: Option<usize>,
    /// Further outages that began in the same window (a flapping failover).
    pub later_outages: Vec<usize>,
    /// Trigger start → first failed (or stalled) write; slightly negative when a write sent
    /// just before the trigger failed with it.
    pub trigger_to_first_failed_write_seconds: Option<f64>,
    /// Trigger start → first write acknowledged by a new primary (a changed identity).
    pub trigger_to_new_primary_write_seconds: Option<f64>,
    /// Of the longest ended outage in the window: first failure → first success (all are judged).
    pub write_unavailable_seconds: Option<f64>,
    /// An outage in the window had not ended when the run did: how long it had lasted.
    pub unavailable_at_run_end_seconds: Option<f64>,
    /// Of every outage in the window and every verification in it that closed none (a failover
    /// faster than the outage threshold); `None` with neither, or an outage never verified.
    pub lost_writes: Option<u64>,
    /// The largest of the window's outages.
    pub rpo_seconds: Option<f64>,
    /// One of those losses was a lower bound (its oldest write checked lost too).
    #[serde(default)]
    pub lost_writes_at_least: bool,
    pub trigger_seconds: f64,
}

impl DrillTiming {
    /// What the trigger tables show as "unavailable": the longest outage in the window, with
    /// whether it is still open (the time so far), as the verdict judges them all.
    pub fn unavailable_shown(&self) -> Option<(f64, bool)> {
        match (
            self.write_unavailable_seconds,
            self.unavailable_at_run_end_seconds,
        ) {
            (ended, Some(so_far)) if ended.is_none_or(|e| so_far > e) => Some((so_far, true)),
            (ended, _) => ended.map(|e| (e, false)),
        }
    }

    /// An outage in the window was never verified: its lost writes are unknown, not absent
    /// (the trigger tables say "unverified", as the outage table does).
    pub fn lost_unverified(&self) -> bool {
        self.outage.is_some() && self.lost_writes.is_none()
    }
}

/// Attributes outages, new-primary writes (when each new primary acknowledged its first
/// write) and losses found without an outage (`EventLog::losses_without_outage`) to
/// triggers, all in time order, and times them.
pub fn attribute(
    triggers: &[TriggerRun],
    baselines: &[Baseline],
    outages: &[OutageRecord],
    (new_primary_writes_unix, losses_without_outage): (&[f64], &[LossWithoutOutage]),
    run_end_unix: f64,
) -> Vec<DrillTiming> {
    triggers
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let from = t.started_unix;
            // The next trigger's start; one killed at stop has no record, only its baseline
            // (which ends at its start): its outage is not the previous trigger's.
            let next = (triggers.get(i + 1).map(|next| next.started_unix))
                .or_else(|| Some(baselines.iter().find(|b| b.trigger == t.index + 1)?.to_unix))
                .unwrap_or(f64::INFINITY);
            let (mine, new_primary) = in_window(from, next, outages, new_primary_writes_unix);
            let outage = mine.first().copied();
            let lone: Vec<_> = (losses_without_outage.iter())
                .filter(|l| (from..next).contains(&l.at))
                .collect();
            let lone_lost: u64 = lone.iter().map(|l| l.lost).sum();
            let (ended, open): (Vec<&OutageRecord>, Vec<_>) =
                mine.iter().partition(|o| o.end_unix.is_some());
            DrillTiming {
                trigger: t.index,
                outage: outage.map(|o| o.index),
                later_outages: mine.iter().skip(1).map(|o| o.index).collect(),
                trigger_to_first_failed_write_seconds: outage.map(|o| o.start_unix - from),
                trigger_to_new_primary_write_seconds: new_primary.map(|at| at - from),
                // An outage open at the end holds the time so far, not a measured figure.
                write_unavailable_seconds: (ended.iter())
                    .filter_map(|o| o.write_unavailable_seconds)
                    .reduce(f64::max),
                unavailable_at_run_end_seconds: open.first().map(|o| {
                    o.write_unavailable_seconds
                        .unwrap_or((run_end_unix - o.start_unix).max(0.0))
                }),
                lost_writes: (outage.is_some() || !lone.is_empty())
                    .then(|| mine.iter().map(|o| o.lost_writes).sum::<Option<u64>>())
                    .flatten()
                    .map(|lost| lost + lone_lost),
                rpo_seconds: (mine.iter().filter_map(|o| o.rpo_seconds))
                    .chain(lone.iter().map(|l| l.rpo_seconds))
                    .reduce(f64::max),
                lost_writes_at_least: mine.iter().any(|o| o.lost_writes_at_least)
                    || lone.iter().any(|l| l.at_least),
                trigger_seconds: t.duration_seconds,
            }
        })
        .collect()
}

/// The outages attributed to `drills` (the first after each trigger and the later ones in
/// its window), which a drill's RTO is judged on.
pub fn attributed<'a>(
    drills: &'a [DrillTiming],
    outages: &'a [OutageRecord],
) -> impl Iterator<Item = &'a OutageRecord> {
    let indexes = drills
        .iter()
        .flat_map(|d| d.outage.iter().chain(&d.later_outages));
    indexes.filter_map(|i| outages.iter().find(|o| o.index == *i))
}

/// The outages that began in the window of the trigger that started at `from` (the next at
/// `next`), and the first write a new primary acknowledged in it.
pub fn in_window<'a>(
    from: f64,
    next: f64,
    outages: &'a [OutageRecord],
    new_primary_writes_unix: &[f64],
) -> (Vec<&'a OutageRecord>, Option<f64>) {
    // Windows do not overlap: the slack before the next trigger is the next one's.
    let window = (from - ATTRIBUTION_SLACK)..(next - ATTRIBUTION_SLACK);
    let mine = outages.iter().filter(|o| window.contains(&o.start_unix));
    let mut writes = new_primary_writes_unix.iter().copied();
    (mine.collect(), writes.find(|at| (from..next).contains(at)))
}

/// The load in the window just before a trigger, as counted by the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub trigger: usize,
    pub from_unix: f64,
    pub to_unix: f64,
    pub successes: u64,
    pub errors: u64,
    /// `None`: unlimited rate, where only errors and a stall count.
    pub target_rate: Option<f64>,
}

/// The load counters at one moment, for a [`Baseline`] between two of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Counts {
    pub unix: f64,
    pub successes: u64,
    pub errors: u64,
}

impl Baseline {
    pub fn between(trigger: usize, from: Counts, to: Counts, target_rate: Option<f64>) -> Baseline {
        Baseline {
            trigger,
            from_unix: from.unix,
            to_unix: to.unix,
            successes: to.successes.saturating_sub(from.successes),
            errors: to.errors.saturating_sub(from.errors),
            target_rate,
        }
    }

    /// Why this baseline makes the drill invalid.
    pub fn problem(&self) -> Option<String> {
        let span = self.to_unix - self.from_unix;
        if span < MIN_JUDGED_BASELINE {
            return Some(format!(
                "only {span:.1} s of load before trigger {} to judge the baseline by (the \
                 previous trigger ran into its window)",
                self.trigger
            ));
        }
        let achieved = self.successes as f64 / span;
        let mut found = Vec::new();
        if self.errors > 0 {
            found.push(format!("{} failed writes", self.errors));
        }
        match self.target_rate {
            Some(target) if achieved < BASELINE_RATE_SHARE * target => found.push(format!(
                "{achieved:.0}/s achieved of {target:.0}/s target ({:.0} %, below {:.0} %)",
                100.0 * achieved / target,
                100.0 * BASELINE_RATE_SHARE
            )),
            None if self.successes == 0 => found.push("no acknowledged write".into()),
            _ => {}
        }
        (!found.is_empty()).then(|| {
            format!(
                "the baseline before trigger {} was unhealthy: {} in the {span:.1} s before it",
                self.trigger,
                found.join(", ")
            )
        })
    }
}

/// Min, median, 95th percentile and max of the samples. Percentiles are nearest-rank, so
/// every value reported was measured; the median of an even count is the lower middle.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    pub samples: usize,
    pub min: f64,
    pub median: f64,
    pub p95: f64,
    pub max: f64,
}

impl Distribution {
    /// `None` without a finite sample.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Distribution> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let (&min, &max) = (v.first()?, v.last()?);
        // Nearest rank: the value at rank ⌈p/100 · n⌉.
        let rank = |p: f64| {
            let r = (p / 100.0 * v.len() as f64).ceil() as usize;
            v[r.clamp(1, v.len()) - 1]
        };
        Some(Distribution {
            samples: v.len(),
            min,
            median: rank(50.0),
            p95: rank(95.0),
            max,
        })
    }
}

/// Each figure of [`DrillTiming`] over the drills where it was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillDistribution {
    pub trigger_to_first_failed_write_seconds: Option<Distribution>,
    pub trigger_to_new_primary_write_seconds: Option<Distribution>,
    pub write_unavailable_seconds: Option<Distribution>,
    pub lost_writes: Option<Distribution>,
    pub trigger_seconds: Option<Distribution>,
}

impl DrillDistribution {
    pub fn of(drills: &[DrillTiming]) -> DrillDistribution {
        let each =
            |f: fn(&DrillTiming) -> Option<f64>| Distribution::of(drills.iter().filter_map(f));
        DrillDistribution {
            trigger_to_first_failed_write_seconds: each(|d| {
                d.trigger_to_first_failed_write_seconds
            }),
            trigger_to_new_primary_write_seconds: each(|d| d.trigger_to_new_primary_write_seconds),
            write_unavailable_seconds: each(|d| d.write_unavailable_seconds),
            lost_writes: each(|d| d.lost_writes.map(|n| n as f64)),
            trigger_seconds: each(|d| Some(d.trigger_seconds)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::drill::trigger::TriggerOutcome;

    pub(crate) fn trigger(index: usize, started: f64, seconds: f64) -> TriggerRun {
        TriggerRun {
            index,
            planned_unix: started,
            started_unix: started,
            ended_unix: started + seconds,
            duration_seconds: seconds,
            outcome: TriggerOutcome::Ok,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            output_truncated: false,
        }
    }

    pub(crate) fn outage(
        index: usize,
        start: f64,
        seconds: Option<f64>,
        lost: u64,
    ) -> OutageRecord {
        OutageRecord {
            index,
            start_unix: start,
            end_unix: seconds.map(|s| start + s),
            write_unavailable_seconds: seconds,
            lost_writes: seconds.map(|_| lost),
            rpo_seconds: seconds.map(|_| if lost > 0 { 0.2 } else { 0.0 }),
            ..OutageRecord::default()
        }
    }

    const T0: f64 = 1_800_000_000.0;

    #[test]
    fn each_trigger_gets_the_first_outage_after_it() {
        let triggers = [trigger(1, T0 + 30.0, 0.15), trigger(2, T0 + 90.0, 0.12)];
        let outages = [
            // Before the first trigger: not a drill's outage.
            outage(1, T0 + 10.0, Some(0.5), 0),
            outage(2, T0 + 30.4, Some(1.25), 0),
            outage(3, T0 + 40.0, Some(0.1), 2),
            // A write sent 3 ms before trigger 2 failed with it.
            outage(4, T0 + 89.997, Some(0.75), 0),
        ];
        let primaries = [T0 + 5.0, T0 + 31.65, T0 + 90.8];
        let d = attribute(&triggers, &[], &outages, (&primaries, &[]), T0 + 120.0);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].outage, Some(2));
        assert_eq!(d[0].later_outages, vec![3]);
        assert!((d[0].trigger_to_first_failed_write_seconds.unwrap() - 0.4).abs() < 1e-6);
        assert!((d[0].trigger_to_new_primary_write_seconds.unwrap() - 1.65).abs() < 1e-6);
        // Judged on both outages in its window: the longest, and every write lost.
        assert_eq!(d[0].write_unavailable_seconds, Some(1.25));
        assert_eq!(d[0].lost_writes, Some(2));
        assert_eq!(d[0].rpo_seconds, Some(0.2));
        assert_eq!(d[0].unavailable_at_run_end_seconds, None);
        assert_eq!(d[0].trigger_seconds, 0.15);

        assert_eq!(d[1].outage, Some(4));
        assert!(d[1].later_outages.is_empty());
        assert!((d[1].trigger_to_first_failed_write_seconds.unwrap() + 0.003).abs() < 1e-6);
        assert!((d[1].trigger_to_new_primary_write_seconds.unwrap() - 0.8).abs() < 1e-6);
    }

    #[test]
    fn no_outage_and_unfinished_outages_are_reported_as_such() {
        let triggers = [trigger(1, T0 + 30.0, 0.1), trigger(2, T0 + 60.0, 0.1)];
        // Trigger 1: nothing happened (older outage too old to count). Trigger 2: still down.
        let outages = [
            outage(1, T0 + 28.5, Some(0.2), 0),
            outage(2, T0 + 61.0, None, 0),
        ];
        let d = attribute(&triggers, &[], &outages, (&[], &[]), T0 + 75.0);
        assert_eq!(d[0].outage, None);
        assert_eq!(d[0].trigger_to_first_failed_write_seconds, None);
        assert_eq!(d[0].trigger_to_new_primary_write_seconds, None);
        assert_eq!(d[0].write_unavailable_seconds, None);
        assert_eq!(d[1].outage, Some(2));
        assert_eq!(d[1].write_unavailable_seconds, None);
        assert_eq!(d[1].unavailable_at_run_end_seconds, Some(14.0));
        assert_eq!(d[1].lost_writes, None);
        // As shutdown records it: the time so far, which is no measured unavailability.
        let mut so_far = outages;
        so_far[1].write_unavailable_seconds = Some(13.5);
        let d = attribute(&triggers, &[], &so_far, (&[], &[]), T0 + 75.0);
        assert_eq!(d[1].write_unavailable_seconds, None);
        assert_eq!(d[1].unavailable_at_run_end_seconds, Some(13.5));
    }

    #[test]
    fn writes_lost_in_a_failover_without_an_outage_are_its_triggers() {
        let triggers = [trigger(1, T0 + 30.0, 0.1), trigger(2, T0 + 60.0, 0.1)];
        let outages = [outage(1, T0 + 60.2, Some(0.5), 2)];
        // Trigger 1: a switch faster than the outage threshold that lost 3; one before it.
        let loss = |at, lost, rpo_seconds| LossWithoutOutage {
            at,
            lost,
            rpo_seconds,
            at_least: false,
        };
        let mut losses = [
            loss(T0 + 20.0, 7, 0.9),
            loss(T0 + 31.0, 3, 0.4),
            loss(T0 + 62.0, 1, 0.3),
        ];
        // The last found to be a lower bound: its trigger's loss is one too, not the first's.
        losses[2].at_least = true;
        let d = attribute(&triggers, &[], &outages, (&[], &losses), T0 + 90.0);
        assert_eq!((d[0].outage, d[0].lost_writes), (None, Some(3)));
        assert!(!d[0].lost_writes_at_least && d[1].lost_writes_at_least);
        assert_eq!(d[0].rpo_seconds, Some(0.4));
        assert_eq!(
            d[1].lost_writes,
            Some(3),
            "its outage's 2 and 1 found apart"
        );
        assert_eq!(d[1].rpo_seconds, Some(0.3), "the larger of 0.2 and 0.3");
        let d = attribute(&triggers, &[], &outages, (&[], &[]), T0 + 90.0);
        assert_eq!((d[0].lost_writes, d[1].lost_writes), (None, Some(2)));
        assert_eq!((d[0].rpo_seconds, d[1].rpo_seconds), (None, Some(0.2)));
    }

    #[test]
    fn an_outage_after_a_trigger_killed_at_stop_is_not_the_previous_triggers() {
        // Trigger 2 started at +90 and was killed at stop: no record, only its baseline.
        let triggers = [trigger(1, T0 + 30.0, 0.2)];
        let baseline = |trigger, to_unix| Baseline {
            trigger,
            from_unix: to_unix - 10.0,
            to_unix,
            successes: 1000,
            errors: 0,
            target_rate: Some(100.0),
        };
        let baselines = [baseline(1, T0 + 30.0), baseline(2, T0 + 90.0)];
        let outages = [
            outage(1, T0 + 30.2, Some(0.4), 0),
            outage(2, T0 + 90.3, None, 0),
        ];
        let d = attribute(&triggers, &baselines, &outages, (&[], &[]), T0 + 95.0);
        assert_eq!(d[0].outage, Some(1));
        assert!(d[0].later_outages.is_empty(), "{:?}", d[0]);
        assert_eq!(d[0].unavailable_at_run_end_seconds, None);
        // Without the killed trigger's baseline (an older summary), the window runs on.
        let d = attribute(&triggers, &[], &outages, (&[], &[]), T0 + 95.0);
        assert_eq!(d[0].later_outages, vec![2]);
    }

    #[test]
    fn an_unhealthy_baseline_says_why() {
        let healthy = Baseline {
            trigger: 1,
            from_unix: T0,
            to_unix: T0 + 10.0,
            successes: 9_600,
            errors: 0,
            target_rate: Some(1000.0),
        };
        assert_eq!(healthy.problem(), None);
        let slow = Baseline {
            successes: 9_400,
            errors: 3,
            ..healthy.clone()
        };
        let why = slow.problem().unwrap();
        assert!(
            why.contains("trigger 1")
                && why.contains("3 failed writes")
                && why.contains("940/s achieved of 1000/s target (94 %"),
            "{why}"
        );
        let down = Baseline {
            successes: 0,
            errors: 0,
            target_rate: None,
            ..healthy.clone()
        };
        assert!(down.problem().unwrap().contains("no acknowledged write"));
        let squeezed = Baseline::between(
            2,
            Counts {
                unix: T0,
                successes: 500,
                errors: 7,
            },
            Counts {
                unix: T0 + 0.2,
                successes: 700,
                errors: 7,
            },
            Some(1000.0),
        );
        assert_eq!((squeezed.successes, squeezed.errors), (200, 0));
        assert!(
            squeezed.problem().unwrap().contains("only 0.2 s of load"),
            "{squeezed:?}"
        );
        let from_counters = Baseline::between(
            1,
            Counts {
                unix: T0,
                successes: 100,
                errors: 2,
            },
            Counts {
                unix: T0 + 10.0,
                successes: 10_100,
                errors: 2,
            },
            Some(1000.0),
        );
        assert_eq!(from_counters.problem(), None, "{from_counters:?}");
    }

    #[test]
    fn nearest_rank_picks_measured_values() {
        let d = Distribution::of([0.5, 0.1, 0.3, 0.2, 0.4]).unwrap();
        assert_eq!(
            d,
            Distribution {
                samples: 5,
                min: 0.1,
                median: 0.3,
                p95: 0.5,
                max: 0.5
            }
        );
        // Even count: the lower middle; p95 of 20 is the 19th.
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        let d = Distribution::of(v).unwrap();
        assert_eq!((d.median, d.p95), (10.0, 19.0));
        let d = Distribution::of([7.0]).unwrap();
        assert_eq!((d.min, d.median, d.p95, d.max), (7.0, 7.0, 7.0, 7.0));
        assert_eq!(Distribution::of([f64::NAN]), None);
        assert_eq!(Distribution::of([]), None);
    }

    #[test]
    fn three_failovers_give_three_samples_from_their_outages() {
        let t0 = 1_800_000_000.0;
        let triggers = [
            trigger(1, t0 + 10.0, 0.1),
            trigger(2, t0 + 40.0, 0.3),
            trigger(3, t0 + 70.0, 0.2),
        ];
        let outages = [
            outage(1, t0 + 10.05, Some(0.4), 0),
            outage(2, t0 + 40.25, Some(0.9), 1),
            outage(3, t0 + 70.1, Some(0.6), 0),
        ];
        let primaries = [t0 + 10.3, t0 + 41.0, t0 + 70.5];
        let drills = attribute(&triggers, &[], &outages, (&primaries, &[]), t0 + 100.0);
        let d = DrillDistribution::of(&drills);
        let unavailable = d.write_unavailable_seconds.unwrap();
        assert_eq!(unavailable.samples, 3);
        assert_eq!(
            (unavailable.min, unavailable.median, unavailable.max),
            (0.4, 0.6, 0.9)
        );
        let first_failed = d.trigger_to_first_failed_write_seconds.unwrap();
        assert!((first_failed.max - 0.25).abs() < 1e-6, "{first_failed:?}");
        assert_eq!(d.lost_writes.unwrap().max, 1.0);
        assert_eq!(d.trigger_seconds.unwrap().median, 0.2);
        assert_eq!(d.trigger_to_new_primary_write_seconds.unwrap().samples, 3);
    }
}
