//! `pgdrill report A.json B.json …`: the summaries of one drill read, merged and judged
//! ([`crate::report::merge`]), and the page that shows every member on one time axis.

use std::path::{Path, PathBuf};

use maud::{html, Markup};

use crate::clock::exceeds;
use crate::report::html::chart::{chart, legend};
use crate::report::html::page::{dated, drill_table, lost_figure};
use crate::report::html::{
    self, card, document, errors_text, fmt_length, fmt_secs, fmt_unavailable, group, opt_secs,
    unknown_card, verdict_banner,
};
use crate::report::merge::{self, FleetReport, Input, MemberFigures, Worst};
use crate::report::summary::{self, Summary, DEFAULT_OBJECTIVES};
use crate::telemetry::timeline::EventKind;

pub struct Merged {
    pub report: FleetReport,
    pub page: String,
}

/// Reads, merges and renders the summaries at `paths` (at least one).
pub fn merge_summary_files(paths: &[PathBuf]) -> Result<Merged, String> {
    let inputs: Vec<Input> = paths.iter().map(|p| read(p)).collect::<Result<_, _>>()?;
    let report = merge::merge(&inputs);
    let page = match inputs.as_slice() {
        // The page shows the verdict the exit status and `--json` give, judged again (a
        // member that did not trigger, alone, gets the fleet page's: it cannot judge itself).
        [one] if one.summary.drill.is_some() || report.canary => {
            let mut summary = one.summary.clone();
            if let Some(d) = &mut summary.drill {
                d.verdict = report.verdict.clone();
            }
            html::render(&summary)
        }
        _ => render(&report, &inputs),
    };
    let page = crate::secrets::scrub(&page);
    Ok(Merged { report, page })
}

impl Merged {
    /// `--json`: the merged figures and verdict, pretty-printed, scrubbed as a summary is.
    pub fn json(&self) -> serde_json::Result<String> {
        let mut json = serde_json::to_value(&self.report)?;
        crate::secrets::scrub_json(&mut json);
        serde_json::to_string_pretty(&json)
    }
}

/// The largest file `pgdrill report` reads: a week-long canary's summary is a few MB.
const MAX_INPUT: u64 = 256 << 20;

/// A summary as the merge reads it, and as the page reads it.
fn read(path: &Path) -> Result<Input, String> {
    use std::io::Read;
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_INPUT + 1).read_to_string(&mut text))
        .map_err(cannot)?;
    if text.len() as u64 > MAX_INPUT {
        return Err(format!(
            "{} is over {} MiB, more than any summary: for a log, give its last summary \
             line (grep '^{{' LOG | tail -1 > summary.json)",
            path.display(),
            MAX_INPUT >> 20
        ));
    }
    let json = summary_json(path, &text)?;
    let at = |e: String| format!("{}: {e}", path.display());
    let summary = crate::report::summary_from_json(json).map_err(at)?;
    let file = path.file_name().map_or_else(
        || path.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    );
    Ok(Input { file, summary })
}

/// A summary file, or the last summary line of a log (`--summary-json -` in a pod).
fn summary_json(path: &Path, text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).or_else(|e| {
        text.lines()
            .rev()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v.get("run_id").is_some() && v.get("transactions").is_some())
            .ok_or_else(|| {
                format!(
                    "{} is not valid JSON, nor a log with a pgdrill summary line: {e}",
                    path.display()
                )
            })
    })
}

fn summary_of<'a>(m: &MemberFigures, inputs: &'a [Input]) -> Option<&'a Summary> {
    (inputs.iter().map(|i| &i.summary)).find(|s| s.run_id == m.run_id)
}

const HOW: &str = "Each member measured what its own clients saw. The triggers are the \
    triggering member's; every member's outages are attributed to them and timed from them \
    with the rules of a single drill, its baseline is its own load in the triggering \
    member's baseline window, and its lost writes were verified by itself. The verdict \
    judges every member's failovers against the triggering member's objectives, and the \
    lost writes of all of them against the RPO objective. A summary of another drill, a \
    missing or duplicated member, a member that was not running around a trigger, or a \
    second triggering member make the drill INVALID.";

