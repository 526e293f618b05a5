//! Drives the failover state machine, turns its transitions into metrics,
//! log events and outage records, and verifies acknowledged writes after each
//! outage or primary change.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::db::identity::{Identity, IdentityTracker};
use crate::db::pool::DbPool;
use crate::db::table::Workload;
use crate::failover::machine::{Detector, FailoverState, Machine, Thresholds, Transition, TICK};
use crate::rpo::ledger::{Ledger, SLICE};
use crate::rpo::verify::verify;
use crate::telemetry::metrics::Metrics;

/// Maps the monotonic clock onto wall time, fixed once at start so that
/// wall-clock steps never distort measured durations.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    instant: Instant,
    unix: f64,
}

impl WallClock {
    pub fn now() -> WallClock {
        WallClock {
            instant: Instant::now(),
            unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }

    pub fn unix(&self, at: Instant) -> f64 {
        if at >= self.instant {
            self.unix + (at - self.instant).as_secs_f64()
        } else {
            self.unix - (self.instant - at).as_secs_f64()
        }
    }

    pub fn rfc3339(&self, at: Instant) -> String {
        let t = UNIX_EPOCH + Duration::from_secs_f64(self.unix(at).max(0.0));
        humantime::format_rfc3339_millis(t).to_string()
    }
}

/// One outage as the drill report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct OutageRecord {
    pub index: usize,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub start_unix: f64,
    pub end_unix: Option<f64>,
    /// First failed or stalled write after the last success → first success after.
    pub write_unavailable_seconds: Option<f64>,
    /// First success → achieved rate ≥ 95 % of target, held for the recovery window.
    pub time_to_full_rate_seconds: Option<f64>,
    pub error_classes: Vec<&'static str>,
    pub identity_before: Option<Identity>,
    pub identity_after: Option<Identity>,
    pub checked_writes: Option<u64>,
    pub lost_writes: Option<u64>,
    /// Up to 10,000 lost sequence numbers (column `seq` of this run).
    pub lost_seqs: Vec<u64>,
    pub rpo_seconds: Option<f64>,
    pub unknown_outcome_committed: Option<u64>,
    pub unknown_outcome_not_committed: Option<u64>,
    pub verification_seconds: Option<f64>,
}

/// One change of the failover state, for the drill report.
#[derive(Debug, Clone, Serialize)]
pub struct StateChange {
    pub at: String,
    pub from: FailoverState,
    pub to: FailoverState,
}

/// State changes kept for the report; a canary flapping for weeks keeps the latest.
const MAX_STATE_CHANGES: usize = 1000;

struct VerifyRequest {
    outage: Option<usize>,
    until: Instant,
    /// When writes stopped being acknowledged: the RPO is measured back from here.
    loss_reference: Instant,
}

pub struct Monitor {
    pub metrics: Arc<Metrics>,
    pub detector: Arc<Detector>,
    pub identity: Arc<IdentityTracker>,
    pub ledger: Arc<Mutex<Ledger>>,
    pub pool: DbPool,
    pub workload: Arc<Workload>,
    pub clock: WallClock,
    pub thresholds: Thresholds,
    outages: Mutex<Vec<OutageRecord>>,
    state: Mutex<FailoverState>,
    state_changes: Mutex<std::collections::VecDeque<StateChange>>,
}

