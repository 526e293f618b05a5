//! One owner for every background task of a run: each task belongs to a [`Stage`], and the run
//! stops the stages one at a time, in the order the wiring states. No task ends silently: a lane
//! that panics is restarted ([`Supervisor::spawn_lane`], `/healthz` unhealthy meanwhile); any other
//! panic, or a task that ends before it was asked to, is logged and stops the run with an error.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{wrong_target_hint, ErrorClass, StartError};
use crate::telemetry::health::Health;

/// Lane panics a run survives; the next one stops it (a bug that keeps firing).
pub(crate) const MAX_LANE_RESTARTS: u32 = 5;
/// An hour without a lane panic gives the budget back: a canary that hits a rare one every
/// few weeks is not stopped after months.
const LANE_PANICS_FORGOTTEN_AFTER: Duration = Duration::from_secs(3600);
/// A panicked lane starts again after this long.
const LANE_RESTART_DELAY: Duration = Duration::from_secs(1);

/// Counts a lane panic at `now`; returns how many count against the budget.
fn lane_panicked(restarts: &parking_lot::Mutex<(u32, Option<Instant>)>, now: Instant) -> u32 {
    let mut r = restarts.lock();
    let gone = r.1.is_some_and(|t| now - t >= LANE_PANICS_FORGOTTEN_AFTER);
    *r = (if gone { 1 } else { r.0 + 1 }, Some(now));
    r.0
}

/// Where a failure that ends the run is reported, from wherever found: the first is kept, `stop`
/// ends the load, and the run returns it once drained. Before the first acknowledged write, a
/// wrong target (an error that waiting cannot fix) ends the run at once; after it, nothing does.
#[derive(Default)]
pub struct Fatal {
    stop: CancellationToken,
    error: Mutex<Option<StartError>>,
    written: AtomicBool,
    /// The latest connection failure before the first write, for the startup deadline.
    last_failure: Mutex<Option<(Option<ErrorClass>, String)>>,
    /// When `--startup-timeout` ends a run that has not written yet.
    deadline: OnceLock<Instant>,
}

impl Fatal {
    pub fn new(stop: CancellationToken) -> Fatal {
        Fatal {
            stop,
            ..Fatal::default()
        }
    }

    /// A write was acknowledged: from now on every error is an outage, not a wrong target.
    pub fn wrote(&self) {
        if !self.written.load(Ordering::Relaxed) {
            self.written.store(true, Ordering::Relaxed);
        }
    }

    pub fn has_written(&self) -> bool {
        self.written.load(Ordering::Relaxed)
    }

    /// A connection attempt failed. Before the first write, an error that waiting cannot
    /// fix ends the run (exit 5) with the server's message and what to check.
    pub fn connect_failed(&self, class: ErrorClass, sqlstate: Option<&str>, message: &str) {
        if self.has_written() {
            return;
        }
        match wrong_target_hint(class, sqlstate, message) {
            Some(hint) => self.report(StartError::Target(format!("{message}\nhint: {hint}"))),
            None => *self.last_failure.lock() = Some((Some(class), message.to_string())),
        }
    }

    /// Before the first write: what is being waited for, named if the startup deadline passes.
    pub fn waiting(&self, message: String) {
        if !self.has_written() {
            *self.last_failure.lock() = Some((None, message));
        }
    }