/// The sum of lost writes, or "unverified" where a member's were never verified (its 0 is not
/// known), warned where a member left an outage unverified, as each member's own page says.
fn lost_card(r: &FleetReport) -> Markup {
    let members = r.members.iter();
    let never = members.clone().filter(|m| m.lost_writes_unverified).count();
    let partly = members
        .filter(|m| !m.lost_writes_unverified && !m.unverified.is_empty())
        .count();
    let said = [
        (never, "never verified theirs"),
        (partly, "left an outage or primary change unverified"),
    ];
    let said: Vec<String> = (said.iter())
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} member(s) {what}"))
        .collect();
    let detail = match said.is_empty() {
        true => "each member verified its own writes".to_string(),
        false => said.join("; "),
    };
    let lower_bound = r.members.iter().any(|m| m.lost_writes_at_least);
    let (class, value) = lost_figure(r.counts.lost_writes, lower_bound, never > 0, partly > 0);
    card(class, "Acknowledged writes lost (sum)", &value, &detail)
}

/// The merged page: the verdict, the fleet's figures, each member's, and their timelines.
fn render(r: &FleetReport, inputs: &[Input]) -> String {
    let id = r.drill_id.as_deref().unwrap_or("(no drill id)");
    let trigger_drill = r
        .members
        .iter()
        .find(|m| m.ran_trigger)
        .and_then(|m| summary_of(m, inputs))
        .and_then(|s| Some((s, s.drill.as_ref()?)));
    let body = html! {
        h1 { "Failover drill report: " (r.members.len()) " members" }
        p.sub {
            "Drill " code { (id) } " · trigger run by "
            (r.trigger_member.as_deref().unwrap_or("no member"))
            " · pgdrill " (env!("CARGO_PKG_VERSION"))
        }
        (headline(r))
        @if let Some((s, d)) = trigger_drill { (drill_table(d, &s.outages, dated(s))) }
        (members_table(r))
        @if !r.not_merged.is_empty() {
            section {
                h2 { "Not merged" }
                ul { @for n in &r.not_merged { li { code { (n.file) } ": " (n.reason) } } }
            }
        }
        (timelines(r, inputs))
        section { h2 { "How the members are merged" } p { (HOW) } }
    };
    let title = format!("pgdrill drill report — {id} — {} members", r.members.len());
    document(&title, false, body)
}

fn headline(r: &FleetReport) -> Markup {
    // Without objectives (no trigger's summary) the verdict is INVALID, and says why.
    let banner = verdict_banner(&r.verdict, &r.objectives.unwrap_or(DEFAULT_OBJECTIVES));
    let objective = r.objectives.map(|o| o.rto.as_secs_f64());
    // An outage open at a member's end holds its time so far: never a green measured figure.
    let shown = |w: &Worst| fmt_unavailable(w.write_unavailable_seconds, w.still_open);
    let open = r.members.iter().filter(|m| m.outage_still_open).count();
    let open_note = match open {
        0 => String::new(),
        n => format!("; {n} member(s) with an outage still open at the end"),
    };
    let (class, value, detail) = match (&r.worst, objective) {
        (Some(w), Some(o)) => (
            match (exceeds(w.write_unavailable_seconds, o), open > 0) {
                (true, _) => "bad",
                (false, true) => "warn",
                (false, false) => "ok",
            },
            shown(w),
            format!("{}; objective {}{open_note}", w.member, fmt_length(o)),
        ),
        (Some(w), None) => ("warn", shown(w), format!("{}{open_note}", w.member)),
        (None, _) => ("", "no outage".to_string(), String::new()),
    };
    let spread = r.write_unavailable_seconds.map_or_else(
        || "-".to_string(),
        |d| {
            let [min, median, max] = [d.min, d.median, d.max].map(fmt_secs);
            format!("min {min} · median {median} · max {max}")
        },
    );
    let samples = r.write_unavailable_seconds.map_or(0, |d| d.samples);
    let so_far = match r.members.iter().filter(|m| m.worst_still_open).count() {
        0 => String::new(),
        n => format!("; {n} of them still open at the end, their time so far"),
    };
    html! {
        (banner)
        div.cards {
            (card(class, "Worst write unavailability (RTO)", &value, &detail))
            (card("", "Across members", &spread, &format!(
                "{samples} member(s) with an outage attributed to a trigger (nearest-rank){so_far}")))
            (lost_card(r))
            (unknown_card("Unknown outcomes (sum)", &r.counts, r.counts.unknown_outcome_unresolved))
            (card("", "Writes (all members)", &group(r.counts.transactions), &format!(
                "{} acknowledged; errors: {}", group(r.counts.successes), errors_text(&r.counts.errors))))
        }
    }
}

