//! The report of one run, drawn from its [`Summary`].

use maud::{html, Markup, PreEscaped};

use super::chart::{chart, legend};
use super::events::events_table;
use super::{
    card, describe, document, endpoint, errors_text, fmt_length, fmt_secs, fmt_unavailable, group,
    opt_group, opt_secs, unknown_card, verdict_banner, when,
};
use crate::clock::exceeds;
use crate::db::identity::Identity;
use crate::drill::timing::DrillTiming;
use crate::drill::DrillReport;
use crate::failover::outages::{OutageRecord, MAX_OUTAGES};
use crate::report::summary::{at_least, Summary, DEFAULT_OBJECTIVES};

/// Close-ups drawn, of the longest outages.
const MAX_CLOSEUPS: usize = 3;

/// Whether the report's times need dates: the run crosses a UTC midnight.
pub(crate) fn dated(s: &Summary) -> bool {
    let span = s.timeline.span().map(|(a, b)| [a as f64, b as f64]);
    let outages = (s.outages.iter()).flat_map(|o| [Some(o.start_unix), o.end_unix]);
    let times = outages.flatten().chain(span.into_iter().flatten());
    let mut days = times.map(|t| (t / 86_400.0).floor() as i64);
    let first = days.next();
    days.any(|d| Some(d) != first)
}

/// The drill report page, judged by a drill's own objectives, else the run's, else the defaults.
pub fn render(s: &Summary) -> String {
    let own = s.drill.as_ref().map(|d| d.objectives).or(s.objectives);
    let objectives = own.unwrap_or(DEFAULT_OBJECTIVES);
    let rto = objectives.rto.as_secs_f64();
    let dated = dated(s);
    // To the millisecond; the timeline's first whole second is up to a second earlier.
    let (run_start, _) = s.span_unix();
    let body = html! {
        h1 { "Failover drill report" }
        p.sub {
            "Target " code { (s.target) } " · run " (s.run_id) " · started " (s.started_at)
            " · " (fmt_length(s.duration_seconds)) " · pgdrill " (s.version)
        }
        (verdict_banner(&s.verdict(&objectives), &objectives))
        (headline(s, rto, own.is_none()))
        @if let Some(d) = &s.drill { (drill_table(d, &s.outages, dated)) }
        section { h2 { "Outages" } (outages_table(s, rto, dated)) }
        section {
            h2 { "Timeline" }
            @if let Some((from, to)) = s.timeline.span() {
                (chart(&s.timeline, from, to, s.target_rate,
                    "drill timeline: rate, errors, latency, failover state"))
                (legend(&[&s.timeline]))
            } @else {
                p.muted { "No timeline was recorded." }
            }
        }
        (closeups(s, dated))
        section { h2 { "Events" } (events_table(&s.timeline, run_start, dated)) }
        section {
            h2 { "Target and primary" }
            @let first = s.identity_first.as_ref().or_else(|| s.outages.first().and_then(|o| o.identity_before.as_ref()));
            @let last = s.identity_last.as_ref().or_else(|| s.outages.last().and_then(|o| o.identity_after.as_ref()));
            @let seen = |id: Option<&Identity>| id.map_or_else(|| "not seen".to_string(), describe);
            table {
                tr { th { "target" } td.mono { (s.target) } }
                tr { th { "primary at start" } td.mono { (seen(first)) } }
                tr { th { "primary at end" } td.mono { (seen(last)) } }
                tr { th { "primary changes" } td { (group(s.primary_changes)) } }
            }
        }
        section {
            h2 { "Run" }
            @let (c, l) = (&s.counts, &s.latency);
            table {
                tr { th { "transactions" } td { (group(c.transactions)) } }
                tr { th { "acknowledged" } td { (group(c.successes)) } }
                tr { th { "errors by class" } td { (errors_text(&c.errors)) } }
                tr { th { "skipped / abandoned" } td { (group(s.skipped)) " / " (group(s.abandoned)) } }
                tr { th { "latency from intended start" } td { @if l.count == 0 {
                    "- (nothing acknowledged)"
                } @else { (format!(
                    "p50 {:.2} ms · p95 {:.2} ms · p99 {:.2} ms · p99.9 {:.2} ms · max {:.2} ms",
                    l.p50_ms, l.p95_ms, l.p99_ms, l.p999_ms, l.max_ms)) } } }
            }
        }
        section {
            h2 { "Flags" }
            @if s.flags.is_empty() {
                p.muted { "Not recorded." }
            } @else {
                table {
                    // Any flag whose name mentions a password is redacted here as well.
                    @for f in &s.flags { tr { th.mono { "--" (f.name) } td.mono {
                        @if f.name.to_ascii_lowercase().contains("password") { "(redacted)" } @else { (f.value) }
                    } } }
                }
            }
        }
        @if !s.state_changes.is_empty() {
            section { details {
                summary { "All " (s.state_changes.len()) " state changes" }
                table {
                    @for c in &s.state_changes {
                        tr { td.num { (c.at) } td { (c.from.as_str()) " → " (c.to.as_str()) } }
                    }
                }
            } }
        }
        section { h2 { "How each figure is measured" } (PreEscaped(include_str!("how.html"))) }
    };
    let title = format!("pgdrill report — run {} — {}", s.run_id, s.started_at);
    document(&title, false, body)
}

