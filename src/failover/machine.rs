//! Write availability as a state machine, and outage (RTO) accounting. The states, transitions and
//! how an outage is dated are in docs/design.md ("The failover state machine"). Evaluated every
//! [`TICK`] while anything moves; when healthy, only when a failure is reported or a stall could
//! begin (see [`Machine::next_look`]). Outages are dated from the outcomes themselves, so detection
//! delay does not inflate them; `recovering` lasts at most [`RECOVERY_LIMIT`].

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::ErrorClass;

/// How often the state machine looks at what happened while it is not healthy.
pub const TICK: Duration = Duration::from_millis(10);

/// The longest a healthy machine goes without looking: keeps the rate history that an outage's
/// "rate before" is measured from (a canary at 20/s must not wake 100 times a second for nothing).
const IDLE_LOOK: Duration = Duration::from_secs(1);

/// Failures within this window make a running system `degraded`.
const DEGRADED_WINDOW: Duration = Duration::from_secs(1);

/// Achieved rate at or above this share of target counts as full rate.
const FULL_RATE: f64 = 0.95;
/// The rate must hold at [`FULL_RATE`] of target this long before an outage counts as recovered.
const RECOVERY_WINDOW: Duration = Duration::from_secs(5);

/// The longest `recovering` lasts after the first success of an outage.
pub const RECOVERY_LIMIT: Duration = Duration::from_secs(60);

/// The one state enum: the timeline stores it, the monitor drives it.
pub use crate::telemetry::timeline::State as FailoverState;

/// Outcomes as the lanes report them; a short critical section per transaction.
#[derive(Debug, Default)]
pub struct Events {
    successes: u64,
    failures: u64,
    last_success: Option<Instant>,
    /// When the newest acknowledged write was sent: a failed write sent before it says nothing
    /// about what came after (send times on both sides, whatever order the lanes report in).
    last_success_sent: Option<Instant>,
    first_failure_since_success: Option<Instant>,
    /// Error classes seen since the last success outside an outage, so an
    /// outage reports the failures that led into it too (bit per class).
    classes: u32,
    in_outage: bool,
    /// The first failed write of the outage in progress, when a failure started it.
    outage_failure: Option<Instant>,
    first_success_in_outage: Option<Instant>,
    /// When a lane first had a connection set up (TLS, authentication, the table checked):
    /// before the first success, a stall counts from it.
    first_ready: Option<Instant>,
}

impl Events {
    /// A write sent at `sent` was acknowledged at `at`. Returns whether this success ends
    /// an outage (worth a look at once).
    pub fn success(&mut self, sent: Instant, at: Instant) -> bool {
        self.successes += 1;
        // Sent before the first failed write (the outage's, or outside one the first since
        // the last success) and acknowledged after it: a straggler of the server going away
        // (a commit finishing during a fast shutdown). It does not show that a new write
        // could succeed, so it neither ends nor splits an outage, nor clears the failure that
        // may start one; silence counts from it all the same (on a slow link they keep coming
        // until the writes sent after the failure are answered).
        let failed = match self.in_outage {
            true => self.outage_failure,
            false => self.first_failure_since_success,
        };
        let straggler = failed.is_some_and(|f| sent < f);
        if straggler && self.in_outage {
            return false;
        }
        self.last_success = self.last_success.max(Some(at));
        self.last_success_sent = self.last_success_sent.max(Some(sent));
        if straggler {
            return false;
        }
        self.first_failure_since_success = None;
        if !self.in_outage {
            self.classes = 0;
        } else if self.first_success_in_outage.is_none() {
            self.first_success_in_outage = Some(at);
            return true;
        }
        false
    }

    /// The error classes seen since the last success outside an outage.
    pub fn classes(&self) -> Vec<ErrorClass> {
        ErrorClass::ALL
            .into_iter()
            .filter(|c| self.classes & (1 << c.index()) != 0)
            .collect()
    }

    /// `started` is when the failed write was sent (or when its lane took it, if it never got a
    /// connection). Returns whether it is the first failure since a success (worth a look at once).
    pub fn failure(&mut self, started: Instant, class: ErrorClass) -> bool {
        self.failures += 1;
        let news = self.first_failure_since_success.is_none();
        self.classes |= 1 << class.index();
        let after_success = self.last_success_sent.is_none_or(|l| started >= l);
        let first = self.first_failure_since_success.is_none_or(|f| started < f);
        if after_success && first {
            self.first_failure_since_success = Some(started);
        }
        news
    }
}