impl Monitor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        metrics: Arc<Metrics>,
        detector: Arc<Detector>,
        identity: Arc<IdentityTracker>,
        ledger: Arc<Mutex<Ledger>>,
        pool: DbPool,
        workload: Arc<Workload>,
        clock: WallClock,
        thresholds: Thresholds,
    ) -> Monitor {
        Monitor {
            metrics,
            detector,
            identity,
            ledger,
            pool,
            workload,
            clock,
            thresholds,
            outages: Mutex::new(Vec::new()),
            state: Mutex::new(FailoverState::Healthy),
            state_changes: Mutex::new(std::collections::VecDeque::new()),
        }
    }

    pub fn state_changes(&self) -> Vec<StateChange> {
        self.state_changes
            .lock()
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn outages(&self) -> Vec<OutageRecord> {
        self.outages.lock().map(|o| o.clone()).unwrap_or_default()
    }

    pub fn state(&self) -> FailoverState {
        self.state.lock().map_or(FailoverState::Healthy, |s| *s)
    }

    /// Runs until `stop`; then finishes pending verifications within `grace`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken, grace: Duration) {
        let (verify_tx, verify_rx) = mpsc::unbounded_channel();
        let verifier = tokio::spawn(self.clone().verifier(verify_rx, stop.clone()));
        let mut machine = Machine::new(self.thresholds, Instant::now());
        let mut changes = self.identity.subscribe();
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                Ok(()) = changes.changed() => {
                    // A new primary without a detected outage (a fast switchover):
                    // check what was acknowledged before it.
                    if machine.state() != FailoverState::Outage {
                        let now = Instant::now();
                        let _ = verify_tx.send(VerifyRequest { outage: None, until: now, loss_reference: now });
                    }
                    continue;
                }
                _ = stop.cancelled() => break,
            }
            ticks += 1;
            if ticks.is_multiple_of(100) {
                if let Ok(l) = self.ledger.lock() {
                    self.metrics.ledger_bytes.set(l.bytes() as i64);
                }
            }
            let now = Instant::now();
            let in_flight = self.metrics.in_flight.get();
            let Some(transitions) = self
                .detector
                .with_events(|ev| machine.tick(now, ev, in_flight))
            else {
                continue;
            };
            for t in transitions {
                self.apply(t, &verify_tx);
            }
        }
        drop(verify_tx);
        let _ = tokio::time::timeout(grace, verifier).await;
    }

    fn apply(&self, t: Transition, verify_tx: &mpsc::UnboundedSender<VerifyRequest>) {
        let m = &self.metrics;
        match t {
            Transition::State { from, to } => {
                m.set_failover_state(to);
                if let Ok(mut changes) = self.state_changes.lock() {
                    if changes.len() == MAX_STATE_CHANGES {
                        changes.pop_front();
                    }
                    changes.push_back(StateChange {
                        at: self.clock.rfc3339(Instant::now()),
                        from,
                        to,
                    });
                }
                if let Ok(mut s) = self.state.lock() {
                    *s = to;
                }
                tracing::info!(
                    event = "state",
                    from = from.as_str(),
                    to = to.as_str(),
                    "failover state changed"
                );
            }
            Transition::OutageStarted { start } => {
                m.outages.inc();
                m.outage_start_timestamp.set(self.clock.unix(start));
                let before = self.identity.current();
                if let Ok(mut outages) = self.outages.lock() {
                    let index = outages.len() + 1;
                    tracing::warn!(event = "outage_started", outage = index, at = %self.clock.rfc3339(start), primary = ?before.as_ref().and_then(Identity::endpoint), "writes unavailable");
                    outages.push(OutageRecord {
                        index,
                        started_at: self.clock.rfc3339(start),
                        ended_at: None,
                        start_unix: self.clock.unix(start),
                        end_unix: None,
                        write_unavailable_seconds: None,
                        time_to_full_rate_seconds: None,
                        error_classes: Vec::new(),
                        identity_before: before,
                        identity_after: None,
                        checked_writes: None,
                        lost_writes: None,
                        lost_seqs: Vec::new(),
                        rpo_seconds: None,
                        unknown_outcome_committed: None,
                        unknown_outcome_not_committed: None,
                        verification_seconds: None,
                    });
                }
            }
            Transition::OutageEnded {
                start,
                end,
                classes,
            } => {
                let seconds = (end - start).as_secs_f64();
                m.outage_end_timestamp.set(self.clock.unix(end));
                m.last_outage_duration.set(seconds);
                m.outage_duration.observe(seconds);
                let after = self.identity.current();
                let mut index = None;
                if let Ok(mut outages) = self.outages.lock() {
                    if let Some(o) = outages.last_mut() {
                        o.ended_at = Some(self.clock.rfc3339(end));
                        o.end_unix = Some(self.clock.unix(end));
                        o.write_unavailable_seconds = Some(seconds);
                        o.error_classes = classes.iter().map(|c| c.as_str()).collect();
                        o.identity_after = after.clone();
                        index = Some(o.index - 1);
                    }
                }
                tracing::warn!(
                    event = "outage_ended",
                    write_unavailable_seconds = format!("{seconds:.3}"),
                    errors = ?classes.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
                    primary = ?after.as_ref().and_then(Identity::endpoint),
                    "writes available again"
                );
                let _ = verify_tx.send(VerifyRequest {
                    outage: index,
                    until: end,
                    loss_reference: start,
                });
            }
            Transition::FullRate {
                first_success,
                full_rate_at,
            } => {
                let seconds = (full_rate_at - first_success).as_secs_f64();
                m.last_recovery_duration.set(seconds);
                if let Ok(mut outages) = self.outages.lock() {
                    if let Some(o) = outages.last_mut() {
                        o.time_to_full_rate_seconds = Some(seconds);
                    }
                }
                tracing::info!(
                    event = "full_rate",
                    time_to_full_rate_seconds = format!("{seconds:.3}"),
                    "rate back to target"
                );
            }
        }
    }

    /// Verifies one request at a time, retrying until it succeeds or we stop.
    async fn verifier(
        self: Arc<Self>,
        mut requests: mpsc::UnboundedReceiver<VerifyRequest>,
        stop: CancellationToken,
    ) {
        while let Some(req) = requests.recv().await {
            let snapshot = match self.ledger.lock() {
                Ok(mut l) => l.snapshot(req.until),
                Err(_) => continue,
            };
            let began = Instant::now();
            let mut delay = Duration::from_millis(100);
            let verdict = loop {
                match verify(&self.pool, &self.workload, &snapshot, req.loss_reference).await {
                    Ok(v) => break Some(v),
                    Err(err) => {
                        self.metrics.verification_errors.inc();
                        tracing::warn!(error = %err, "verification failed; retrying");
                        // After a stop, the run's grace period bounds the retries.
                        if stop.is_cancelled() && began.elapsed() > Duration::from_secs(5) {
                            break None;
                        }
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(2));
                    }
                }
            };
            let Some(v) = verdict else { continue };
            let took = began.elapsed().as_secs_f64();
            if let Ok(mut l) = self.ledger.lock() {
                l.forget_verified(req.until, &snapshot);
                self.metrics.ledger_bytes.set(l.bytes() as i64);
            }
            let m = &self.metrics;
            m.verifications.inc();
            m.lost_writes.inc_by(v.lost);
            m.unknown_outcome_committed.inc_by(v.unknown_committed);
            m.unknown_outcome_not_committed
                .inc_by(v.unknown_not_committed);
            // An RPO is only as fine as the ledger's slices.
            let rpo = if v.lost > 0 {
                (v.lost_span + SLICE).as_secs_f64()
            } else {
                0.0
            };
            if req.outage.is_some() || v.lost > 0 {
                m.last_failover_lost_writes.set(v.lost as i64);
                m.last_failover_rpo.set(rpo);
            }
            if let Some(i) = req.outage {
                if let Ok(mut outages) = self.outages.lock() {
                    if let Some(o) = outages.get_mut(i) {
                        o.checked_writes = Some(v.checked);
                        o.lost_writes = Some(v.lost);
                        o.lost_seqs = v.lost_sample.clone();
                        o.rpo_seconds = Some(rpo);
                        o.unknown_outcome_committed = Some(v.unknown_committed);
                        o.unknown_outcome_not_committed = Some(v.unknown_not_committed);
                        o.verification_seconds = Some(took);
                    }
                }
            }
            let level_lost = v.lost > 0;
            if level_lost {
                tracing::error!(
                    event = "writes_lost",
                    lost = v.lost,
                    checked = v.checked,
                    rpo_seconds = format!("{rpo:.1}"),
                    "acknowledged writes are missing on the primary"
                );
            } else {
                tracing::info!(
                    event = "verified",
                    checked = v.checked,
                    unknown_committed = v.unknown_committed,
                    unknown_not_committed = v.unknown_not_committed,
                    seconds = format!("{took:.3}"),
                    "every acknowledged write survived"
                );
            }
        }
    }
}