    /// How long before the startup deadline, if it is set.
    pub fn startup_left(&self) -> Option<Duration> {
        self.deadline
            .get()
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Ends the run if no write has succeeded within `timeout` (`--startup-timeout`): errors
    /// that can heal (refused, timed out, starting up, only standbys) did not. The deadline
    /// is set when this is called, before the connections it bounds start.
    pub fn startup_deadline(
        self: Arc<Self>,
        timeout: Duration,
        stop: CancellationToken,
    ) -> impl Future<Output = ()> {
        let deadline = *self.deadline.get_or_init(|| Instant::now() + timeout);
        async move {
            let slept = stop.run_until_cancelled(tokio::time::sleep_until(deadline));
            if slept.await.is_none() {
                return;
            }
            if self.has_written() {
                // A supervised task ends only when asked to.
                return stop.cancelled().await;
            }
            let (class, last) = self.last_failure.lock().clone().unwrap_or_else(|| {
                let never = "no error either: the writes never got an answer";
                (None, never.to_string())
            });
            let timeout = humantime::format_duration(timeout);
            let hint = deadline_hint(class);
            self.report(StartError::Target(format!(
                "no write succeeded within --startup-timeout {timeout}; the last error: \
                 {last}\nhint: {hint}"
            )));
            // Ending now would read as a crash of its stage: it ends when the stop comes.
            stop.cancelled().await
        }
    }

    /// The table cannot take the INSERT: a setup to fix (exit 2).
    pub fn unusable_table(&self, message: String) {
        tracing::error!(error = %message, "stopping: the table cannot take pgdrill's writes");
        self.report(StartError::Table(message));
    }

    /// A task crashed or ended on its own (exit 1); `/healthz` says so too.
    pub fn crashed(&self, health: &Health, message: String) {
        health.failed(&message);
        tracing::error!(error = %message, "stopping: a task of the run failed");
        self.report(StartError::Crashed(message));
    }

    fn report(&self, error: StartError) {
        if let StartError::Target(message) = &error {
            tracing::error!(error = %message, "stopping: pgdrill cannot write to this target");
        }
        self.error.lock().get_or_insert(error);
        self.stop.cancel();
    }

    /// Whether a failure was reported (the run is stopping for it).
    pub fn is_set(&self) -> bool {
        self.error.lock().is_some()
    }

    /// The first reported failure's text, if any, left in place.
    pub fn message(&self) -> Option<String> {
        self.error.lock().as_ref().map(ToString::to_string)
    }

    /// The first reported failure, if any.
    pub fn take(&self) -> Option<StartError> {
        self.error.lock().take()
    }
}

/// The text of a panic payload (`panic!` gives `&str` or `String`), scrubbed here, before a
/// JSON log line, the summary or the page escapes its quotes.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = (payload.downcast_ref::<&str>().copied())
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-text panic payload");
    crate::secrets::scrub(text)
}

/// The background parts of a run. Each has its own cancellation token, a child of the
/// supervisor's, so that one stage can be stopped while the later ones keep running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// The failover triggers of a drill (`--failover-command`).
    Drill,
    Lanes,
    Retention,
    Monitor,
    Sampler,
    Progress,
    Http,
}

/// Counted from the last variant, so that adding a stage cannot leave this behind.
const STAGES: usize = Stage::Http as usize + 1;

pub(crate) struct Supervisor {
    tracker: TaskTracker,
    root: CancellationToken,
    tokens: [CancellationToken; STAGES],
    tasks: [Vec<JoinHandle<()>>; STAGES],
    fatal: Arc<Fatal>,
    health: Arc<Health>,
    /// Lane panics since the budget was last given back, and when the last came.
    lane_restarts: Arc<parking_lot::Mutex<(u32, Option<Instant>)>>,
}

impl Supervisor {
    pub fn new(fatal: Arc<Fatal>, health: Arc<Health>) -> Supervisor {
        let root = CancellationToken::new();
        Supervisor {
            tracker: TaskTracker::new(),
            tokens: std::array::from_fn(|_| root.child_token()),
            root,
            tasks: Default::default(),
            fatal,
            health,
            lane_restarts: Arc::default(),
        }
    }

    /// Runs the task `start` makes from `stage`'s token until it ends; a panic, or an end
    /// before `stage` was cancelled, is logged and stops the run.
    pub fn spawn<F>(&mut self, stage: Stage, start: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let token = self.tokens[stage as usize].clone();
        let task = start(token.clone());
        let (fatal, health) = (self.fatal.clone(), self.health.clone());
        let handle = self.tracker.spawn(async move {
            let why = match AssertUnwindSafe(task).catch_unwind().await {
                Ok(()) if token.is_cancelled() => return,
                Ok(()) => format!("the {stage:?} task ended before it was stopped"),
                Err(panic) => format!("the {stage:?} task panicked: {}", panic_message(&*panic)),
            };
            fatal.crashed(&health, why);
        });
        self.tasks[stage as usize].push(handle);
    }

