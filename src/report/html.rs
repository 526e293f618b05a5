//! The drill report: one self-contained HTML page (inline SVG and CSS, no script,
//! nothing fetched) to paste into a post-mortem, and the live `/` page.
//!
//! The SVG is written by hand. The `svg` crate (0.18) builds elements and escapes
//! attributes, but scales, ticks, the log axis, stacking and layout, which are most of
//! a chart, would still be ours; it would add a dependency to replace a few `write!`s.
//! Every text that reaches the page goes through [`esc`].
//!
//! The timeline is drawn in columns: buckets are merged (with the timeline's own
//! merge rules, so the worst state and the highest p99 survive) into at most
//! [`MAX_COLUMNS`] columns of a round number of seconds. The page's size is therefore
//! bounded whatever the run's length, and events are drawn at their exact times.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::telemetry::timeline::{Bucket, Event, EventKind, State, Timeline};

/// What the live page shows.
pub const LIVE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Most columns a chart has (about 2 px each).
pub const MAX_COLUMNS: usize = 540;

/// Event rows listed under the chart (the latest); the markers show them all.
const MAX_EVENT_ROWS: usize = 300;

/// Latency percentiles of the whole run, as in the drill summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// Which server was the primary (field names as in the summary JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Identity {
    pub server_addr: Option<String>,
    pub server_port: Option<u16>,
    pub in_recovery: Option<bool>,
    pub system_identifier: Option<String>,
    pub timeline: Option<i64>,
    pub postmaster_start: Option<String>,
}

impl Identity {
    fn describe_short(&self) -> String {
        let mut s = self.endpoint();
        if let Some(t) = self.timeline {
            let _ = write!(s, " (tl {t})");
        }
        s
    }

    fn endpoint(&self) -> String {
        match (&self.server_addr, self.server_port) {
            (Some(a), Some(p)) => format!("{a}:{p}"),
            (Some(a), None) => a.clone(),
            _ => "?".to_string(),
        }
    }
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        match (&self.server_addr, self.server_port) {
            (Some(a), Some(p)) => parts.push(format!("{a}:{p}")),
            (Some(a), None) => parts.push(a.clone()),
            _ => parts.push("address unknown".to_string()),
        }
        if let Some(t) = self.timeline {
            parts.push(format!("timeline {t}"));
        }
        match self.in_recovery {
            Some(true) => parts.push("in recovery".to_string()),
            Some(false) => parts.push("primary".to_string()),
            None => {}
        }
        if let Some(s) = &self.system_identifier {
            parts.push(format!("system id {s}"));
        }
        if let Some(s) = &self.postmaster_start {
            parts.push(format!("up since {s}"));
        }
        parts.join(", ")
    }
}

/// One outage (field names as the summary's outage records).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Outage {
    pub index: usize,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub start_unix: f64,
    pub end_unix: Option<f64>,
    pub write_unavailable_seconds: Option<f64>,
    pub time_to_full_rate_seconds: Option<f64>,
    pub error_classes: Vec<String>,
    pub identity_before: Option<Identity>,
    pub identity_after: Option<Identity>,
    pub checked_writes: Option<u64>,
    pub lost_writes: Option<u64>,
    pub rpo_seconds: Option<f64>,
    pub unknown_outcome_committed: Option<u64>,
    pub unknown_outcome_not_committed: Option<u64>,
    pub verification_seconds: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StateChange {
    pub at: String,
    pub from: String,
    pub to: String,
}

/// A command-line setting as run; the caller leaves passwords out, and any flag
/// whose name mentions a password is redacted here as well.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Flag {
    pub name: String,
    pub value: String,
}

/// Everything the report shows. Field names follow the drill summary's JSON, so a
/// summary file deserializes into it; the timeline, flags, identities and the RTO
/// objective are the additions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ReportInput {
    pub version: String,
    pub run_id: i64,
    /// Redacted target description (no password).
    pub target: String,
    pub started_at: String,
    pub duration_seconds: f64,
    pub target_rate: Option<f64>,
    pub achieved_rate: f64,
    pub transactions: u64,
    pub successes: u64,
    pub errors: BTreeMap<String, u64>,
    pub skipped: u64,
    pub abandoned: u64,
    pub latency: Percentiles,
    pub primary_changes: u64,
    pub outages: Vec<Outage>,
    pub state_changes: Vec<StateChange>,
    pub lost_writes: u64,
    pub unknown_outcome_writes: u64,
    pub unknown_outcome_committed: u64,
    pub unknown_outcome_not_committed: u64,
    /// The primary when the run began and when it ended.
    pub identity_first: Option<Identity>,
    pub identity_last: Option<Identity>,
    /// Longest acceptable write unavailability per outage.
    pub rto_objective_seconds: Option<f64>,
    /// The summary named no objective: [`DEFAULT_RTO_OBJECTIVE`] stands in.
    #[serde(skip)]
    pub rto_objective_is_default: bool,
    pub flags: Vec<Flag>,
    pub timeline: Timeline,
    /// A drill's triggers, the figures timed from them and its verdict
    /// (`--failover-command`, `pgdrill demo`); absent in a canary run.
    pub drill: Option<DrillInput>,
}

