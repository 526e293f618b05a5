//! Drives the failover state machine when it asks to look ([`Machine::next_look`]) or an outcome
//! that may change the state arrives, turns its transitions into metrics, log events and outage
//! records, and asks for verification after each outage or primary change.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::db::identity::{shown, Identity, IdentityTracker};
use crate::failover::machine::{Detector, FailoverState, Machine, Thresholds, Transition};
use crate::failover::outages::{Outages, MAX_OUTAGES};
use crate::rpo::verify::{Request, Verifier};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::timeline::{EventKind, Recorder};

/// What the monitor reads and writes. `pgdrill_failover_state` starts at `healthy`.
pub struct Monitor {
    pub metrics: Arc<Metrics>,
    pub detector: Arc<Detector>,
    pub identity: Arc<IdentityTracker>,
    pub verifier: Arc<Verifier>,
    pub outages: Arc<Outages>,
    pub thresholds: Thresholds,
    /// `--rto-objective`: a finished outage beyond it is counted.
    pub rto_objective: Duration,
    pub timeline: Arc<Recorder>,
}

impl Monitor {
    /// Runs until `stop`; then finishes pending verifications. The supervisor bounds that
    /// by what is left of the shutdown grace: aborting this task aborts the verifier too.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let (verify_tx, verify_rx) = mpsc::channel(MAX_OUTAGES);
        let mut verifier = AbortOnDropHandle::new({
            let this = self.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                this.verifier
                    .run(verify_rx, stop, |req, check| {
                        let at = crate::clock::unix_now();
                        match req.outage {
                            // Verification connected afresh (its identity probe ran): the
                            // server written to after the outage, even behind a pooler that
                            // kept pgdrill's connections while it switched servers.
                            Some(index) => {
                                this.outages.verified(index, check, this.identity.current())
                            }
                            None => this.outages.change_verified(at, check),
                        }
                        // Not a queued one's over the latest outage's pending NaN.
                        if this.outages.shows_last_failover(req.outage, check.lost) {
                            let m = &this.metrics;
                            m.last_failover_lost_writes.set(check.lost as f64);
                            m.last_failover_rpo.set(check.rpo_seconds);
                            m.last_failover_lower_bound.set(i64::from(check.at_least));
                            let outage = req.outage.map_or(0, |i| i64::try_from(i).unwrap_or(0));
                            m.last_failover_outage.set(outage);
                        }
                        this.timeline.lock().event(
                            at,
                            EventKind::Verification {
                                outage: req.outage.map(|i| i as u32),
                                checked: check.checked,
                                lost: check.lost,
                                rpo_seconds: check.rpo_seconds,
                                at_least: check.at_least,
                                unknown_committed: check.unknown_committed,
                                unknown_not_committed: check.unknown_not_committed,
                            },
                        );
                    })
                    .await;
            })
        });
        tokio::select! {
            () = self.watch(&verify_tx, &stop) => {}
            // The verifier ends only once its channel closes, below: earlier is a crash,
            // passed on to this task so that the supervisor reports it.
            ended = &mut verifier => resume_verifier_failure(ended),
        }
        drop(verify_tx);
        if let ended @ Err(_) = verifier.await {
            resume_verifier_failure(ended);
        }
    }

    /// The look loop: no wake-up while healthy and nothing is reported.
    async fn watch(&self, verify: &mpsc::Sender<Request>, stop: &CancellationToken) {
        let mut machine = Machine::new(self.thresholds, Instant::now());
        let mut changes = self.identity.subscribe();
        // A change seen while a failure is pending, with the outages counted then.
        let mut deferred: Option<(Instant, u64)> = None;
        let next = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(next);
        loop {
            tokio::select! {
                () = &mut next => {}
                () = self.detector.news() => {}
                Ok(()) = changes.changed() => {
                    // A new primary without a detected outage (a fast switchover): check what was
                    // acknowledged before it (seen late, its RPO runs to the last lost write).
                    // While a failure is pending it waits: an outage that follows checks the same
                    // writes, and their loss is that outage's.
                    let change = Some((Instant::now(), self.metrics.outages.get()));
                    match machine.state() {
                        FailoverState::Outage => {}
                        FailoverState::Degraded => deferred = change,
                        _ => self.settle_change(change, verify),
                    }
                    continue;
                }
                _ = stop.cancelled() => {
                    // The lanes' last outcomes first: a success as they drained ends the
                    // outage, which is then not still open.
                    self.look(&mut machine, verify);
                    self.still_open(&machine);
                    self.settle_change(deferred.take(), verify);
                    return;
                }
            }
            let look = self.look(&mut machine, verify);
            if machine.state() != FailoverState::Degraded {
                self.settle_change(deferred.take(), verify);
            }
            next.as_mut().reset(look);
        }
    }

    /// A primary change's check of what was acknowledged before `until`, unless an outage
    /// started since it was seen (its end checks them).
    fn settle_change(&self, change: Option<(Instant, u64)>, verify: &mpsc::Sender<Request>) {
        if let Some((until, _)) = change.filter(|c| c.1 == self.metrics.outages.get()) {
            self.outages.change_to_verify();
            let req = Request {
                outage: None,
                until,
                loss_reference: None,
            };
            ask(verify, req, |until| self.verifier.hold(until));
        }
    }

    /// One look at what was reported: the transitions applied, the next look's time returned.
    fn look(&self, machine: &mut Machine, verify: &mpsc::Sender<Request>) -> Instant {
        if let Some((step, open_start)) = self.outages.follow_clock() {
            if let Some(start) = open_start {
                self.metrics.outage_start_timestamp.set(start);
            }
            tracing::warn!(
                step_seconds = format!("{step:+.3}"),
                "the wall clock stepped; dates from now on follow it (durations are measured \
                 on the monotonic clock, which did not step)"
            );
        }
        let now = Instant::now();
        if let Some(end) = self.outages.load_end() {
            machine.load_stopped(end);
        }
        let in_flight = self.detector.in_flight();
        let (transitions, look) = self.detector.with_events(|ev| {
            let transitions = machine.tick(now, ev, in_flight);
            (transitions, machine.next_look(now, ev, in_flight))
        });
        for t in transitions {
            self.apply(t, verify);
        }
        look
    }

    /// An outage still in progress at shutdown goes into the report with its duration so
    /// far and its error classes, marked as open.
    fn still_open(&self, machine: &Machine) {
        let Some(start) = machine.outage_start() else {
            return;
        };
        let classes = self.detector.with_events(|ev| ev.classes());
        let seconds = self.outages.still_open(start, Instant::now(), &classes);
        // The duration so far is the figure the summary and the verdict judge: /metrics
        // says the same (the end timestamp stays older than the start: still open).
        self.outage_measured(seconds);
        tracing::warn!(
            event = "outage_open_at_shutdown",
            seconds = format!("{seconds:.3}"),
            classes = %classes.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(","),
            "writes were still unavailable when the load stopped"
        );
    }

    /// An outage's write unavailability on /metrics, once it ends or the load stops.
    fn outage_measured(&self, seconds: f64) {
        let m = &self.metrics;
        m.last_outage_duration.set(seconds);
        m.outage_duration.observe(seconds);
        if crate::clock::exceeds(seconds, self.rto_objective.as_secs_f64()) {
            m.outages_over_rto_objective.inc();
        }
    }

    /// Records one transition; an outage's end asks for verification.
    fn apply(&self, t: Transition, verify: &mpsc::Sender<Request>) {
        let m = &self.metrics;
        let clock = self.outages.clock();
        match t {
            Transition::State { from, to } => {
                m.failover_state.set(to.as_str());
                self.verifier.outage_open(to == FailoverState::Outage);
                self.outages.state_changed(from, to, Instant::now());
                tracing::info!(
                    event = "state",
                    from = from.as_str(),
                    to = to.as_str(),
                    "failover state changed"
                );
            }
            Transition::OutageStarted { start } => {
                m.outages.inc();
                m.outage_start_timestamp.set(clock.unix(start));
                // Unknown until this outage's rate is back (the summary's `-`), not the last one's;
                // its losses until it is verified.
                m.last_recovery_duration.set(f64::NAN);
                m.last_failover_lost_writes.set(f64::NAN);
                m.last_failover_rpo.set(f64::NAN);
                m.last_failover_lower_bound.set(0);
                let before = self.identity.current();
                let outage = self.outages.started(start, before.clone()) as u32;
                m.last_failover_outage.set(i64::from(outage));
                self.timeline
                    .lock()
                    .event(clock.unix(start), EventKind::OutageStart { outage });
                tracing::warn!(event = "outage_started", outage, at = %clock.rfc3339(start), primary = %shown(before.as_ref().and_then(Identity::endpoint)), "writes unavailable");
            }
            Transition::OutageEnded {
                start,
                end,
                classes,
            } => {
                let seconds = (end - start).as_secs_f64();
                m.outage_end_timestamp.set(clock.unix(end));
                self.outage_measured(seconds);
                let after = self.identity.current();
                let index = self.outages.ended(start, end, &classes, after.clone());
                self.timeline.lock().event(
                    clock.unix(end),
                    EventKind::OutageEnd {
                        outage: index.map_or(0, |i| i as u32),
                        unavailable_seconds: Some(seconds),
                    },
                );
                tracing::warn!(
                    event = "outage_ended",
                    write_unavailable_seconds = format!("{seconds:.3}"),
                    errors = %classes.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(","),
                    primary = %shown(after.as_ref().and_then(Identity::endpoint)),
                    "writes available again"
                );
                let req = Request {
                    outage: index,
                    until: end,
                    loss_reference: Some(start),
                };
                ask(verify, req, |until| self.verifier.hold(until));
            }
            Transition::FullRate {
                first_success,
                full_rate_at,
            } => {
                let seconds = (full_rate_at - first_success).as_secs_f64();
                m.last_recovery_duration.set(seconds);
                self.outages.full_rate(seconds);
                tracing::info!(
                    event = "full_rate",
                    time_to_full_rate_seconds = format!("{seconds:.3}"),
                    "rate back to target"
                );
            }
        }
    }
}

