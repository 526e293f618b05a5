//! `pgdrill report A.json B.json …`: the summaries of one drill read, merged and judged
//! ([`crate::drill::merge`]), and the page that shows every member on one time axis.
//! One summary gives the single-run page it always gave.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use crate::drill::merge::{self, FleetReport, Input, MemberFigures};
use crate::report::html::{self, esc, fmt_secs, group, opt_secs, ReportInput};
use crate::telemetry::timeline::{Event, EventKind};

/// The merged figures and verdict, and the page.
pub struct Merged {
    pub report: FleetReport,
    pub page: String,
}

/// Reads, merges and renders the summaries at `paths` (at least one).
pub fn merge_summary_files(paths: &[PathBuf]) -> Result<Merged, String> {
    let mut inputs = Vec::with_capacity(paths.len());
    let mut pages = Vec::with_capacity(paths.len());
    for path in paths {
        let (input, page) = read(path)?;
        inputs.push(input);
        pages.push(page);
    }
    let report = merge::merge(inputs);
    let page = match pages.as_slice() {
        [one] => html::render(one),
        _ => render(&report, &pages),
    };
    Ok(Merged {
        report,
        page: crate::secrets::scrub(&page),
    })
}

impl Merged {
    /// `--json`: the merged figures and verdict, pretty-printed, scrubbed as a summary is.
    pub fn json(&self) -> serde_json::Result<String> {
        let mut json = serde_json::to_value(&self.report)?;
        crate::secrets::scrub_json(&mut json);
        serde_json::to_string_pretty(&json)
    }
}

/// A summary as the merge reads it, and as the page reads it.
fn read(path: &Path) -> Result<(Input, ReportInput), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let json = summary_json(path, &text)?;
    let page =
        ReportInput::from_summary(json.clone()).map_err(|e| format!("{}: {e}", path.display()))?;
    let summary = serde_json::from_value(json).map_err(|e| format!("{}: {e}", path.display()))?;
    let file = path.file_name().map_or_else(
        || path.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    );
    Ok((Input { file, summary }, page))
}

/// A summary file, or a log holding one as a line (`--summary-json -` in a pod): its last
/// line that is a pgdrill summary.
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

fn page_of<'a>(m: &MemberFigures, pages: &'a [ReportInput]) -> Option<&'a ReportInput> {
    pages.iter().find(|p| p.run_id == m.run_id)
}

/// The merged page: the verdict, the fleet's figures, each member's, and each member's
/// timeline drawn over the same span with the triggers marked on every one.
fn render(r: &FleetReport, pages: &[ReportInput]) -> String {
    let mut out = String::with_capacity(256 * 1024);
    let id = r.drill_id.as_deref().unwrap_or("(no drill id)");
    let _ = write!(
        out,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>{}</title><style>{}</style></head><body>"#,
        esc(&format!(
            "pgdrill drill report — {id} — {} members",
            r.members.len()
        )),
        html::CSS
    );
    let _ = write!(
        out,
        r#"<h1>Failover drill report: {} members</h1><p class="sub">Drill <code>{}</code> · trigger run by {} · pgdrill {}</p>"#,
        r.members.len(),
        esc(id),
        esc(r.trigger_member.as_deref().unwrap_or("no member")),
        esc(env!("CARGO_PKG_VERSION"))
    );
    headline(&mut out, r);
    let trigger_page = r
        .members
        .iter()
        .find(|m| m.ran_trigger)
        .and_then(|m| page_of(m, pages));
    if let Some(d) = trigger_page.and_then(|p| p.drill.as_ref()) {
        html::drill_table(&mut out, d, false);
    }
    members_table(&mut out, r);
    not_merged(&mut out, r);
    timelines(&mut out, r, pages);
    out.push_str(
        "<section><h2>How the members are merged</h2><p>Each member measured what its own \
         clients saw. The triggers are the triggering member's; every member's outages are \
         attributed to them and timed from them with the rules of a single drill, its \
         baseline is its own load in the triggering member's baseline window, and its lost \
         writes were verified by itself. The verdict judges every member's failovers against \
         the triggering member's objectives, and the lost writes of all of them against the \
         RPO objective. A summary of another drill, a missing or duplicated member, a member \
         that was not running around a trigger, or a second triggering member make the \
         drill INVALID.</p></section></body></html>\n",
    );
    out
}

