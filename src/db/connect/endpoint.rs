//! One endpoint's retry rules: when another attempt may start, how long a failure waits.

use super::*;
use std::sync::atomic::AtomicU64;

/// The token a connection watches ([`EndpointState::token_for`]), numbered.
#[derive(Clone, Debug)]
pub(super) struct Watch {
    pub(super) token: CancellationToken,
    generation: u64,
}

impl Watch {
    /// A number no token had before in any endpoint's state (one let go and made again too).
    fn new() -> Watch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Watch {
            token: CancellationToken::new(),
            generation: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// What became of a check that got no answer ([`EndpointState::unanswered_check`]).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Unanswered {
    /// Nothing reached the server: its connections are abandoned.
    Silent,
    /// A fresh connection reached it meanwhile: it is slow, not silent.
    Slow,
    /// A fresh connection reached the endpoint, whose connections watch a newer token than
    /// the check's (another server, or a switch back): the check's connections are abandoned.
    LeftBehind,
}

impl EndpointState {
    pub(super) fn new(now: Instant) -> EndpointState {
        EndpointState {
            failures: 0,
            retry_at: now,
            pending: 0,
            last_start: None,
            last_error: None,
            silent: Watch::new(),
            silent_server: None,
            reached_at: None,
            check_running: false,
            answered_at: None,
            declared_silent: false,
        }
    }

    /// A first attempt of a connect: any number on a healthy endpoint; on a failing one, as
    /// one more beside those pending.
    pub(super) fn eligible(&self, now: Instant, max: u32) -> bool {
        self.failures == 0 || self.may_join(now, max)
    }

    /// One more attempt beside those pending.
    pub(super) fn may_join(&self, now: Instant, max: u32) -> bool {
        now >= self.ready_at() && self.pending < self.cap(max)
    }

    /// When another attempt may start: after the backoff and, beside pending attempts,
    /// [`MIN_SPACING`] after the last.
    pub(super) fn ready_at(&self) -> Instant {
        match self.last_start {
            Some(t) if self.pending > 0 => self.retry_at.max(t + MIN_SPACING),
            _ => self.retry_at,
        }
    }

    /// Attempts that may be pending at once: a few on a server found silent (not one: behind
    /// a proxy or a moved name the next connection may reach an answering server).
    pub(super) fn cap(&self, max: u32) -> u32 {
        match self.declared_silent {
            true => max.min(SILENT_MAX_PENDING),
            false => max,
        }
    }

    /// The token a new connection to `server` watches: the endpoint's, or a new one if the
    /// endpoint now leads to another server (a proxy moved its backend), so that abandoning
    /// the connections to the one before spares it.
    pub(super) fn token_for(&mut self, server: &Arc<Identity>) -> Watch {
        match &self.silent_server {
            Some(before) if server.is_another_process(before) => {
                self.silent = Watch::new();
                self.silent_server = Some(server.clone());
            }
            // A probe that read less than the one before tells no change and is not kept.
            Some(before) if server.lacks_what(before) => {}
            _ => self.silent_server = Some(server.clone()),
        }
        self.reached_at = Some(Instant::now());
        self.silent.clone()
    }

    /// A check begun at `since` for the connections watching `watch` got no answer; the
    /// endpoint's connections watched `current` then.
    pub(super) fn unanswered_check(
        &mut self,
        watch: &Watch,
        since: Instant,
        current: &Watch,
    ) -> Unanswered {
        let reached = self.silent.generation == current.generation
            && self.reached_at.is_some_and(|t| t >= since);
        if !reached {
            self.declare_silent(&watch.token, &current.token);
            return Unanswered::Silent;
        }
        self.answered_at = Some(Instant::now());
        if watch.generation == self.silent.generation {
            return Unanswered::Slow;
        }
        self.abandon(&watch.token);
        Unanswered::LeftBehind
    }

    /// Abandons the connections watching `token`, and only those; if it was the endpoint's,
    /// connections made from now on get a fresh one.
    pub(super) fn abandon(&mut self, token: &CancellationToken) {
        token.cancel();
        if self.silent.token.is_cancelled() {
            (self.silent, self.silent_server, self.reached_at) = (Watch::new(), None, None);
        }
    }

    /// A check for the connections watching `token` got no answer at all: those to the
    /// server the endpoint led to when the check began (`current`) are abandoned too.
    pub(super) fn declare_silent(
        &mut self,
        token: &CancellationToken,
        current: &CancellationToken,
    ) {
        self.declared_silent = true;
        self.abandon(token);
        self.abandon(current);
    }

    /// A fast failure backs off; a slow one (a timeout) is followed at once, so a hanging
    /// server is seen the moment it answers.
    pub(super) fn failed(&mut self, class: ErrorClass, message: &str, started: Instant) {
        let now = Instant::now();
        self.failures = self.failures.saturating_add(1);
        self.retry_at = if now.saturating_duration_since(started) < STAGGER {
            started + backoff(self.failures, class, &mut rand::rng())
        } else {
            now
        };
        let kept = message.chars().take(crate::telemetry::errors::MAX_MESSAGE);
        self.last_error = Some((class, kept.collect()));
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
