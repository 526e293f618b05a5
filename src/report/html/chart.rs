//! The timeline as one SVG chart: achieved rate, errors by class, latency and the failover state on
//! one time axis, with a marker at each event at its exact time. Buckets are merged (the worst
//! state and the highest p99 survive) into at most [`MAX_COLUMNS`] columns, so the page's size is
//! bounded whatever the run's length. Why hand-written: docs/report.md.

use std::fmt::Write;

use maud::{html, Markup, PreEscaped};

use super::events::{markers, outage_shading, MARKER_LEGEND};
use super::grid::*;
use super::{axis_num, trim, utc};
use crate::telemetry::timeline::{Bucket, Event, State, Timeline};

pub(crate) fn state_colour(s: State) -> &'static str {
    match s {
        State::Healthy => "#3a9e5f",
        State::Degraded => "#e8b02a",
        State::Recovering => "#4a90d9",
        State::Outage => "#d7263d",
    }
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

/// A linear axis over `[0, v]`: a round tick step (1, 2 or 5 × 10ⁿ) giving at most
/// `ticks` intervals, and the top as a whole number of steps.
pub(crate) fn nice_axis(v: f64, ticks: u32) -> (f64, f64) {
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

fn ticks(top: f64, step: f64) -> impl Iterator<Item = f64> {
    let n = (top / step).round() as u32;
    (0..=n).map(move |k| f64::from(k) * step)
}

fn frame(top: f64, h: f64) -> Markup {
    html! { rect.frame x=(LEFT) y=(top) width=(PW) height=(h) {} }
}

fn y_tick(y: f64, label: &str, major: bool) -> Markup {
    html! {
        line class=(if major { "grid" } else { "grid minor" })
            x1=(LEFT) x2=(D1(LEFT + PW)) y1=(D1(y)) y2=(D1(y)) {}
        @if !label.is_empty() {
            text.yl x=(D1(LEFT - 6.0)) y=(D1(y + 4.0)) { (label) }
        }
    }
}

/// A message in the middle of an empty panel.
fn none(y: f64, text: &str) -> Markup {
    html! { text.none x=(D1(LEFT + PW / 2.0)) y=(D1(y)) { (text) } }
}

/// Achieved rate: a stepped area of successes per second, and the target.
fn rate_panel(g: &Grid, target: Option<f64>) -> Markup {
    let rate = |c: &Column| c.per_sec(u64::from(c.b.successes));
    let peak = g.cols.iter().flatten().map(rate).fold(0.0, f64::max);
    let (top, step) = nice_axis(peak.max(target.unwrap_or(0.0)) * 1.05, 5);
    let y = |v: f64| RATE_TOP + RATE_H - (v / top).clamp(0.0, 1.0) * RATE_H;
    let base = RATE_TOP + RATE_H;
    let areas = g.runs(|_| ()).into_iter().map(|(a, b, ())| {
        let mut d = format!("M{:.1} {base:.1}", g.col_x(a).0);
        for (i, c) in (a..b).filter_map(|i| Some((i, g.cols[i].as_ref()?))) {
            let _ = write!(d, "V{:.1}H{:.1}", y(rate(c)), g.col_x(i).1);
        }
        let _ = write!(d, "V{base:.1}Z");
        d
    });
    html! {
        (frame(RATE_TOP, RATE_H))
        @for v in ticks(top, step) { (y_tick(y(v), &axis_num(v), true)) }
        @for d in areas {
            path d=(d) fill=(RATE_COLOUR) fill-opacity="0.22" stroke=(RATE_COLOUR)
                stroke-width="1.4" stroke-linejoin="round" {}
        }
        @if let Some(t) = target {
            line.target x1=(LEFT) x2=(D1(LEFT + PW)) y1=(D1(y(t))) y2=(D1(y(t))) {}
            text.tl x=(D1(LEFT + PW - 4.0)) y=(D1(y(t) - 4.0)) { "target " (axis_num(t)) "/s" }
        }
    }
}

/// Errors per second stacked by class, with skipped (never started) on top.
fn error_panel(g: &Grid) -> Markup {
    let per_sec = |c: &Column| c.per_sec(c.b.errors_total() + u64::from(c.b.skipped));
    let peak = g.cols.iter().flatten().map(per_sec).fold(0.0, f64::max);
    let base = ERR_TOP + ERR_H;
    if peak == 0.0 {
        return html! {
            (frame(ERR_TOP, ERR_H))
            (none(ERR_TOP + ERR_H / 2.0 + 4.0, "no failed or skipped writes"))
            (y_tick(base, "0", true))
        };
    }
    let (top, step) = nice_axis(peak * 1.05, 3);
    let scale = ERR_H / top;
    // (x, y, width, height, colour) of each stacked piece.
    let mut rects = Vec::new();
    for (i, c) in g.cols.iter().enumerate() {
        let Some(c) = c else { continue };
        let (x0, x1) = g.col_x(i);
        let mut y = base;
        let errors = (c.b.errors.iter().enumerate())
            .map(|(k, n)| (CLASS_COLOURS[k % CLASS_COLOURS.len()], *n));
        let counts = errors.chain([(SKIPPED_COLOUR, c.b.skipped)]);
        for (colour, n) in counts.filter(|(_, n)| *n > 0) {
            let h = c.per_sec(u64::from(n)) * scale;
            y -= h;
            rects.push((x0, y, (x1 - x0).max(0.6), h.max(0.8), colour));
        }
    }
    html! {
        (frame(ERR_TOP, ERR_H))
        @for v in ticks(top, step) { (y_tick(base - v * scale, &axis_num(v), true)) }
        @for (x, y, w, h, colour) in rects {
            rect x=(D1(x)) y=(D1(y)) width=(D1(w)) height=(D1(h)) fill=(colour) {}
        }
    }
}

/// p50, p99 and max latency on a log axis (seconds).
fn latency_panel(g: &Grid) -> Markup {
    let with: Vec<(usize, &Column)> = (g.cols.iter().enumerate())
        .filter_map(|(i, c)| Some((i, c.as_ref().filter(|c| c.b.has_latency())?)))
        .collect();
    let (d0, d1) = latency_decades(&with);
    let y = |v: f64| {
        let l = v.max(1e-9).log10().clamp(d0, d1);
        LAT_TOP + LAT_H - (l - d0) / (d1 - d0) * LAT_H
    };
    let path = |pick: fn(&Bucket) -> f32| {
        let mut path = String::new();
        for (k, (i, c)) in with.iter().enumerate() {
            let (x0, x1) = g.col_x(*i);
            let v = y(f64::from(pick(&c.b)));
            // A column right after the one before continues its line.
            let _ = match k > 0 && with[k - 1].0 + 1 == *i {
                true => write!(path, "V{v:.1}H{x1:.1}"),
                false => write!(path, "M{x0:.1} {v:.1}H{x1:.1}"),
            };
        }
        path
    };
    html! {
        (frame(LAT_TOP, LAT_H))
        // Whole decades: `latency_decades` floors and ceils.
        @for d in d0 as i32..=d1 as i32 {
            @let v = 10f64.powf(f64::from(d));
            (y_tick(y(v), &latency_label(v), true))
            @if f64::from(d) < d1 { (y_tick(y(v * 2.0), "", false)) (y_tick(y(v * 5.0), "", false)) }
        }
        @if with.is_empty() {
            (none(LAT_TOP + LAT_H / 2.0, "no completed writes"))
        } @else {
            // p99 last, drawn on top.
            path d=(path(|b| b.max)) fill="none" stroke=(MAX_COLOUR) stroke-width="1"
                stroke-dasharray="2 2" {}
            path d=(path(|b| b.p50)) fill="none" stroke=(P50_COLOUR) stroke-width="1.2" {}
            path d=(path(|b| b.p99)) fill="none" stroke=(P99_COLOUR) stroke-width="2" {}
        }
    }
}

/// The log axis's range in decades of seconds, lowest to highest latency drawn: two to eight.
fn latency_decades(with: &[(usize, &Column)]) -> (f64, f64) {
    let d0 = with
        .iter()
        .map(|(_, c)| f64::from(c.b.p50.min(c.b.p99)))
        .filter(|v| *v > 0.0 && v.is_finite())
        .reduce(f64::min)
        .map_or(-3.0, |lo| lo.log10().floor())
        .max(-5.0);
    let hi = with
        .iter()
        .map(|(_, c)| f64::from(c.b.max.max(c.b.p99)))
        .fold(0.0, f64::max);
    let d1 = if hi > 0.0 { hi.log10().ceil() } else { 0.0 };
    (d0, d1.max(d0 + 2.0).min(d0 + 8.0))
}

pub(crate) fn latency_label(v: f64) -> String {
    if v >= 1.0 {
        format!("{} s", trim(v))
    } else if v >= 1e-3 {
        format!("{} ms", trim(v * 1e3))
    } else {
        format!("{} µs", trim(v * 1e6))
    }
}

/// The failover state as a colour band; adjacent equal columns become one rectangle.
fn state_band(g: &Grid) -> Markup {
    html! {
        rect x=(LEFT) y=(BAND_TOP) width=(PW) height=(BAND_H) fill="#eee" {}
        @for (i, j, state) in g.runs(|c| c.b.state) {
            @let (x0, x1) = (g.col_x(i).0, g.col_x(j - 1).1);
            rect x=(D1(x0)) y=(BAND_TOP) width=(D1((x1 - x0).max(1.0))) height=(BAND_H)
                fill=(state_colour(state)) {
                title {
                    (state.as_str()) " " (utc(g.at(i) as f64))
                    "–" (utc(g.at(j) as f64))
                }
            }
        }
    }
}

fn time_axis(g: &Grid) -> Markup {
    let span = g.end() - g.t0;
    let step = step_at_least(span.div_ceil(10));
    let first = g.t0.div_ceil(step).saturating_mul(step);
    let ticks = (first..=g.end()).step_by(step as usize).map(|t| {
        let stamp = utc(t as f64);
        let label = if span > 86_400 {
            stamp.get(5..16).unwrap_or_default().replace('T', " ")
        } else if step < 60 {
            stamp.get(11..19).unwrap_or_default().to_string()
        } else {
            stamp.get(11..16).unwrap_or_default().to_string()
        };
        (D1(g.x(t as f64)), label)
    });
    html! {
        @for (x, label) in ticks {
            line.vgrid x1=(x) x2=(x) y1=(RATE_TOP) y2=(AXIS_Y) {}
            line.tick x1=(x) x2=(x) y1=(AXIS_Y) y2=(D1(AXIS_Y + 5.0)) {}
            text.xl x=(x) y=(D1(AXIS_Y + 17.0)) { (label) }
        }
        text.xc x=(D1(LEFT + PW / 2.0)) y=(D1(AXIS_Y + 34.0)) {
            "time (UTC, " (utc(g.t0 as f64).get(..10).unwrap_or_default())
            ") · one column = " (fmt_step(g.step))
        }
    }
}

/// Column widths: 1 s, 10 s, 5 min, 2 h, 1 day.
pub(crate) fn fmt_step(s: u64) -> String {
    match s {
        s if s.is_multiple_of(86_400) => {
            format!("{} day{}", s / 86_400, if s == 86_400 { "" } else { "s" })
        }
        s if s.is_multiple_of(3600) => format!("{} h", s / 3600),
        s if s.is_multiple_of(60) => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// The whole timeline chart over `[from, to)`.
pub(crate) fn chart(t: &Timeline, from: u64, to: u64, target: Option<f64>, label: &str) -> Markup {
    let g = Grid::new(t, from, to);
    let in_view = |e: &&Event| (g.t0 as f64..=g.end() as f64).contains(&e.at);
    let events: Vec<&Event> = t.events.iter().filter(in_view).collect();
    html! {
        svg.chart viewBox={ "0 0 " (W) " " (H) } width=(W) height=(H) role="img" aria-label=(label) {
            (rate_panel(&g, target))
            (error_panel(&g))
            (latency_panel(&g))
            (state_band(&g))
            (time_axis(&g))
            (outage_shading(&g, &events))
            (markers(&g, &events))
            // Panel titles last, with a white halo, so marker lines never cross out a word.
            text.pt x=(LEFT) y=(D1(RATE_TOP - 8.0)) {
                "Achieved rate — acknowledged writes per second"
            }
            text.pt x=(LEFT) y=(D1(ERR_TOP - 8.0)) { "Failed writes per second, by error class" }
            text.pt x=(LEFT) y=(D1(LAT_TOP - 8.0)) {
                "Latency from intended start — p50, p99 and max (log scale)"
            }
            text.pt x=(LEFT) y=(D1(BAND_TOP - 6.0)) { "Failover state (worst in each column)" }
        }
    }
}

/// What the colours and markers mean, with only the error classes that occur.
pub(crate) fn legend(timelines: &[&Timeline]) -> Markup {
    let buckets = || timelines.iter().flat_map(|t| t.iter());
    let skipped = buckets().any(|b| b.skipped > 0);
    let seen = |k: usize| buckets().any(|b| b.errors.get(k).is_some_and(|n| *n > 0));
    let names = timelines.first().map_or(&[][..], |t| t.classes());
    let classes = names
        .iter()
        .enumerate()
        .filter(|(k, _)| seen(*k))
        .map(|(k, name)| (CLASS_COLOURS[k % CLASS_COLOURS.len()], name.as_str()));
    let item = |colour: &str, kind: &str, text: &str| {
        html! {
            span.li {
                i class=(kind) style={ "background:" (colour) ";border-color:" (colour) } {}
                (text)
            }
        }
    };
    html! {
        div.legend {
            (item(RATE_COLOUR, "sw", "acknowledged writes/s"))
            (item(P50_COLOUR, "ln", "latency p50"))
            (item(P99_COLOUR, "ln thick", "latency p99"))
            (item(MAX_COLOUR, "ln dot", "latency max"))
            @for (colour, name) in classes { (item(colour, "sw", name)) }
            @if skipped { (item(SKIPPED_COLOUR, "sw", "skipped (never started)")) }
            br;
            @for s in State::ALL { (item(state_colour(s), "sw", s.as_str())) }
            (PreEscaped(MARKER_LEGEND))
        }
    }
}
