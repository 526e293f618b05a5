//! Every metric family pgdrill exports, defined once, names written out in full.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::error::ErrorClass;
use crate::telemetry::errors::ErrorBook;
use crate::telemetry::timeline::State;

/// Latency buckets from 0.5 ms to 60 s, dense where a healthy database answers.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

const OUTAGE_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

pub struct Metrics {
    pub registry: Registry,

    pub target_rate: Gauge,
    pub transactions: IntCounter,
    pub transaction_errors: PerClass,
    pub skipped: IntCounter,
    pub abandoned: IntCounter,
    pub transaction_duration: Histogram,
    pub service_duration: Histogram,
    pub in_flight: IntGauge,
    pub connection_attempts: IntCounter,
    pub connection_errors: PerClass,
    pub schedule_lag: Histogram,
    pub last_success_timestamp: Gauge,
    /// 1 while the load schedules writes: after it stops (the drain, `--linger`), the last
    /// success grows old without writes being unavailable.
    pub load_running: IntGauge,

    pub failover_state: StateSet,
    pub server_timeline: IntGauge,
    pub primary_changes: IntCounter,
    pub server_restarts: IntCounter,
    pub host_is_primary: IntGaugeVec,
    /// The server actually written to, as it sees itself (behind a proxy or a moved DNS
    /// name the configured host says nothing); 1 for the current one, 0 for earlier ones.
    pub primary_server: IntGaugeVec,
    /// The label sets of `primary_server`, oldest first, at most [`MAX_PRIMARY_SERVERS`].
    primary_servers: parking_lot::Mutex<std::collections::VecDeque<[String; 3]>>,
    pub outages: IntCounter,
    pub outage_start_timestamp: Gauge,
    pub outage_end_timestamp: Gauge,
    pub last_outage_duration: Gauge,
    pub last_recovery_duration: Gauge,
    pub outage_duration: Histogram,
    /// Each finished outage beyond the objective, however close together: the outage
    /// gauges hold only the last, and a scrape every 60 s may see only the one after.
    pub outages_over_rto_objective: IntCounter,

    pub lost_writes: IntCounter,
    pub unknown_outcome_writes: IntCounter,
    pub unknown_outcome_committed: IntCounter,
    pub unknown_outcome_not_committed: IntCounter,
    pub last_failover_lost_writes: Gauge,
    pub last_failover_rpo: Gauge,
    /// Whose figures those two are: the dashboard's failover history joins them to their
    /// outage, not a later switchover's loss to an earlier outage's row.
    pub last_failover_outage: IntGauge,
    pub last_failover_lower_bound: IntGauge,
    pub verifications: IntCounter,
    pub verification_errors: IntCounter,
    pub ledger_bytes: IntGauge,

    pub password_refreshes: IntCounter,
    pub password_errors: IntCounter,
    pub retention_rows_deleted: IntCounter,
    pub retention_errors: PerClass,

    /// Not a metric family: every distinct error with one message, for logs and the summary.
    pub errors: Arc<ErrorBook>,
    pub drill: DrillMetrics,
}

/// One counter per error class, resolved once: the hot path indexes an array, hashing no labels.
pub struct PerClass {
    counters: Vec<IntCounter>,
}

impl PerClass {
    fn new(r: &Registry, name: &str, help: &str) -> PerClass {
        let vec = counter_vec(r, name, help, &["class"]);
        let counters = ErrorClass::ALL
            .iter()
            .map(|class| vec.with_label_values(&[class.as_str()]))
            .collect();
        PerClass { counters }
    }

    pub fn inc(&self, class: ErrorClass) {
        self.counters[class.index()].inc();
    }
}

