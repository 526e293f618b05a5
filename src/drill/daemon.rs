//! The drill inside a run: runs the triggers on their schedule, snapshots the load counts
//! around each for its baseline, keeps the drill metrics current, and at the end builds the
//! report with its verdict.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::db::identity::IdentityTracker;
use crate::drill::args::{Objectives, TriggerConfig};
use crate::drill::runner::{run_schedule, TriggerEvent};
use crate::drill::scrub::Scrubber;
use crate::drill::timing::{in_window, Baseline, Counts, OutageFacts};
use crate::drill::trigger::TriggerRun;
use crate::drill::{DrillReport, RunFacts};
use crate::failover::outages::{Outages, WallClock};
use crate::telemetry::metrics::Metrics;

/// How often the live figures of the last trigger are brought up to date.
const LIVE_EVERY: Duration = Duration::from_millis(500);

/// What the drill reads from the rest of the run.
pub struct Sources {
    pub metrics: Arc<Metrics>,
    pub outages: Arc<Outages>,
    pub identity: Arc<IdentityTracker>,
    /// Acknowledged and failed writes so far, from the plain tally of outcomes.
    pub counts: Box<dyn Fn() -> (u64, u64) + Send + Sync>,
    pub target_rate: Option<f64>,
}

#[derive(Default)]
struct Book {
    triggers: Vec<TriggerRun>,
    baselines: Vec<Baseline>,
    baseline_from: Option<Counts>,
    /// Start of the trigger that ran last (or runs now), Unix seconds.
    last_start: Option<f64>,
}

/// One run's drill; only runs with a trigger have one.
pub struct DrillRun {
    config: TriggerConfig,
    objectives: Objectives,
    sources: Sources,
    scrubber: Scrubber,
    clock: WallClock,
    book: Mutex<Book>,
}

impl DrillRun {
    pub fn new(
        config: TriggerConfig,
        objectives: Objectives,
        sources: Sources,
        scrubber: Scrubber,
    ) -> Arc<DrillRun> {
        sources.metrics.drill.verdict.set("pending");
        Arc::new(DrillRun {
            clock: sources.outages.clock(),
            config,
            objectives,
            sources,
            scrubber,
            book: Mutex::new(Book::default()),
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut Book) -> R) -> Option<R> {
        self.book.lock().ok().map(|mut b| f(&mut b))
    }

    fn counts(&self, at: Instant) -> Counts {
        let (successes, errors) = (self.sources.counts)();
        Counts {
            unix: self.clock.unix(at),
            successes,
            errors,
        }
    }

    /// Runs the triggers from `load_start` on, and keeps the live figures, until `stop`.
    pub async fn run(self: Arc<Self>, load_start: Instant, stop: CancellationToken) {
        let clock = self.clock;
        let triggers = run_schedule(
            &self.config,
            load_start,
            &self.scrubber,
            move |at| clock.unix(at),
            &stop,
            |event| self.on_event(event),
        );
        let live = async {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(LIVE_EVERY) => self.update_live(),
                    _ = stop.cancelled() => break,
                }
            }
        };
        tokio::join!(triggers, live);
    }

    fn on_event(&self, event: TriggerEvent<'_>) {
        let m = &self.sources.metrics.drill;
        match event {
            TriggerEvent::BaselineStarts { index, at } => {
                tracing::debug!(
                    trigger = index,
                    "the baseline window before the trigger begins"
                );
                let from = self.counts(at);
                self.with(|b| b.baseline_from = Some(from));
            }
            TriggerEvent::Starting { index, at } => {
                let to = self.counts(at);
                let rate = self.sources.target_rate;
                m.trigger_timestamp.set(to.unix);
                // This trigger's figures are not measured yet.
                m.first_failed_write.set(0.0);
                m.new_primary_write.set(0.0);
                self.with(|b| {
                    let from = b.baseline_from.take().unwrap_or(to);
                    b.baselines.push(Baseline::between(index, from, to, rate));
                    b.last_start = Some(to.unix);
                });
            }
            TriggerEvent::Ended(run) => {
                m.trigger_end_timestamp.set(run.ended_unix);
                m.trigger_ended(run.outcome.label());
                self.with(|b| b.triggers.push(run.clone()));
            }
        }
    }

    fn outage_facts(&self) -> Vec<OutageFacts> {
        self.sources
            .outages
            .outages()
            .iter()
            .map(OutageFacts::from)
            .collect()
    }

    fn new_primary_writes(&self) -> Vec<f64> {
        self.sources
            .identity
            .first_writes()
            .into_iter()
            .map(|at| self.clock.unix(at))
            .collect()
    }

    /// The last trigger's figures as far as they are known now.
    fn update_live(&self) {
        let Some(start) = self.with(|b| b.last_start).flatten() else {
            return;
        };
        let outages = self.outage_facts();
        let primaries = self.new_primary_writes();
        let (mine, new_primary) = in_window(start, f64::INFINITY, &outages, &primaries);
        let m = &self.sources.metrics.drill;
        if let Some(o) = mine.first() {
            m.first_failed_write.set(o.start_unix - start);
        }
        if let Some(at) = new_primary {
            m.new_primary_write.set(at - start);
        }
    }

    /// The drills of the run and their verdict, once the run has drained (verification
    /// done); sets the verdict on `/metrics`.
    pub fn report(&self, lost_writes_in_run: u64, run_end: Instant) -> DrillReport {
        self.update_live();
        let (triggers, baselines) = self
            .with(|b| (b.triggers.clone(), b.baselines.clone()))
            .unwrap_or_default();
        let report = DrillReport::build(
            &self.config,
            self.objectives,
            RunFacts {
                triggers,
                baselines,
                outages: self.outage_facts(),
                new_primary_writes_unix: self.new_primary_writes(),
                lost_writes_in_run,
                run_end_unix: self.clock.unix(run_end),
            },
        );
        self.sources
            .metrics
            .drill
            .verdict
            .set(report.verdict.verdict.as_str());
        report
    }
}