/// The lost-writes card's class and value of a run.
pub(crate) fn lost_writes(s: &Summary) -> (&'static str, String) {
    let (lost, lower_bound) = (s.counts.lost_writes, s.lost_writes_at_least());
    let partly = !s.unverified_outages().is_empty();
    lost_figure(lost, lower_bound, s.lost_writes_unverified(), partly)
}

/// The lost-writes card's class and value: "unverified" (not 0) while nothing was checked
/// and an outage went unverified (`never`), a 0 warned while some went unverified (`partly`),
/// as every output says it.
pub(crate) fn lost_figure(
    lost: u64,
    lower_bound: bool,
    never: bool,
    partly: bool,
) -> (&'static str, String) {
    match lost {
        0 if never => ("warn", "unverified".to_string()),
        0 if partly => ("warn", group(0)),
        0 => ("ok", group(0)),
        n => ("bad", format!("{}{}", at_least(lower_bound), group(n))),
    }
}

/// The headline cards; `rto_is_default`: the summary names no objective.
fn headline(s: &Summary, rto: f64, rto_is_default: bool) -> Markup {
    let checked = group(s.counts.checked_writes);
    let unverified = s.unverified_outages();
    let (lost_class, lost_value) = lost_writes(s);
    let mut lost_detail =
        format!("{checked} acknowledged writes checked on the primary afterwards");
    if !unverified.is_empty() {
        lost_detail.push_str(&format!("; {}", unverified.join(", ")));
    }
    if s.lost_writes_at_least() {
        lost_detail.push_str(
            "; the oldest write checked was lost too, and older ones had gone out of \
             --verify-window unchecked: a longer window checks further back",
        );
    }
    let target = s
        .target_rate
        .map_or_else(String::new, |t| format!(" of {}/s", super::axis_num(t)));
    html! {
        div.cards {
            (rto_card(s, rto, rto_is_default))
            (card(lost_class, "Acknowledged writes lost", &lost_value, &lost_detail))
            (unknown_card("Unknown outcomes (sent, never answered)", &s.counts, s.counts.unresolved()))
            (card("", "Writes", &group(s.counts.transactions),
                &format!("{} acknowledged, {} failed, {} skipped; achieved {:.1}/s{target}",
                    group(s.counts.successes), group(s.counts.transactions.saturating_sub(s.counts.successes)),
                    group(s.skipped), s.achieved_rate)))
        }
    }
}