fn headline(out: &mut String, r: &FleetReport) {
    let (class, word, reasons) = match &r.verdict {
        Some(v) => {
            let (class, word) = match v.verdict.as_str() {
                "pass" => ("pass", "PASS"),
                "fail" => ("fail", "FAIL"),
                _ => ("incomplete", "INVALID"),
            };
            let reasons: Vec<&str> = v
                .failed
                .iter()
                .chain(&v.invalid)
                .map(String::as_str)
                .collect();
            (class, word, reasons)
        }
        None => ("incomplete", "NO VERDICT", vec!["no trigger: canary runs"]),
    };
    let _ = write!(
        out,
        r#"<div class="verdict {class}"><span class="big">{word}</span><span>{}</span></div>"#,
        esc(&reasons.join(" · "))
    );
    out.push_str("<div class=\"cards\">");
    let objective = r.objectives.map(|o| o.rto.as_secs_f64());
    let (class, value, detail) = match (&r.worst, objective) {
        (Some(w), Some(o)) => (
            if w.write_unavailable_seconds > o {
                "bad"
            } else {
                "ok"
            },
            fmt_secs(w.write_unavailable_seconds),
            format!("{}; objective {}", w.member, fmt_secs(o)),
        ),
        (Some(w), None) => (
            "warn",
            fmt_secs(w.write_unavailable_seconds),
            w.member.clone(),
        ),
        (None, _) => ("", "no outage".to_string(), String::new()),
    };
    html::card(
        out,
        class,
        "Worst write unavailability (RTO)",
        &value,
        &detail,
    );
    let spread = r.write_unavailable_seconds.map_or_else(
        || "-".to_string(),
        |d| {
            format!(
                "min {} · median {} · max {}",
                fmt_secs(d.min),
                fmt_secs(d.median),
                fmt_secs(d.max)
            )
        },
    );
    html::card(
        out,
        "",
        "Across members",
        &spread,
        &format!(
            "{} member(s) with an outage attributed to a trigger (nearest-rank)",
            r.write_unavailable_seconds.map_or(0, |d| d.samples)
        ),
    );
    html::card(
        out,
        if r.lost_writes > 0 { "bad" } else { "ok" },
        "Acknowledged writes lost (sum)",
        &group(r.lost_writes),
        "each member verified its own writes",
    );
    html::card(
        out,
        if r.unknown_outcome_unresolved > 0 {
            "warn"
        } else {
            "ok"
        },
        "Unknown outcomes (sum)",
        &group(r.unknown_outcome_writes),
        &format!(
            "{} on the new primary, {} not on it, {} unresolved",
            group(r.unknown_outcome_committed),
            group(r.unknown_outcome_not_committed),
            group(r.unknown_outcome_unresolved)
        ),
    );
    html::card(
        out,
        "",
        "Writes (all members)",
        &group(r.transactions),
        &format!(
            "{} acknowledged; errors: {}",
            group(r.successes),
            errors_text(&r.errors)
        ),
    );
    out.push_str("</div>");
}

