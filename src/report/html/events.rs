//! Events on the chart (a marker at each, outages shaded) and in the table under it.

use std::collections::BTreeMap;

use maud::{html, Markup};

use super::grid::{Grid, BAND_H, BAND_TOP, D1, LEFT, MARK_ROWS, MARK_ROW_H, MARK_TOP, RATE_TOP, W};
use super::{group, opt_secs, utc, when};
use crate::drill::verdict::at_least as at_least_text;
use crate::telemetry::timeline::{Event, EventKind, Timeline};

/// Event rows listed under the chart (the latest); the markers show them all.
const MAX_EVENT_ROWS: usize = 300;

/// The event's kind as in the JSON, for `data-kind` (no serde round trip on each redraw).
pub(super) fn kind_name(k: &EventKind) -> &'static str {
    match k {
        EventKind::OutageStart { .. } => "outage_start",
        EventKind::OutageEnd { .. } => "outage_end",
        EventKind::PrimaryChange { .. } => "primary_change",
        EventKind::Verification { .. } => "verification",
        EventKind::Restart { .. } => "restart",
        EventKind::FailoverTrigger { .. } => "failover_trigger",
    }
}

/// Marker code, colour and description of an event.
fn marker(e: &Event) -> (String, &'static str, String) {
    match &e.kind {
        EventKind::OutageStart { outage } => (
            format!("O{outage}"),
            "#d7263d",
            format!("outage {outage} starts: first write that failed or went unanswered after the last acknowledged one"),
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
            rpo_seconds,
            at_least,
            unknown_committed,
            unknown_not_committed,
        } => (
            if *lost == 0 { "V✓" } else { "V✗" }.to_string(),
            if *lost == 0 { "#1b7f79" } else { "#b30000" },
            format!(
                "verification{}: {} acknowledged writes checked, {}{} lost{}; unknown outcomes {} found afterwards, {} not found",
                outage.map_or_else(String::new, |o| format!(" after outage {o}")),
                group(*checked),
                at_least_text(*at_least),
                group(*lost),
                match *lost {
                    0 => String::new(),
                    _ => format!(" (RPO {}{rpo_seconds:.3} s)", at_least_text(*at_least)),
                },
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
pub(super) fn outage_shading(g: &Grid, events: &[&Event]) -> Markup {
    let mut open: BTreeMap<u32, f64> = BTreeMap::new();
    let mut spans = Vec::new();
    for e in events {
        match e.kind {
            EventKind::OutageStart { outage } => _ = open.insert(outage, e.at),
            EventKind::OutageEnd { outage, .. } => {
                spans.extend(open.remove(&outage).map(|s| (s, e.at)))
            }
            _ => {}
        }
    }
    spans.extend(open.values().map(|s| (*s, g.end() as f64)));
    html! {
        @for (s, e) in spans {
            @let (x0, x1) = (g.x(s), g.x(e));
            rect x=(D1(x0.min(x1 - 2.0).max(LEFT))) y=(RATE_TOP) width=(D1((x1 - x0).max(2.0)))
                height=(D1(BAND_TOP + BAND_H - RATE_TOP)) fill="#d7263d" fill-opacity="0.12" {}
        }
    }
}

/// Vertical markers at the events' exact times, labelled in up to three rows; a crowded
/// label moves right of its neighbours with a leader line back to its marker.
pub(super) fn markers(g: &Grid, events: &[&Event]) -> Markup {
    let mut row_end = [f64::NEG_INFINITY; MARK_ROWS];
    let knee = MARK_TOP + MARK_ROW_H * MARK_ROWS as f64 + 6.0;
    let marks = events.iter().map(|e| {
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
            EventKind::OutageStart { .. } | EventKind::OutageEnd { .. } => None,
            _ => Some("4 3"),
        };
        let (top, bottom) = (ly + 3.0, BAND_TOP + BAND_H);
        let points = format!("{lx:.1},{top:.1} {x:.1},{knee:.1} {x:.1},{bottom:.1}");
        html! {
            g.mk data-kind=(kind_name(&e.kind)) {
                title { (utc(e.at)) " " (text) }
                polyline points=(points) fill="none" stroke=(colour) stroke-width="1.2"
                    stroke-dasharray=[dash] {}
                text.ml x=(D1(lx)) y=(D1(ly)) fill=(colour) { (code) }
            }
        }
    });
    html! { @for m in marks { (m) } }
}

pub(super) const MARKER_LEGEND: &str = r#"<span class="li wrap">markers: <b class="k" style="color:#111">T</b> failover triggered · <b class="k" style="color:#d7263d">O<i>n</i></b> outage n starts · <b class="k" style="color:#3a9e5f">E<i>n</i></b> outage n ends · <b class="k" style="color:#6a3d9a">P</b> primary changed · <b class="k" style="color:#1b7f79">V✓</b>/<b class="k" style="color:#b30000">V✗</b> verification without/with lost writes · <b class="k" style="color:#8c6d31">R</b> restart</span>"#;

/// The latest [`MAX_EVENT_ROWS`] events, timed from `run_start`.
pub(crate) fn events_table(t: &Timeline, run_start: f64, dated: bool) -> Markup {
    let skip = t.events.len().saturating_sub(MAX_EVENT_ROWS);
    let dropped = t.events.dropped() + skip as u64;
    html! {
        @if t.events.is_empty() {
            p.muted { "No events recorded." }
        } @else {
            table.events {
                thead { tr { th { "time (UTC)" } th { "since start" } th { "marker" } th { "event" } } }
                tbody {
                    @for e in t.events.iter().skip(skip) {
                        @let (code, colour, text) = marker(e);
                        tr {
                            td.num { (when(e.at, dated)) }
                            td.num { (format!("{:+.3} s", e.at - run_start)) }
                            td { b style={ "color:" (colour) } { (code) } }
                            td { (text) }
                        }
                    }
                }
            }
            @if dropped > 0 {
                p.muted { (group(dropped)) " older events not listed." }
            }
        }
    }
}