fn members_table(r: &FleetReport) -> Markup {
    let clock = |m: &MemberFigures| match (m.clock_ahead_seconds, m.clock_uncertainty_seconds) {
        (Some(a), u) => format!("{:+.1} ± {:.1}", a * 1000.0, u.unwrap_or(0.0) * 1000.0),
        (None, _) => "not measured".to_string(),
    };
    html! {
        section {
            h2 { "Members" }
            table.members {
                thead { tr {
                    th { "member" } th { "trigger" } th.num { "rate" }
                    th.num { "writes (ack" (maud::PreEscaped("&shy;")) "nowledged)" }
                    th.num { "outages" } th.num { "first failed write" }
                    th.num { "first write on the new primary" } th.num { "writes unavailable" }
                    th.num { "lost" } th.num { "unknown (unresolved)" } th { "errors" }
                    th { "baseline" } th.num { "clock vs trigger member (ms)" }
                } }
                tbody {
                    @for m in &r.members {
                        @let first = m.drills.first();
                        tr data-member=(m.name) {
                            td title={ "run " (m.run_id) } { (m.name) }
                            td { (if m.ran_trigger { "ran it" } else { "measured" }) }
                            td.num { (m.target_rate.map_or_else(|| "unlimited".to_string(), |t| format!("{t}/s"))) }
                            td.num { (group(m.counts.transactions)) " (" (group(m.counts.successes)) ")" }
                            td.num { (m.outages) }
                            td.num { (opt_secs(first.and_then(|d| d.trigger_to_first_failed_write_seconds))) }
                            td.num { (opt_secs(first.and_then(|d| d.trigger_to_new_primary_write_seconds))) }
                            td.num data-seconds=(m.worst_write_unavailable_seconds.map_or_else(String::new, |w| w.to_string())) {
                                b { (opt_secs(m.worst_write_unavailable_seconds)) }
                                @if m.worst_still_open { " so far" }
                            }
                            td.num {
                                @if m.lost_writes_unverified { "unverified" } @else {
                                    (summary::at_least(m.lost_writes_at_least))
                                    (group(m.counts.lost_writes))
                                    @if !m.unverified.is_empty() { " (" (m.unverified.join(", ")) ")" }
                                }
                            }
                            td.num { (group(m.counts.unknown_outcome_writes)) " (" (group(m.counts.unknown_outcome_unresolved)) ")" }
                            td { (errors_text(&m.counts.errors)) }
                            td {
                                @for (k, b) in m.baselines.iter().enumerate() {
                                    @if k > 0 { ", " } (b.problem().map_or("healthy", |_| "unhealthy"))
                                }
                                @if m.baselines.is_empty() { "-" }
                            }
                            td.num { (clock(m)) }
                        }
                    }
                }
            }
        }
    }
}

