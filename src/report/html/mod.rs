//! The drill report: one self-contained HTML page (inline SVG and CSS, no script, nothing
//! fetched), and the live `/` page. Pages are `maud` templates, which escape every value;
//! the callers scrub the finished page ([`crate::secrets::scrub`] knows maud's escaping).

pub(crate) mod chart;
pub(crate) mod events;
mod grid;
pub(crate) mod live;
pub(crate) mod page;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod verdict_tests;

use maud::{html, Markup, PreEscaped};

use crate::db::identity::Identity;
use crate::drill::{Objectives, Verdict};
use crate::report::summary::RunCounts;

pub use live::{render_live, LIVE_WINDOW};
pub use page::render;

/// A whole page: the head with `title` (refreshed every 5 s when `refresh`) and `body`.
pub(crate) fn document(title: &str, refresh: bool, body: Markup) -> String {
    let page = html! {
        (PreEscaped("<!doctype html>"))
        html lang="en" {
            head {
                meta charset="utf-8";
                @if refresh { meta http-equiv="refresh" content="5"; }
                meta name="viewport" content="width=device-width,initial-scale=1";
                title { (title) }
                style { (PreEscaped(include_str!("style.css"))) }
            }
            body { (body) }
        }
    };
    page.into_string() + "\n"
}

/// A figure card: title, value, detail; `class` is `ok`, `bad`, `warn` or empty.
pub(crate) fn card(class: &str, title: &str, value: &str, detail: &str) -> Markup {
    html! {
        div class={ "card " (class) } {
            div.d { (title) }
            div.v { (value) }
            div.d { (detail) }
        }
    }
}

/// The unknown-outcomes card, warned while some are resolved neither way (`unresolved`).
pub(crate) fn unknown_card(title: &str, c: &RunCounts, unresolved: u64) -> Markup {
    let (committed, not) = (c.unknown_outcome_committed, c.unknown_outcome_not_committed);
    let [committed, not, left] = [committed, not, unresolved].map(group);
    let detail = format!("{committed} found afterwards, {not} not found, {left} unresolved");
    let class = if unresolved > 0 { "warn" } else { "ok" };
    card(class, title, &group(c.unknown_outcome_writes), &detail)
}

/// A verdict as a banner; a pass with no reason of its own names the objectives it met.
pub(crate) fn verdict_banner(v: &Verdict, met: &Objectives) -> Markup {
    let class = v.verdict.as_str();
    let mut reasons: Vec<String> = v.failed.iter().chain(&v.invalid).cloned().collect();
    if reasons.is_empty() {
        reasons.push(format!(
            "every objective met: writes unavailable ≤ {}, acknowledged writes lost ≤ {}",
            fmt_length(met.rto.as_secs_f64()),
            group(met.max_lost_writes)
        ));
    }
    html! {
        div class={ "verdict " (class) } {
            span.big { (class.to_ascii_uppercase()) }
            span { (reasons.join(" · ")) }
        }
    }
}