    /// Runs the lane `make` builds until it ends by itself (its backlog closed); after a panic,
    /// logs it and starts a new one, up to [`MAX_LANE_RESTARTS`] within an hour of each other.
    pub fn spawn_lane<F>(&mut self, mut make: impl FnMut() -> F + Send + 'static)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let restarts = self.lane_restarts.clone();
        let stop = self.root.clone();
        let (fatal, health) = (self.fatal.clone(), self.health.clone());
        let handle = self.tracker.spawn(async move {
            loop {
                let Err(panic) = AssertUnwindSafe(make()).catch_unwind().await else {
                    return;
                };
                let message = panic_message(&*panic);
                let n = lane_panicked(&restarts, Instant::now());
                if n > MAX_LANE_RESTARTS {
                    let why = format!("a lane panicked {n} times; the last: {message}");
                    fatal.crashed(&health, why);
                    return;
                }
                tracing::error!(panic = %message, restart = n, of = MAX_LANE_RESTARTS, "a lane panicked; restarting it");
                health.lane_down();
                stop.run_until_cancelled(tokio::time::sleep(LANE_RESTART_DELAY)).await;
                health.lane_up();
            }
        });
        self.tasks[Stage::Lanes as usize].push(handle);
    }

    /// Waits up to `within` (unbounded if `None`) for `stage`'s tasks to end on their
    /// own, without cancelling; aborts what is left and returns how many were aborted.
    pub async fn drain(&mut self, stage: Stage, within: Option<Duration>) -> usize {
        let tasks = std::mem::take(&mut self.tasks[stage as usize]);
        let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
        let all = futures_util::future::join_all(tasks);
        let Some(limit) = within else {
            all.await;
            return 0;
        };
        tokio::select! {
            _ = all => return 0,
            () = crate::shutdown::sleep_unless_hurried(Instant::now() + limit) => {}
        }
        let left = aborts.iter().filter(|a| !a.is_finished()).count();
        aborts.iter().for_each(|a| a.abort());
        left
    }

    /// Whether a task of `stage` is still running (one that crashed is not).
    pub fn running(&self, stage: Stage) -> bool {
        self.tasks[stage as usize].iter().any(|t| !t.is_finished())
    }

    /// Cancels `stage` and waits for its tasks, up to `within` if given (else each bounds
    /// its own drain); aborts what is left.
    pub async fn stop(&mut self, stage: Stage, within: Option<Duration>) {
        self.tokens[stage as usize].cancel();
        self.drain(stage, within).await;
    }