/// An enum exported as a state set: one series per state, exactly one of them 1.
pub struct StateSet {
    states: Vec<(&'static str, IntGauge)>,
}

impl StateSet {
    fn new(r: &Registry, name: &str, help: &str, label: &str, states: &[&'static str]) -> StateSet {
        let vec = gauge_vec(r, name, help, &[label]);
        let states: Vec<_> = states
            .iter()
            .map(|s| (*s, vec.with_label_values(&[*s])))
            .collect();
        // The first state is where a run begins.
        states[0].1.set(1);
        StateSet { states }
    }

    pub fn set(&self, state: &str) {
        for (name, gauge) in &self.states {
            gauge.set(i64::from(*name == state));
        }
    }
}

fn register<C: Collector + Clone + 'static>(r: &Registry, collector: prometheus::Result<C>) -> C {
    let collector = collector.expect("valid metric");
    r.register(Box::new(collector.clone()))
        .expect("metric registered once");
    collector
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(r, IntGaugeVec::new(Opts::new(name, help), labels))
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(r, IntCounterVec::new(Opts::new(name, help), labels))
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(r, Histogram::with_opts(opts))
}

impl Metrics {
    /// `pgdrill_target_info{host,port,database,pooler}` = 1, one series per configured
    /// host (`[host, port, database, pooler]`), so every panel and alert can say which
    /// database it measures. Static for the process's life; never the password (a database
    /// named as the password is, shows as every output shows it: REDACTED).
    pub fn target_info(&self, hosts: &[[String; 4]]) {
        let info = gauge_vec(
            &self.registry,
            "pgdrill_target_info",
            "A configured database host, always 1 (pooler: pgbouncer when the port is 6432, else none).",
            &["host", "port", "database", "pooler"],
        );
        for labels in hosts {
            let labels = labels.clone().map(|v| crate::secrets::scrub(&v));
            info.with_label_values(&labels).set(1);
        }
    }

    /// Builds the registry with every series pre-created, so dashboards and
    /// `rate()` see zeros rather than absent series before the first event.
    pub fn new(hosts: &[String]) -> Arc<Metrics> {
        let registry = Registry::new();
        let r = &registry;
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("process collector registered once");
        gauge_vec(
            r,
            "pgdrill_build_info",
            "pgdrill build, always 1.",
            &["version"],
        )
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);

        let host_is_primary = gauge_vec(
            r,
            "pgdrill_host_is_primary",
            "1 for the configured host whose server last took our writes as primary; it stays 1 through an outage until another host takes them.",
            &["host"],
        );
        for host in hosts {
            host_is_primary.with_label_values(&[host.as_str()]).set(0);
        }

        let unknown_resolved = counter_vec(
            r,
            "pgdrill_unknown_outcome_resolved_total",
            "Unknown-outcome writes resolved by verification, by outcome.",
            &["outcome"],
        );