/// The verifier task ended early or panicked: panic here with its panic, for the supervisor.
fn resume_verifier_failure(ended: Result<(), tokio::task::JoinError>) {
    match ended {
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => panic!("the verifier task was cancelled: {err}"),
        Ok(()) => panic!("the verifier task ended before it was stopped"),
    }
}

/// Queues a verification, its writes held in the ledger (`hold`) once it has room. A full
/// queue (verifications failing while outages keep coming: as many as the outage records
/// kept) leaves this one unverified, which the summary and the verdict then say, instead of
/// growing without bound. Whether it was queued.
fn ask(verify: &mpsc::Sender<Request>, req: Request, hold: impl FnOnce(Instant)) -> bool {
    match verify.try_reserve() {
        Err(mpsc::error::TrySendError::Full(())) => {
            tracing::warn!(outage = ?req.outage, waiting = MAX_OUTAGES, "verification queue full: this one stays unverified");
            false
        }
        // Closed: the run is stopping.
        Err(mpsc::error::TrySendError::Closed(())) => false,
        Ok(permit) => {
            hold(req.until);
            permit.send(req);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    #[test]
    fn a_full_verification_queue_drops_the_request_and_says_so() {
        let (tx, mut rx) = mpsc::channel(1);
        let now = Instant::now();
        let req = |outage| Request {
            outage: Some(outage),
            until: now,
            loss_reference: Some(now),
        };
        // Only a queued request holds its writes in the ledger.
        let holds = std::cell::Cell::new(0);
        let hold = |_| holds.set(holds.get() + 1);
        assert!(ask(&tx, req(1), hold));
        assert!(!ask(&tx, req(2), hold), "the queue holds one");
        assert_eq!(rx.try_recv().map(|r| r.outage).ok(), Some(Some(1)));
        assert!(ask(&tx, req(3), hold), "room again once served");
        drop(rx);
        assert!(!ask(&tx, req(4), hold), "closed");
        assert_eq!(holds.get(), 2);
    }

    use crate::clock::WallClock;
    use crate::db::pool::tests::unconnected;
    use crate::error::ErrorClass;
    use crate::rpo::ledger::Ledger;

    struct Rig {
        metrics: Arc<Metrics>,
        detector: Arc<Detector>,
        outages: Arc<Outages>,
        monitor: Arc<Monitor>,
    }

    /// A monitor with everything but a database: the ledger stays empty, so verification
    /// has nothing to ask and never connects.
    fn rig() -> Rig {
        let metrics = Metrics::new(&[]);
        let (pool, workload) = unconnected(metrics.clone());
        let ledger = Arc::new(Mutex::new(Ledger::new(Duration::from_secs(30))));
        let five = Duration::from_secs(5);
        let identity = Arc::new(IdentityTracker::new(
            Vec::new(),
            metrics.clone(),
            WallClock::now(),
        ));
        let verifier = Arc::new(Verifier::new(
            pool,
            workload,
            ledger,
            metrics.clone(),
            identity.clone(),
            five,
        ));
        let detector = Arc::new(Detector::default());
        let outages = Arc::new(Outages::new(WallClock::now()));
        let thresholds = Thresholds {
            outage: Duration::from_millis(20),
            stall: Duration::from_secs(1),
            target_rate: Some(100.0),
        };
        let monitor = Arc::new(Monitor {
            metrics: metrics.clone(),
            detector: detector.clone(),
            identity,
            verifier,
            outages: outages.clone(),
            thresholds,
            rto_objective: Duration::from_millis(400),
            timeline: Arc::new(Recorder::new(
                crate::telemetry::timeline::Timeline::new(&[]),
            )),
        });
        Rig {
            metrics,
            detector,
            outages,
            monitor,
        }
    }

    /// One write every 10 ms for `span`: acknowledged, or failed with `class`.
    async fn writes(detector: &Detector, span: Duration, fail: Option<ErrorClass>) {
        let end = Instant::now() + span;
        while Instant::now() < end {
            match fail {
                None => detector.success(Instant::now(), Instant::now()),
                Some(class) => detector.failure(Instant::now(), class),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Writes succeed for `healthy`, then fail with `class` for `failing`.
    async fn healthy_then(
        detector: &Detector,
        healthy: Duration,
        failing: Duration,
        class: ErrorClass,
    ) {
        writes(detector, healthy, None).await;
        writes(detector, failing, Some(class)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn failures_between_successes_make_one_recorded_verified_outage() {
        let r = rig();
        let stop = CancellationToken::new();
        let task = tokio::spawn(r.monitor.clone().run(stop.clone()));
        let s = |secs: f64| Duration::from_secs_f64(secs);
        writes(&r.detector, s(2.0), None).await;
        writes(&r.detector, s(0.5), Some(ErrorClass::AdminShutdown)).await;
        // From the outage's start, its losses are pending, not the last outage's.
        for pending in [
            "pgdrill_last_failover_lost_writes",
            "pgdrill_last_failover_rpo_seconds",
        ] {
            let value = r.metrics.sample(pending);
            assert!(value.is_some_and(f64::is_nan), "{pending} {value:?}");
        }
        writes(&r.detector, s(8.0), None).await;
        stop.cancel();
        task.await.expect("monitor ends");
        let lost = r.metrics.sample("pgdrill_last_failover_lost_writes");
        assert_eq!(lost, Some(0.0), "verified");
        let of = r.metrics.sample("pgdrill_last_failover_outage");
        assert_eq!(of, Some(1.0), "outage 1's figures");

        let records = r.outages.outages();
        assert_eq!(records.len(), 1, "{records:?}");
        let o = &records[0];
        // First failure (t = 2.0 s) to first success (t = 2.5 s), to the tick.
        let unavailable = o.write_unavailable_seconds.expect("the outage ended");
        assert!((unavailable - 0.5).abs() < 0.011, "{unavailable}");
        assert_eq!(o.error_classes, vec!["admin_shutdown"]);
        assert!(o.time_to_full_rate_seconds.is_some(), "{o:?}");
        // Verified against an empty ledger: nothing checked, nothing lost.
        assert_eq!((o.checked_writes, o.lost_writes), (Some(0), Some(0)));

        let states: Vec<_> = r
            .outages
            .state_changes()
            .iter()
            .map(|c| c.to.as_str())
            .collect();
        assert_eq!(states, ["degraded", "outage", "recovering", "healthy"]);
        let m = &r.metrics;
        assert_eq!(m.sample("pgdrill_outages_total"), Some(1.0));
        // 0.5 s over the rig's 0.4 s objective.
        assert_eq!(
            m.sample("pgdrill_outages_over_rto_objective_total"),
            Some(1.0)
        );
        assert_eq!(m.sample("pgdrill_verifications_total"), Some(1.0));
        assert_eq!(
            m.sample("pgdrill_last_outage_duration_seconds"),
            Some(unavailable)
        );
        assert_eq!(
            m.sample("pgdrill_failover_state{state=\"healthy\"}"),
            Some(1.0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_ended_by_the_last_write_before_the_stop_is_not_open() {
        // The stop and the success arrive together: whichever the monitor's select picks,
        // the success is looked at first (a random pick lost it half the time).
        for _ in 0..16 {
            let r = rig();
            let stop = CancellationToken::new();
            let task = tokio::spawn(r.monitor.clone().run(stop.clone()));
            let ms = Duration::from_millis;
            healthy_then(&r.detector, ms(200), ms(500), ErrorClass::AdminShutdown).await;
            r.detector.success(Instant::now(), Instant::now());
            stop.cancel();
            task.await.expect("monitor ends");
            let records = r.outages.outages();
            assert_eq!(records.len(), 1, "{records:?}");
            assert!(!records[0].open_at_shutdown, "{records:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_open_at_the_stop_is_on_metrics_with_its_duration_so_far() {
        let r = rig();
        let stop = CancellationToken::new();
        let task = tokio::spawn(r.monitor.clone().run(stop.clone()));
        let secs = Duration::from_secs;
        healthy_then(&r.detector, secs(1), secs(2), ErrorClass::ConnectRefused).await;
        r.outages.load_stopped(Instant::now());
        stop.cancel();
        task.await.expect("monitor ends");
        let records = r.outages.outages();
        assert!(records[0].open_at_shutdown, "{records:?}");
        let so_far = records[0].write_unavailable_seconds.expect("so far");
        let m = &r.metrics;
        // The figure the summary and the verdict judge, over the rig's 0.4 s objective.
        assert_eq!(
            m.sample("pgdrill_last_outage_duration_seconds"),
            Some(so_far)
        );
        let over = m.sample("pgdrill_outages_over_rto_objective_total");
        assert_eq!(over, Some(1.0));
        assert_eq!(m.sample("pgdrill_outage_duration_seconds_count"), Some(1.0));
        // Still open: the end timestamp is not moved past the start.
        let start = m.sample("pgdrill_outage_start_timestamp_seconds");
        assert!(m.sample("pgdrill_outage_end_timestamp_seconds") < start);
    }

    #[tokio::test(start_paused = true)]
    async fn writes_unanswered_from_the_first_connection_on_are_a_stall_outage() {
        let r = rig();
        let stop = CancellationToken::new();
        let task = tokio::spawn(r.monitor.clone().run(stop.clone()));
        // Taken from the backlog while the first connection is set up: no stall yet.
        r.detector.started();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(r.outages.state(), FailoverState::Healthy);
        r.detector.ready();
        let ready = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        r.detector.ready();
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert_eq!(r.outages.state(), FailoverState::Outage);
        let outage = answered_then_stopped(&r, stop, task).await;
        // Dated to the first connection set up, not the run's start or a later one.
        let unavailable = outage.write_unavailable_seconds.expect("ended");
        let since_ready = (Instant::now() - ready).as_secs_f64() - 1.0;
        assert!(
            (unavailable - since_ready).abs() < 0.03,
            "{unavailable} {since_ready}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn writes_in_flight_with_no_answer_are_a_stall_outage() {
        let r = rig();
        let stop = CancellationToken::new();
        let task = tokio::spawn(r.monitor.clone().run(stop.clone()));
        writes(&r.detector, Duration::from_secs(2), None).await;
        // One write sent and never answered: no failure, only silence.
        r.detector.started();
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(r.outages.state(), FailoverState::Outage);
        let outage = answered_then_stopped(&r, stop, task).await;
        // Dated back to the last success before the silence.
        let unavailable = outage.write_unavailable_seconds.expect("ended");
        assert!((1.5..1.53).contains(&unavailable), "{unavailable}");
        assert!(outage.error_classes.is_empty());
    }

    /// The write in flight is answered, a second of writes follows, the monitor stops: the
    /// one outage it recorded.
    async fn answered_then_stopped(
        r: &Rig,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    ) -> crate::failover::outages::OutageRecord {
        r.detector.finished();
        writes(&r.detector, Duration::from_secs(1), None).await;
        stop.cancel();
        task.await.expect("monitor ends");
        let mut records = r.outages.outages();
        assert_eq!(records.len(), 1, "{records:?}");
        records.remove(0)
    }
}