    /// Cancels whatever is left and waits until every task spawned here has ended.
    pub async fn finish(self) {
        self.root.cancel();
        self.tasks.iter().flatten().for_each(JoinHandle::abort);
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// What to check when no write succeeded in time, after the last error of `class`.
fn deadline_hint(class: Option<ErrorClass>) -> &'static str {
    match class {
        Some(ErrorClass::TooManyConnections) => {
            "the server (or pooler) had no free connection slot for pgdrill's user: raise \
             max_connections (or the pooler's limits), or lower --pool-size"
        }
        Some(ErrorClass::ReadOnly) => {
            "every server reached took no writes: a standby (target_session_attrs=read-write \
             finds the primary among several hosts), or a primary with \
             default_transaction_read_only on"
        }
        Some(ErrorClass::ConnectTimeout) => {
            "no attempt finished connecting within --connect-timeout: a server that does not \
             answer, or a slow link (each round trip counts: TLS, authentication, the identity \
             probe), for which a longer --connect-timeout is needed"
        }
        Some(ErrorClass::StatementTimeout) => {
            "the server answered, but statements (the table check, the session's setup, the \
             INSERT) did not finish within --statement-timeout: a lock on the table (another \
             session's DDL), an overloaded server, or a slow link (a round trip per query; the \
             table check and the setup wait as long as --connect-timeout if that is longer)"
        }
        _ => {
            "check that the server is up and reachable at the DSN's host and port, and that \
             it accepts writes (a primary, not a standby); a longer --startup-timeout waits \
             for a server that is still starting"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn the_startup_deadline_says_what_to_check_after_its_last_error() {
        let full = deadline_hint(Some(ErrorClass::TooManyConnections));
        assert!(full.contains("--pool-size"), "{full}");
        let standby = deadline_hint(Some(ErrorClass::ReadOnly));
        assert!(standby.contains("target_session_attrs"), "{standby}");
        let slow = deadline_hint(Some(ErrorClass::ConnectTimeout));
        assert!(slow.contains("longer --connect-timeout"), "{slow}");
        let held = deadline_hint(Some(ErrorClass::StatementTimeout));
        assert!(held.contains("lock on the table"), "{held}");
        assert!(deadline_hint(None).contains("up and reachable"));
    }

    #[test]
    fn an_hour_without_a_lane_panic_gives_the_budget_back() {
        let restarts = parking_lot::Mutex::default();
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        let counts: Vec<u32> = (0..3)
            .map(|i| lane_panicked(&restarts, t0 + minute * i))
            .collect();
        assert_eq!(counts, [1, 2, 3]);
        // Weeks of a rare panic: each one the first again, never the budget's last.
        let later = t0 + LANE_PANICS_FORGOTTEN_AFTER + minute * 2;
        assert_eq!(lane_panicked(&restarts, later), 1);
        assert_eq!(lane_panicked(&restarts, later + minute), 2);
    }

    fn supervisor() -> Supervisor {
        let fatal = Arc::new(Fatal::new(CancellationToken::new()));
        Supervisor::new(fatal, Arc::default())
    }

    #[tokio::test(start_paused = true)]
    async fn stages_stop_in_the_order_asked_and_leave_the_others_running() {
        let mut sup = supervisor();
        let order = Arc::new(Mutex::new(Vec::new()));
        for stage in [Stage::Http, Stage::Monitor, Stage::Retention] {
            let order = order.clone();
            sup.spawn(stage, |token| async move {
                token.cancelled().await;
                order.lock().push(stage);
            });
        }
        sup.stop(Stage::Retention, None).await;
        sup.stop(Stage::Monitor, None).await;
        assert_eq!(*order.lock(), [Stage::Retention, Stage::Monitor]);
        assert!(!sup.tokens[Stage::Http as usize].is_cancelled());
        sup.stop(Stage::Http, None).await;
        assert_eq!(order.lock().len(), 3);
        sup.finish().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_past_its_limit_aborts_and_counts_the_stragglers() {
        let mut sup = supervisor();
        let finished = Arc::new(AtomicUsize::new(0));
        for secs in [1, 5, 60, 120] {
            let finished = finished.clone();
            sup.spawn(Stage::Lanes, |_| async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                finished.fetch_add(1, Ordering::Relaxed);
            });
        }
        let aborted = sup.drain(Stage::Lanes, Some(Duration::from_secs(10))).await;
        assert_eq!(aborted, 2);
        sup.finish().await;
        assert_eq!(finished.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panic_or_an_early_end_stops_the_run() {
        let stop = CancellationToken::new();
        let fatal = Arc::new(Fatal::new(stop.clone()));
        let health = Arc::new(Health::default());
        health.load_running(true);
        let mut sup = Supervisor::new(fatal.clone(), health.clone());
        sup.spawn(Stage::Http, |token| async move { token.cancelled().await });
        sup.spawn(Stage::Progress, |_| async {});
        tokio::task::yield_now().await;
        assert!(sup.running(Stage::Http) && !sup.running(Stage::Progress));
        sup.drain(Stage::Progress, None).await;
        assert!(stop.is_cancelled());
        let err = fatal.take().expect("an early end is reported").to_string();
        assert!(
            err.contains("Progress task ended before it was stopped"),
            "{err}"
        );
        assert!(health.check().is_err());

        let fatal = Arc::new(Fatal::new(CancellationToken::new()));
        let mut sup = Supervisor::new(fatal.clone(), Arc::default());
        sup.spawn(Stage::Monitor, |_| async {
            panic!(r#"boom at host=db password="pan ic-6d2a""#)
        });
        sup.drain(Stage::Monitor, None).await;
        let err = fatal.take().expect("a panic is reported").to_string();
        assert!(err.contains("Monitor task panicked: boom"), "{err}");
        // Scrubbed as it is, before any output escapes its quotes.
        assert!(err.ends_with("password=REDACTED"), "{err}");

        // Stopped when asked: nothing to report.
        let fatal = Arc::new(Fatal::new(CancellationToken::new()));
        let mut sup = Supervisor::new(fatal.clone(), Arc::default());
        sup.spawn(Stage::Http, |token| async move { token.cancelled().await });
        sup.stop(Stage::Http, None).await;
        assert!(fatal.take().is_none());
        sup.finish().await;
    }
}