/// The RTO card: the longest write unavailability against the objective.
fn rto_card(s: &Summary, rto: f64, rto_is_default: bool) -> Markup {
    // As the verdict judges: a drill's attributed outages, or a canary's every one, kept or not.
    let judged: Vec<&OutageRecord> = match &s.drill {
        Some(d) => crate::drill::timing::attributed(&d.drills, &s.outages).collect(),
        None => s.outages.iter().collect(),
    };
    let unavailable = judged.iter().filter_map(|o| o.write_unavailable_seconds);
    let longest = match &s.drill {
        Some(_) => unavailable.reduce(f64::max),
        None => s.longest_unavailability(),
    };
    // An outage open at the end holds the time so far: no measured RTO, never a pass.
    let open = judged
        .iter()
        .filter(|o| o.end_unix.is_none())
        .find_map(|o| o.write_unavailable_seconds);
    let (class, value) = match longest {
        Some(w) if exceeds(w, rto) => ("bad", fmt_unavailable(w, open == Some(w))),
        Some(w) if open.is_some() => ("warn", fmt_unavailable(w, open == Some(w))),
        Some(w) => ("ok", fmt_secs(w)),
        None if s.drill.is_some() && judged.is_empty() => ("", "none after a trigger".into()),
        None if judged.is_empty() && s.earlier_outages.count == 0 => ("ok", "no outage".into()),
        None => ("bad", "not recovered".to_string()),
    };
    let default = if rto_is_default { " (default)" } else { "" };
    let (objective, outages) = (fmt_length(rto), s.outage_count());
    let mut detail = format!("objective {objective}{default}; {outages} outage(s)");
    let all = s.longest_unavailability();
    if s.drill.is_some() && all.is_some_and(|a| longest.is_none_or(|l| a > l)) {
        let all = all.map_or_else(String::new, fmt_secs);
        detail.push_str(&format!("; the longest of all, {all}, followed no trigger"));
    }
    card(class, "RTO — longest write unavailability", &value, &detail)
}

/// The figures timed from each trigger of a drill.
pub(crate) fn drill_table(d: &DrillReport, outages: &[OutageRecord], dated: bool) -> Markup {
    // What the first write after each trigger reached: a restart in place is not a new primary.
    let reached = |outage: Option<usize>| {
        let o = outages.iter().find(|o| Some(o.index) == outage)?;
        let (b, a) = (o.identity_before.as_ref()?, o.identity_after.as_ref()?);
        Some(Identity::change_word(b, a))
    };
    html! {
        section {
            h2 { "Failover triggers" }
            p.sub {
                "Trigger " code { (d.command) } "; objectives: writes unavailable ≤ "
                (fmt_length(d.objectives.rto.as_secs_f64())) ", acknowledged writes lost ≤ "
                (group(d.objectives.max_lost_writes)) ". Times from the trigger's start."
            }
            table {
                tr {
                    th { "#" } th { "started" } th { "outcome" } th { "ran" }
                    th { "first failed write" } th { "first write after it" }
                    th { "writes unavailable" } th { "lost" }
                }
                @for t in &d.triggers {
                    @let f = d.drills.iter().find(|f| f.trigger == t.index);
                    tr {
                        td { (t.index) }
                        td { (when(t.started_unix, dated)) }
                        td { (t.outcome.label()) }
                        td { (fmt_secs(t.duration_seconds)) }
                        td { (opt_secs(f.and_then(|f| f.trigger_to_first_failed_write_seconds))) }
                        td {
                            (opt_secs(f.and_then(|f| f.trigger_to_new_primary_write_seconds)))
                            @if let Some(word) = reached(f.and_then(|f| f.outage)) { " (" (word) ")" }
                        }
                        @let shown = f.and_then(DrillTiming::unavailable_shown);
                        td { (shown.map_or_else(|| "-".to_string(), |(w, open)| fmt_unavailable(w, open))) }
                        td {
                            @if f.is_some_and(DrillTiming::lost_unverified) { "unverified" }
                            @else {
                                (at_least(f.is_some_and(|f| f.lost_writes_at_least)))
                                (opt_group(f.and_then(|f| f.lost_writes), "–"))
                            }
                        }
                    }
                }
            }
        }
    }
}

const BAD: &str = "color:var(--bad)";

