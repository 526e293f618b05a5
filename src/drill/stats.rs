//! The distribution of each figure over the failovers of a run: one number from one
//! failover says little.

use serde::{Deserialize, Serialize};

use crate::drill::timing::DrillTiming;

/// Min, median, 95th percentile and max of the samples. Percentiles are nearest-rank
/// (the smallest sample with at least p % of the samples at or below it), so every value
/// reported is one that was measured; the median of an even count is the lower middle.
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
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Distribution {
            samples: v.len(),
            min: v[0],
            median: nearest_rank(&v, 50.0),
            p95: nearest_rank(&v, 95.0),
            max: v[v.len() - 1],
        })
    }
}

/// The nearest-rank percentile of sorted, non-empty `v`: the value at rank ⌈p/100 · n⌉.
pub fn nearest_rank(v: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
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
mod tests {
    use super::*;
    use crate::drill::timing::attribute;
    use crate::drill::timing::tests::{outage, trigger};

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
        let drills = attribute(&triggers, &outages, &primaries, t0 + 100.0);
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