/// Shared by all lanes.
#[derive(Debug, Default)]
pub struct Detector {
    events: Mutex<Events>,
    /// Writes taken and not yet finished: with no answer for long, a stall is an outage.
    in_flight: AtomicI64,
    /// Woken by the outcomes that can change the state (a first failure, the end of an
    /// outage), so a healthy machine needs no poll.
    news: tokio::sync::Notify,
    /// [`Events::first_ready`] is set: one load per write after that.
    ready_seen: AtomicBool,
}

impl Detector {
    /// A write was taken from the backlog; [`Detector::finished`] follows.
    pub fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A lane got a connection to write on.
    pub fn ready(&self) {
        if !self.ready_seen.load(Ordering::Relaxed)
            && !self.ready_seen.swap(true, Ordering::Relaxed)
        {
            self.events.lock().first_ready = Some(Instant::now());
            self.news.notify_one();
        }
    }

    pub fn finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn success(&self, sent: Instant, at: Instant) {
        if self.events.lock().success(sent, at) {
            self.news.notify_one();
        }
    }

    pub fn failure(&self, started: Instant, class: ErrorClass) {
        if self.events.lock().failure(started, class) {
            self.news.notify_one();
        }
    }

    /// Resolves when an outcome that may change the state was reported.
    pub async fn news(&self) {
        self.news.notified().await;
    }

