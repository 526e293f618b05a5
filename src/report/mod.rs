//! For people: the progress line, the pages, and the end-of-run summary, human and JSON.
//! Reads plain program state; the hot path never imports it.

pub mod fleet;
pub(crate) mod html;
pub mod merge;
pub(crate) mod progress;
pub(crate) mod sampler;
pub(crate) mod summary;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::db::pool::DbPool;
use crate::drill::verdict::Objectives;
use crate::failover::outages::{Outages, MAX_OUTAGES, MAX_STATE_CHANGES};
use crate::load::outcomes::Outcomes;
use crate::report::summary::{Flag, RunCounts, Summary};
use crate::rpo::verify::Verifier;
use crate::telemetry::timeline::Recorder;

impl Summary {
    /// The drill report page, as `pgdrill report SUMMARY.json` draws it.
    pub fn report_html(&self) -> String {
        crate::secrets::scrub(&html::render(self))
    }

    /// The command-line settings as run (long name without dashes, value), passwords left out.
    pub fn set_flags(&mut self, flags: Vec<(String, String)>) {
        // What was in force, wherever it came from (flag, DSN, environment or default).
        let (timeout, from) = (self.connect_timeout_seconds, &self.connect_timeout_from);
        let value = format!("{timeout}s ({from})");
        let in_force = ("connect timeout in force".to_string(), value);
        self.flags = (flags.into_iter().chain([in_force]))
            .map(|(name, value)| Flag { name, value })
            .collect();
    }

    /// `--report`: writes [`Summary::report_html`] to `path`.
    pub fn write_report(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.report_html())
    }
}

/// A summary from its JSON form; anything without `run_id` and `transactions` is not one.
/// Read as a run would have written it: secrets scrubbed (an older version's, or a
/// hand-made file's), the unresolved count derived when missing, the latest outages kept.
pub(crate) fn summary_from_json(mut v: serde_json::Value) -> Result<Summary, String> {
    if v.get("run_id").is_none() || v.get("transactions").is_none() {
        return Err("not a pgdrill summary (no run_id or transactions)".to_string());
    }
    check_version(&v)?;
    crate::secrets::scrub_json(&mut v);
    let unresolved_missing = v.get("unknown_outcome_unresolved").is_none();
    let checked_missing = v.get("checked_writes").is_none();
    let mut s: Summary = serde_json::from_value(v).map_err(|e| e.to_string())?;
    if unresolved_missing {
        s.counts.unknown_outcome_unresolved = s.counts.unresolved();
    }
    if checked_missing {
        // Written before the field: its outages' verifications.
        let outages = s.outages.iter().filter_map(|o| o.checked_writes);
        s.counts.checked_writes =
            outages.fold(s.earlier_outages.checked_writes, u64::saturating_add);
    }
    s.earlier_outages.keep_latest(&mut s.outages);
    // What the run itself keeps, however many a hand-made or foreign file holds.
    s.timeline.events = std::mem::take(&mut s.timeline.events).kept();
    let over = s.state_changes.len().saturating_sub(MAX_STATE_CHANGES);
    s.state_changes.drain(..over);
    let over = s.losses_without_outage.len().saturating_sub(MAX_OUTAGES);
    let let_go = s.losses_without_outage.drain(..over).any(|l| l.at_least);
    s.earlier_outages.lost_writes_at_least |= let_go;
    Ok(s)
}

/// A summary written by a newer pgdrill may have moved or renamed what this one reads (read
/// as zeros, a loss would pass): refused. An older one, or none, is read.
fn check_version(v: &serde_json::Value) -> Result<(), String> {
    let parts = |s: &str| -> Vec<u64> { s.split('.').map_while(|p| p.parse().ok()).collect() };
    let ours = env!("CARGO_PKG_VERSION");
    match v.get("version").and_then(|v| v.as_str()) {
        Some(theirs) if parts(theirs) > parts(ours) => Err(format!(
            "written by pgdrill {theirs}, newer than this one ({ours}): read it with pgdrill \
             {theirs} or later"
        )),
        _ => Ok(()),
    }
}

/// What the live `/` page, the timeline sampler and the progress line read, and the live page drawn
/// last: redrawn by the sampler while viewed, so the load's runtime never draws (docs/report.md).
pub(crate) struct Sources {
    pub run_id: i64,
    pub target: String,
    pub started_at: String,
    pub target_rate: Option<f64>,
    /// `--rto-objective` and `--rpo-objective`, which colour the page's cards.
    pub objectives: Objectives,
    pub outcomes: Arc<Outcomes>,
    pub outages: Arc<Outages>,
    pub verifier: Arc<Verifier>,
    pub timeline: Arc<Recorder>,
    pub pool: DbPool,
    /// Set once the monitor stopped: until then a verification not done yet is pending
    /// (it runs on through the drain), after it unverified.
    pub verifications_over: AtomicBool,
    pub drawn: Mutex<Option<(Instant, String)>>,
    /// Held while a fetch draws: the fetches behind it copy what it drew.
    pub drawing: Mutex<()>,
    /// When `/` was last fetched.
    pub viewed: Mutex<Option<Instant>>,
}

