//! For people: the progress line and the end-of-run summary, human and JSON.
//!
//! Reads `load` (the tally), `failover` (outage records), `rpo` (totals) and `telemetry`
//! (latency recorders); the hot path never imports it.

pub mod fleet;
pub(crate) mod html;
pub(crate) mod progress;
pub(crate) mod sampler;
pub(crate) mod summary;

use std::path::Path;

use crate::report::summary::{Flag, RunCounts, Summary};

impl Summary {
    /// The drill report page for this summary, as `pgdrill report SUMMARY.json` draws it
    /// from the file.
    pub fn report_html(&self) -> String {
        crate::secrets::scrub(&html::render(&html::Report::new(self)))
    }

    /// The command-line settings as run (long name without dashes, value), passwords
    /// already left out.
    pub fn set_flags(&mut self, flags: Vec<(String, String)>) {
        self.flags = flags
            .into_iter()
            .map(|(name, value)| Flag { name, value })
            .collect();
        // What was in force, wherever it came from (flag, DSN, environment or default).
        self.flags.push(Flag {
            name: "connect timeout in force".to_string(),
            value: format!(
                "{}s ({})",
                self.connect_timeout_seconds, self.connect_timeout_from
            ),
        });
    }

    /// `--report`: writes [`Summary::report_html`] to `path`.
    pub fn write_report(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.report_html())
    }
}

/// A summary from its JSON form; anything without `run_id` and `transactions` is not one.
pub(crate) fn summary_from_json(v: serde_json::Value) -> Result<Summary, String> {
    if v.get("run_id").is_none() || v.get("transactions").is_none() {
        return Err("not a pgdrill summary (no run_id or transactions)".to_string());
    }
    serde_json::from_value(v).map_err(|e| e.to_string())
}

/// What the live `/` page reads, all plain program state, and the last page drawn.
///
/// While someone is looking (a fetch within [`VIEWED`]), the sampler redraws the page once
/// a second on a blocking thread, and a fetch only copies it: the runtime that paces the
/// load never draws, and ten viewers cost what one does.
pub(crate) struct Live {
    pub run_id: i64,
    pub target: String,
    pub started_at: String,
    pub target_rate: Option<f64>,
    pub outcomes: std::sync::Arc<crate::load::outcomes::Outcomes>,
    pub outages: std::sync::Arc<crate::failover::outages::Outages>,
    pub identity: std::sync::Arc<crate::db::identity::IdentityTracker>,
    pub verifier: std::sync::Arc<crate::rpo::verify::Verifier>,
    pub timeline: std::sync::Arc<crate::telemetry::timeline::Recorder>,
    pub drawn: parking_lot::Mutex<Option<(tokio::time::Instant, String)>>,
    /// When `/` was last fetched.
    pub viewed: parking_lot::Mutex<Option<tokio::time::Instant>>,
}

#[cfg(test)]
impl Live {
    /// A live page over nothing but `timeline`.
    pub fn for_tests(timeline: std::sync::Arc<crate::telemetry::timeline::Recorder>) -> Live {
        use std::sync::Arc;

        use parking_lot::Mutex;
        let metrics = crate::telemetry::metrics::Metrics::new(&[]);
        let detector = Arc::new(crate::failover::machine::Detector::default());
        let ledger = Arc::new(Mutex::new(crate::rpo::ledger::Ledger::new(
            std::time::Duration::from_secs(30),
        )));
        let (pool, workload) = crate::db::pool::DbPool::unconnected(metrics.clone());
        Live {
            run_id: 1,
            target: "host=db".into(),
            started_at: String::new(),
            target_rate: Some(100.0),
            outcomes: Arc::new(crate::load::outcomes::Outcomes::new(
                metrics.clone(),
                detector,
                ledger.clone(),
                Default::default(),
                Arc::new(crate::db::identity::IdentityTracker::new(
                    Vec::new(),
                    metrics.clone(),
                )),
            )),
            outages: Arc::new(crate::failover::outages::Outages::new(
                crate::failover::outages::WallClock::now(),
            )),
            identity: Arc::new(crate::db::identity::IdentityTracker::new(
                Vec::new(),
                metrics.clone(),
            )),
            verifier: Arc::new(crate::rpo::verify::Verifier::new(
                pool, workload, ledger, metrics,
            )),
            timeline,
            drawn: Default::default(),
            viewed: Default::default(),
        }
    }
}

/// A page fetched this recently keeps being redrawn every second.
const VIEWED: std::time::Duration = std::time::Duration::from_secs(30);
/// A drawn page older than this is drawn afresh for the fetch (the first after a pause).
const STALE: std::time::Duration = std::time::Duration::from_secs(3);

impl Live {
    /// For a fetch of `/`: the page drawn last, or a new one if there is none that recent.
    pub fn page(&self) -> String {
        let now = tokio::time::Instant::now();
        *self.viewed.lock() = Some(now);
        if let Some((at, page)) = self.drawn.lock().as_ref() {
            if now.duration_since(*at) < STALE {
                return page.clone();
            }
        }
        let page = self.render();
        self.keep(now, page.clone());
        page
    }

    /// Called by the sampler after each second: redraws off the runtime while viewed.
    pub async fn redraw(self: &std::sync::Arc<Self>) {
        let viewed = *self.viewed.lock();
        if viewed.is_none_or(|v| v.elapsed() >= VIEWED) {
            return;
        }
        let this = self.clone();
        let now = tokio::time::Instant::now();
        if let Ok(page) = tokio::task::spawn_blocking(move || this.render()).await {
            self.keep(now, page);
        }
    }

    fn keep(&self, at: tokio::time::Instant, page: String) {
        *self.drawn.lock() = Some((at, page));
    }

    /// The page: a copy of the last 15 minutes is taken under the timeline's lock,
    /// the drawing happens outside it.
    fn render(&self) -> String {
        let tally = self.outcomes.tally();
        let totals = self.verifier.totals();
        let run = Summary {
            version: env!("CARGO_PKG_VERSION").to_string(),
            run_id: self.run_id,
            target: self.target.clone(),
            started_at: self.started_at.clone(),
            target_rate: self.target_rate,
            counts: RunCounts {
                transactions: tally.transactions,
                successes: tally.successes(),
                lost_writes: totals.lost_writes,
                unknown_outcome_writes: tally.unknown_outcome,
                ..RunCounts::default()
            },
            identity_last: self.identity.current(),
            outages: self.outages.outages(),
            timeline: self.timeline.recent(html::LIVE_WINDOW),
            ..Summary::default()
        };
        crate::secrets::scrub(&html::render_live(&run, self.outages.state()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::telemetry::timeline::{Recorder, Second};

    #[tokio::test]
    async fn the_live_page_is_redrawn_while_viewed_and_fetches_copy_it() {
        let timeline = Arc::new(Recorder::new(&sampler::class_names()));
        let live = Arc::new(Live::for_tests(timeline.clone()));
        let drawn = |live: &Live| live.drawn.lock().is_some();
        // Nobody looked: nothing is drawn.
        live.redraw().await;
        assert!(!drawn(&live));
        let first = live.page();
        assert!(first.contains("No second recorded yet."), "{first}");
        assert!(drawn(&live));
        timeline.push(Second::second(1_795_000_200));
        // A fetch within the staleness bound gets the page drawn last.
        assert_eq!(live.page(), first);
        // The sampler's redraw, while viewed, brings the new second in.
        live.redraw().await;
        let second = live.page();
        assert!(second.contains("<svg class=\"chart\""), "{second}");
        assert!(second.contains("host=db"));
    }
}
