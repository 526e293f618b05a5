//! pgdrill: PostgreSQL failover drills and write canaries.
//!
//! [`run`] drives open-loop INSERT load through a bb8 pool, follows the primary through
//! failovers, measures write unavailability, verifies acknowledged writes, returns the [`Summary`].
//!
//! The parts, each a folder; a module imports only those listed after it (`layout` test):
//! - `config`: the command line, validated once into [`Config`]; only this file reads all of it.
//! - `report`: the progress line, the summary and the report page (plain program state, not
//!   metrics), and the merge of a fleet's summaries.
//! - `drill`: drills as code: the failover trigger planned and run, timing from it, the verdict.
//! - `load`: the scheduler, the lanes, and `Outcomes`, the one recorder the lanes report to.
//! - `failover`: the write-availability state machine, its monitor, the outage records.
//! - `rpo`: the acknowledged-write ledger and its verification after an outage.
//! - `db`: connecting (TLS, credentials), the pool, server identity, the table and all SQL.
//! - `telemetry`: every metric definition, latency recorders, `/metrics`, logging.
//! - `child`, `clock`, `error`, `shutdown`, `supervisor`: shared by all.

/// An enum whose variants stand for fixed label values: `ALL` in declaration order,
/// `as_str` and `from_label` from one table.
macro_rules! labelled {
    ($(#[$meta:meta])* $vis:vis enum $name:ident {
        $($(#[$attr:meta])* $variant:ident = $label:literal,)*
    }) => {
        $(#[$meta])*
        $vis enum $name {
            $($(#[$attr])* $variant,)*
        }

        #[allow(dead_code)]
        impl $name {
            pub const ALL: [$name; [$($label),*].len()] = [$($name::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)*
                }
            }

            pub fn from_label(label: &str) -> Option<$name> {
                match label {
                    $($label => Some($name::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

mod child;
mod clock;
pub mod config;
mod db;
#[cfg(feature = "lab")]
pub mod demo;
mod drill;
mod error;
mod failover;
mod load;
mod report;
mod retry;
mod rpo;
mod secrets;
pub mod shutdown;
mod supervisor;
mod telemetry;
mod test_hooks;

use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, SystemTime};

use async_channel::Receiver;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use db::cleanup::CleanupError;
pub use error::{ConfigError, StartError};
pub use report::fleet::{merge_summary_files, Merged};
pub use report::summary::Summary;
pub use secrets::{remember_given, scrub};
pub use telemetry::logging::init as init_logging;

use clock::WallClock;
use db::connect::{ConnectSettings, Manager};
use db::credentials::Credentials;
use db::identity::IdentityTracker;
use db::pool::DbPool;
use db::retention;
use db::table::Workload;
use drill::DrillRun;
use failover::machine::{Detector, Thresholds};
use failover::monitor::Monitor;
use failover::outages::Outages;
use load::lanes::{self, Shared};
use load::outcomes::{Job, Outcomes};
use load::scheduler;
use report::{progress, sampler};
use rpo::ledger::Ledger;
use rpo::verify::Verifier;
use supervisor::{Fatal, Stage, Supervisor};
use telemetry::health::Health;
use telemetry::http;
use telemetry::latency::LatencyBook;
use telemetry::metrics::{Metrics, PoolCollector};
use telemetry::timeline::{Recorder, Timeline};

/// A run that could not start or go on, with what it measured when it had written.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct RunError {
    pub error: StartError,
    /// The summary of a run that crashed after its first acknowledged write: still
    /// printed and written, before the error.
    pub summary: Option<Box<Summary>>,
}

/// Runs the load until `signal` is cancelled or `config.duration` ends, then drains within the
/// shutdown grace and hands the summary to `publish` (to print and write it) before `--linger`
/// keeps `/metrics` up; returns what `publish` returned, and a failure found after it (`/metrics`
/// failing during `--linger`). Database errors are counted, never returned; an error means the run
/// could not start or go on (an unusable table, a crashed task).
pub async fn run<T>(
    config: Config,
    listener: TcpListener,
    signal: CancellationToken,
    publish: impl FnOnce(Result<Summary, RunError>) -> T,
) -> (T, Option<StartError>) {
    // The load also stops when the first connection finds a table that cannot take it;
    // only a signal (`signal`) ends --linger.
    let stop = signal.child_token();
    let fatal = Arc::new(Fatal::new(stop.clone()));
    // Step 1: build everything that can fail, before any task or connection starts.
    let drill = match Drill::build(&config, &fatal) {
        Ok(drill) => drill,
        Err(error) => {
            let summary = None;
            return (publish(Err(RunError { error, summary })), None);
        }
    };
    // Step 2: run under one supervisor.
    let (summary, mut sup) = drill.run(&config, listener, stop).await;
    // A run stopped before its first write (a wrong target) has no figures to show, and
    // one whose /metrics crashed none to show them with: either exits at once.
    let figures = fatal.message().is_none() || fatal.has_written();
    // Printed and written before --linger, which only keeps /metrics up.
    let published = publish(result(&fatal, summary));
    if figures && sup.running(Stage::Http) {
        linger(config.linger, &signal).await;
    }
    // Last, /metrics: a final scrape still sees the final numbers.
    sup.stop(Stage::Http, None).await;
    sup.finish().await;
    (published, fatal.take())
}

/// The run's summary, or the error that ended it (with the summary, after a first write).
fn result(fatal: &Fatal, mut summary: Summary) -> Result<Summary, RunError> {
    let Some(error) = fatal.take() else {
        return Ok(summary);
    };
    let written = fatal.has_written();
    // A failure found after the run judged itself (ending what triggers left): here.
    if written && summary.crashed.is_none() {
        summary.crashed_with(error.to_string());
    }
    let summary = written.then(|| Box::new(summary));
    Err(RunError { error, summary })
}

/// `--linger`: a run that ended by itself (or crashed) keeps `/metrics` up with its final figures and
/// verdict for this long, so that a scrape every 15-60 s sees them before the process (a
/// Kubernetes Job's pod) is gone. A signal ends it at once.
async fn linger(linger: Duration, signal: &CancellationToken) {
    if linger.is_zero() || signal.is_cancelled() {
        return;
    }
    tracing::info!(
        linger = %humantime::format_duration(linger),
        "run over; /metrics keeps the final figures and the verdict until --linger ends"
    );
    signal.run_until_cancelled(tokio::time::sleep(linger)).await;
}

/// `pgdrill cleanup`: what was removed, as one line.
pub async fn cleanup(config: config::CleanupConfig) -> Result<String, CleanupError> {
    for why in &config.target.passed_over {
        tracing::warn!("{why}");
    }
    let mut target = config.target;
    let metrics = Metrics::new(&target.hosts);
    let credentials = Arc::new(db::credentials::Credentials::new(config.password, metrics));
    let password = credentials.password().await;
    if let Some(secret) = password.map_err(CleanupError::Connect)? {
        target.pg.password(secret.expose());
    }
    // A signal stops it: at once before its deletes, between batches during them (what was
    // deleted is said).
    let stop = shutdown::cancel_on_signals();
    let (table, scope) = (&config.table, config.scope);
    db::cleanup::run(&target, table, scope, config.connect_timeout, &stop).await
}

/// The parts of one run, built and connected, not yet started.
struct Drill {
    /// What the live page, the timeline sampler, the progress line and the summary read.
    sources: Arc<report::Sources>,
    metrics: Arc<Metrics>,
    monitor: Arc<Monitor>,
    lanes: Arc<Shared>,
    health: Arc<Health>,
    drill: Option<Arc<DrillRun>>,
    fatal: Arc<Fatal>,
}

impl Drill {
    fn build(config: &Config, fatal: &Arc<Fatal>) -> Result<Drill, StartError> {
        let started_at = SystemTime::now();
        // The registry, with the series the configuration fixes.
        let metrics = Metrics::new(&config.target.hosts);
        metrics.target_rate.set(config.rate.unwrap_or(0.0));
        metrics.target_info(&config.target.info());
        let (objectives, m) = (config.drill.objectives, &metrics.drill);
        m.rto_objective.set(objectives.rto.as_secs_f64());
        m.rpo_objective
            .set(i64::try_from(objectives.max_lost_writes).unwrap_or(i64::MAX));
        let run_id = rand::rng().random_range(1..i64::MAX);
        let workload = Arc::new(Workload::new(
            config.table.clone(),
            run_id,
            config.query_mode,
        ));
        // The one mapping of the monotonic clock onto wall time that every date uses.
        let clock = WallClock::now();
        let identity = Arc::new(IdentityTracker::new(
            config.target.hosts.clone(),
            metrics.clone(),
            clock.clone(),
        ));
        let timeline = Arc::new(Recorder::new(Timeline::new(&sampler::class_names())));
        identity.record_to(timeline.clone());
        let mut pg = config.target.pg.clone();
        pg.connect_timeout(config.connect_timeout);
        let settings = ConnectSettings {
            pg,
            tls: config.target.tls.clone(),
            auto_query_mode: config.query_mode_auto,
            statement_timeout: config.statement_timeout,
            table: config.table_policy,
        };
        let credentials = Arc::new(Credentials::new(config.password.clone(), metrics.clone()));
        let manager = Manager::new(
            settings,
            credentials,
            workload.clone(),
            identity.clone(),
            metrics.clone(),
            fatal.clone(),
        );
        let pool = DbPool::new(
            manager,
            config.pool_size,
            config.connect_timeout,
            config.max_connection_lifetime,
        );
        let stats = pool.clone();
        PoolCollector::register(&metrics.registry, move || stats.stats())?;

        let detector = Arc::new(Detector::default());
        let ledger = Arc::new(Mutex::new(Ledger::new(config.verify_window)));
        let latency = LatencyBook::new(tokio::runtime::Handle::current().metrics().num_workers());
        let outcomes = Arc::new(Outcomes {
            metrics: metrics.clone(),
            detector: detector.clone(),
            ledger: ledger.clone(),
            latency: latency.clone(),
            identity: identity.clone(),
            tally: Default::default(),
            fatal: fatal.clone(),
        });
        let verifier = Arc::new(Verifier::new(
            pool.clone(),
            workload.clone(),
            ledger,
            metrics.clone(),
            identity.clone(),
            config.statement_timeout,
        ));
        let outages = Arc::new(Outages::new(clock));
        let monitor = Arc::new(Monitor {
            metrics: metrics.clone(),
            detector,
            identity: identity.clone(),
            verifier: verifier.clone(),
            outages: outages.clone(),
            thresholds: Thresholds {
                outage: config.effective_outage_threshold(),
                stall: config.stall_threshold(),
                target_rate: config.rate,
            },
            rto_objective: config.drill.objectives.rto,
            timeline: timeline.clone(),
        });
        let lanes = Arc::new(Shared {
            pool: pool.clone(),
            workload,
            pipeline_depth: config.pipeline_depth as usize,
            client_timeout: config.statement_timeout + Duration::from_secs(1),
            max_connection_lifetime: config.max_connection_lifetime,
            idle_lanes: Default::default(),
            all_busy: Default::default(),
            stale_after: config.backlog_span,
            load_over: CancellationToken::new(),
        });
        // The drill of a run with a failover trigger; a canary run has none.
        let drill = config.drill.trigger.clone().map(|trigger| {
            let tally = outcomes.clone();
            let sources = drill::Sources {
                metrics: metrics.clone(),
                outages: outages.clone(),
                identity: identity.clone(),
                counts: Box::new(move || {
                    let t = tally.tally();
                    (t.successes(), t.failed())
                }),
                target_rate: config.rate,
                timeline: timeline.clone(),
            };
            DrillRun::new(trigger, config.drill.objectives, sources)
        });
        let sources = Arc::new(report::Sources {
            run_id,
            target: config.target.redacted.clone(),
            started_at: humantime::format_rfc3339_millis(started_at).to_string(),
            target_rate: config.rate,
            objectives: config.drill.objectives,
            outcomes,
            outages,
            verifier,
            timeline,
            pool,
            verifications_over: Default::default(),
            drawn: Default::default(),
            drawing: Default::default(),
            viewed: Default::default(),
        });
        Ok(Drill {
            fatal: fatal.clone(),
            drill,
            sources,
            metrics,
            monitor,
            lanes,
            health: Arc::default(),
        })
    }

    async fn run(
        self,
        config: &Config,
        listener: TcpListener,
        stop: CancellationToken,
    ) -> (Summary, Supervisor) {
        let mut sup = Supervisor::new(self.fatal.clone(), self.health.clone());
        test_hooks::announce();
        let (jobs_tx, jobs_rx) = async_channel::bounded(config.max_backlog);
        // Where /metrics is, its port as bound (`--listen :0` picks one).
        let listen = listener.local_addr().unwrap_or(config.listen);
        self.spawn(config, listener, &jobs_rx, &mut sup);
        tracing::info!(
            target = %config.target.redacted,
            rate = %config
                .rate
                .map_or_else(|| "unlimited".to_string(), |r| format!("{r}/s")),
            pool_size = config.pool_size,
            pipeline_depth = config.pipeline_depth,
            run_id = self.sources.run_id,
            %listen,
            connect_timeout = %humantime::format_duration(config.connect_timeout),
            connect_timeout_from = config.connect_timeout_from,
            "pgdrill started"
        );
        tracing::info!(
            table = %config.table.name,
            run_id = self.sources.run_id,
            create = %config.table_policy.describe(),
            retention = %config.retention.map_or_else(
                || "off".to_string(),
                |r| format!(
                    "deletes this run's rows older than {} and the rows of every other \
                     pgdrill run (run_id set) older than {} (another pgdrill may still read \
                     its own back)",
                    humantime::format_duration(r.window),
                    humantime::format_duration(r.window.max(retention::OTHER_RUNS_AFTER))
                )
            ),
            "{}",
            match config.table_policy.triggers {
                false => "pgdrill inserts rows tagged with this run_id; it changes and deletes no row that is not pgdrill's",
                true => "pgdrill inserts rows tagged with this run_id; it changes and deletes no row that is not pgdrill's, but what its writes fire may (--allow-table-triggers)",
            }
        );
        for why in config.target.passed_over.iter().chain(&config.caution()) {
            tracing::warn!("{why}");
        }
        // What else the run will do: the failovers it triggers, the files it writes at the end.
        let shown = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let trigger = config.drill.trigger.as_ref().map(|t| {
            let s = &t.schedule;
            let every = s.every.map_or_else(String::new, |e| {
                format!(", then every {}", humantime::format_duration(e))
            });
            let after = humantime::format_duration(s.after);
            format!("{} x{} after {after}{every}", t.action.display(), s.count)
        });
        if trigger.is_some() || config.summary_json.is_some() || config.report.is_some() {
            tracing::info!(
                failover_trigger = trigger.as_deref().unwrap_or("none"),
                summary_json = shown(&config.summary_json).as_deref().unwrap_or("none"),
                report = shown(&config.report).as_deref().unwrap_or("none"),
                "pgdrill runs this failover trigger and writes these files when the run ends (none \
                 if it cannot start: a wrong target, or --startup-timeout passing without a write)"
            );
        }
        let load_began = Instant::now();
        self.health.load_running(true);
        self.metrics.load_running.set(1);
        if let Some(drill) = &self.drill {
            sup.spawn(Stage::Drill, |stop| drill.clone().run(load_began, stop));
        }
        // The scheduler runs until `stop` or the end of --duration; its return closes the backlog.
        let s = &self.sources;
        scheduler::run(config.rate, jobs_tx, &s.outcomes, &stop, config.duration).await;
        self.lanes.load_over.cancel();
        self.health.load_running(false);
        self.metrics.load_running.set(0);
        s.outages.load_stopped(Instant::now());
        let elapsed = load_began.elapsed();
        let abandoned = self.drain(config, jobs_rx, &mut sup).await;
        // One process of several: how its clock compares with the server's, which all share.
        let server_clock = match config.drill.fleet.drill_id {
            Some(_) => db::clock::measure(&s.pool, s.outages.clock()).await,
            None => None,
        };
        s.pool.close().await;
        let mut summary = self.summary(config, elapsed, abandoned, load_began + elapsed);
        summary.server_clock = server_clock;
        // A run that crashed after writing is judged now, so /metrics shows its summary's verdict.
        if let Some(error) = self.fatal.message().filter(|_| self.fatal.has_written()) {
            summary.crashed_with(error);
            if let Some(d) = &summary.drill {
                self.metrics.drill.verdict.set(d.verdict.verdict.as_str());
            }
        }
        // pgdrill leaves no process behind: what the triggers left running ends now.
        drill::command::end_left_behind().await;
        (summary, sup)
    }

    fn spawn(
        &self,
        config: &Config,
        listener: TcpListener,
        jobs: &Receiver<Job>,
        sup: &mut Supervisor,
    ) {
        let shown = self.sources.clone();
        let site = Arc::new(http::Site {
            metrics: self.metrics.clone(),
            render: Arc::new(move || shown.page()),
            health: self.health.clone(),
            web: config.web.clone(),
            limits: http::Limits::for_pool(config.pool_size),
        });
        sup.spawn(Stage::Http, |stop| http::serve(listener, site, stop));
        sup.spawn(Stage::Monitor, |stop| self.monitor.clone().run(stop));
        let (fatal, startup) = (self.fatal.clone(), config.startup_timeout);
        sup.spawn(Stage::Monitor, |stop| fatal.startup_deadline(startup, stop));
        if let Some(settings) = config.retention {
            let (pool, metrics) = (self.sources.pool.clone(), self.metrics.clone());
            let (workload, verifier) = (self.lanes.workload.clone(), self.sources.verifier.clone());
            let floor = move || verifier.oldest_unverified_id();
            sup.spawn(Stage::Retention, |stop| {
                retention::run(pool, workload, settings, metrics, floor, stop)
            });
        }
        // One lane per pooled connection, each with its own seeded generator. Lanes need no
        // token: they end when the backlog is closed and empty.
        for lane in 0..config.pool_size {
            let rng = SmallRng::seed_from_u64(self.sources.run_id as u64 ^ u64::from(lane));
            let (lanes, jobs) = (self.lanes.clone(), jobs.clone());
            let outcomes = self.sources.outcomes.clone();
            let mut rng = Some(rng);
            sup.spawn_lane(move || {
                // A restarted lane gets a fresh generator; the first keeps the seeded one.
                let rng = rng
                    .take()
                    .unwrap_or_else(|| SmallRng::from_rng(&mut rand::rng()));
                lanes::lane(lanes.clone(), jobs.clone(), outcomes.lane(), rng)
            });
        }
        // The timeline sampler (which also redraws the live page) and the progress line.
        sup.spawn(Stage::Sampler, |stop| {
            sampler::run(self.sources.clone(), stop)
        });
        let every = config.progress_interval;
        sup.spawn(Stage::Progress, |stop| {
            progress::run(self.sources.clone(), every, stop)
        });
    }

    /// Stops the run's tasks once the scheduler has returned, in this order; returns the
    /// writes abandoned in flight.
    async fn drain(&self, config: &Config, jobs: Receiver<Job>, sup: &mut Supervisor) -> u64 {
        // 1. What is still queued was never started: skipped, at a rate; at `--rate 0` no job
        //    is due before a lane takes it, so the queue is pgdrill's own stock, not a write.
        while jobs.try_recv().is_ok() {
            if config.rate.is_some() {
                self.sources.outcomes.skipped();
            }
        }
        drop(jobs);
        // A trigger still running when the load ends is ended (SIGTERM, then SIGKILL 2 s
        // later); the drill is then invalid. After step 1: no queued write is sent meanwhile.
        sup.stop(Stage::Drill, None).await;
        // 2. Lanes finish what is in flight within the grace; the rest is abandoned. The
        //    grace is one deadline for every stage: an orchestrator's kill comes after it.
        let deadline = Instant::now() + config.shutdown_grace;
        let aborted = sup.drain(Stage::Lanes, Some(config.shutdown_grace)).await;
        let mut abandoned = 0;
        if aborted > 0 {
            abandoned = self.sources.outcomes.abandon_in_flight();
            tracing::warn!(
                abandoned,
                "transactions still in flight when the shutdown grace ran out (or a second signal came); their outcome is unknown"
            );
        }
        // 3. Retention: a connect in progress is abandoned with its connection, a batch once it
        //    had its time to finish (`retention::FINISH_ON_STOP`), then counted.
        sup.stop(
            Stage::Retention,
            Some(retention::FINISH_ON_STOP + Duration::from_secs(1)),
        )
        .await;
        // 4. The monitor, after the lanes (their last outcomes); it finishes pending verifications
        //    within what is left of the grace, at least a second to mark an outage still open.
        let left = deadline.saturating_duration_since(Instant::now());
        sup.stop(Stage::Monitor, Some(left.max(Duration::from_secs(1))))
            .await;
        let over = &self.sources.verifications_over;
        over.store(true, std::sync::atomic::Ordering::Relaxed);
        // 5. The timeline sampler, after the monitor so the last second has the final
        //    state; it takes one last sample as it stops.
        sup.stop(Stage::Sampler, None).await;
        // 6. The progress line.
        sup.stop(Stage::Progress, None).await;
        abandoned
    }

    fn summary(
        &self,
        config: &Config,
        elapsed: Duration,
        abandoned: u64,
        load_end: Instant,
    ) -> Summary {
        let s = &self.sources;
        let rpo = s.verifier.totals();
        // Copied first: a guard taken inside the literal would be held until it is built.
        let timeline = s.timeline.lock().clone();
        Summary {
            run_id: s.run_id,
            drill_id: config.drill.fleet.drill_id.clone(),
            member: config.drill.fleet.member,
            new_primary_writes_unix: s.outcomes.identity.first_writes(),
            objectives: Some(config.drill.objectives),
            drill: self
                .drill
                .as_ref()
                .map(|d| d.report(rpo.lost_writes, load_end)),
            target: config.target.redacted.clone(),
            table: config.table.name.clone(),
            connect_timeout_seconds: config.connect_timeout.as_secs_f64(),
            connect_timeout_from: config.connect_timeout_from.to_string(),
            retention_rows_deleted: self.metrics.retention_rows_deleted.get(),
            started_at: s.started_at.clone(),
            target_rate: config.rate,
            abandoned,
            primary_changes: self.metrics.primary_changes.get(),
            server_restarts: self.metrics.server_restarts.get(),
            outages: s.outages.outages(),
            earlier_outages: s.outages.earlier(),
            unverified_primary_changes: s.outages.unverified_changes(),
            losses_without_outage: s.outages.losses_without_outage(),
            state_changes: s.outages.state_changes(),
            identity_first: s.outcomes.identity.first(),
            identity_last: s.outcomes.identity.current(),
            timeline,
            error_kinds: self.metrics.errors.kinds(),
            ..Summary::of_load(s.outcomes.tally(), elapsed, &s.outcomes.latency, rpo)
        }
    }
}
