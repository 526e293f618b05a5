//! The chart's geometry in SVG user units, and the grid of columns that maps the timeline's
//! buckets and times onto it.

use std::fmt::Write;

use maud::Render;

use crate::telemetry::timeline::{Bucket, Timeline};

/// Most columns a chart has (about 2 px each).
pub(crate) const MAX_COLUMNS: usize = 540;

/// Column widths and time-tick steps, in seconds.
const STEPS: [u64; 22] = [
    1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
    172_800, 604_800, 2_592_000,
];

/// The first step of [`STEPS`] at least `s` long, else a multiple of its longest.
pub(crate) fn step_at_least(s: u64) -> u64 {
    const LONGEST: u64 = STEPS[STEPS.len() - 1];
    let beyond = || s.div_ceil(LONGEST).saturating_mul(LONGEST);
    STEPS.into_iter().find(|&x| x >= s).unwrap_or_else(beyond)
}

/// Chart geometry (SVG user units).
pub(super) const W: f64 = 1000.0;
pub(super) const LEFT: f64 = 70.0;
pub(super) const RIGHT: f64 = 26.0;
pub(super) const PW: f64 = W - LEFT - RIGHT;
pub(super) const MARK_TOP: f64 = 4.0;
pub(super) const MARK_ROWS: usize = 3;
pub(super) const MARK_ROW_H: f64 = 14.0;
pub(super) const RATE_TOP: f64 = 70.0;
pub(super) const RATE_H: f64 = 170.0;
pub(super) const ERR_TOP: f64 = RATE_TOP + RATE_H + 34.0;
pub(super) const ERR_H: f64 = 110.0;
pub(super) const LAT_TOP: f64 = ERR_TOP + ERR_H + 34.0;
pub(super) const LAT_H: f64 = 170.0;
pub(super) const BAND_TOP: f64 = LAT_TOP + LAT_H + 28.0;
pub(super) const BAND_H: f64 = 18.0;
pub(super) const AXIS_Y: f64 = BAND_TOP + BAND_H;
pub(super) const H: f64 = AXIS_Y + 40.0;

/// A coordinate with one decimal, as the chart writes them.
#[derive(Clone, Copy)]
pub(super) struct D1(pub(super) f64);

impl Render for D1 {
    fn render_to(&self, buffer: &mut String) {
        let _ = write!(buffer, "{:.1}", self.0);
    }
}

/// One column of the chart: merged buckets and how many seconds they covered.
#[derive(Clone, Copy)]
pub(super) struct Column {
    pub(super) b: Bucket,
    pub(super) covered: u64,
}

impl Column {
    /// A count of the column, per second it covered.
    pub(super) fn per_sec(&self, n: u64) -> f64 {
        n as f64 / self.covered.max(1) as f64
    }
}

pub(super) struct Grid {
    /// First column's start and the column width, unix seconds.
    pub(super) t0: u64,
    pub(super) step: u64,
    pub(super) cols: Vec<Option<Column>>,
}

impl Grid {
    /// Columns over `[from, to)` holding the buckets that start in it, never narrower than
    /// the widest bucket in view (a 10-minute bucket is not drawn as one second's worth).
    pub(super) fn new(t: &Timeline, from: u64, to: u64) -> Grid {
        // A report's input can hold buckets out of order.
        let to = to.max(from);
        let span = (to - from).max(1);
        let in_view = |b: &&Bucket| b.end() > from && b.at < to;
        let widest = t.iter().filter(in_view).map(|b| u64::from(b.span)).max();
        let step = step_at_least(span.div_ceil(MAX_COLUMNS as u64).max(widest.unwrap_or(1)));
        let t0 = from - from % step;
        let n = (to - t0).div_ceil(step).max(1) as usize;
        let mut cols: Vec<Option<Column>> = vec![None; n];
        for b in t.iter().filter(in_view) {
            let i = ((b.at.max(t0) - t0) / step) as usize;
            let covered = u64::from(b.span);
            match cols.get_mut(i) {
                Some(Some(c)) => {
                    c.b.merge(b);
                    c.covered += covered;
                }
                Some(slot) => *slot = Some(Column { b: *b, covered }),
                None => {}
            }
        }
        Grid { t0, step, cols }
    }

    /// Where column `i` starts (Unix seconds).
    pub(super) fn at(&self, i: usize) -> u64 {
        self.t0.saturating_add(self.step.saturating_mul(i as u64))
    }

    pub(super) fn end(&self) -> u64 {
        self.at(self.cols.len())
    }

    pub(super) fn x(&self, unix: f64) -> f64 {
        let span = (self.end() - self.t0) as f64;
        LEFT + ((unix - self.t0 as f64) / span).clamp(0.0, 1.0) * PW
    }

    pub(super) fn col_x(&self, i: usize) -> (f64, f64) {
        (self.x(self.at(i) as f64), self.x(self.at(i + 1) as f64))
    }

    /// Runs of consecutive present columns with equal `key`: `[a, b)` and the key.
    pub(super) fn runs<K: PartialEq>(&self, key: impl Fn(&Column) -> K) -> Vec<(usize, usize, K)> {
        let mut out: Vec<(usize, usize, K)> = Vec::new();
        let cols = self.cols.iter().enumerate();
        for (i, k) in cols.filter_map(|(i, c)| Some((i, key(c.as_ref()?)))) {
            match out.last_mut() {
                Some((_, end, last)) if *end == i && *last == k => *end = i + 1,
                _ => out.push((i, i + 1, k)),
            }
        }
        out
    }
}