/// The summary's `drill` object, as far as the report shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DrillInput {
    pub command: String,
    pub objectives: DrillObjectives,
    pub triggers: Vec<DrillTrigger>,
    pub drills: Vec<DrillFigures>,
    pub verdict: DrillVerdict,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DrillObjectives {
    pub rto_seconds: f64,
    pub max_lost_writes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DrillTrigger {
    pub index: usize,
    pub started_unix: f64,
    pub duration_seconds: f64,
    /// `{"kind": "ok" | "cannot_start" | …, …}`.
    pub outcome: serde_json::Value,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DrillFigures {
    pub trigger: usize,
    pub trigger_to_first_failed_write_seconds: Option<f64>,
    pub trigger_to_new_primary_write_seconds: Option<f64>,
    pub write_unavailable_seconds: Option<f64>,
    pub lost_writes: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DrillVerdict {
    /// `pass`, `fail` or `invalid`.
    pub verdict: String,
    pub failed: Vec<String>,
    pub invalid: Vec<String>,
}

/// The RTO objective when the summary names none (`--rto-objective`'s default).
pub const DEFAULT_RTO_OBJECTIVE: f64 = 120.0;

impl ReportInput {
    /// From a drill summary as JSON (the `--summary-json` file, or the summary in
    /// memory); fills in the default objective.
    pub fn from_summary(v: serde_json::Value) -> Result<ReportInput, String> {
        let is_summary = v
            .as_object()
            .is_some_and(|o| o.contains_key("run_id") && o.contains_key("transactions"));
        if !is_summary {
            return Err("not a pgdrill summary (no run_id or transactions)".to_string());
        }
        let mut r: ReportInput = serde_json::from_value(v).map_err(|e| e.to_string())?;
        if r.rto_objective_seconds.is_none() {
            r.rto_objective_seconds = r.drill.as_ref().map(|d| d.objectives.rto_seconds);
        }
        if r.rto_objective_seconds.is_none() {
            r.rto_objective_seconds = Some(DEFAULT_RTO_OBJECTIVE);
            r.rto_objective_is_default = true;
        }
        Ok(r)
    }
}

/// What the live `/` page shows besides the recent timeline.
#[derive(Debug, Clone, Default)]
pub struct LiveInput {
    pub version: String,
    pub run_id: i64,
    pub target: String,
    pub started_at: String,
    pub state: State,
    pub target_rate: Option<f64>,
    pub transactions: u64,
    pub successes: u64,
    pub lost_writes: u64,
    pub unknown_outcome_writes: u64,
    pub primary: Option<Identity>,
    pub rto_objective_seconds: Option<f64>,
    /// Outages so far (the page lists the latest few).
    pub outages: Vec<Outage>,
    /// At least the last [`LIVE_WINDOW`] (`Timeline::recent`); older buckets are ignored.
    pub timeline: Timeline,
}

/// HTML/XML text and attribute escaping (the form `secrets` also scrubs).
pub use crate::secrets::html_escaped as esc;

/// Durations as people read them: 274 ms, 2.74 s, 1 min 05 s.
pub(crate) fn fmt_secs(s: f64) -> String {
    if !s.is_finite() {
        return "-".to_string();
    }
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 60.0 {
        format!("{s:.2} s")
    } else if s < 3600.0 {
        format!("{} min {:02.0} s", (s / 60.0).floor(), s % 60.0)
    } else {
        format!(
            "{} h {:02} min",
            (s / 3600.0).floor(),
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

pub(crate) fn opt_secs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), fmt_secs)
}

/// 1234567 → "1,234,567".
pub(crate) fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Axis numbers: 0, 2.5, 400, 1,500, 12k, 1.5M.
fn axis_num(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e4 {
        format!("{}k", trim(v / 1e3))
    } else if v >= 1000.0 {
        group(v.round() as u64)
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Unix seconds as RFC 3339 UTC with milliseconds.
fn utc(unix: f64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs_f64(unix.max(0.0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// `2026-11-27T08:12:17.123Z` → `08:12:17.123`.
fn clock_ms(unix: f64) -> String {
    utc(unix).get(11..23).unwrap_or_default().to_string()
}

/// A time of day, with the month and day (`11-19 21:10:00.000`) when the run
/// spans more than one UTC date.
fn when(unix: f64, dated: bool) -> String {
    if dated {
        utc(unix).get(5..23).unwrap_or_default().replace('T', " ")
    } else {
        clock_ms(unix)
    }
}

/// Whether the report's times need dates: the run crosses a UTC midnight.
fn spans_dates(r: &ReportInput) -> bool {
    let starts = r.timeline.span().map(|(a, _)| a as f64);
    let ends = r.timeline.span().map(|(_, b)| b as f64);
    let times = r
        .outages
        .iter()
        .flat_map(|o| [Some(o.start_unix), o.end_unix])
        .chain([starts, ends])
        .flatten();
    let mut days = times.map(|t| (t / 86_400.0).floor() as i64);
    let first = days.next();
    days.any(|d| Some(d) != first)
}

/// A linear axis over `[0, v]`: a round tick step (1, 2 or 5 × 10ⁿ) giving at most
/// `ticks` intervals, and the top as a whole number of steps.
fn nice_axis(v: f64, ticks: u32) -> (f64, f64) {
    let v = if v > 0.0 && v.is_finite() { v } else { 1.0 };
    let raw = v / f64::from(ticks);
    let p = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= raw * 0.999_999)
        .unwrap_or(10.0 * p);
    ((v / step - 1e-9).ceil().max(1.0) * step, step)
}

/// Ticks 0, step, 2·step … top.
fn ticks(top: f64, step: f64) -> impl Iterator<Item = f64> {
    let n = (top / step).round() as u32;
    (0..=n).map(move |k| f64::from(k) * step)
}

/// Column widths and time-tick steps, in seconds.
const STEPS: [u64; 22] = [
    1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
    172_800, 604_800, 2_592_000,
];

fn step_at_least(s: u64) -> u64 {
    STEPS.iter().copied().find(|&x| x >= s).unwrap_or(2_592_000)
}

const STATE_COLOURS: [(State, &str); 4] = [
    (State::Healthy, "#3a9e5f"),
    (State::Degraded, "#e8b02a"),
    (State::Recovering, "#4a90d9"),
    (State::Outage, "#d7263d"),
];

fn state_colour(s: State) -> &'static str {
    STATE_COLOURS
        .iter()
        .find(|(st, _)| *st == s)
        .map_or("#999", |(_, c)| c)
}

/// Error class colours, by index in the timeline's class list.
const CLASS_COLOURS: [&str; 16] = [
    "#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#1f77b4",
    "#2ca02c", "#393b79", "#ad494a", "#8c6d31", "#637939", "#7b4173", "#3182bd", "#e6550d",
];
const SKIPPED_COLOUR: &str = "#a0a0a0";
const RATE_COLOUR: &str = "#1f5fa8";
const P99_COLOUR: &str = "#e6550d";
const P50_COLOUR: &str = "#2b8c7a";
const MAX_COLOUR: &str = "#7b4173";

/// Chart geometry (SVG user units).
const W: f64 = 1000.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 26.0;
const PW: f64 = W - LEFT - RIGHT;
const MARK_TOP: f64 = 4.0;
const MARK_ROWS: usize = 3;
const MARK_ROW_H: f64 = 14.0;
const RATE_TOP: f64 = 70.0;
const RATE_H: f64 = 170.0;
const ERR_TOP: f64 = RATE_TOP + RATE_H + 34.0;
const ERR_H: f64 = 110.0;
const LAT_TOP: f64 = ERR_TOP + ERR_H + 34.0;
const LAT_H: f64 = 170.0;
const BAND_TOP: f64 = LAT_TOP + LAT_H + 28.0;
const BAND_H: f64 = 18.0;
const AXIS_Y: f64 = BAND_TOP + BAND_H;
const H: f64 = AXIS_Y + 40.0;

/// One column of the chart: merged buckets and how many seconds they covered.
#[derive(Clone, Copy)]
struct Column {
    b: Bucket,
    covered: u64,
}

struct Grid {
    /// First column's start and the column width, unix seconds.
    t0: u64,
    step: u64,
    cols: Vec<Option<Column>>,
}

impl Grid {
    /// Columns over `[from, to)` holding the buckets that start in it. A column is
    /// never narrower than the widest bucket in view, so a 10-minute bucket of an
    /// old outage is not drawn as one second's worth.
    fn new(t: &Timeline, from: u64, to: u64) -> Grid {
        let span = to.saturating_sub(from).max(1);
        let in_view = |b: &&Bucket| b.end() > from && b.at < to;
        let widest = t.iter().filter(in_view).map(|b| u64::from(b.span)).max();
        let step = step_at_least(span.div_ceil(MAX_COLUMNS as u64).max(widest.unwrap_or(1)));
        let t0 = from - from % step;
        let n = (to - t0).div_ceil(step).max(1) as usize;
        let mut cols: Vec<Option<Column>> = vec![None; n];
        for b in t.iter().filter(in_view) {
            let i = ((b.at.max(t0) - t0) / step) as usize;
            let Some(slot) = cols.get_mut(i) else {
                continue;
            };
            match slot {
                Some(c) => {
                    c.b.merge(b);
                    c.covered += u64::from(b.span);
                }
                None => {
                    *slot = Some(Column {
                        b: *b,
                        covered: u64::from(b.span),
                    })
                }
            }
        }
        Grid { t0, step, cols }
    }

    fn end(&self) -> u64 {
        self.t0 + self.step * self.cols.len() as u64
    }

    fn x(&self, unix: f64) -> f64 {
        let span = (self.end() - self.t0) as f64;
        LEFT + ((unix - self.t0 as f64) / span).clamp(0.0, 1.0) * PW
    }

    fn col_x(&self, i: usize) -> (f64, f64) {
        let a = self.x((self.t0 + self.step * i as u64) as f64);
        let b = self.x((self.t0 + self.step * (i as u64 + 1)) as f64);
        (a, b)
    }

    /// Runs of consecutive present columns, as index ranges.
    fn runs(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut start = None;
        for (i, c) in self.cols.iter().enumerate() {
            match (c.is_some(), start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    out.push((s, i));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            out.push((s, self.cols.len()));
        }
        out
    }
}

fn panel_frame(out: &mut String, top: f64, h: f64) {
    let _ = write!(
        out,
        r#"<rect class="frame" x="{LEFT}" y="{top}" width="{PW}" height="{h}"/>"#
    );
}

/// Panel titles, drawn last with a white halo so marker lines never cross out a word.
const TITLES: [(f64, &str); 4] = [
    (
        RATE_TOP - 8.0,
        "Achieved rate — acknowledged writes per second",
    ),
    (ERR_TOP - 8.0, "Failed writes per second, by error class"),
    (
        LAT_TOP - 8.0,
        "Latency from intended start — p50, p99 and max (log scale)",
    ),
    (BAND_TOP - 6.0, "Failover state (worst in each column)"),
];

fn titles(out: &mut String) {
    for (y, title) in TITLES {
        let _ = write!(
            out,
            r#"<text class="pt" x="{LEFT}" y="{y:.1}">{}</text>"#,
            esc(title)
        );
    }
}

fn y_tick(out: &mut String, y: f64, label: &str, major: bool) {
    let _ = write!(
        out,
        r#"<line class="{}" x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}"/>"#,
        if major { "grid" } else { "grid minor" },
        LEFT + PW
    );
    if !label.is_empty() {
        let _ = write!(
            out,
            r#"<text class="yl" x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT - 6.0,
            y + 4.0,
            esc(label)
        );
    }
}

/// Achieved rate: a stepped area of successes per second, and the target.
fn rate_panel(out: &mut String, g: &Grid, target: Option<f64>) {
    panel_frame(out, RATE_TOP, RATE_H);
    let peak = g
        .cols
        .iter()
        .flatten()
        .map(|c| f64::from(c.b.successes) / c.covered.max(1) as f64)
        .fold(0.0, f64::max);
    let (top, step) = nice_axis(peak.max(target.unwrap_or(0.0)) * 1.05, 5);
    let y = |v: f64| RATE_TOP + RATE_H - (v / top).clamp(0.0, 1.0) * RATE_H;
    for v in ticks(top, step) {
        y_tick(out, y(v), &axis_num(v), true);
    }
    let base = RATE_TOP + RATE_H;
    for (a, b) in g.runs() {
        let (x0, _) = g.col_x(a);
        let mut d = format!("M{x0:.1} {base:.1}");
        for i in a..b {
            let Some(c) = g.cols[i] else { continue };
            let (_, x1) = g.col_x(i);
            let _ = write!(
                d,
                "V{:.1}H{x1:.1}",
                y(f64::from(c.b.successes) / c.covered.max(1) as f64)
            );
        }
        let _ = write!(d, "V{base:.1}Z");
        let _ = write!(
            out,
            r#"<path d="{d}" fill="{RATE_COLOUR}" fill-opacity="0.22" stroke="{RATE_COLOUR}" stroke-width="1.4" stroke-linejoin="round"/>"#
        );
    }
    if let Some(t) = target {
        let _ = write!(
            out,
            r#"<line class="target" x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}"/><text class="tl" x="{:.1}" y="{:.1}">target {}/s</text>"#,
            LEFT + PW,
            y(t),
            y(t),
            LEFT + PW - 4.0,
            y(t) - 4.0,
            esc(&axis_num(t))
        );
    }
}

/// Errors per second stacked by class, with skipped (never started) on top.
fn error_panel(out: &mut String, g: &Grid) {
    panel_frame(out, ERR_TOP, ERR_H);
    let per_sec =
        |c: &Column| (c.b.errors_total() + u64::from(c.b.skipped)) as f64 / c.covered.max(1) as f64;
    let peak = g.cols.iter().flatten().map(per_sec).fold(0.0, f64::max);
    let base = ERR_TOP + ERR_H;
    if peak == 0.0 {
        let _ = write!(
            out,
            r#"<text class="none" x="{:.1}" y="{:.1}">no failed or skipped writes</text>"#,
            LEFT + PW / 2.0,
            ERR_TOP + ERR_H / 2.0 + 4.0
        );
        y_tick(out, base, "0", true);
        return;
    }
    let (top, step) = nice_axis(peak * 1.05, 3);
    let scale = ERR_H / top;
    for v in ticks(top, step) {
        y_tick(out, base - v * scale, &axis_num(v), true);
    }
    for (i, c) in g.cols.iter().enumerate() {
        let Some(c) = c else { continue };
        let (x0, x1) = g.col_x(i);
        let w = (x1 - x0).max(0.6);
        let mut y = base;
        let counts =
            c.b.errors
                .iter()
                .enumerate()
                .map(|(k, n)| (CLASS_COLOURS[k % CLASS_COLOURS.len()], *n))
                .chain(std::iter::once((SKIPPED_COLOUR, c.b.skipped)));
        for (colour, n) in counts {
            if n == 0 {
                continue;
            }
            let h = f64::from(n) / c.covered.max(1) as f64 * scale;
            y -= h;
            let _ = write!(
                out,
                r#"<rect x="{x0:.1}" y="{y:.1}" width="{w:.1}" height="{:.1}" fill="{colour}"/>"#,
                h.max(0.8)
            );
        }
    }
}

/// p50, p99 and max latency on a log axis (seconds).
fn latency_panel(out: &mut String, g: &Grid) {
    panel_frame(out, LAT_TOP, LAT_H);
    let with: Vec<(usize, &Column)> = g
        .cols
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.as_ref().filter(|c| c.b.has_latency()).map(|c| (i, c)))
        .collect();
    let (d0, d1) = latency_decades(&with);
    let y = |v: f64| {
        let l = v.max(1e-9).log10().clamp(d0, d1);
        LAT_TOP + LAT_H - (l - d0) / (d1 - d0) * LAT_H
    };
    let mut d = d0;
    while d <= d1 + 1e-9 {
        let v = 10f64.powf(d);
        y_tick(out, y(v), &latency_label(v), true);
        for m in [2.0, 5.0] {
            if d + 1.0 <= d1 + 1e-9 {
                y_tick(out, y(v * m), "", false);
            }
        }
        d += 1.0;
    }
    if with.is_empty() {
        let _ = write!(
            out,
            r#"<text class="none" x="{:.1}" y="{:.1}">no completed writes</text>"#,
            LEFT + PW / 2.0,
            LAT_TOP + LAT_H / 2.0
        );
        return;
    }
    // Colour, stroke style, and which latency of a bucket; p99 last, drawn on top.
    type Series = (&'static str, &'static str, fn(&Bucket) -> f32);
    let series: [Series; 3] = [
        (
            MAX_COLOUR,
            r#" stroke-width="1" stroke-dasharray="2 2""#,
            |b| b.max,
        ),
        (P50_COLOUR, r#" stroke-width="1.2""#, |b| b.p50),
        (P99_COLOUR, r#" stroke-width="2""#, |b| b.p99),
    ];
    for (colour, style, pick) in series {
        let mut path = String::new();
        let mut prev: Option<usize> = None;
        for (i, c) in &with {
            let (x0, x1) = g.col_x(*i);
            let v = y(f64::from(pick(&c.b)));
            if prev.is_some_and(|p| p + 1 == *i) {
                let _ = write!(path, "V{v:.1}H{x1:.1}");
            } else {
                let _ = write!(path, "M{x0:.1} {v:.1}H{x1:.1}");
            }
            prev = Some(*i);
        }
        let _ = write!(
            out,
            r#"<path d="{path}" fill="none" stroke="{colour}"{style}/>"#
        );
    }
}

/// The log axis's range in decades (powers of ten of seconds): from the lowest latency drawn
/// to the highest, at least two decades and at most eight.
fn latency_decades(with: &[(usize, &Column)]) -> (f64, f64) {
    let lo = with
        .iter()
        .map(|(_, c)| f64::from(c.b.p50.min(c.b.p99)))
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let hi = with
        .iter()
        .map(|(_, c)| f64::from(c.b.max.max(c.b.p99)))
        .fold(0.0, f64::max);
    let mut d0 = if lo.is_finite() {
        lo.log10().floor()
    } else {
        -3.0
    };
    d0 = d0.max(-5.0);
    let mut d1 = if hi > 0.0 { hi.log10().ceil() } else { 0.0 };
    if d1 - d0 < 2.0 {
        d1 = d0 + 2.0;
    }
    let d1 = d1.min(d0 + 8.0);
    (d0, d1)
}

fn latency_label(v: f64) -> String {
    if v >= 1.0 {
        format!("{} s", trim(v))
    } else if v >= 1e-3 {
        format!("{} ms", trim(v * 1e3))
    } else {
        format!("{} µs", trim(v * 1e6))
    }
}

/// The failover state as a colour band; adjacent equal columns become one rectangle.
fn state_band(out: &mut String, g: &Grid) {
    let _ = write!(
        out,
        r##"<rect x="{LEFT}" y="{BAND_TOP}" width="{PW}" height="{BAND_H}" fill="#eee"/>"##
    );
    let mut i = 0;
    while i < g.cols.len() {
        let Some(c) = g.cols[i] else {
            i += 1;
            continue;
        };
        let mut j = i + 1;
        while j < g.cols.len() && g.cols[j].is_some_and(|n| n.b.state == c.b.state) {
            j += 1;
        }
        let (x0, _) = g.col_x(i);
        let (_, x1) = g.col_x(j - 1);
        let from = g.t0 + g.step * i as u64;
        let to = g.t0 + g.step * j as u64;
        let _ = write!(
            out,
            r#"<rect x="{x0:.1}" y="{BAND_TOP}" width="{:.1}" height="{BAND_H}" fill="{}"><title>{} {}–{}</title></rect>"#,
            (x1 - x0).max(1.0),
            state_colour(c.b.state),
            c.b.state.as_str(),
            utc(from as f64),
            utc(to as f64)
        );
        i = j;
    }
}

fn time_axis(out: &mut String, g: &Grid) {
    let span = g.end() - g.t0;
    let step = step_at_least(span.div_ceil(10));
    let first = g.t0.div_ceil(step) * step;
    let multi_day = span > 86_400;
    let mut t = first;
    while t <= g.end() {
        let x = g.x(t as f64);
        let stamp = utc(t as f64);
        let label = if multi_day {
            stamp.get(5..16).unwrap_or_default().replace('T', " ")
        } else if step < 60 {
            stamp.get(11..19).unwrap_or_default().to_string()
        } else {
            stamp.get(11..16).unwrap_or_default().to_string()
        };
        let _ = write!(
            out,
            r#"<line class="vgrid" x1="{x:.1}" x2="{x:.1}" y1="{RATE_TOP}" y2="{AXIS_Y}"/><line class="tick" x1="{x:.1}" x2="{x:.1}" y1="{AXIS_Y}" y2="{:.1}"/><text class="xl" x="{x:.1}" y="{:.1}">{}</text>"#,
            AXIS_Y + 5.0,
            AXIS_Y + 17.0,
            esc(&label)
        );
        t += step;
    }
    let date = utc(g.t0 as f64).get(..10).unwrap_or_default().to_string();
    let _ = write!(
        out,
        r#"<text class="xc" x="{:.1}" y="{:.1}">time (UTC, {}) · one column = {}</text>"#,
        LEFT + PW / 2.0,
        AXIS_Y + 34.0,
        esc(&date),
        esc(&fmt_step(g.step))
    );
}

/// Column widths: 1 s, 10 s, 5 min, 2 h, 1 day.
fn fmt_step(s: u64) -> String {
    match s {
        s if s.is_multiple_of(86_400) => {
            format!("{} day{}", s / 86_400, if s == 86_400 { "" } else { "s" })
        }
        s if s.is_multiple_of(3600) => format!("{} h", s / 3600),
        s if s.is_multiple_of(60) => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// Marker code, colour and description of an event.
/// The event's kind as in the JSON, for the page's `data-kind` attributes.
fn kind_name(k: &EventKind) -> &'static str {
    match k {
        EventKind::OutageStart { .. } => "outage_start",
        EventKind::OutageEnd { .. } => "outage_end",
        EventKind::PrimaryChange { .. } => "primary_change",
        EventKind::Verification { .. } => "verification",
        EventKind::Restart { .. } => "restart",
        EventKind::FailoverTrigger { .. } => "failover_trigger",
    }
}

fn marker(e: &Event) -> (String, &'static str, String) {
    match &e.kind {
        EventKind::OutageStart { outage } => (
            format!("O{outage}"),
            "#d7263d",
            format!("outage {outage} starts: first failed write after the last acknowledged one"),
        ),
        EventKind::OutageEnd {
            outage,
            unavailable_seconds,
        } => (
            format!("E{outage}"),
            "#3a9e5f",
            format!(
                "outage {outage} ends: first acknowledged write; writes unavailable {}",
                opt_secs(*unavailable_seconds)
            ),
        ),
        EventKind::PrimaryChange { before, after } => (
            "P".to_string(),
            "#6a3d9a",
            format!("primary changed: {before} → {after}"),
        ),
        EventKind::Verification {
            outage,
            checked,
            lost,
            unknown_committed,
            unknown_not_committed,
        } => (
            if *lost == 0 { "V✓" } else { "V✗" }.to_string(),
            if *lost == 0 { "#1b7f79" } else { "#b30000" },
            format!(
                "verification{}: {} acknowledged writes checked, {} lost; unknown outcomes {} on the new primary, {} not on it",
                outage.map_or_else(String::new, |o| format!(" after outage {o}")),
                group(*checked),
                group(*lost),
                group(*unknown_committed),
                group(*unknown_not_committed)
            ),
        ),
        EventKind::Restart { what } => ("R".to_string(), "#8c6d31", format!("restart: {what}")),
        EventKind::FailoverTrigger { how } => {
            ("T".to_string(), "#111", format!("failover triggered: {how}"))
        }
    }
}

/// Outage spans shaded across all panels, from the start and end events.
fn outage_shading(out: &mut String, g: &Grid, events: &[&Event]) {
    let mut open: BTreeMap<u32, f64> = BTreeMap::new();
    let mut spans = Vec::new();
    for e in events {
        match e.kind {
            EventKind::OutageStart { outage } => {
                open.insert(outage, e.at);
            }
            EventKind::OutageEnd { outage, .. } => {
                if let Some(s) = open.remove(&outage) {
                    spans.push((s, e.at));
                }
            }
            _ => {}
        }
    }
    spans.extend(open.values().map(|s| (*s, g.end() as f64)));
    for (s, e) in spans {
        let (x0, x1) = (g.x(s), g.x(e));
        let _ = write!(
            out,
            r##"<rect x="{:.1}" y="{RATE_TOP}" width="{:.1}" height="{:.1}" fill="#d7263d" fill-opacity="0.12"/>"##,
            x0.min(x1 - 2.0).max(LEFT),
            (x1 - x0).max(2.0),
            BAND_TOP + BAND_H - RATE_TOP
        );
    }
}

/// Vertical markers at the events' exact times. Labels go in up to three rows;
/// when events crowd, a label moves right of its neighbours with a leader line
/// back to its marker, so close events stay legible.
fn markers(out: &mut String, g: &Grid, events: &[&Event]) {
    let mut row_end = [f64::NEG_INFINITY; MARK_ROWS];
    let knee = MARK_TOP + MARK_ROW_H * MARK_ROWS as f64 + 6.0;
    for e in events {
        let x = g.x(e.at);
        let (code, colour, text) = marker(e);
        let w = 8.0 * code.chars().count() as f64 + 4.0;
        let (row, lx) = match (0..MARK_ROWS).find(|r| row_end[*r] + 3.0 <= x - w / 2.0) {
            Some(r) => (r, x),
            None => {
                let r = (0..MARK_ROWS)
                    .min_by(|a, b| row_end[*a].total_cmp(&row_end[*b]))
                    .unwrap_or(0);
                (r, (row_end[r] + 3.0 + w / 2.0).min(W - w / 2.0))
            }
        };
        row_end[row] = lx + w / 2.0;
        let ly = MARK_TOP + MARK_ROW_H * (row as f64 + 1.0);
        let dash = match e.kind {
            EventKind::OutageStart { .. } | EventKind::OutageEnd { .. } => "",
            _ => r#" stroke-dasharray="4 3""#,
        };
        let _ = write!(
            out,
            r#"<g class="mk" data-kind="{}"><title>{} {}</title><polyline points="{lx:.1},{:.1} {x:.1},{knee:.1} {x:.1},{:.1}" fill="none" stroke="{colour}" stroke-width="1.2"{dash}/><text class="ml" x="{lx:.1}" y="{ly:.1}" fill="{colour}">{}</text></g>"#,
            kind_name(&e.kind),
            esc(&utc(e.at)),
            esc(&text),
            ly + 3.0,
            BAND_TOP + BAND_H,
            esc(&code)
        );
    }
}

/// The whole timeline chart over `[from, to)`.
pub(crate) fn chart(t: &Timeline, from: u64, to: u64, target: Option<f64>, label: &str) -> String {
    let g = Grid::new(t, from, to);
    let events: Vec<&Event> = t
        .events
        .iter()
        .filter(|e| e.at >= g.t0 as f64 && e.at <= g.end() as f64)
        .collect();
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{}">"#,
        esc(label)
    );
    rate_panel(&mut out, &g, target);
    error_panel(&mut out, &g);
    latency_panel(&mut out, &g);
    state_band(&mut out, &g);
    time_axis(&mut out, &g);
    outage_shading(&mut out, &g, &events);
    markers(&mut out, &g, &events);
    titles(&mut out);
    out.push_str("</svg>");
    out
}

pub(crate) fn legend(t: &Timeline) -> String {
    let mut out = String::from(r#"<div class="legend">"#);
    let item = |out: &mut String, colour: &str, kind: &str, text: &str| {
        let _ = write!(
            out,
            r#"<span class="li"><i class="{kind}" style="background:{colour};border-color:{colour}"></i>{}</span>"#,
            esc(text)
        );
    };
    item(&mut out, RATE_COLOUR, "sw", "acknowledged writes/s");
    item(&mut out, P50_COLOUR, "ln", "latency p50");
    item(&mut out, P99_COLOUR, "ln thick", "latency p99");
    item(&mut out, MAX_COLOUR, "ln dot", "latency max");
    // Only the classes that occur, so the legend reads as a list of what went wrong.
    let mut seen = [false; crate::telemetry::timeline::MAX_CLASSES];
    let mut skipped = false;
    for b in t.iter() {
        for (k, n) in b.errors.iter().enumerate() {
            seen[k] |= *n > 0;
        }
        skipped |= b.skipped > 0;
    }
    for (k, name) in t.classes().iter().enumerate() {
        if seen.get(k).copied().unwrap_or(false) {
            item(&mut out, CLASS_COLOURS[k % CLASS_COLOURS.len()], "sw", name);
        }
    }
    if skipped {
        item(&mut out, SKIPPED_COLOUR, "sw", "skipped (never started)");
    }
    out.push_str("<br>");
    for (s, c) in STATE_COLOURS {
        item(&mut out, c, "sw", s.as_str());
    }
    out.push_str(
        r#"<span class="li wrap">markers: <b class="k" style="color:#111">T</b> failover triggered · <b class="k" style="color:#d7263d">O<i>n</i></b> outage n starts · <b class="k" style="color:#3a9e5f">E<i>n</i></b> outage n ends · <b class="k" style="color:#6a3d9a">P</b> primary changed · <b class="k" style="color:#1b7f79">V✓</b>/<b class="k" style="color:#b30000">V✗</b> verification without/with lost writes · <b class="k" style="color:#8c6d31">R</b> restart</span>"#,
    );
    out.push_str("</div>");
    out
}

fn events_table(t: &Timeline, run_start: f64, dated: bool) -> String {
    let all: Vec<&Event> = t.events.iter().collect();
    if all.is_empty() {
        return "<p class=\"muted\">No events recorded.</p>".to_string();
    }
    let mut out = String::from(
        "<table class=\"events\"><thead><tr><th>time (UTC)</th><th>since start</th><th>marker</th><th>event</th></tr></thead><tbody>",
    );
    let skip = all.len().saturating_sub(MAX_EVENT_ROWS);
    for e in all.iter().skip(skip) {
        let (code, colour, text) = marker(e);
        let _ = write!(
            out,
            r#"<tr><td class="num">{}</td><td class="num">{}</td><td><b style="color:{colour}">{}</b></td><td>{}</td></tr>"#,
            esc(&when(e.at, dated)),
            esc(&format!("{:+.3} s", e.at - run_start)),
            esc(&code),
            esc(&text)
        );
    }
    out.push_str("</tbody></table>");
    let dropped = t.events.dropped() + skip as u64;
    if dropped > 0 {
        let _ = write!(
            out,
            "<p class=\"muted\">{} older events not listed.</p>",
            group(dropped)
        );
    }
    out
}

pub(crate) const CSS: &str = r#"
:root{--ok:#1f7a46;--bad:#b3261e;--warn:#a76b00;--ink:#1c1c1c;--muted:#666;--line:#d8d8d8}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--ink);margin:24px auto;max-width:1200px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid var(--line);padding-bottom:3px}
.sub{color:var(--muted);margin:0 0 16px}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.verdict{border-radius:6px;padding:12px 16px;margin:12px 0;color:#fff;display:flex;gap:24px;align-items:center;flex-wrap:wrap}
.verdict .big{font-size:26px;font-weight:700;letter-spacing:.5px}
.verdict.pass{background:var(--ok)}.verdict.fail{background:var(--bad)}.verdict.incomplete{background:var(--warn)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(250px,1fr));gap:10px;margin:10px 0}
.card{border:1px solid var(--line);border-left:6px solid var(--muted);border-radius:4px;padding:8px 12px}
.card.ok{border-left-color:var(--ok)}.card.bad{border-left-color:var(--bad)}.card.warn{border-left-color:var(--warn)}
.card .v{font-size:20px;font-weight:650}.card .d{color:var(--muted);font-size:12.5px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}td.num{white-space:nowrap}
.muted{color:var(--muted)}.nw{white-space:nowrap}
.chart{width:100%;height:auto;display:block}
.chart text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif}
.chart .frame{fill:none;stroke:#999;stroke-width:1}
.chart .grid{stroke:#e3e3e3;stroke-width:1}.chart .minor{stroke:#f1f1f1}
.chart .vgrid{stroke:#ececec;stroke-width:1}.chart .tick{stroke:#777}
.chart .pt{font-size:14px;font-weight:600;fill:#333;paint-order:stroke;stroke:#fff;stroke-width:4px;stroke-linejoin:round}
.chart .yl{font-size:12.5px;fill:#555;text-anchor:end}
.chart .xl{font-size:12.5px;fill:#444;text-anchor:middle}
.chart .xc{font-size:12.5px;fill:#555;text-anchor:middle}
.chart .tl{font-size:12px;fill:#555;text-anchor:end}
.chart .target{stroke:#555;stroke-width:1.2;stroke-dasharray:6 4}
.chart .none{font-size:13px;fill:#888;text-anchor:middle}
.chart .ml{font-size:12.5px;font-weight:700;text-anchor:middle}
.legend{font-size:12.5px;margin:6px 0 0 6%;line-height:2}
.li{margin-right:16px;white-space:nowrap;display:inline-block}.li.wrap{white-space:normal;display:inline}
.li i{display:inline-block;vertical-align:middle;margin-right:5px}
.li i.sw{width:12px;height:12px;border-radius:2px}
.li i.ln{width:18px;height:0;border-top:1.5px solid;background:none!important}
.li i.ln.thick{border-top-width:3px}.li i.ln.dot{border-top-style:dotted;border-top-width:2px}
.k{font-size:12px}
dl.how dt{font-weight:600;margin-top:8px}dl.how dd{margin:2px 0 0 18px}
.state{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600}
details summary{cursor:pointer;color:var(--muted)}
@media print{
 body{margin:0;max-width:none;font-size:11px}
 .verdict,.card,.state,.chart,.li i{-webkit-print-color-adjust:exact;print-color-adjust:exact}
 h2{break-after:avoid}section,.chart,tr{break-inside:avoid}
 table,code,.mono{font-size:9.5px}.card .v{font-size:16px}
 details{display:none}
}
@page{margin:12mm}
"#;

/// The longest measured write unavailability (the RTO the verdict judges).
fn longest_unavailability(outages: &[Outage]) -> Option<f64> {
    outages
        .iter()
        .filter_map(|o| o.write_unavailable_seconds)
        .reduce(f64::max)
}

struct Verdict {
    class: &'static str,
    word: &'static str,
    reasons: Vec<String>,
}

/// A drill's own verdict (it also judged the baseline and the trigger), else the report's.
fn verdict(r: &ReportInput) -> Verdict {
    if let Some(d) = &r.drill {
        let (class, word) = match d.verdict.verdict.as_str() {
            "pass" => ("pass", "PASS"),
            "fail" => ("fail", "FAIL"),
            _ => ("incomplete", "INVALID"),
        };
        let mut reasons: Vec<String> = d
            .verdict
            .failed
            .iter()
            .chain(&d.verdict.invalid)
            .cloned()
            .collect();
        if reasons.is_empty() {
            reasons = report_verdict(r).reasons;
        }
        return Verdict {
            class,
            word,
            reasons,
        };
    }
    report_verdict(r)
}

/// The figures timed from each trigger of a drill.
pub(crate) fn drill_table(out: &mut String, d: &DrillInput, dated: bool) {
    let _ = write!(
        out,
        "<section><h2>Failover triggers</h2><p class=\"sub\">Trigger <code>{}</code>; \
         objectives: writes unavailable ≤ {}, acknowledged writes lost ≤ {}. Times from the \
         trigger's start.</p><table><tr><th>#</th><th>started</th><th>outcome</th><th>ran</th>\
         <th>first failed write</th><th>first write on the new primary</th>\
         <th>writes unavailable</th><th>lost</th></tr>",
        esc(&d.command),
        esc(&fmt_secs(d.objectives.rto_seconds)),
        group(d.objectives.max_lost_writes)
    );
    for t in &d.triggers {
        let f = d.drills.iter().find(|f| f.trigger == t.index);
        let figure = |v: Option<f64>| esc(&opt_secs(v));
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            t.index,
            esc(&when(t.started_unix, dated)),
            esc(t.outcome["kind"].as_str().unwrap_or("?")),
            esc(&fmt_secs(t.duration_seconds)),
            figure(f.and_then(|f| f.trigger_to_first_failed_write_seconds)),
            figure(f.and_then(|f| f.trigger_to_new_primary_write_seconds)),
            figure(f.and_then(|f| f.write_unavailable_seconds)),
            f.and_then(|f| f.lost_writes).map_or_else(|| "–".to_string(), group),
        );
    }
    out.push_str("</table></section>");
}

fn report_verdict(r: &ReportInput) -> Verdict {
    let mut fail = Vec::new();
    let mut incomplete = Vec::new();
    let worst = longest_unavailability(&r.outages);
    if let (Some(obj), Some(w)) = (r.rto_objective_seconds, worst) {
        if w > obj {
            fail.push(format!(
                "writes unavailable {} > objective {}",
                fmt_secs(w),
                fmt_secs(obj)
            ));
        }
    }
    let open = r.outages.iter().filter(|o| o.end_unix.is_none()).count();
    if open > 0 {
        fail.push(format!("{open} outage(s) never ended during the run"));
    }
    if r.lost_writes > 0 {
        fail.push(format!(
            "{} acknowledged write(s) lost",
            group(r.lost_writes)
        ));
    }
    let unverified = r.outages.iter().filter(|o| o.lost_writes.is_none()).count();
    if unverified > 0 {
        incomplete.push(format!("{unverified} outage(s) not verified"));
    }
    let unresolved = unresolved(r);
    if unresolved > 0 {
        incomplete.push(format!(
            "{} unknown outcome(s) unresolved",
            group(unresolved)
        ));
    }
    if r.rto_objective_seconds.is_none() && !r.outages.is_empty() {
        incomplete.push("no RTO objective given".to_string());
    }
    if !fail.is_empty() {
        fail.extend(incomplete);
        Verdict {
            class: "fail",
            word: "FAIL",
            reasons: fail,
        }
    } else if !incomplete.is_empty() {
        Verdict {
            class: "incomplete",
            word: "INCOMPLETE",
            reasons: incomplete,
        }
    } else {
        let mut reasons = vec!["no acknowledged write lost".to_string()];
        if let (Some(obj), Some(w)) = (r.rto_objective_seconds, worst) {
            reasons.insert(
                0,
                format!(
                    "writes unavailable {} ≤ objective {}",
                    fmt_secs(w),
                    fmt_secs(obj)
                ),
            );
        }
        if r.outages.is_empty() {
            reasons.insert(0, "no outage".to_string());
        }
        Verdict {
            class: "pass",
            word: "PASS",
            reasons,
        }
    }
}

fn unresolved(r: &ReportInput) -> u64 {
    r.unknown_outcome_writes
        .saturating_sub(r.unknown_outcome_committed + r.unknown_outcome_not_committed)
}

pub(crate) fn card(out: &mut String, class: &str, title: &str, value: &str, detail: &str) {
    let _ = write!(
        out,
        r#"<div class="card {class}"><div class="d">{}</div><div class="v">{}</div><div class="d">{}</div></div>"#,
        esc(title),
        esc(value),
        esc(detail)
    );
}

fn headline(out: &mut String, r: &ReportInput) {
    let v = verdict(r);
    let _ = write!(
        out,
        r#"<div class="verdict {}"><span class="big">{}</span><span>{}</span></div><div class="cards">"#,
        v.class,
        v.word,
        esc(&v.reasons.join(" · "))
    );
    rto_card(out, r);
    let checked: u64 = r.outages.iter().filter_map(|o| o.checked_writes).sum();
    card(
        out,
        if r.lost_writes > 0 {
            "bad"
        } else if r.outages.iter().any(|o| o.lost_writes.is_none()) {
            "warn"
        } else {
            "ok"
        },
        "Acknowledged writes lost",
        &group(r.lost_writes),
        &format!(
            "{} acknowledged writes checked on the new primary",
            group(checked)
        ),
    );
    let open = unresolved(r);
    card(
        out,
        if open > 0 { "warn" } else { "ok" },
        "Unknown outcomes (sent, never answered)",
        &group(r.unknown_outcome_writes),
        &format!(
            "{} on the new primary, {} not on it, {} unresolved",
            group(r.unknown_outcome_committed),
            group(r.unknown_outcome_not_committed),
            group(open)
        ),
    );
    let fail = r.transactions.saturating_sub(r.successes);
    card(
        out,
        "",
        "Writes",
        &group(r.transactions),
        &format!(
            "{} acknowledged, {} failed, {} skipped; achieved {:.1}/s{}",
            group(r.successes),
            group(fail),
            group(r.skipped),
            r.achieved_rate,
            r.target_rate
                .map_or_else(String::new, |t| format!(" of {}/s", axis_num(t)))
        ),
    );
    out.push_str("</div>");
}

/// The RTO card: the longest write unavailability against the objective.
fn rto_card(out: &mut String, r: &ReportInput) {
    let worst = longest_unavailability(&r.outages);
    let (class, value) = match (worst, r.rto_objective_seconds) {
        (Some(w), Some(o)) if w <= o => ("ok", fmt_secs(w)),
        (Some(w), Some(_)) => ("bad", fmt_secs(w)),
        (Some(w), None) => ("warn", fmt_secs(w)),
        (None, _) if r.outages.is_empty() => ("ok", "no outage".to_string()),
        (None, _) => ("bad", "not recovered".to_string()),
    };
    let objective = r.rto_objective_seconds.map_or_else(
        || "no objective given".to_string(),
        |o| {
            let default = if r.rto_objective_is_default {
                " (default)"
            } else {
                ""
            };
            format!("objective {}{default}", fmt_secs(o))
        },
    );
    card(
        out,
        class,
        "RTO — longest write unavailability",
        &value,
        &format!("{objective}; {} outage(s)", r.outages.len()),
    );
}

fn outages_table(out: &mut String, r: &ReportInput, dated: bool) {
    if r.outages.is_empty() {
        out.push_str("<p>No outage: writes were acknowledged throughout.</p>");
        return;
    }
    out.push_str(
        "<table class=\"outages\"><thead><tr><th>#</th><th>start (UTC)</th><th>end (UTC)</th><th class=\"num\">writes un&shy;available</th><th class=\"num\">time to full rate</th><th>error classes</th><th class=\"num\">checked</th><th class=\"num\">lost</th><th class=\"num\">RPO</th><th class=\"num\">unknown outcome: committed / not</th><th>primary before → after</th></tr></thead><tbody>",
    );
    for o in &r.outages {
        let id = |i: &Option<Identity>| {
            i.as_ref()
                .map_or_else(|| "?".to_string(), |i| i.describe_short())
        };
        let over = matches!((o.write_unavailable_seconds, r.rto_objective_seconds), (Some(w), Some(obj)) if w > obj);
        let _ = write!(
            out,
            r#"<tr data-outage="{}"><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num" data-seconds="{}"{}><b>{}</b></td><td class="num">{}</td><td>{}</td><td class="num">{}</td><td class="num"{}>{}</td><td class="num">{}</td><td class="num">{} / {}</td><td><span class="nw">{}</span> → <span class="nw">{}</span></td></tr>"#,
            o.index,
            o.index,
            esc(&when(o.start_unix, dated)),
            esc(&o
                .end_unix
                .map_or_else(|| "not ended".to_string(), |t| when(t, dated))),
            o.write_unavailable_seconds
                .map_or_else(String::new, |w| w.to_string()),
            if over {
                r#" style="color:var(--bad)""#
            } else {
                ""
            },
            esc(&opt_secs(o.write_unavailable_seconds)),
            esc(&opt_secs(o.time_to_full_rate_seconds)),
            esc(&o.error_classes.join(", ")),
            o.checked_writes.map_or_else(|| "-".to_string(), group),
            if o.lost_writes.unwrap_or(0) > 0 {
                r#" style="color:var(--bad)""#
            } else {
                ""
            },
            o.lost_writes
                .map_or_else(|| "unverified".to_string(), group),
            esc(&opt_secs(o.rpo_seconds)),
            o.unknown_outcome_committed
                .map_or_else(|| "-".to_string(), group),
            o.unknown_outcome_not_committed
                .map_or_else(|| "-".to_string(), group),
            esc(&id(&o.identity_before)),
            esc(&id(&o.identity_after)),
        );
    }
    out.push_str("</tbody></table>");
}

const HOW: &str = r#"<dl class="how">
<dt>Verdict</dt><dd>FAIL when an acknowledged write was lost, an outage outlasted the RTO objective, or an outage had not ended when the run stopped; otherwise INCOMPLETE when an outage was not verified, an unknown outcome stayed unresolved or no objective was given; otherwise PASS.</dd>
<dt>Write unavailability (RTO)</dt><dd>From the first write that failed (or, with writes in flight and none failing, the last acknowledgement) after the last acknowledged write, to the first acknowledged write after it. Detection delay is not included: the outage is dated back to that first failure. The verdict compares the longest one with the objective.</dd>
<dt>Time to full rate</dt><dd>From the first acknowledged write after the outage to the start of the first recovery window in which the achieved rate held at 95&#8239;% of the target.</dd>
<dt>Lost writes and RPO</dt><dd>Every acknowledged write of the verification window is looked up on the primary reached after the outage; a missing one is lost. The RPO is the span from the earliest lost acknowledgement to the moment writes stopped being acknowledged, rounded up to the acknowledgement ledger's time slice (0 when none is lost).</dd>
<dt>Unknown outcomes</dt><dd>Writes sent whose connection broke before the answer came. Verification looks for each on the new primary: found there, or not on it (an old primary may still hold it); unresolved ones are those verification could not check.</dd>
<dt>Latency</dt><dd>From the write's intended start on the open-loop schedule to its acknowledgement, so time spent waiting for a connection during an outage counts (no coordinated omission).</dd>
<dt>Achieved rate, errors</dt><dd>Acknowledged writes and failed writes per second, sampled once a second. Skipped writes were due while the backlog was full and were never started.</dd>
<dt>Timeline resolution</dt><dd>Each second is kept for 6 hours, then merged into minutes for 24 hours and into 10-minute buckets for 30 days. The chart merges these into at most 540 columns: counts add, p99 and max take the largest (an upper bound, so spikes survive), p50 the success-weighted mean, and each column shows the worst failover state within it, so a sub-second outage still shows. Markers are at the exact event times.</dd>
</dl>"#;

/// Close-ups drawn, of the longest outages.
const MAX_CLOSEUPS: usize = 3;

/// A chart around each of the longest outages: at one column per second of a
/// short drill the whole-run chart shows a 3-second outage as a hairline.
fn closeups(out: &mut String, r: &ReportInput, dated: bool) {
    let Some((first, last)) = r.timeline.span() else {
        return;
    };
    let mut longest: Vec<&Outage> = r.outages.iter().collect();
    longest.sort_by(|a, b| {
        let d = |o: &Outage| o.write_unavailable_seconds.unwrap_or(f64::INFINITY);
        d(b).total_cmp(&d(a))
    });
    longest.truncate(MAX_CLOSEUPS);
    longest.sort_by(|a, b| a.start_unix.total_cmp(&b.start_unix));
    for o in longest {
        let end = o.end_unix.unwrap_or(last as f64);
        let length = (end - o.start_unix).max(0.0);
        let before = (2.0 * length).clamp(15.0, 300.0);
        let after = before.max(o.time_to_full_rate_seconds.unwrap_or(0.0) + 10.0);
        let from = ((o.start_unix - before).floor().max(0.0) as u64).max(first);
        let to = ((end + after).ceil() as u64).min(last);
        if to <= from || (from == first && to == last) {
            continue;
        }
        let _ = write!(
            out,
            "<section><h2>Outage {} close-up: {} to {} UTC</h2>",
            o.index,
            esc(&when(from as f64, dated)),
            esc(&when(to as f64, dated))
        );
        out.push_str(&chart(
            &r.timeline,
            from,
            to,
            r.target_rate,
            &format!("close-up of outage {}", o.index),
        ));
        out.push_str(&legend(&r.timeline));
        out.push_str("</section>");
    }
}

fn identity_row(out: &mut String, label: &str, id: Option<&Identity>) {
    let _ = write!(
        out,
        "<tr><th>{}</th><td class=\"mono\">{}</td></tr>",
        esc(label),
        esc(&id.map_or_else(|| "not seen".to_string(), Identity::describe))
    );
}

fn redacted_value(f: &Flag) -> String {
    if f.name.to_ascii_lowercase().contains("password") {
        "(redacted)".to_string()
    } else {
        f.value.clone()
    }
}

/// The drill report page.
pub fn render(r: &ReportInput) -> String {
    let mut out = String::with_capacity(128 * 1024);
    page_head(&mut out, r);
    headline(&mut out, r);
    let dated = spans_dates(r);
    if let Some(d) = &r.drill {
        drill_table(&mut out, d, dated);
    }

    out.push_str("<section><h2>Outages</h2>");
    outages_table(&mut out, r, dated);
    out.push_str("</section>");

    timeline_section(&mut out, r);
    closeups(&mut out, r, dated);

    let run_start = r.timeline.span().map_or_else(
        || r.outages.first().map_or(0.0, |o| o.start_unix),
        |(a, _)| a as f64,
    );
    out.push_str("<section><h2>Events</h2>");
    out.push_str(&events_table(&r.timeline, run_start, dated));
    out.push_str("</section>");

    target_section(&mut out, r);
    run_section(&mut out, r);
    flags_section(&mut out, r);
    state_changes_section(&mut out, r);

    out.push_str("<section><h2>How each figure is measured</h2>");
    out.push_str(HOW);
    out.push_str("</section></body></html>\n");
    out
}

/// The document head and the title line of the report.
fn page_head(out: &mut String, r: &ReportInput) {
    let title = format!("pgdrill report — run {} — {}", r.run_id, r.started_at);
    let _ = write!(
        out,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>{}</title><style>{CSS}</style></head><body>"#,
        esc(&title)
    );
    let _ = write!(
        out,
        r#"<h1>Failover drill report</h1><p class="sub">Target <code>{}</code> · run {} · started {} · {} · pgdrill {}</p>"#,
        esc(&r.target),
        r.run_id,
        esc(&r.started_at),
        esc(&fmt_secs(r.duration_seconds)),
        esc(&r.version)
    );
}

/// The timeline chart over `[from, to]` and its legend.
fn chart_with_legend(
    out: &mut String,
    timeline: &Timeline,
    (from, to): (u64, u64),
    target_rate: Option<f64>,
    title: &str,
) {
    out.push_str(&chart(timeline, from, to, target_rate, title));
    out.push_str(&legend(timeline));
}

fn timeline_section(out: &mut String, r: &ReportInput) {
    out.push_str("<section><h2>Timeline</h2>");
    match r.timeline.span() {
        Some((from, to)) => chart_with_legend(
            out,
            &r.timeline,
            (from, to),
            r.target_rate,
            "drill timeline: rate, errors, latency, failover state",
        ),
        None => out.push_str("<p class=\"muted\">No timeline was recorded.</p>"),
    }
    out.push_str("</section>");
}

fn target_section(out: &mut String, r: &ReportInput) {
    out.push_str("<section><h2>Target and primary</h2><table>");
    let _ = write!(
        out,
        "<tr><th>target</th><td class=\"mono\">{}</td></tr>",
        esc(&r.target)
    );
    let first = r
        .identity_first
        .as_ref()
        .or_else(|| r.outages.first().and_then(|o| o.identity_before.as_ref()));
    let last = r
        .identity_last
        .as_ref()
        .or_else(|| r.outages.last().and_then(|o| o.identity_after.as_ref()));
    identity_row(out, "primary at start", first);
    identity_row(out, "primary at end", last);
    let _ = write!(
        out,
        "<tr><th>primary changes</th><td>{}</td></tr></table></section>",
        group(r.primary_changes)
    );
}

fn run_section(out: &mut String, r: &ReportInput) {
    out.push_str("<section><h2>Run</h2><table>");
    let l = &r.latency;
    let rows = [
        ("transactions", group(r.transactions)),
        ("acknowledged", group(r.successes)),
        (
            "errors by class",
            if r.errors.is_empty() {
                "none".to_string()
            } else {
                r.errors
                    .iter()
                    .map(|(k, v)| format!("{k} {}", group(*v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
        (
            "skipped / abandoned",
            format!("{} / {}", group(r.skipped), group(r.abandoned)),
        ),
        (
            "latency from intended start",
            format!(
                "p50 {:.2} ms · p95 {:.2} ms · p99 {:.2} ms · p99.9 {:.2} ms · max {:.2} ms",
                l.p50_ms, l.p95_ms, l.p99_ms, l.p999_ms, l.max_ms
            ),
        ),
    ];
    for (k, v) in rows {
        let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    }
    out.push_str("</table></section>");
}

fn flags_section(out: &mut String, r: &ReportInput) {
    out.push_str("<section><h2>Flags</h2>");
    if r.flags.is_empty() {
        out.push_str("<p class=\"muted\">Not recorded.</p>");
    } else {
        out.push_str("<table>");
        for f in &r.flags {
            let _ = write!(
                out,
                "<tr><th class=\"mono\">--{}</th><td class=\"mono\">{}</td></tr>",
                esc(&f.name),
                esc(&redacted_value(f))
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</section>");
}

fn state_changes_section(out: &mut String, r: &ReportInput) {
    if r.state_changes.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<section><details><summary>All {} state changes</summary><table>",
        r.state_changes.len()
    );
    for s in &r.state_changes {
        let _ = write!(
            out,
            "<tr><td class=\"num\">{}</td><td>{} → {}</td></tr>",
            esc(&s.at),
            esc(&s.from),
            esc(&s.to)
        );
    }
    out.push_str("</table></details></section>");
}

/// The live `/` page: the last [`LIVE_WINDOW`] and the current state; the browser
/// reloads it every 5 s (no script).
pub fn render_live(l: &LiveInput) -> String {
    let mut out = String::with_capacity(64 * 1024);
    live_head(&mut out, l);
    live_cards(&mut out, l);
    live_window(&mut out, l);
    live_outages(&mut out, l);
    out.push_str("</body></html>\n");
    out
}

fn live_head(out: &mut String, l: &LiveInput) {
    let _ = write!(
        out,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5"><meta name="viewport" content="width=device-width,initial-scale=1"><title>pgdrill — {}</title><style>{CSS}</style></head><body>"#,
        esc(l.state.as_str())
    );
    let _ = write!(
        out,
        r#"<h1>pgdrill <span class="state" style="background:{}">{}</span></h1><p class="sub">Target <code>{}</code> · run {} · started {} · pgdrill {} · <a href="/metrics">/metrics</a> · <a href="/healthz">/healthz</a></p>"#,
        state_colour(l.state),
        esc(l.state.as_str()),
        esc(&l.target),
        l.run_id,
        esc(&l.started_at),
        esc(&l.version)
    );
}

fn live_cards(out: &mut String, l: &LiveInput) {
    out.push_str("<div class=\"cards\">");
    let worst = longest_unavailability(&l.outages);
    card(
        out,
        match (worst, l.rto_objective_seconds) {
            (Some(w), Some(o)) if w > o => "bad",
            _ => "",
        },
        "Outages so far",
        &l.outages.len().to_string(),
        &format!("longest write unavailability {}", opt_secs(worst)),
    );
    card(
        out,
        if l.lost_writes > 0 { "bad" } else { "ok" },
        "Acknowledged writes lost",
        &group(l.lost_writes),
        &format!("{} unknown outcomes", group(l.unknown_outcome_writes)),
    );
    card(
        out,
        "",
        "Writes",
        &group(l.transactions),
        &format!("{} acknowledged", group(l.successes)),
    );
    card(
        out,
        "",
        "Primary",
        &l.primary
            .as_ref()
            .map_or_else(|| "?".to_string(), Identity::endpoint),
        &l.primary
            .as_ref()
            .map_or_else(String::new, Identity::describe),
    );
    out.push_str("</div>");
}

fn live_window(out: &mut String, l: &LiveInput) {
    let _ = write!(
        out,
        "<section><h2>Last {} minutes</h2>",
        LIVE_WINDOW.as_secs() / 60
    );
    match l.timeline.span() {
        Some((_, to)) => chart_with_legend(
            out,
            &l.timeline,
            (to.saturating_sub(LIVE_WINDOW.as_secs()), to),
            l.target_rate,
            "live timeline, last 15 minutes",
        ),
        None => out.push_str("<p class=\"muted\">No second recorded yet.</p>"),
    }
    out.push_str("</section>");
}

fn live_outages(out: &mut String, l: &LiveInput) {
    if l.outages.is_empty() {
        return;
    }
    out.push_str("<section><h2>Latest outages</h2><table><thead><tr><th>#</th><th>start (UTC)</th><th class=\"num\">writes unavailable</th><th class=\"num\">lost</th><th>error classes</th></tr></thead><tbody>");
    for o in l.outages.iter().rev().take(5) {
        let _ = write!(
            out,
            r#"<tr><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td>{}</td></tr>"#,
            o.index,
            esc(&clock_ms(o.start_unix)),
            esc(&opt_secs(o.write_unavailable_seconds)),
            o.lost_writes
                .map_or_else(|| "unverified".to_string(), group),
            esc(&o.error_classes.join(", "))
        );
    }
    out.push_str("</tbody></table></section>");
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::telemetry::timeline::Second;

    #[test]
    fn a_drill_shows_its_own_verdict_objective_and_trigger_figures() {
        let summary = serde_json::json!({
            "run_id": 7,
            "transactions": 1000,
            "outages": [{"index": 1, "start_unix": 1800000030.05, "end_unix": 1800000030.3,
                         "write_unavailable_seconds": 0.25, "lost_writes": 0}],
            "drill": {
                "command": "az postgres flexible-server restart --failover Forced",
                "objectives": {"rto_seconds": 30.0, "max_lost_writes": 0},
                "triggers": [{"index": 1, "started_unix": 1800000030.0, "duration_seconds": 95.5,
                              "outcome": {"kind": "exited_non_zero", "code": 1}}],
                "drills": [{"trigger": 1, "trigger_to_first_failed_write_seconds": 0.05,
                            "trigger_to_new_primary_write_seconds": 0.31,
                            "write_unavailable_seconds": 0.25, "lost_writes": 0}],
                "verdict": {"verdict": "invalid", "failed": [],
                            "invalid": ["trigger 1 exited with status 1"]}
            }
        });
        let r = ReportInput::from_summary(summary).unwrap();
        assert_eq!(r.rto_objective_seconds, Some(30.0));
        assert!(!r.rto_objective_is_default);
        let page = render(&r);
        assert!(
            page.contains(">INVALID<"),
            "the drill's verdict, not the report's PASS"
        );
        assert!(page.contains("trigger 1 exited with status 1"));
        assert!(page.contains("<h2>Failover triggers</h2>"));
        for cell in ["exited_non_zero", "1 min 36 s", "50 ms", "310 ms", "250 ms"] {
            assert!(page.contains(&format!("<td>{cell}</td>")), "{cell}");
        }
        // Without a drill (a canary), the report judges by itself and shows no triggers.
        let canary = ReportInput::from_summary(serde_json::json!({"run_id": 7, "transactions": 1}));
        let page = render(&canary.unwrap());
        assert!(!page.contains("Failover triggers") && page.contains(">PASS<"));
    }

    pub(crate) const CLASSES: [&str; 14] = [
        "connect_refused",
        "connect_timeout",
        "dns",
        "tls",
        "auth",
        "too_many_connections",
        "read_only",
        "admin_shutdown",
        "crash_shutdown",
        "cannot_connect_now",
        "connection_closed",
        "statement_timeout",
        "pool_timeout",
        "other",
    ];

    /// A synthetic drill: `secs` seconds at 1,000 writes/s with one forced failover
    /// at `fail_at`: 3 s without acknowledgements, then 4 s of recovery.
    pub(crate) fn drill(secs: u64, fail_at: u64) -> ReportInput {
        let t0: u64 = 1_795_000_200;
        let mut t = Timeline::new(&CLASSES);
        let mut x: u64 = 12345;
        let mut noise = move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as f64 / (1u64 << 31) as f64
        };
        for i in 0..secs {
            let mut s = Second::second(t0 + i);
            let since = i as i64 - fail_at as i64;
            s.attempts = 1000;
            s.pool_in_use = 6 + (noise() * 4.0) as u32;
            s.p50 = (0.0011 + noise() * 0.0003) as f32;
            s.p99 = (0.0035 + noise() * 0.002) as f32;
            s.max = s.p99 * (1.5 + noise() as f32 * 2.0);
            match since {
                0 => {
                    s.successes = 340;
                    s.errors[10] = 24; // connection_closed
                    s.errors[8] = 16; // crash_shutdown
                    s.errors[0] = 620; // connect_refused
                    s.state = State::Outage;
                    s.p99 = 0.9;
                    s.max = 0.98;
                }
                1..=2 => {
                    s.successes = 0;
                    s.errors[0] = 700;
                    s.errors[6] = 300; // read_only
                    s.state = State::Outage;
                    s.p50 = 0.0;
                    s.p99 = 0.0;
                    s.max = 0.0;
                }
                3 => {
                    s.successes = 1900;
                    s.attempts = 2000;
                    s.errors[0] = 100;
                    s.state = State::Recovering;
                    s.p50 = 1.4;
                    s.p99 = 3.1;
                    s.max = 3.3;
                }
                4..=6 => {
                    s.successes = 1000;
                    s.state = State::Recovering;
                    s.p99 = 0.02;
                }
                7..=20 => {
                    s.successes = 1000;
                    s.state = if since < 9 {
                        State::Degraded
                    } else {
                        State::Healthy
                    };
                }
                _ => s.successes = 1000,
            }
            t.push(s);
        }
        let at = (t0 + fail_at) as f64;
        let ev = |dt: f64, kind| Event { at: at + dt, kind };
        t.events.push(ev(
            0.05,
            EventKind::FailoverTrigger {
                how: "pg_ctl stop -m immediate (primary 127.0.0.1:54321)".into(),
            },
        ));
        t.events
            .push(ev(0.061, EventKind::OutageStart { outage: 1 }));
        t.events.push(ev(
            3.02,
            EventKind::PrimaryChange {
                before: "127.0.0.1:54321 timeline 1".into(),
                after: "127.0.0.1:54322 timeline 2".into(),
            },
        ));
        t.events.push(ev(
            3.035,
            EventKind::OutageEnd {
                outage: 1,
                unavailable_seconds: Some(2.974),
            },
        ));
        t.events.push(ev(
            33.1,
            EventKind::Verification {
                outage: Some(1),
                checked: 30_000,
                lost: 0,
                unknown_committed: 1,
                unknown_not_committed: 23,
            },
        ));
        let before = Identity {
            server_addr: Some("127.0.0.1".into()),
            server_port: Some(54321),
            in_recovery: Some(false),
            system_identifier: Some("7312345678901234567".into()),
            timeline: Some(1),
            postmaster_start: Some("2026-11-27 08:00:01.123+00".into()),
        };
        let after = Identity {
            server_port: Some(54322),
            timeline: Some(2),
            postmaster_start: Some("2026-11-27 08:00:03.456+00".into()),
            ..before.clone()
        };
        let outage = Outage {
            index: 1,
            started_at: utc(at + 0.061),
            ended_at: Some(utc(at + 3.035)),
            start_unix: at + 0.061,
            end_unix: Some(at + 3.035),
            write_unavailable_seconds: Some(2.974),
            time_to_full_rate_seconds: Some(1.2),
            error_classes: vec![
                "connect_refused".into(),
                "connection_closed".into(),
                "crash_shutdown".into(),
                "read_only".into(),
            ],
            identity_before: Some(before.clone()),
            identity_after: Some(after.clone()),
            checked_writes: Some(30_000),
            lost_writes: Some(0),
            rpo_seconds: Some(0.0),
            unknown_outcome_committed: Some(1),
            unknown_outcome_not_committed: Some(23),
            verification_seconds: Some(0.4),
        };
        let transactions = t.iter().map(|b| u64::from(b.attempts)).sum();
        let successes = t.iter().map(|b| u64::from(b.successes)).sum();
        let mut errors = BTreeMap::new();
        for b in t.iter() {
            for (k, n) in b.errors.iter().enumerate() {
                if *n > 0 {
                    *errors.entry(CLASSES[k].to_string()).or_insert(0) += u64::from(*n);
                }
            }
        }
        ReportInput {
            version: "0.1.0".into(),
            run_id: 4_242_424_242,
            target: "host=127.0.0.1,127.0.0.1 port=54321,54322 user=drill dbname=drill target_session_attrs=read-write sslmode=disable".into(),
            started_at: utc(t0 as f64),
            duration_seconds: secs as f64,
            target_rate: Some(1000.0),
            achieved_rate: successes as f64 / secs as f64,
            transactions,
            successes,
            errors,
            skipped: 0,
            abandoned: 0,
            latency: Percentiles {
                count: successes,
                p50_ms: 1.21,
                p95_ms: 3.9,
                p99_ms: 5.4,
                p999_ms: 1400.0,
                max_ms: 3300.0,
            },
            primary_changes: 1,
            outages: vec![outage],
            state_changes: vec![
                StateChange {
                    at: utc(at + 0.07),
                    from: "healthy".into(),
                    to: "outage".into(),
                },
                StateChange {
                    at: utc(at + 3.04),
                    from: "outage".into(),
                    to: "recovering".into(),
                },
            ],
            lost_writes: 0,
            unknown_outcome_writes: 24,
            unknown_outcome_committed: 1,
            unknown_outcome_not_committed: 23,
            identity_first: Some(before),
            identity_last: Some(after),
            rto_objective_seconds: Some(30.0),
            rto_objective_is_default: false,
            flags: vec![
                Flag {
                    name: "rate".into(),
                    value: "1000".into(),
                },
                Flag {
                    name: "pool-size".into(),
                    value: "16".into(),
                },
                Flag {
                    name: "duration".into(),
                    value: format!("{secs}s"),
                },
                Flag {
                    name: "outage-threshold".into(),
                    value: "20ms".into(),
                },
                Flag {
                    name: "verify-window".into(),
                    value: "30s".into(),
                },
                Flag {
                    name: "password".into(),
                    value: "hunter2".into(),
                },
            ],
            timeline: t,
            drill: None,
        }
    }

    /// External references a self-contained page must not have (`url(#…)` is local).
    fn external_refs(html: &str) -> Vec<String> {
        let mut found = Vec::new();
        for needle in ["http://", "https://", "src=", "@import", "<script", "<link"] {
            if html.contains(needle) {
                found.push(needle.to_string());
            }
        }
        let mut rest = html;
        while let Some(i) = rest.find("url(") {
            if !rest[i + 4..].starts_with('#') {
                found.push(rest[i..(i + 30).min(rest.len())].to_string());
            }
            rest = &rest[i + 4..];
        }
        found
    }

    #[test]
    fn a_one_hour_drill_renders_self_contained_and_small() {
        let html = render(&drill(3600, 1800));
        eprintln!("one-hour report: {} bytes", html.len());
        assert!(html.len() < 400_000, "{} bytes", html.len());
        assert_eq!(external_refs(&html), Vec::<String>::new());
        assert!(html.contains("<svg"), "a chart");
        assert!(html.starts_with("<!doctype html>"));
    }

    #[test]
    fn a_week_long_canary_renders_within_the_same_size() {
        let mut r = drill(3600, 1800);
        let mut t = Timeline::new(&CLASSES);
        for i in 0..604_800 {
            let mut s = Second::second(1_795_000_200 + i);
            s.attempts = 10;
            s.successes = 10;
            s.p50 = 0.001;
            s.p99 = 0.003;
            s.max = 0.005;
            t.push(s);
        }
        r.timeline = t;
        // The drill's outage lies in the week's first day, long coarsened to 10 minutes.
        let html = render(&r);
        eprintln!("week report: {} bytes", html.len());
        assert!(html.len() < 400_000, "{} bytes", html.len());
        assert!(
            html.contains(">11-18 11:40:00.061<"),
            "dated times in a run over days"
        );
        let (_, closeup) = html.split_once("close-up").unwrap_or_default();
        assert!(
            closeup.contains("one column = 10 min"),
            "columns as wide as the buckets: {}",
            &closeup[..closeup.len().min(300)]
        );
    }

    #[test]
    fn the_headline_judges_rto_lost_writes_and_unknown_outcomes() {
        let r = drill(600, 120);
        let html = render(&r);
        assert!(html.contains(r#"<span class="big">PASS</span>"#), "pass");
        assert!(html.contains("writes unavailable 2.97 s ≤ objective 30.00 s"));
        assert!(html.contains("1 on the new primary, 23 not on it, 0 unresolved"));
        assert!(html.contains("<b>2.97 s</b>"), "the outage row's RTO");
        assert!(
            html.contains(">11:12:00.061<"),
            "undated times within one day"
        );

        let mut slow = r.clone();
        slow.rto_objective_seconds = Some(1.0);
        let html = render(&slow);
        assert!(html.contains(r#"<span class="big">FAIL</span>"#));
        assert!(html.contains("writes unavailable 2.97 s &gt; objective 1.00 s"));

        let mut lossy = r.clone();
        lossy.lost_writes = 3;
        lossy.outages[0].lost_writes = Some(3);
        let html = render(&lossy);
        assert!(html.contains(r#"<span class="big">FAIL</span>"#));
        assert!(html.contains("3 acknowledged write(s) lost"));

        let mut open = r.clone();
        open.unknown_outcome_not_committed = 20;
        open.outages[0].lost_writes = None;
        let html = render(&open);
        assert!(html.contains(r#"<span class="big">INCOMPLETE</span>"#));
        assert!(html.contains("3 unknown outcome(s) unresolved"));
        assert!(html.contains("1 outage(s) not verified"));
    }

    #[test]
    fn every_event_gets_a_marker_and_the_outage_is_shaded() {
        let r = drill(600, 120);
        let html = render(&r);
        let (main, closeup) = html.split_once("Outage 1 close-up").unwrap_or_default();
        assert_eq!(
            main.matches(r#"<g class="mk" "#).count(),
            r.timeline.events.len()
        );
        // The close-up spans from 15 s before to 15 s after: all but the verification.
        let closeup = closeup.split("</svg>").next().unwrap_or_default();
        assert_eq!(closeup.matches(r#"<g class="mk" "#).count(), 4);
        assert!(closeup.contains("one column = 1 s"));
        for code in [">T<", ">O1<", ">E1<", ">P<", ">V✓<"] {
            assert!(html.contains(code), "marker {code}");
        }
        assert!(
            html.contains(r##"fill="#d7263d" fill-opacity="0.12""##),
            "shaded outage"
        );
        // The outage seconds colour the state band.
        assert!(html.contains(r##"fill="#d7263d"><title>outage"##));
        assert!(html.contains("127.0.0.1:54321 timeline 1 → 127.0.0.1:54322 timeline 2"));
    }

    #[test]
    fn text_is_escaped_and_passwords_redacted() {
        let mut r = drill(120, 30);
        r.target = "<script>alert(1)</script> host=\"x\" & 'y'".into();
        r.timeline.events.push(Event {
            at: r.outages[0].start_unix + 1.0,
            kind: EventKind::Restart {
                what: "<img src=x onerror=alert(2)>".into(),
            },
        });
        let html = render(&r);
        assert!(!html.contains("<script"), "no script element");
        assert!(!html.contains("<img"));
        assert!(html.contains(
            "&lt;script&gt;alert(1)&lt;/script&gt; host=&quot;x&quot; &amp; &#39;y&#39;"
        ));
        assert!(!html.contains("hunter2"));
        assert!(html.contains("(redacted)"));
    }

    #[test]
    fn the_live_page_refreshes_and_shows_fifteen_minutes() {
        let r = drill(3600, 3300);
        let live = LiveInput {
            version: "0.1.0".into(),
            run_id: r.run_id,
            target: "<b>t</b>".into(),
            started_at: r.started_at.clone(),
            state: State::Recovering,
            target_rate: r.target_rate,
            transactions: r.transactions,
            successes: r.successes,
            lost_writes: 0,
            unknown_outcome_writes: 24,
            primary: r.identity_last.clone(),
            rto_objective_seconds: Some(30.0),
            outages: r.outages.clone(),
            timeline: r.timeline.recent(LIVE_WINDOW),
        };
        let html = render_live(&live);
        assert!(html.contains(r#"<meta http-equiv="refresh" content="5">"#));
        assert!(html.contains(">recovering</span>"));
        assert!(!html.contains("<b>t</b>"));
        // Apart from its own two links, nothing external.
        let stripped = html
            .replace(r#"<a href="/metrics">"#, "")
            .replace(r#"<a href="/healthz">"#, "");
        assert_eq!(external_refs(&stripped), Vec::<String>::new());
        // 15 minutes in 2-second columns, and the outage 5 minutes before the end is in view.
        assert!(html.contains("one column = 2 s"), "column width");
        assert!(html.contains(">O1<"));
        eprintln!("live page: {} bytes", html.len());
        assert!(html.len() < 200_000);
    }

    #[test]
    fn empty_tiny_and_unfinished_runs_render() {
        let html = render(&ReportInput::default());
        assert!(html.contains("No timeline was recorded."));
        assert!(html.contains(r#"<span class="big">PASS</span>"#));
        assert!(html.contains("no outage"));

        // One second, one column.
        let mut r = ReportInput {
            timeline: Timeline::new(&CLASSES),
            ..ReportInput::default()
        };
        r.timeline.push(Second::second(1_795_000_200));
        let html = render(&r);
        assert!(html.contains("one column = 1 s"));
        assert!(html.contains("no failed or skipped writes"));
        assert!(html.contains("no completed writes"));

        // The run ended inside an outage: it fails, and the shading runs to the end.
        let mut r = drill(300, 290);
        r.outages[0].end_unix = None;
        r.outages[0].ended_at = None;
        r.outages[0].write_unavailable_seconds = None;
        let events: Vec<Event> = r
            .timeline
            .events
            .iter()
            .filter(|e| !matches!(e.kind, EventKind::OutageEnd { .. }))
            .cloned()
            .collect();
        r.timeline.events = Default::default();
        for e in events {
            r.timeline.events.push(e);
        }
        let html = render(&r);
        assert!(html.contains(r#"<span class="big">FAIL</span>"#));
        assert!(html.contains("1 outage(s) never ended during the run"));
        assert!(html.contains(">not ended<"));
        assert!(html.contains("not recovered"));
    }

    /// The drill summary's JSON (as `--summary-json` writes it today) reads as a
    /// report input, so `pgdrill report SUMMARY.json` needs no second format.
    #[test]
    fn a_summary_json_reads_as_report_input() {
        let summary = r#"{
          "version": "0.1.0", "run_id": 77, "target": "host=db port=5432 user=u",
          "started_at": "2026-11-27T08:00:00.000Z", "duration_seconds": 60.0,
          "target_rate": 500.0, "transactions": 30000, "successes": 29900,
          "errors": {"connection_closed": 100}, "skipped": 0, "abandoned": 0,
          "success_ratio": 0.996, "achieved_rate": 498.3,
          "latency": {"count": 29900, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0, "p999_ms": 900.0, "max_ms": 1200.0},
          "service_time": {"count": 29900, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0, "p999_ms": 9.0, "max_ms": 12.0},
          "schedule_lag": {"count": 29900, "p50_ms": 0.0, "p95_ms": 0.1, "p99_ms": 0.2, "p999_ms": 890.0, "max_ms": 1190.0},
          "primary_changes": 1,
          "outages": [{"index": 1, "started_at": "2026-11-27T08:00:30.000Z", "ended_at": "2026-11-27T08:00:31.250Z",
            "start_unix": 1795766430.0, "end_unix": 1795766431.25, "write_unavailable_seconds": 1.25,
            "time_to_full_rate_seconds": 0.5, "error_classes": ["connection_closed"],
            "identity_before": {"server_addr": "10.0.0.1", "server_port": 5432, "in_recovery": false,
              "system_identifier": "1", "timeline": 1, "postmaster_start": "x"},
            "identity_after": {"server_addr": "10.0.0.2", "server_port": 5432, "in_recovery": false,
              "system_identifier": "1", "timeline": 2, "postmaster_start": "y"},
            "checked_writes": 15000, "lost_writes": 0, "lost_seqs": [], "rpo_seconds": 0.0,
            "unknown_outcome_committed": 2, "unknown_outcome_not_committed": 1, "verification_seconds": 0.2}],
          "state_changes": [{"at": "2026-11-27T08:00:30.010Z", "from": "healthy", "to": "outage"}],
          "lost_writes": 0, "unknown_outcome_writes": 3, "unknown_outcome_committed": 2,
          "unknown_outcome_not_committed": 1
        }"#;
        let r: ReportInput = match serde_json::from_str(summary) {
            Ok(r) => r,
            Err(err) => panic!("{err}"),
        };
        assert_eq!(
            r.outages[0]
                .identity_after
                .as_ref()
                .and_then(|i| i.timeline),
            Some(2)
        );
        let html = render(&r);
        assert!(html.contains("<b>1.25 s</b>"));
        assert!(html.contains("10.0.0.1:5432 (tl 1)"));
        assert!(html.contains("No timeline was recorded."));
    }

    #[test]
    fn the_input_round_trips_through_json() {
        let r = drill(300, 100);
        let json = serde_json::to_string(&r).unwrap_or_default();
        let back: ReportInput = match serde_json::from_str(&json) {
            Ok(b) => b,
            Err(err) => panic!("{err}"),
        };
        assert_eq!(render(&back), render(&r));
    }

    /// `cargo test --lib write_sample -- --ignored`, then open the file (or screenshot it).
    #[test]
    #[ignore = "writes a sample report for eyeballing"]
    fn write_sample() {
        let dir = std::env::var("PGDRILL_SAMPLE_DIR").unwrap_or_else(|_| "/tmp".into());
        let r = drill(600, 180);
        let live = LiveInput {
            version: r.version.clone(),
            run_id: r.run_id,
            target: r.target.clone(),
            started_at: r.started_at.clone(),
            state: State::Healthy,
            target_rate: r.target_rate,
            transactions: r.transactions,
            successes: r.successes,
            lost_writes: 0,
            unknown_outcome_writes: 24,
            primary: r.identity_last.clone(),
            rto_objective_seconds: r.rto_objective_seconds,
            outages: r.outages.clone(),
            timeline: r.timeline.recent(LIVE_WINDOW),
        };
        let hour = drill(3600, 1800);
        let began = std::time::Instant::now();
        let hour_html = render(&hour);
        let report_took = began.elapsed();
        let began = std::time::Instant::now();
        let live_html = render_live(&live);
        let live_took = began.elapsed();
        eprintln!("render: one-hour report {report_took:?}, live page {live_took:?} (this build's profile)");
        let json = serde_json::to_string(&hour.timeline).unwrap_or_default();
        eprintln!("one-hour timeline as JSON: {} bytes", json.len());
        // A week-long canary at 50 writes/s, unlimited rate, with a short outage
        // every 20 hours and a backlog burst.
        let t0 = 1_795_000_200u64;
        let mut week = ReportInput {
            target: "host=pg.example.internal port=5432 user=canary dbname=canary".into(),
            started_at: utc(t0 as f64),
            duration_seconds: 604_800.0,
            rto_objective_seconds: Some(60.0),
            timeline: Timeline::new(&CLASSES),
            ..ReportInput::default()
        };
        for i in 0..604_800u64 {
            let mut s = Second::second(t0 + i);
            s.attempts = 50;
            s.successes = 50;
            s.p50 = 0.002;
            s.p99 = 0.006 + (i % 3600) as f32 * 0.000_002;
            s.max = 0.02;
            let phase = i % 72_000;
            if (36_000..36_005).contains(&phase) {
                s.successes = 0;
                s.errors[10] = 20;
                s.errors[0] = 30;
                s.state = State::Outage;
            }
            if (50_000..50_060).contains(&phase) {
                s.skipped = 12;
            }
            week.timeline.push(s);
            if phase == 36_000 {
                let n = (i / 72_000 + 1) as u32;
                let at = (t0 + i) as f64;
                week.timeline.events.push(Event {
                    at,
                    kind: EventKind::OutageStart { outage: n },
                });
                week.timeline.events.push(Event {
                    at: at + 5.0,
                    kind: EventKind::OutageEnd {
                        outage: n,
                        unavailable_seconds: Some(5.0),
                    },
                });
                week.outages.push(Outage {
                    index: n as usize,
                    start_unix: at,
                    end_unix: Some(at + 5.0),
                    write_unavailable_seconds: Some(5.0),
                    lost_writes: Some(0),
                    checked_writes: Some(3000),
                    error_classes: vec!["connect_refused".into(), "connection_closed".into()],
                    ..Outage::default()
                });
            }
        }
        for (name, html) in [
            ("report-week.html", render(&week)),
            ("report-sample.html", render(&r)),
            ("report-1h.html", hour_html),
            ("live-sample.html", live_html),
        ] {
            let path = std::path::Path::new(&dir).join(name);
            if let Err(err) = std::fs::write(&path, &html) {
                panic!("{}: {err}", path.display());
            }
            eprintln!("{}: {} bytes", path.display(), html.len());
        }
    }

    #[test]
    fn axis_helpers_round_sensibly() {
        assert_eq!(nice_axis(1900.0 * 1.05, 5), (2000.0, 500.0));
        assert_eq!(nice_axis(1050.0, 5), (1500.0, 500.0));
        assert_eq!(nice_axis(1000.0, 5), (1000.0, 200.0));
        assert_eq!(nice_axis(2.2, 3), (3.0, 1.0));
        assert_eq!(nice_axis(0.0, 3), (1.0, 0.5));
        assert_eq!(axis_num(1500.0), "1,500");
        assert_eq!(axis_num(25_000.0), "25k");
        assert_eq!(fmt_secs(0.274), "274 ms");
        assert_eq!(fmt_secs(65.0), "1 min 05 s");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(latency_label(0.01), "10 ms");
        assert_eq!(step_at_least(7), 10);
        assert_eq!(fmt_step(600), "10 min");
        assert_eq!(fmt_step(15), "15 s");
    }
}