/// A page fetched this recently keeps being redrawn every second.
const VIEWED: std::time::Duration = std::time::Duration::from_secs(30);
/// A drawn page older than this is drawn afresh for the fetch (the first after a pause).
const STALE: std::time::Duration = std::time::Duration::from_secs(3);

impl Sources {
    /// For a fetch of `/` (on a blocking thread): the last page drawn, or a new one if that one
    /// is older than [`STALE`].
    pub fn page(&self) -> String {
        let now = Instant::now();
        *self.viewed.lock() = Some(now);
        let _drawing = self.drawing.lock();
        let fresh = (self.drawn.lock().as_ref())
            .filter(|(at, _)| now.duration_since(*at) < STALE)
            .map(|(_, page)| page.clone());
        fresh.unwrap_or_else(|| {
            let page = self.render();
            *self.drawn.lock() = Some((now, page.clone()));
            page
        })
    }

    /// Called by the sampler after each second: redraws off the runtime while viewed.
    pub async fn redraw(self: &Arc<Self>) {
        let viewed = *self.viewed.lock();
        if viewed.is_none_or(|v| v.elapsed() >= VIEWED) {
            return;
        }
        let this = self.clone();
        let now = Instant::now();
        if let Ok(page) = tokio::task::spawn_blocking(move || this.render()).await {
            *self.drawn.lock() = Some((now, page));
        }
    }

    /// A copy of the last 15 minutes is taken under the timeline's lock, drawn outside it.
    fn render(&self) -> String {
        let timeline = self.timeline.lock().recent(html::LIVE_WINDOW);
        let run = Summary {
            version: env!("CARGO_PKG_VERSION").to_string(),
            run_id: self.run_id,
            target: self.target.clone(),
            started_at: self.started_at.clone(),
            target_rate: self.target_rate,
            counts: RunCounts::of(&self.outcomes.tally(), self.verifier.totals()),
            identity_last: self.outcomes.identity.current(),
            outages: self.outages.outages(),
            earlier_outages: self.outages.earlier(),
            timeline,
            objectives: Some(self.objectives),
            ..Summary::default()
        };
        let running = !self.verifications_over.load(Ordering::Relaxed);
        crate::secrets::scrub(&html::render_live(&run, self.outages.state(), running))
    }
}

#[cfg(test)]
mod input_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::timeline::Second;

    impl Sources {
        /// The sources of a run with no database, over `timeline`.
        pub fn for_tests(timeline: Arc<Recorder>) -> Sources {
            use crate::clock::WallClock;
            use crate::rpo::ledger::Ledger;

            let metrics = crate::telemetry::metrics::Metrics::new(&[]);
            let ledger = Arc::new(Mutex::new(Ledger::new(std::time::Duration::from_secs(30))));
            let (pool, workload) = crate::db::pool::tests::unconnected(metrics.clone());
            let identity = Arc::new(crate::db::identity::IdentityTracker::new(
                Vec::new(),
                metrics.clone(),
                crate::clock::WallClock::now(),
            ));
            Sources {
                run_id: 1,
                target: "host=db".into(),
                started_at: String::new(),
                target_rate: Some(100.0),
                objectives: summary::DEFAULT_OBJECTIVES,
                outcomes: Arc::new(Outcomes {
                    metrics: metrics.clone(),
                    detector: Arc::default(),
                    ledger: ledger.clone(),
                    latency: crate::telemetry::latency::LatencyBook::new(1),
                    identity: identity.clone(),
                    tally: Default::default(),
                    fatal: Arc::default(),
                }),
                outages: Arc::new(Outages::new(WallClock::now())),
                verifier: Arc::new(Verifier::new(
                    pool.clone(),
                    workload,
                    ledger,
                    metrics.clone(),
                    identity.clone(),
                    std::time::Duration::from_secs(5),
                )),
                timeline,
                pool,
                verifications_over: Default::default(),
                drawn: Mutex::default(),
                drawing: Mutex::default(),
                viewed: Mutex::default(),
            }
        }
    }

    #[tokio::test]
    async fn the_live_page_is_redrawn_while_viewed_and_fetches_copy_it() {
        let timeline = Arc::new(Recorder::new(crate::telemetry::timeline::Timeline::new(
            &sampler::class_names(),
        )));
        let live = Arc::new(Sources::for_tests(timeline.clone()));
        let drawn = |live: &Sources| live.drawn.lock().is_some();
        // Nobody looked: nothing is drawn.
        live.redraw().await;
        assert!(!drawn(&live));
        let first = live.page();
        assert!(first.contains("No second recorded yet."), "{first}");
        assert!(drawn(&live));
        timeline.lock().push(Second::second(1_795_000_200));
        // A fetch within the staleness bound gets the page drawn last.
        assert_eq!(live.page(), first);
        // The sampler's redraw, while viewed, brings the new second in.
        live.redraw().await;
        let second = live.page();
        assert!(second.contains("<svg class=\"chart\""), "{second}");
        assert!(second.contains("host=db"));
    }
}
