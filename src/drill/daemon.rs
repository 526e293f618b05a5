//! The drill inside a run: runs the triggers on schedule, snapshots the load counts around each for
//! its baseline, keeps the drill metrics current, and at the end builds the report and verdict.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;

use crate::clock::WallClock;
use crate::db::identity::IdentityTracker;
use crate::drill::timing::{in_window, Baseline, Counts};
use crate::drill::trigger::{run_schedule, TriggerEvent, TriggerRun};
use crate::drill::{DrillReport, Objectives, RunFacts, TriggerConfig};
use crate::failover::outages::Outages;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::timeline::{EventKind, Recorder};

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
    /// Where each trigger's start and end are marked (the report and the live page).
    pub timeline: Arc<Recorder>,
}

#[derive(Default, Clone)]
struct Book {
    triggers: Vec<TriggerRun>,
    baselines: Vec<Baseline>,
    baseline_from: Option<Counts>,
}

/// One run's drill; only runs with a trigger have one.
pub struct DrillRun {
    config: TriggerConfig,
    objectives: Objectives,
    sources: Sources,
    clock: WallClock,
    book: Mutex<Book>,
}

impl DrillRun {
    pub fn new(config: TriggerConfig, objectives: Objectives, sources: Sources) -> Arc<DrillRun> {
        sources.metrics.drill.verdict.set("pending");
        Arc::new(DrillRun {
            clock: sources.outages.clock(),
            config,
            objectives,
            sources,
            book: Mutex::new(Book::default()),
        })
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
        let triggers = run_schedule(
            &self.config,
            load_start,
            |at| self.clock.unix(at),
            || (self.sources.counts)().0 > 0,
            &stop,
            |event| self.on_event(event),
        );
        let live = async {
            while stop.run_until_cancelled(sleep(LIVE_EVERY)).await.is_some() {
                self.update_live();
            }
        };
        tokio::join!(triggers, live);
    }

    fn on_event(&self, event: TriggerEvent) {
        let m = &self.sources.metrics.drill;
        match event {
            TriggerEvent::BaselineStarts { index, at } => {
                tracing::debug!(
                    trigger = index,
                    "the baseline window before the trigger begins"
                );
                self.book.lock().baseline_from = Some(self.counts(at));
            }
            TriggerEvent::Starting { index, at } => {
                let to = self.counts(at);
                let rate = self.sources.target_rate;
                m.trigger_timestamp.set(to.unix);
                let how = format!("trigger {index} started: {}", self.config.action.display());
                let started = EventKind::FailoverTrigger { how };
                self.sources.timeline.lock().event(to.unix, started);
                // This trigger's figures are not measured yet (and stay so without an
                // outage or a new primary), as the summary's null.
                m.first_failed_write.set(f64::NAN);
                m.new_primary_write.set(f64::NAN);
                let mut b = self.book.lock();
                let from = b.baseline_from.take().unwrap_or(to);
                b.baselines.push(Baseline::between(index, from, to, rate));
            }
            TriggerEvent::Ended(run) => {
                m.trigger_end_timestamp.set(run.ended_unix);
                let (index, outcome, took) = (run.index, run.outcome.label(), run.duration_seconds);
                let how = format!("trigger {index} ended: {outcome} after {took:.3} s");
                let ended = EventKind::FailoverTrigger { how };
                self.sources.timeline.lock().event(run.ended_unix, ended);
                m.triggers.with_label_values(&[outcome]).inc();
                self.book.lock().triggers.push(run);
            }
        }
    }