        Arc::new(Metrics {
            target_rate: register(r, Gauge::new("pgdrill_target_rate", "Target transactions per second (0 = unlimited).")),
            transactions: register(r, IntCounter::new("pgdrill_transactions_total", "Transactions attempted and finished, successful or not.")),
            transaction_errors: PerClass::new(r, "pgdrill_transaction_errors_total", "Transactions that failed, by error class."),
            abandoned: register(r, IntCounter::new("pgdrill_transactions_abandoned_total", "Transactions still in flight when the shutdown grace ran out: sent, never answered; their outcome is unknown (the server may have committed them).")),
            skipped: register(r, IntCounter::new("pgdrill_transactions_skipped_total", "Transactions due by the schedule but never started: the backlog was full, they waited longer than its span, or they were queued at shutdown.")),
            transaction_duration: histogram(r, "pgdrill_transaction_duration_seconds", "Latency of successful transactions from their intended (scheduled) start to acknowledgement; with --rate 0, from when a lane took them.", LATENCY_BUCKETS),
            service_duration: histogram(r, "pgdrill_service_duration_seconds", "Latency of successful transactions from sending to acknowledgement.", LATENCY_BUCKETS),
            in_flight: register(r, IntGauge::new("pgdrill_transactions_in_flight", "Transactions taken by a lane and not yet answered: waiting for a connection, or sent.")),
            connection_attempts: register(r, IntCounter::new("pgdrill_connection_attempts_total", "New database connections attempted.")),
            connection_errors: PerClass::new(r, "pgdrill_connection_errors_total", "Failed connection attempts, by error class."),
            schedule_lag: histogram(r, "pgdrill_schedule_lag_seconds", "How late transactions (acknowledged or failed) began relative to their schedule: every one, so that no scrape interval misses a spike.", LATENCY_BUCKETS),
            last_success_timestamp: register(r, Gauge::new("pgdrill_last_success_timestamp_seconds", "Unix time of the last acknowledged write (0 before the first).")),
            load_running: register(r, IntGauge::new("pgdrill_load_running", "1 while the load schedules writes; 0 before it starts and once it stopped (drain, --linger).")),
            failover_state: StateSet::new(r, "pgdrill_failover_state", "Write availability state set: exactly one state is 1.", "state", &State::ALL.map(State::as_str)),
            server_timeline: register(r, IntGauge::new("pgdrill_server_timeline", "Timeline of the primary we write to (0 if unknown).")),
            primary_changes: register(r, IntCounter::new("pgdrill_primary_changes_total", "Times the primary's identity or timeline changed.")),
            server_restarts: register(r, IntCounter::new("pgdrill_server_restarts_total", "Times the primary came back restarted: same system identifier, timeline and address, a new postmaster or a crash of one of its processes.")),
            host_is_primary,
            primary_server: gauge_vec(r, "pgdrill_primary_server", "1 for the server pgdrill writes to now, as it reports itself (address, system identifier, timeline); 0 for the last few before it.", &["server", "system_identifier", "timeline"]),
            primary_servers: Default::default(),
            outages: register(r, IntCounter::new("pgdrill_outages_total", "Write outages detected.")),
            outage_start_timestamp: register(r, Gauge::new("pgdrill_outage_start_timestamp_seconds", "Unix time the current or last outage began (0 before any).")),
            outage_end_timestamp: register(r, Gauge::new("pgdrill_outage_end_timestamp_seconds", "Unix time the last outage ended (0 before any; older than the start while one is in progress).")),
            last_outage_duration: register(r, Gauge::new("pgdrill_last_outage_duration_seconds", "Write unavailability of the last finished outage, or of one still open when the load stopped (so far).")),
            last_recovery_duration: register(r, Gauge::new("pgdrill_last_recovery_duration_seconds", "From the first write after the last outage until the rate held at 95% of target.")),
            outage_duration: histogram(r, "pgdrill_outage_duration_seconds", "Write unavailability per outage.", OUTAGE_BUCKETS),
            outages_over_rto_objective: register(r, IntCounter::new("pgdrill_outages_over_rto_objective_total", "Outages (finished, or still open when the load stopped) whose write unavailability exceeded --rto-objective (pgdrill_rto_objective_seconds).")),
            lost_writes: register(r, IntCounter::new("pgdrill_lost_writes_total", "Acknowledged writes found missing on the primary after an outage.")),
            unknown_outcome_writes: register(r, IntCounter::new("pgdrill_unknown_outcome_writes_total", "Writes whose connection died between send and acknowledgement.")),
            unknown_outcome_committed: unknown_resolved.with_label_values(&["committed"]),
            unknown_outcome_not_committed: unknown_resolved.with_label_values(&["not_committed"]),
            last_failover_lost_writes: register(r, Gauge::new("pgdrill_last_failover_lost_writes", "Acknowledged writes lost in the last failover verified (an outage, or a primary change faster than the outage threshold that lost writes); NaN from an outage's start until its verification.")),
            last_failover_rpo: register(r, Gauge::new("pgdrill_last_failover_rpo_seconds", "Time span of the acknowledged writes lost in the last failover verified, as pgdrill_last_failover_lost_writes; NaN from an outage's start until its verification.")),
            last_failover_lower_bound: register(r, IntGauge::new("pgdrill_last_failover_lower_bound", "1 when pgdrill_last_failover_lost_writes and _rpo_seconds are lower bounds: the oldest write checked was lost, and older ones had gone out of --verify-window unchecked.")),
            last_failover_outage: register(r, IntGauge::new("pgdrill_last_failover_outage", "The outage pgdrill_last_failover_lost_writes and _rpo_seconds are of, numbered as pgdrill_outages_total counts them; 0 for a primary change without an outage, or none yet.")),
            verifications: register(r, IntCounter::new("pgdrill_verifications_total", "Post-outage verifications of acknowledged writes completed.")),
            verification_errors: register(r, IntCounter::new("pgdrill_verification_errors_total", "Post-outage verifications that failed and were retried.")),
            ledger_bytes: register(r, IntGauge::new("pgdrill_ledger_bytes", "Approximate memory held by the acknowledged-write ledger.")),
            password_refreshes: register(r, IntCounter::new("pgdrill_password_refreshes_total", "New passwords obtained from --password-command or a changed --password-file.")),
            password_errors: register(r, IntCounter::new("pgdrill_password_errors_total", "Failures to obtain a password from --password-file or --password-command.")),
            retention_rows_deleted: register(r, IntCounter::new("pgdrill_retention_rows_deleted_total", "Rows older than --retention deleted by the cleanup.")),
            retention_errors: PerClass::new(r, "pgdrill_retention_errors_total", "Retention cleanup batches that failed, by error class."),
            errors: Arc::new(ErrorBook::default()),
            drill: DrillMetrics::new(r),
            registry,
        })
    }