fn outages_table(s: &Summary, rto: f64, dated: bool) -> Markup {
    let id = |i: &Option<Identity>| match i.as_ref().map(|id| (endpoint(id), id.timeline)) {
        Some((addr, Some(t))) => format!("{addr} (tl {t})"),
        Some((addr, None)) => addr,
        None => "?".to_string(),
    };
    html! {
        @if s.outages.is_empty() {
            p { "No outage: writes were acknowledged throughout." }
        } @else {
            @let e = &s.earlier_outages;
            @if e.count > 0 {
                p.muted {
                    "Outages 1–" (e.count) " are not listed (the latest " (group(MAX_OUTAGES as u64))
                    " are kept): the longest of them, outage " (e.longest_outage) ", made writes unavailable for "
                    (fmt_secs(e.longest_write_unavailable_seconds)) "; they checked "
                    (group(e.checked_writes)) " acknowledged writes."
                }
            }
            table.outages {
                thead { tr {
                    th { "#" } th { "start (UTC)" } th { "end (UTC)" }
                    th.num { "writes un" (PreEscaped("&shy;")) "available" }
                    th.num { "time to full rate" } th { "error classes" } th.num { "checked" }
                    th.num { "lost" } th.num { "RPO" } th.num { "unknown outcome: committed / not" }
                    th { "primary before → after" }
                } }
                tbody {
                    @for o in &s.outages {
                        @let over = o.write_unavailable_seconds.is_some_and(|w| exceeds(w, rto));
                        tr data-outage=(o.index) {
                            td { (o.index) }
                            td.num { (when(o.start_unix, dated)) }
                            td.num { (o.end_unix.map_or_else(|| "not ended".to_string(), |t| when(t, dated))) }
                            td.num data-seconds=(o.write_unavailable_seconds.map_or_else(String::new, |w| w.to_string()))
                                style=[over.then_some(BAD)] {
                                b { (opt_secs(o.write_unavailable_seconds)) }
                                @if o.open_at_shutdown && o.write_unavailable_seconds.is_some() { " so far" }
                            }
                            td.num { (opt_secs(o.time_to_full_rate_seconds)) }
                            td { (o.error_classes.join(", ")) }
                            td.num { (opt_group(o.checked_writes, "-")) }
                            td.num style=[(o.lost_writes.unwrap_or(0) > 0).then_some(BAD)] {
                                @if o.lost_writes_at_least { "at least " }
                                (opt_group(o.lost_writes, "unverified"))
                            }
                            td.num { (at_least(o.lost_writes_at_least)) (opt_secs(o.rpo_seconds)) }
                            td.num {
                                (opt_group(o.unknown_outcome_committed, "-")) " / "
                                (opt_group(o.unknown_outcome_not_committed, "-"))
                            }
                            td {
                                span.nw { (id(&o.identity_before)) } " → " span.nw { (id(&o.identity_after)) }
                                @if let (Some(b), Some(a)) = (&o.identity_before, &o.identity_after) {
                                    br; small { (Identity::change_word(b, a)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A chart around each of the longest outages: the whole-run chart draws a 3-second outage
/// of a short drill as a hairline.
fn closeups(s: &Summary, dated: bool) -> Markup {
    let Some((first, last)) = s.timeline.span() else {
        return html! {};
    };
    let mut longest: Vec<&OutageRecord> = s.outages.iter().collect();
    let d = |o: &OutageRecord| o.write_unavailable_seconds.unwrap_or(f64::INFINITY);
    longest.sort_by(|a, b| d(b).total_cmp(&d(a)));
    longest.truncate(MAX_CLOSEUPS);
    longest.sort_by(|a, b| a.start_unix.total_cmp(&b.start_unix));
    let spans = longest.into_iter().filter_map(|o| {
        let end = o.end_unix.unwrap_or(last as f64);
        let before = (2.0 * (end - o.start_unix).max(0.0)).clamp(15.0, 300.0);
        let after = before.max(o.time_to_full_rate_seconds.unwrap_or(0.0) + 10.0);
        let from = ((o.start_unix - before).floor().max(0.0) as u64).max(first);
        let to = ((end + after).ceil() as u64).min(last);
        (to > from && (from, to) != (first, last)).then_some((o.index, from, to))
    });
    html! {
        @for (index, from, to) in spans {
            section {
                h2 {
                    "Outage " (index) " close-up: " (when(from as f64, dated)) " to "
                    (when(to as f64, dated)) " UTC"
                }
                (chart(&s.timeline, from, to, s.target_rate, &format!("close-up of outage {index}")))
                (legend(&[&s.timeline]))
            }
        }
    }
}