/// Every member's timeline over the same span, each with the triggers marked.
fn timelines(r: &FleetReport, inputs: &[Input]) -> Markup {
    // The merged members' spans: one left out (another drill) does not stretch the axis.
    let merged: Vec<&Summary> = (r.members.iter())
        .filter_map(|m| summary_of(m, inputs))
        .collect();
    let spans = merged.iter().filter_map(|s| s.timeline.span());
    let Some((from, to)) = spans.reduce(|a, b| (a.0.min(b.0), a.1.max(b.1))) else {
        return html! {};
    };
    let by = r.trigger_member.as_deref().unwrap_or("?");
    let charts = r.members.iter().filter_map(|m| {
        let s = summary_of(m, inputs)?;
        let mut timeline = s.timeline.clone();
        // The triggering member's own timeline has its triggers already.
        for t in r.triggers.iter().filter(|_| !m.ran_trigger) {
            let how = format!("trigger {} (by {by})", t.index);
            timeline.event(t.started_unix, EventKind::FailoverTrigger { how });
        }
        let label = format!("timeline of {}", m.name);
        let svg = chart(&timeline, from, to, s.target_rate, &label);
        Some((m.name.as_str(), svg))
    });
    html! {
        section {
            h2 { "Timelines on one axis" }
            p.sub {
                "Every member over the same span; T marks each trigger, as the triggering \
                 member's clock dated it."
            }
            @for (name, svg) in charts { h3 { (name) } (svg) }
            (legend(&merged.iter().map(|s| &s.timeline).collect::<Vec<_>>()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `page` shows a card of `class`, `title` and `value` (as [`card`] draws it).
    fn has_card(page: &str, class: &str, title: &str, value: &str) -> bool {
        page.contains(&format!(
            r#"<div class="card {class}"><div class="d">{title}</div><div class="v">{value}</div>"#
        ))
    }

    #[test]
    fn a_log_is_read_as_its_last_summary_line() {
        let path = Path::new("member-1.log");
        let log = "{\"timestamp\":\"t\",\"level\":\"INFO\",\"fields\":{\"run_id\":1}}\n\
                   pgdrill 0.1.0 summary (run 7)\n\
                   {\"run_id\":6,\"transactions\":10}\n\
                   {\"run_id\":7,\"transactions\":20}\n\
                   {\"timestamp\":\"t\",\"level\":\"INFO\",\"fields\":{\"message\":\"bye\"}}\n";
        let v = summary_json(path, log).expect("a summary line");
        assert_eq!(v["run_id"], 7);
        let err = summary_json(path, "pgdrill 0.1.0 summary\n{\"level\":\"INFO\"}\n").unwrap_err();
        assert!(
            err.starts_with(
                "member-1.log is not valid JSON, nor a log with a pgdrill summary line"
            ),
            "{err}"
        );
    }

    #[test]
    fn an_outage_open_at_a_members_end_is_its_time_so_far_not_a_measured_rto() {
        use crate::drill::verdict::VerdictKind;
        use crate::report::merge::tests::{inputs, members};
        let mut pods = members();
        pods[1]["outages"][0]["end_unix"] = serde_json::Value::Null;
        pods[1]["outages"][0]["open_at_shutdown"] = true.into();
        let merged = inputs(&pods);
        let r = merge::merge(&merged);
        let worst = r.worst.as_ref().expect("a worst outage");
        assert_eq!(worst.member, "member 1 (pod-1.json)");
        assert!(worst.still_open);
        assert!(r.members[1].worst_still_open && !r.members[2].worst_still_open);
        assert_eq!(r.verdict.verdict, VerdictKind::Invalid);
        let page = render(&r, &merged);
        assert!(
            has_card(
                &page,
                "warn",
                "Worst write unavailability (RTO)",
                "500 ms so far"
            ),
            "{page}"
        );
        assert!(page.contains("<b>500 ms</b> so far"), "{page}");
        assert!(
            page.contains("(nearest-rank); 1 of them still open at the end, their time so far"),
            "{page}"
        );
        // An open outage that is not the worst: the measured worst is shown, and warned.
        let mut pods = members();
        pods[2]["outages"][0]["end_unix"] = serde_json::Value::Null;
        pods[2]["outages"][0]["open_at_shutdown"] = true.into();
        let merged = inputs(&pods);
        let r = merge::merge(&merged);
        assert!(!r.worst.as_ref().expect("a worst outage").still_open);
        let page = render(&r, &merged);
        assert!(
            has_card(&page, "warn", "Worst write unavailability (RTO)", "500 ms"),
            "{page}"
        );
        assert!(
            page.contains("1 member(s) with an outage still open at the end"),
            "{page}"
        );
    }

    #[test]
    fn a_member_that_left_an_outage_unverified_is_warned_as_on_its_own_page() {
        use crate::report::merge::tests::{inputs, members};
        let mut pods = members();
        // Member 1 checked its first outage's writes; its second's check never ran.
        let mut second = pods[1]["outages"][0].clone();
        second["index"] = 2.into();
        second["lost_writes"] = serde_json::Value::Null;
        pods[1]["outages"]
            .as_array_mut()
            .expect("outages")
            .push(second);
        pods[1]["checked_writes"] = 5000.into();
        let merged = inputs(&pods);
        let r = merge::merge(&merged);
        let page = render(&r, &merged);
        assert!(
            has_card(&page, "warn", "Acknowledged writes lost (sum)", "0"),
            "{page}"
        );
        assert!(
            page.contains("1 member(s) left an outage or primary change unverified"),
            "{page}"
        );
        assert!(page.contains("0 (outage 2 not verified)"), "{page}");
    }
}