    /// Marks `labels` (server, system identifier, timeline) as the server written to now;
    /// earlier ones read 0, and only the last [`MAX_PRIMARY_SERVERS`] are kept.
    pub fn set_primary_server(&self, labels: [String; 3]) {
        let mut seen = self.primary_servers.lock();
        for old in seen.iter() {
            self.primary_server.with_label_values(old).set(0);
        }
        seen.retain(|l| *l != labels);
        seen.push_back(labels.clone());
        let over = seen.len().saturating_sub(MAX_PRIMARY_SERVERS);
        for gone in seen.drain(..over) {
            let _ = self.primary_server.remove_label_values(&gone);
        }
        self.primary_server.with_label_values(&labels).set(1);
    }

    pub fn set_primary_host(&self, host: Option<&str>) {
        let families = self.host_is_primary.collect();
        for metric in families.iter().flat_map(|f| f.get_metric()) {
            if let Some(label) = metric.get_label().first() {
                let name = label.value();
                self.host_is_primary
                    .with_label_values(&[name])
                    .set(i64::from(Some(name) == host));
            }
        }
    }

    /// Text exposition of every registered family ([`prometheus::TEXT_FORMAT`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail on I/O; a failure would be a bug in a collector.
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut body) {
            tracing::error!(%err, "encoding metrics failed");
        }
        body
    }
}

/// Servers kept on `pgdrill_primary_server`: bounded label values however many failovers.
const MAX_PRIMARY_SERVERS: usize = 8;

/// Values of `pgdrill_drill_verdict{verdict}`: `none` in a canary run (no trigger),
/// `pending` until a drill's verdict exists.
pub const DRILL_VERDICTS: [&str; 5] = ["none", "pending", "pass", "fail", "invalid"];

/// Values of `pgdrill_failover_triggers_total{outcome}`.
pub const TRIGGER_OUTCOMES: [&str; 5] = [
    "ok",
    "cannot_start",
    "exited_non_zero",
    "timed_out",
    "failed",
];

/// Drills as code (`--failover-command`): the triggers, the figures timed from them, the
/// verdict and the objectives it is judged against.
pub struct DrillMetrics {
    pub trigger_timestamp: Gauge,
    pub trigger_end_timestamp: Gauge,
    /// Finished triggers by outcome, one of [`TRIGGER_OUTCOMES`].
    pub triggers: IntCounterVec,
    pub first_failed_write: Gauge,
    pub new_primary_write: Gauge,
    pub verdict: StateSet,
    pub rto_objective: Gauge,
    pub rpo_objective: IntGauge,
}

impl DrillMetrics {
    fn new(r: &Registry) -> DrillMetrics {
        let triggers = counter_vec(
            r,
            "pgdrill_failover_triggers_total",
            "Failover triggers run, by outcome (only ok makes a valid drill).",
            &["outcome"],
        );
        for outcome in TRIGGER_OUTCOMES {
            triggers.with_label_values(&[outcome]);
        }
        DrillMetrics {
            trigger_timestamp: register(r, Gauge::new("pgdrill_failover_trigger_timestamp_seconds", "Unix time the last failover trigger started (0 before any).")),
            trigger_end_timestamp: register(r, Gauge::new("pgdrill_failover_trigger_end_timestamp_seconds", "Unix time the last failover trigger ended (0 before any; older than the start while one runs).")),
            triggers,
            first_failed_write: register(r, Gauge::new("pgdrill_failover_first_failed_write_seconds", "Last trigger's start to the first failed write after it (how long clients kept writing); 0 before any trigger, NaN from a trigger's start until measured.")),
            new_primary_write: register(r, Gauge::new("pgdrill_failover_new_primary_write_seconds", "Last trigger's start to the first write acknowledged by a new primary, or by the same one restarted in place; 0 before any trigger, NaN from a trigger's start until measured.")),
            verdict: StateSet::new(r, "pgdrill_drill_verdict", "Drill verdict state set: none without a trigger, pending until the run ends, then pass, fail or invalid.", "verdict", &DRILL_VERDICTS),
            rto_objective: register(r, Gauge::new("pgdrill_rto_objective_seconds", "--rto-objective: the longest acceptable write unavailability per failover.")),
            rpo_objective: register(r, IntGauge::new("pgdrill_rpo_objective_lost_writes", "--rpo-objective: the most acknowledged writes a drill may lose.")),
        }
    }
}