fn errors_text(errors: &std::collections::BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "none".to_string();
    }
    errors
        .iter()
        .map(|(k, v)| format!("{k} {}", group(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn members_table(out: &mut String, r: &FleetReport) {
    out.push_str(
        "<section><h2>Members</h2><table class=\"members\"><thead><tr><th>member</th>\
         <th>trigger</th><th class=\"num\">rate</th><th class=\"num\">writes (ack&shy;nowledged)</th>\
         <th class=\"num\">outages</th>\
         <th class=\"num\">first failed write</th><th class=\"num\">first write on the new primary</th>\
         <th class=\"num\">writes unavailable</th><th class=\"num\">lost</th>\
         <th class=\"num\">unknown (unresolved)</th><th>errors</th><th>baseline</th>\
         <th class=\"num\">clock vs trigger member (ms)</th></tr></thead><tbody>",
    );
    for m in &r.members {
        let first = m.drills.first();
        let baseline = if m.baselines.is_empty() {
            "-".to_string()
        } else {
            m.baselines
                .iter()
                .map(|b| {
                    b.problem()
                        .map_or_else(|| "healthy".to_string(), |_| "unhealthy".to_string())
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = write!(
            out,
            r#"<tr data-member="{}"><td title="run {}">{}</td><td>{}</td><td class="num">{}</td><td class="num">{} ({})</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num" data-seconds="{}"><b>{}</b></td><td class="num">{}</td><td class="num">{} ({})</td><td>{}</td><td>{}</td><td class="num">{}</td></tr>"#,
            esc(&m.name),
            m.run_id,
            esc(&m.name),
            if m.ran_trigger { "ran it" } else { "measured" },
            m.target_rate
                .map_or_else(|| "unlimited".to_string(), |t| format!("{t}/s")),
            group(m.transactions),
            group(m.successes),
            m.outages,
            esc(&opt_secs(
                first.and_then(|d| d.trigger_to_first_failed_write_seconds)
            )),
            esc(&opt_secs(
                first.and_then(|d| d.trigger_to_new_primary_write_seconds)
            )),
            m.worst_write_unavailable_seconds
                .map_or_else(String::new, |w| w.to_string()),
            esc(&opt_secs(m.worst_write_unavailable_seconds)),
            group(m.lost_writes),
            group(m.unknown_outcome_writes),
            group(m.unknown_outcome_unresolved),
            esc(&errors_text(&m.errors)),
            esc(&baseline),
            esc(&m.clock_ahead_seconds.map_or_else(
                || "not measured".to_string(),
                |a| format!(
                    "{:+.1} ± {:.1}",
                    a * 1000.0,
                    m.clock_uncertainty_seconds.unwrap_or(0.0) * 1000.0
                )
            )),
        );
    }
    out.push_str("</tbody></table></section>");
}

fn not_merged(out: &mut String, r: &FleetReport) {
    if r.not_merged.is_empty() {
        return;
    }
    out.push_str("<section><h2>Not merged</h2><ul>");
    for n in &r.not_merged {
        let _ = write!(
            out,
            "<li><code>{}</code>: {}</li>",
            esc(&n.file),
            esc(&n.reason)
        );
    }
    out.push_str("</ul></section>");
}

/// Every member's timeline over the same span, each with the triggers marked.
fn timelines(out: &mut String, r: &FleetReport, pages: &[ReportInput]) {
    let spans: Vec<(u64, u64)> = pages.iter().filter_map(|p| p.timeline.span()).collect();
    let (Some(from), Some(to)) = (
        spans.iter().map(|s| s.0).min(),
        spans.iter().map(|s| s.1).max(),
    ) else {
        return;
    };
    out.push_str(
        "<section><h2>Timelines on one axis</h2><p class=\"sub\">Every member over the same \
         span; T marks each trigger, as the triggering member's clock dated it.</p>",
    );
    for m in &r.members {
        let Some(page) = page_of(m, pages) else {
            continue;
        };
        let mut timeline = page.timeline.clone();
        for t in &r.triggers {
            timeline.events.push(Event {
                at: t.started_unix,
                kind: EventKind::FailoverTrigger {
                    how: format!(
                        "trigger {} (by {})",
                        t.index,
                        r.trigger_member.as_deref().unwrap_or("?")
                    ),
                },
            });
        }
        let _ = write!(out, "<h3>{}</h3>", esc(&m.name));
        out.push_str(&html::chart(
            &timeline,
            from,
            to,
            page.target_rate,
            &format!("timeline of {}", m.name),
        ));
    }
    if let Some(first) = pages.first() {
        out.push_str(&html::legend(&first.timeline));
    }
    out.push_str("</section>");
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
