//! One endpoint's retry rules: when another attempt may start, and how long a failure
//! keeps it waiting.

use super::*;

impl EndpointState {
    pub(super) fn new(now: Instant) -> EndpointState {
        EndpointState {
            failures: 0,
            retry_at: now,
            pending: 0,
            last_start: None,
            last_error: None,
            silent: CancellationToken::new(),
            check_running: false,
            answered_at: None,
            declared_silent: false,
        }
    }

    /// A first attempt of a connect: any number on a healthy endpoint; on a failing one,
    /// once the backoff is over, as one more attempt beside those pending (other connects'
    /// races keep one starting every [`STAGGER`] when this one stops joining), or alone on a
    /// server found silent.
    pub(super) fn eligible(&self, now: Instant, max: u32) -> bool {
        self.failures == 0
            || (now >= self.retry_at
                && if self.declared_silent {
                    self.pending == 0
                } else {
                    self.may_join(now, max)
                })
    }

    /// One more attempt beside those pending: not while backing off, at most one per
    /// [`STAGGER`], at most `max` at once.
    pub(super) fn may_join(&self, now: Instant, max: u32) -> bool {
        !self.declared_silent
            && now >= self.retry_at
            && self.pending < max
            && self.last_start.is_none_or(|t| now >= t + STAGGER)
    }

    /// A fast failure (refused) backs off; a slow one (a timeout) is followed at once, so
    /// a hanging server always has an attempt waiting and is seen the moment it answers.
    pub(super) fn failed(&mut self, class: ErrorClass, message: &str, started: Instant) {
        let now = Instant::now();
        self.failures = self.failures.saturating_add(1);
        self.retry_at = if now.saturating_duration_since(started) < STAGGER {
            started + backoff(self.failures, class, &mut rand::rng())
        } else {
            now
        };
        self.last_error = Some((class, message.to_string()));
    }
}

/// Delay before the next attempt after `failures` consecutive failures of `class`.
pub(super) fn backoff(failures: u32, class: ErrorClass, rng: &mut impl Rng) -> Duration {
    match class {
        ErrorClass::ReadOnly | ErrorClass::CannotConnectNow => BACKOFF_ANSWERING,
        _ => BACKOFF,
    }
    .jittered(failures, rng)
}
