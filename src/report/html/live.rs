//! The live `/` page: the last [`LIVE_WINDOW`] and the current state, reloaded every 5 s.

use std::time::Duration;

use maud::html;

use super::chart::{chart, legend, state_colour};
use super::page::lost_writes;
use super::{card, describe, document, endpoint, group, opt_group, opt_secs, when};
use crate::clock::exceeds;
use crate::report::summary::{Summary, DEFAULT_OBJECTIVES};
use crate::telemetry::timeline::State;

/// What the live page shows.
pub const LIVE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Outages the live page lists (the latest).
const LIVE_OUTAGES: usize = 5;

/// The live page of a run so far (its summary as far as it goes), in failover state `now`. While
/// verifications may still run (`running`: until the monitor stopped, after the load's drain),
/// writes not verified yet are pending; after it, they are unverified, as the summary says.
pub fn render_live(l: &Summary, now: State, running: bool) -> String {
    let not_yet = if running { "pending" } else { "unverified" };
    let worst = l.longest_unavailability();
    let rto = l.objectives.unwrap_or(DEFAULT_OBJECTIVES).rto.as_secs_f64();
    let state = now.as_str();
    let body = html! {
        h1 { "pgdrill " span.state style={ "background:" (state_colour(now)) } { (state) } }
        p.sub {
            "Target " code { (l.target) } " · run " (l.run_id) " · started " (l.started_at)
            " · pgdrill " (l.version) " · " a href="/metrics" { "/metrics" }
            " · " a href="/healthz" { "/healthz" }
        }
        div.cards {
            (card(if worst.is_some_and(|w| exceeds(w, rto)) { "bad" } else { "" },
                "Outages so far", &l.outage_count().to_string(),
                &format!("longest write unavailability {}", opt_secs(worst))))
            @let (lost_class, lost_value) = lost_writes(l);
            @let lost_value = if lost_value == "unverified" { not_yet.to_string() } else { lost_value };
            (card(lost_class, "Acknowledged writes lost", &lost_value, &format!("{} unknown outcomes", group(l.counts.unknown_outcome_writes))))
            (card("", "Writes", &group(l.counts.transactions), &format!("{} acknowledged", group(l.counts.successes))))
            (card("", "Primary", &l.identity_last.as_ref().map_or_else(|| "?".to_string(), endpoint),
                &l.identity_last.as_ref().map_or_else(String::new, describe)))
        }
        section {
            h2 { "Last " (LIVE_WINDOW.as_secs() / 60) " minutes" }
            @if let Some((_, to)) = l.timeline.span() {
                (chart(&l.timeline, to.saturating_sub(LIVE_WINDOW.as_secs()), to, l.target_rate,
                    "live timeline, last 15 minutes"))
                (legend(&[&l.timeline]))
            } @else {
                p.muted { "No second recorded yet." }
            }
        }
        @if !l.outages.is_empty() {
            section {
                h2 { "Latest outages" }
                table {
                    thead { tr {
                        th { "#" } th { "start (UTC)" } th.num { "writes unavailable" }
                        th.num { "lost" } th { "error classes" }
                    } }
                    tbody {
                        @for o in l.outages.iter().rev().take(LIVE_OUTAGES) {
                            tr {
                                td { (o.index) }
                                td.num { (when(o.start_unix, false)) }
                                td.num { (opt_secs(o.write_unavailable_seconds)) }
                                td.num {
                                    @if o.lost_writes_at_least { "at least " }
                                    (opt_group(o.lost_writes, not_yet))
                                }
                                td { (o.error_classes.join(", ")) }
                            }
                        }
                    }
                }
            }
        }
    };
    document(&format!("pgdrill — {state}"), true, body)
}