    /// The last trigger's figures as far as they are known now (its baseline ends at its start).
    fn update_live(&self) {
        let Some(start) = self.book.lock().baselines.last().map(|b| b.to_unix) else {
            return;
        };
        let outages = self.sources.outages.outages();
        let primaries = self.sources.identity.first_writes();
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
        let book = self.book.lock().clone();
        let report = DrillReport::build(
            &self.config,
            self.objectives,
            RunFacts {
                triggers: book.triggers,
                baselines: book.baselines,
                outages: self.sources.outages.outages(),
                earlier_outages: self.sources.outages.earlier(),
                unverified_changes: self.sources.outages.unverified_changes(),
                new_primary_writes_unix: self.sources.identity.first_writes(),
                lost_writes_in_run,
                losses_without_outage: self.sources.outages.losses_without_outage(),
                run_end_unix: self.clock.unix(run_end),
            },
        );
        let verdict = report.verdict.verdict.as_str();
        self.sources.metrics.drill.verdict.set(verdict);
        report
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::db::identity::tests::id as identity;
    use crate::drill::plan::Schedule;
    use crate::drill::plan::{InProcessTrigger, TriggerAction};
    use crate::drill::verdict::VerdictKind;
    use crate::error::ErrorClass;
    use crate::rpo::ledger::Check;

    /// A whole drill without a database: a lab trigger answered at once, an outage and a new
    /// primary recorded as the monitor and the pool would, counts from a plain counter.
    #[tokio::test(start_paused = true)]
    async fn a_drill_snapshots_its_baseline_times_its_trigger_and_judges_it() {
        let metrics = Metrics::new(&[]);
        let outages = Arc::new(Outages::new(WallClock::now()));
        let tracker = Arc::new(IdentityTracker::new(
            Vec::new(),
            metrics.clone(),
            outages.clock(),
        ));
        let acked = Arc::new(AtomicU64::new(0));
        let counted = acked.clone();
        let (trigger, mut requests) = InProcessTrigger::new("lab forced failover");
        let config = TriggerConfig {
            action: TriggerAction::InProcess(trigger),
            schedule: Schedule {
                after: Duration::from_secs(5),
                every: None,
                count: 1,
            },
            timeout: Duration::from_secs(60),
        };
        let objectives = Objectives {
            rto: Duration::from_secs(2),
            max_lost_writes: 0,
        };
        let sources = Sources {
            metrics: metrics.clone(),
            outages: outages.clone(),
            identity: tracker.clone(),
            counts: Box::new(move || (counted.load(Ordering::Relaxed), 0)),
            target_rate: Some(100.0),
            timeline: Arc::new(Recorder::new(
                crate::telemetry::timeline::Timeline::new(&[]),
            )),
        };
        let drill = DrillRun::new(config, objectives, sources);
        let pending = "pgdrill_drill_verdict{verdict=\"pending\"}";
        assert_eq!(metrics.sample(pending), Some(1.0));

        let start = Instant::now();
        let stop = CancellationToken::new();
        let task = tokio::spawn(drill.clone().run(start, stop.clone()));
        tracker.observe(&identity(5001, 1));
        // 100 writes a second for 5 s, then the lab fails over when asked.
        for _ in 0..500 {
            acked.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let reply = requests.recv().await.expect("the trigger asks");
        for unmeasured in [
            "pgdrill_failover_first_failed_write_seconds",
            "pgdrill_failover_new_primary_write_seconds",
        ] {
            let value = metrics.sample(unmeasured).expect("gauge");
            assert!(value.is_nan(), "{unmeasured} {value}");
        }
        let failed_at = Instant::now() + Duration::from_millis(50);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let index = outages.started(failed_at, None);
        tracker.observe(&identity(5002, 2));
        let back = Instant::now();
        tracker.acknowledged(back);
        let position = outages.ended(failed_at, back, &[ErrorClass::ConnectionClosed], None);
        outages.verified(
            position.expect("an open outage"),
            &Check {
                checked: 400,
                lost: 0,
                lost_seqs: Vec::new(),
                rpo_seconds: 0.0,
                unknown_committed: 0,
                unknown_not_committed: 0,
                seconds: 0.01,
                at_least: false,
            },
            None,
        );
        let _ = reply.send(Ok("promoted".into()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Live on /metrics before the run ends.
        let first_failed = metrics
            .sample("pgdrill_failover_first_failed_write_seconds")
            .expect("gauge");
        assert!((first_failed - 0.05).abs() < 1e-3, "{first_failed}");
        let new_primary = metrics
            .sample("pgdrill_failover_new_primary_write_seconds")
            .expect("gauge");
        assert!((new_primary - 0.3).abs() < 1e-3, "{new_primary}");
        assert_eq!(
            metrics.sample("pgdrill_failover_triggers_total{outcome=\"ok\"}"),
            Some(1.0)
        );

        stop.cancel();
        task.await.expect("the drill task ends when stopped");
        let report = drill.report(0, Instant::now());
        assert_eq!(report.verdict.verdict, VerdictKind::Pass, "{report}");
        assert_eq!(report.drills[0].outage, Some(index));
        // The baseline left out the first second: 4 s at 100/s.
        let b = &report.baselines[0];
        assert!((b.to_unix - b.from_unix - 4.0).abs() < 0.02, "{b:?}");
        assert!((395..=405).contains(&b.successes), "{b:?}");
        assert_eq!(report.triggers[0].stdout_tail, "promoted\n");
        assert_eq!(
            metrics.sample("pgdrill_drill_verdict{verdict=\"pass\"}"),
            Some(1.0)
        );
        assert_eq!(metrics.sample(pending), Some(0.0));

        // The same run judged against 0.1 s fails.
        let strict = DrillReport::build(
            &drill.config,
            Objectives {
                rto: Duration::from_millis(100),
                max_lost_writes: 0,
            },
            RunFacts {
                triggers: report.triggers.clone(),
                baselines: report.baselines.clone(),
                outages: drill.sources.outages.outages(),
                earlier_outages: drill.sources.outages.earlier(),
                unverified_changes: 0,
                new_primary_writes_unix: drill.sources.identity.first_writes(),
                lost_writes_in_run: 0,
                losses_without_outage: Vec::new(),
                run_end_unix: drill.clock.unix(Instant::now()),
            },
        );
        assert_eq!(strict.verdict.verdict, VerdictKind::Fail, "{strict}");
    }
}