/// Reads pool occupancy when scraped, so the numbers are never stale.
pub struct PoolCollector {
    connections: IntGaugeVec,
    max_connections: IntGauge,
    read: Box<dyn Fn() -> PoolStats + Send + Sync>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct PoolStats {
    pub idle: u32,
    pub in_use: u32,
    pub max: u32,
}

impl PoolCollector {
    pub fn register(
        registry: &Registry,
        read: impl Fn() -> PoolStats + Send + Sync + 'static,
    ) -> prometheus::Result<()> {
        let state = Opts::new(
            "pgdrill_pool_connections",
            "Open pool connections by state.",
        );
        registry.register(Box::new(PoolCollector {
            connections: IntGaugeVec::new(state, &["state"])?,
            max_connections: IntGauge::new(
                "pgdrill_pool_max_connections",
                "Configured maximum pool size.",
            )?,
            read: Box::new(read),
        }))
    }
}

impl Collector for PoolCollector {
    fn desc(&self) -> Vec<&Desc> {
        [self.connections.desc(), self.max_connections.desc()].concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let stats = (self.read)();
        for (state, n) in [("idle", stats.idle), ("in_use", stats.in_use)] {
            self.connections
                .with_label_values(&[state])
                .set(i64::from(n));
        }
        self.max_connections.set(i64::from(stats.max));
        [self.connections.collect(), self.max_connections.collect()].concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Metrics {
        /// The value of one series as exposed, e.g. `pgdrill_failover_state{state="outage"}`.
        pub(crate) fn sample(&self, series: &str) -> Option<f64> {
            let body = self.encode();
            let text = String::from_utf8(body).ok()?;
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        }
    }

    #[test]
    fn every_class_and_state_is_precreated() {
        let metrics = Metrics::new(&["127.0.0.1:5432".to_string()]);
        let text = String::from_utf8(metrics.encode()).expect("utf-8 exposition");
        for class in ErrorClass::ALL {
            let series = format!("pgdrill_transaction_errors_total{{class=\"{class}\"}} 0");
            assert!(text.contains(&series), "missing {series}");
        }
        assert!(text.contains("pgdrill_failover_state{state=\"healthy\"} 1"));
        assert!(text.contains("pgdrill_failover_state{state=\"outage\"} 0"));
        assert!(text.contains("pgdrill_host_is_primary{host=\"127.0.0.1:5432\"} 0"));
        for outcome in TRIGGER_OUTCOMES {
            let series = format!("pgdrill_failover_triggers_total{{outcome=\"{outcome}\"}} 0");
            assert!(text.contains(&series), "missing {series}");
        }
        assert!(text.contains("pgdrill_drill_verdict{verdict=\"none\"} 1"));
        assert!(text.contains("pgdrill_drill_verdict{verdict=\"fail\"} 0"));
        assert!(text.contains("pgdrill_failover_trigger_timestamp_seconds 0"));
    }

    #[test]
    fn a_database_named_as_the_password_is_hidden_in_target_info() {
        crate::secrets::remember("orders-2024-db");
        let metrics = Metrics::new(&[]);
        let labels = ["db", "5432", "orders-2024-db", "none"].map(String::from);
        metrics.target_info(&[labels]);
        let series =
            r#"pgdrill_target_info{database="REDACTED",host="db",pooler="none",port="5432"}"#;
        assert_eq!(metrics.sample(series), Some(1.0));
    }

    #[test]
    fn state_set_keeps_exactly_one_state() {
        let metrics = Metrics::new(&[]);
        metrics.failover_state.set("outage");
        let ones: f64 = State::ALL
            .map(State::as_str)
            .iter()
            .filter_map(|s| metrics.sample(&format!("pgdrill_failover_state{{state=\"{s}\"}}")))
            .sum();
        assert_eq!(ones, 1.0);
        assert_eq!(
            metrics.sample("pgdrill_failover_state{state=\"outage\"}"),
            Some(1.0)
        );
    }
}