/// A measured duration to the millisecond, as every other output gives it: 274 ms, 2.974 s,
/// 1 min 05.100 s, 1 h 00 min 29.000 s; signed, as a trigger-relative figure may be negative.
pub(crate) fn fmt_secs(s: f64) -> String {
    if !s.is_finite() {
        return "-".to_string();
    }
    // The text summary's `{:.3}` digits, whatever the float's binary rounding; `-0.000` is 0,
    // and the unit is chosen by the value rounded (0.9996 s is 1.000 s).
    let text = format!("{s:.3}");
    let (sign, digits) = match text.strip_prefix('-') {
        Some(d) if d != "0.000" => ("-", d),
        Some(d) => ("", d),
        None => ("", text.as_str()),
    };
    let Ok(ms) = digits.replace('.', "").parse::<u64>() else {
        return fmt_length(s);
    };
    let (h, min, sec, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    match (h, min, sec) {
        (0, 0, 0) => format!("{sign}{ms} ms"),
        (0, 0, _) => format!("{sign}{sec}.{ms:03} s"),
        (0, _, _) => format!("{sign}{min} min {sec:02}.{ms:03} s"),
        _ => format!("{sign}{h} h {min:02} min {sec:02}.{ms:03} s"),
    }
}

/// A length as set (an objective, the run's) to the nearest unit: a 2-hour run is
/// "2 h 00 min", however many milliseconds over.
pub(crate) fn fmt_length(s: f64) -> String {
    if !s.is_finite() {
        return "-".to_string();
    }
    // The unit is chosen by the value rounded: 0.9996 s is 1.00 s, not 1000 ms.
    let at = |scale: f64| (s * scale).round().max(0.0);
    if at(1000.0) < 1000.0 {
        format!("{:.0} ms", at(1000.0))
    } else if at(100.0) < 6000.0 {
        format!("{:.2} s", at(100.0) / 100.0)
    } else if at(10.0) < 36000.0 {
        let tenths = at(10.0) as u64;
        let (min, sec, tenth) = (tenths / 600, tenths % 600 / 10, tenths % 10);
        match tenth {
            0 => format!("{min} min {sec:02} s"),
            _ => format!("{min} min {sec:02}.{tenth} s"),
        }
    } else {
        let minutes = at(1.0 / 60.0) as u64;
        format!("{} h {:02} min", minutes / 60, minutes % 60)
    }
}

/// A write unavailability, "so far" while its outage had not ended (`open`).
pub(crate) fn fmt_unavailable(w: f64, open: bool) -> String {
    format!("{}{}", fmt_secs(w), if open { " so far" } else { "" })
}

pub(crate) fn opt_secs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), fmt_secs)
}

/// 1234567 → "1,234,567".
pub(crate) fn group(n: u64) -> String {
    match n {
        0..1000 => n.to_string(),
        _ => format!("{},{:03}", group(n / 1000), n % 1000),
    }
}

/// Counts by error class: `read_only 5, connection_closed 35`, or `none`.
pub(crate) fn errors_text(errors: &std::collections::BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "none".to_string();
    }
    let each = errors.iter().map(|(k, v)| format!("{k} {}", group(*v)));
    each.collect::<Vec<_>>().join(", ")
}

/// A count, or `none_text` when not measured.
pub(crate) fn opt_group(v: Option<u64>, none_text: &str) -> String {
    v.map_or_else(|| none_text.to_string(), group)
}

/// Axis numbers: 0, 2.5, 400, 1,500, 12k, 1.5M.
pub(crate) fn axis_num(v: f64) -> String {
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

pub(crate) fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

pub(crate) use crate::clock::rfc3339 as utc;

/// A time of day (`21:10:00.000`), with the month and day (`11-19 21:10:00.000`) when the
/// run spans more than one UTC date.
pub(crate) fn when(unix: f64, dated: bool) -> String {
    let t = utc(unix).replace('T', " ");
    let from = if dated { 5 } else { 11 };
    t.get(from..23).unwrap_or_default().to_string()
}

/// `addr:port`, the address alone, or `?`.
pub(crate) fn endpoint(id: &Identity) -> String {
    id.endpoint()
        .or_else(|| id.server_addr.clone())
        .unwrap_or_else(|| "?".to_string())
}

/// Every fact known of a server, in words.
pub(crate) fn describe(id: &Identity) -> String {
    let mut parts = vec![match &id.server_addr {
        None => "address unknown".to_string(),
        _ => endpoint(id),
    }];
    parts.extend(id.timeline.map(|t| format!("timeline {t}")));
    let role = |r| if r { "in recovery" } else { "primary" }.to_string();
    parts.extend(id.in_recovery.map(role));
    let system = id.system_identifier.as_ref();
    parts.extend(system.map(|s| format!("system id {s}")));
    parts.extend(id.postmaster_start.iter().map(|s| format!("up since {s}")));
    parts.extend(id.durability());
    parts.join(", ")
}