    /// Runs `f` with the events locked, so that a decision and its mark are atomic.
    pub fn with_events<R>(&self, f: impl FnOnce(&mut Events) -> R) -> R {
        f(&mut self.events.lock())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    State {
        from: FailoverState,
        to: FailoverState,
    },
    OutageStarted {
        start: Instant,
    },
    OutageEnded {
        start: Instant,
        end: Instant,
        classes: Vec<ErrorClass>,
    },
    FullRate {
        first_success: Instant,
        full_rate_at: Instant,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Silence after a failed write that makes an outage.
    pub outage: Duration,
    /// Silence with writes in flight but none failed yet (a hung server or a
    /// black-holed network); longer, so that a slow commit is not an outage.
    pub stall: Duration,
    /// Target rate; `None` (unlimited) compares against the rate before the outage.
    pub target_rate: Option<f64>,
}

/// The state machine proper: pure, driven by [`Machine::tick`] with tokio time.
#[derive(Debug)]
pub struct Machine {
    state: FailoverState,
    thresholds: Thresholds,
    run_start: Instant,
    /// (time, successes, failures) per tick, for the last few seconds.
    history: VecDeque<(Instant, u64, u64)>,
    outage_start: Option<Instant>,
    recovered_at: Option<Instant>,
    rate_before_outage: f64,
    load_end: Option<Instant>,
}

impl Machine {
    pub fn new(thresholds: Thresholds, run_start: Instant) -> Machine {
        Machine {
            state: FailoverState::Healthy,
            thresholds,
            run_start,
            history: VecDeque::new(),
            outage_start: None,
            recovered_at: None,
            rate_before_outage: 0.0,
            load_end: None,
        }
    }

    /// The load stopped at `at`: silence after it is no outage (a failure among the last
    /// writes in flight has no write after it to clear it).
    pub fn load_stopped(&mut self, at: Instant) {
        self.load_end = Some(at);
    }

    pub fn state(&self) -> FailoverState {
        self.state
    }

    /// When the outage in progress began, if one is.
    pub fn outage_start(&self) -> Option<Instant> {
        self.outage_start
    }

    /// Where the samples within `span` of `now` begin (history is in time order).
    fn within(&self, now: Instant, span: Duration) -> usize {
        self.history
            .partition_point(|(t, _, _)| now.duration_since(*t) > span)
    }

    /// Successes per second over the last `span` of history.
    fn success_rate(&self, now: Instant, span: Duration, successes: u64) -> Option<f64> {
        let (t, s, _) = self.history.get(self.within(now, span))?;
        let elapsed = now.duration_since(*t).as_secs_f64();
        (elapsed >= span.as_secs_f64() * 0.5).then(|| (successes - s) as f64 / elapsed)
    }

    /// When to look again if no outcome asks sooner: every [`TICK`] while anything moves;
    /// when healthy, when writes in flight since the last success would become a stall,
    /// and at least every [`IDLE_LOOK`].
    pub fn next_look(&self, now: Instant, ev: &Events, in_flight: i64) -> Instant {
        if self.state != FailoverState::Healthy || ev.first_failure_since_success.is_some() {
            return now + TICK;
        }
        let idle = now + IDLE_LOOK;
        match stalled_since(ev).filter(|_| in_flight > 0) {
            Some(since) => idle.min((since + self.thresholds.stall).max(now + TICK)),
            None => idle,
        }
    }

    fn set(&mut self, to: FailoverState, out: &mut Vec<Transition>) {
        if self.state != to {
            out.push(Transition::State {
                from: self.state,
                to,
            });
            self.state = to;
        }
    }

    pub fn tick(&mut self, now: Instant, ev: &mut Events, in_flight: i64) -> Vec<Transition> {
        let mut out = Vec::new();
        let history_span = RECOVERY_WINDOW.max(Duration::from_secs(5)) + Duration::from_secs(1);
        self.history.drain(..self.within(now, history_span));
        if self.state == FailoverState::Outage {
            self.end_outage(ev, &mut out);
        } else {
            self.detect_outage(now, ev, in_flight, &mut out);
        }
        match self.state {
            FailoverState::Recovering => self.check_full_rate(now, ev, &mut out),
            FailoverState::Healthy | FailoverState::Degraded => self.settle(now, ev, &mut out),
            FailoverState::Outage => {}
        }
        self.history.push_back((now, ev.successes, ev.failures));
        out
    }

    /// Outside an outage and recovery: `degraded` after a recent failure, else `healthy`.
    fn settle(&mut self, now: Instant, ev: &Events, out: &mut Vec<Transition>) {
        // Failures since the oldest sample within the window; with none that recent (a healthy
        // machine looks rarely), since the newest sample before it.
        let within = self.history.get(self.within(now, DEGRADED_WINDOW));
        let since = within.or(self.history.back());
        let recent = since.is_some_and(|(_, _, f)| ev.failures > *f)
            || ev.first_failure_since_success.is_some();
        let to = if recent {
            FailoverState::Degraded
        } else {
            FailoverState::Healthy
        };
        self.set(to, out);
    }

    /// In an outage: the first success ends it.
    fn end_outage(&mut self, ev: &mut Events, out: &mut Vec<Transition>) {
        let Some(end) = ev.first_success_in_outage.take() else {
            return;
        };
        ev.in_outage = false;
        ev.outage_failure = None;
        out.push(Transition::OutageEnded {
            start: self.outage_start.take().unwrap_or(end),
            end,
            classes: ev.classes(),
        });
        ev.classes = 0;
        self.recovered_at = Some(end);
        self.set(FailoverState::Recovering, out);
    }

    /// Outside an outage: silence after a failure, or a stall, starts one.
    fn detect_outage(
        &mut self,
        now: Instant,
        ev: &mut Events,
        in_flight: i64,
        out: &mut Vec<Transition>,
    ) {
        let reference = ev.last_success.unwrap_or(self.run_start);
        // Silence after a failure counts only while writes were sent: after the load ends,
        // none follows the last ones, and a failure among them is no outage by itself.
        let until = self.load_end.map_or(now, |end| now.min(end));
        let silence = until.saturating_duration_since(reference);
        let failed = ev.first_failure_since_success;
        let stalled = stalled_since(ev).filter(|since| {
            in_flight > 0 && now.saturating_duration_since(*since) >= self.thresholds.stall
        });
        if !(failed.is_some() && silence >= self.thresholds.outage || stalled.is_some()) {
            return;
        }
        let start = failed
            .filter(|f| *f >= reference)
            .or(stalled)
            .unwrap_or(reference);
        if self.load_end.is_some_and(|end| start >= end) {
            return;
        }
        self.rate_before_outage = self
            .success_rate(start, Duration::from_secs(5), ev.successes)
            .unwrap_or(0.0);
        self.outage_start = Some(start);
        ev.in_outage = true;
        ev.outage_failure = failed;
        ev.first_success_in_outage = None;
        self.recovered_at = None;
        out.push(Transition::OutageStarted { start });
        self.set(FailoverState::Outage, out);
    }

    /// Full rate: the success rate over the whole recovery window, which starts after the first
    /// success, reached 95 % of target; time to full rate runs to the start of that window.
    fn check_full_rate(&mut self, now: Instant, ev: &Events, out: &mut Vec<Transition>) {
        let first_success = self.recovered_at.unwrap_or(now);
        if now.saturating_duration_since(first_success) < RECOVERY_WINDOW {
            return;
        }
        let rate = self.success_rate(now, RECOVERY_WINDOW, ev.successes);
        let target = self.thresholds.target_rate;
        if rate.unwrap_or(0.0) >= FULL_RATE * target.unwrap_or(self.rate_before_outage) {
            out.push(Transition::FullRate {
                first_success,
                full_rate_at: now - RECOVERY_WINDOW,
            });
            self.set(FailoverState::Healthy, out);
        } else if now.saturating_duration_since(first_success) >= RECOVERY_LIMIT {
            self.settle(now, ev, out);
        }
    }
}

/// Since when writes in flight with no answer are a stall: the last success, or before the first
/// one, the first connection set up (its TLS, authentication and table check are no outage).
fn stalled_since(ev: &Events) -> Option<Instant> {
    ev.last_success.or(ev.first_ready)
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
