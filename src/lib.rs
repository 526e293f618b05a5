//! pgdrill: PostgreSQL failover drills and write canaries.
//!
//! [`run`] drives open-loop INSERT load through a bb8 pool, follows the primary
//! through failovers, measures write unavailability and verifies acknowledged
//! writes, and returns the drill [`Summary`].

pub mod config;
pub mod connect;
pub mod credentials;
pub mod demo;
pub mod dsn;
pub mod engine;
pub mod error;
pub mod failover;
pub mod http;
pub mod identity;
pub mod lab;
pub mod ledger;
pub mod logging;
pub mod metrics;
pub mod monitor;
pub mod pool;
pub mod proxy;
pub mod report;
pub mod retention;
pub mod scheduler;
pub mod shutdown;
pub mod tls;
pub mod verify;
pub mod workload;

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use report::Summary;

use engine::Shared;
use failover::{Detector, Thresholds};
use identity::IdentityTracker;
use ledger::Ledger;
use metrics::{Metrics, PoolCollector};
use monitor::{Monitor, WallClock};
use pool::{DbPool, Manager};
use report::{LatencyBook, Progress};
use workload::Workload;

/// Runs the load until `stop` is cancelled or `config.duration` ends, then
/// drains within the shutdown grace and returns the summary. Database errors
/// are counted, never returned.
pub async fn run(config: Config, listener: TcpListener, stop: CancellationToken) -> Summary {
    let started_at = SystemTime::now();
    let clock = WallClock::now();
    let metrics = Metrics::new(&config.target.hosts);
    metrics.target_rate.set(config.rate.unwrap_or(0.0));
    let run_id = rand::rng().random_range(1..i64::MAX);
    let workload = Arc::new(Workload::new(
        config.table.clone(),
        run_id,
        config.query_mode,
    ));
    let identity = Arc::new(IdentityTracker::new(
        config.target.hosts.clone(),
        metrics.clone(),
    ));
    let mut pg = config.target.pg.clone();
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(config.connect_timeout);
    }
    let credentials = Arc::new(credentials::Credentials::new(
        config.password.clone(),
        metrics.clone(),
    ));
    let manager = Manager::new(
        pg,
        &config.target.tls,
        credentials,
        config.query_mode_auto,
        config.statement_timeout,
        workload.clone(),
        config.create_table,
        identity.clone(),
        metrics.clone(),
    );
    let pool = DbPool::new(
        manager,
        config.pool_size,
        config.connect_timeout,
        config.max_connection_lifetime,
    );
    {
        let pool = pool.clone();
        if let Err(err) = PoolCollector::register(&metrics.registry, move || pool.stats()) {
            tracing::error!(%err, "pool metrics unavailable");
        }
    }

    let http_stop = CancellationToken::new();
    let page = Arc::new(http::Page {
        target: config.target.redacted.clone(),
        run_id,
    });
    let http = tokio::spawn(http::serve(
        listener,
        metrics.clone(),
        page,
        http_stop.clone(),
    ));

    let detector = Arc::new(Detector::default());
    let ledger = Arc::new(Mutex::new(Ledger::new(config.verify_window)));
    let book = LatencyBook::default();
    let shared = Arc::new(Shared {
        metrics: metrics.clone(),
        pool: pool.clone(),
        workload: workload.clone(),
        detector: detector.clone(),
        ledger: ledger.clone(),
        pipeline_depth: config.pipeline_depth as usize,
        client_timeout: config.statement_timeout + std::time::Duration::from_secs(1),
        max_connection_lifetime: config.max_connection_lifetime,
        idle_lanes: Default::default(),
        all_busy: Default::default(),
    });

    let monitor = Arc::new(Monitor::new(
        metrics.clone(),
        detector,
        identity,
        ledger,
        pool.clone(),
        workload,
        clock,
        Thresholds {
            outage: config.effective_outage_threshold(),
            stall: config.stall_threshold(),
            recovery_window: config.recovery_window,
            target_rate: config.rate,
        },
    ));
    let monitor_stop = CancellationToken::new();
    let monitor_task = tokio::spawn(
        monitor
            .clone()
            .run(monitor_stop.clone(), config.shutdown_grace),
    );

    let retention_stop = CancellationToken::new();
    let retention_task = config.retention.map(|settings| {
        tokio::spawn(retention::run(
            pool.clone(),
            config.table.clone(),
            settings,
            metrics.clone(),
            retention_stop.clone(),
        ))
    });

    let (jobs_tx, jobs_rx) = async_channel::bounded(config.max_backlog);
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..config.pool_size {
        let rng = SmallRng::seed_from_u64(run_id as u64 ^ u64::from(lane));
        lanes.spawn(engine::lane(
            shared.clone(),
            jobs_rx.clone(),
            book.lane(),
            rng,
        ));
    }

    let progress_stop = CancellationToken::new();
    let progress = tokio::spawn(report_progress(
        metrics.clone(),
        book.clone(),
        monitor.clone(),
        config.progress_interval,
        progress_stop.clone(),
    ));

    tracing::info!(
        target = %config.target.redacted,
        rate = ?config.rate,
        pool_size = config.pool_size,
        pipeline_depth = config.pipeline_depth,
        run_id,
        listen = %config.listen,
        "pgdrill started"
    );
    let load_began = Instant::now();
    scheduler::run(
        config.rate,
        jobs_tx,
        metrics.skipped.clone(),
        &stop,
        config.duration,
    )
    .await;
    let elapsed = load_began.elapsed();

    // Stop scheduling: what is still queued was never started.
    while jobs_rx.try_recv().is_ok() {
        metrics.skipped.inc();
    }
    let drained = tokio::time::timeout(config.shutdown_grace, async {
        while lanes.join_next().await.is_some() {}
    })
    .await;
    let abandoned = if drained.is_err() {
        lanes.abort_all();
        let n = metrics.in_flight.get().max(0) as u64;
        tracing::warn!(
            abandoned = n,
            "shutdown grace ran out with transactions in flight"
        );
        n
    } else {
        0
    };
    retention_stop.cancel();
    if let Some(task) = retention_task {
        let _ = task.await;
    }
    monitor_stop.cancel();
    let _ = monitor_task.await;
    progress_stop.cancel();
    let _ = progress.await;

    let summary = Summary::collect(
        &metrics,
        &book,
        run_id,
        config.target.redacted.clone(),
        started_at,
        elapsed,
        config.rate,
        abandoned,
        monitor.outages(),
        monitor.state_changes(),
    );
    http_stop.cancel();
    let _ = http.await;
    summary
}

async fn report_progress(
    metrics: Arc<Metrics>,
    book: LatencyBook,
    monitor: Arc<Monitor>,
    every: std::time::Duration,
    stop: CancellationToken,
) {
    let mut progress = Progress::new();
    let mut ticker = tokio::time::interval_at(Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = ticker.tick() => progress.log(&metrics, &book, every, monitor.state().as_str()),
            _ = stop.cancelled() => return,
        }
    }
}
