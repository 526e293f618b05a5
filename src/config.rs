//! Command line and environment → a validated [`Config`] the rest of the code requires.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::credentials::PasswordSource;
use crate::dsn::{self, Target};
use crate::error::ConfigError;
use crate::workload::QueryMode;

/// The default `/metrics` port: in the exporter range, not taken by common exporters.
pub const DEFAULT_PORT: u16 = 9743;

#[derive(Debug, Parser)]
#[command(
    name = "pgdrill",
    version,
    about = "PostgreSQL failover drills and write canaries: open-loop INSERT load, RTO/RPO on /metrics",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a local primary + standby, run load, force a failover, print the drill report, clean up.
    Demo(DemoArgs),
    /// A TCP proxy that delays traffic (for benchmarks through a slow link).
    Proxy(ProxyArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// libpq connection string (URL or key=value; several hosts with target_session_attrs=read-write).
    /// Unset parts come from PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE.
    #[arg(long, env = "PGDRILL_DSN", hide_env_values = true)]
    pub dsn: Option<String>,

    /// Target INSERT transactions per second; 0 = as fast as the pool allows.
    #[arg(
        long,
        env = "PGDRILL_RATE",
        default_value_t = 100.0,
        allow_negative_numbers = true
    )]
    pub rate: f64,

    /// Stop after this long (e.g. 5m); runs until SIGINT/SIGTERM when unset.
    #[arg(long, env = "PGDRILL_DURATION")]
    pub duration: Option<humantime::Duration>,

    /// Maximum pool connections [default: rate/250 clamped to 4..=64; 32 for --rate 0;
    /// with the default pipeline depth that holds 64 ms of round trip at the rate].
    #[arg(long, env = "PGDRILL_POOL_SIZE")]
    pub pool_size: Option<u32>,

    /// Independent autocommit INSERTs pipelined on one connection, used once every
    /// connection is busy (a slow link: 50 ms round trips at 8000/s need 400 in flight).
    #[arg(long, env = "PGDRILL_PIPELINE_DEPTH", default_value_t = 16)]
    pub pipeline_depth: u32,

    /// Due transactions that may wait for a connection; beyond it they are skipped
    /// [default: one second of schedule, at least 64].
    #[arg(long, env = "PGDRILL_MAX_BACKLOG")]
    pub max_backlog: Option<usize>,

    /// Give up on establishing a connection to one host address after this long (TCP, TLS,
    /// startup, authentication, identity probe, as libpq's connect_timeout), then try the
    /// next. A server that hangs adds this to the measured unavailability.
    #[arg(long, env = "PGDRILL_CONNECT_TIMEOUT", default_value = "2s")]
    pub connect_timeout: humantime::Duration,

    /// Server-side statement_timeout for each INSERT.
    #[arg(long, env = "PGDRILL_STATEMENT_TIMEOUT", default_value = "5s")]
    pub statement_timeout: humantime::Duration,

    /// Replace connections older than this.
    #[arg(long, env = "PGDRILL_MAX_CONNECTION_LIFETIME", default_value = "30m")]
    pub max_connection_lifetime: humantime::Duration,

    /// Table to insert into (optionally schema-qualified).
    #[arg(long, env = "PGDRILL_TABLE", default_value = "transactions")]
    pub table: String,

    /// Do not create the table if it is missing.
    #[arg(long, env = "PGDRILL_NO_CREATE_TABLE")]
    pub no_create_table: bool,

    /// Address for /metrics, /healthz and /.
    #[arg(long, env = "PGDRILL_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)))]
    pub listen: SocketAddr,

    /// Interval between one-line progress logs.
    #[arg(long, env = "PGDRILL_PROGRESS_INTERVAL", default_value = "5s")]
    pub progress_interval: humantime::Duration,

    /// Also write the end-of-run summary as JSON to this file.
    #[arg(long, env = "PGDRILL_SUMMARY_JSON")]
    pub summary_json: Option<PathBuf>,

    /// On SIGINT/SIGTERM or at the end, wait this long for in-flight transactions.
    #[arg(long, env = "PGDRILL_SHUTDOWN_GRACE", default_value = "10s")]
    pub shutdown_grace: humantime::Duration,

    /// No acknowledged write for this long, after a failure or with writes stalled, is an outage
    /// (never less than three schedule intervals).
    #[arg(long, env = "PGDRILL_OUTAGE_THRESHOLD", default_value = "20ms")]
    pub outage_threshold: humantime::Duration,

    /// After an outage, check that writes acknowledged in this window before it survived.
    #[arg(long, env = "PGDRILL_VERIFY_WINDOW", default_value = "30s")]
    pub verify_window: humantime::Duration,

    /// How the INSERT is sent: prepared (fastest), unnamed (PgBouncer transaction mode safe),
    /// simple; auto picks unnamed when a port is 6432 (PgBouncer's), else prepared, and
    /// switches to unnamed if prepared statements break (SQLSTATE 26000/42P05) at run time.
    #[arg(long, env = "PGDRILL_QUERY_MODE", value_enum, default_value_t = QueryModeArg::Auto)]
    pub query_mode: QueryModeArg,

    /// Read the password from this file for every new connection (rotated secrets);
    /// overrides the DSN's and PGPASSWORD. The first non-empty line is used.
    #[arg(
        long,
        env = "PGDRILL_PASSWORD_FILE",
        conflicts_with = "password_command"
    )]
    pub password_file: Option<PathBuf>,

    /// Run this shell command to obtain the password (e.g. an Entra ID token:
    /// `az account get-access-token --resource-type oss-rdbms --query accessToken -o tsv`);
    /// cached for --password-ttl and re-run after an authentication failure. Never logged.
    #[arg(long, env = "PGDRILL_PASSWORD_COMMAND", hide_env_values = true)]
    pub password_command: Option<String>,

    /// Re-run --password-command once its output is this old (Entra tokens last 60-90 minutes).
    #[arg(long, env = "PGDRILL_PASSWORD_TTL", default_value = "15m")]
    pub password_ttl: humantime::Duration,

    /// Delete rows older than this from the table, continuously, in small batches
    /// (for long-running canaries; off by default so drills keep every row).
    #[arg(long, env = "PGDRILL_RETENTION")]
    pub retention: Option<humantime::Duration>,

    /// Rows deleted per retention batch (one short transaction each).
    #[arg(long, env = "PGDRILL_RETENTION_BATCH_SIZE", default_value_t = 5000)]
    pub retention_batch_size: u32,

    /// Runtime threads for the load and /metrics; 1 runs everything on one thread
    /// [default: 1; the database, not the client, should be what limits the rate].
    #[arg(long, env = "PGDRILL_WORKER_THREADS", default_value_t = 1)]
    pub worker_threads: usize,

    /// Log format.
    #[arg(long, env = "PGDRILL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter in RUST_LOG syntax (e.g. info,pgdrill=debug).
    #[arg(long, env = "RUST_LOG", default_value = "info,tokio_postgres=warn")]
    pub log_filter: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueryModeArg {
    Auto,
    Prepared,
    Unnamed,
    Simple,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoFailover {
    /// Primary stopped with -m immediate, standby promoted.
    Forced,
    /// Primary stopped with -m fast, standby promoted.
    Switchover,
    /// Every process of the primary frozen (a vanished VM: nothing refused, nothing
    /// answered), standby promoted --promote-after later; multi-host DSN.
    Frozen,
    /// As frozen, and a host name moves from the old primary's address to the new one's
    /// at promotion (managed services' DNS switch); needs root for a private /etc/hosts.
    Dns,
    /// Primary frozen for --thaw-after, then continued; no promotion.
    FrozenBack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoReplication {
    Sync,
    Async,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Replication between the lab's primary and standby.
    #[arg(long, value_enum, default_value_t = DemoReplication::Sync)]
    pub replication: DemoReplication,
    /// How the primary goes away.
    #[arg(long, value_enum, default_value_t = DemoFailover::Forced)]
    pub failover: DemoFailover,
    /// Load before the failover.
    #[arg(long, default_value = "5s")]
    pub failover_after: humantime::Duration,
    /// Load after the failover.
    #[arg(long, default_value = "10s")]
    pub run_after: humantime::Duration,
    /// Frozen and dns modes: time from the freeze to the promotion (the HA service's
    /// failure detection).
    #[arg(long, default_value = "2s")]
    pub promote_after: humantime::Duration,
    /// Frozen-back mode: how long the primary stays frozen.
    #[arg(long, default_value = "10s")]
    pub thaw_after: humantime::Duration,
    /// Target transactions per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Address for /metrics while the demo runs.
    #[arg(long, default_value_t = SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)))]
    pub listen: SocketAddr,
    /// Also write the drill report as JSON to this file.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Address to accept connections on.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Address to forward to.
    #[arg(long)]
    pub upstream: SocketAddr,
    /// One-way delay added in each direction (round trip grows by twice this).
    #[arg(long, default_value = "25ms")]
    pub delay: humantime::Duration,
}

/// A fully validated configuration; only [`RunArgs::validate`] makes one.
#[derive(Debug, Clone)]
pub struct Config {
    pub target: Target,
    /// Transactions per second; `None` = unlimited.
    pub rate: Option<f64>,
    pub duration: Option<Duration>,
    pub pool_size: u32,
    pub pipeline_depth: u32,
    pub max_backlog: usize,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    pub max_connection_lifetime: Duration,
    pub table: Table,
    pub create_table: bool,
    pub query_mode: QueryMode,
    /// `--query-mode auto`: falls back from prepared to unnamed if prepared statements break.
    pub query_mode_auto: bool,
    pub listen: SocketAddr,
    pub progress_interval: Duration,
    pub summary_json: Option<PathBuf>,
    pub shutdown_grace: Duration,
    pub outage_threshold: Duration,
    pub verify_window: Duration,
    /// Rate must hold at 95 % of target this long before an outage counts as recovered.
    pub recovery_window: Duration,
    pub log_format: LogFormat,
    pub log_filter: String,
    pub password: PasswordSource,
    pub retention: Option<crate::retention::RetentionSettings>,
}

/// A table name checked to be plain identifiers, kept both raw and quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    pub quoted: String,
}

impl Table {
    pub fn parse(name: &str) -> Result<Table, ConfigError> {
        let parts: Vec<&str> = name.split('.').collect();
        let valid = |p: &str| {
            let mut chars = p.chars();
            matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
                && p.len() <= 63
        };
        if parts.len() > 2 || !parts.iter().all(|p| valid(p)) {
            return Err(ConfigError::new(
                "--table",
                name,
                "expected an identifier or schema.identifier of letters, digits and _ (at most 63 each)",
            ));
        }
        let quoted = parts
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(".");
        Ok(Table {
            name: name.to_string(),
            quoted,
        })
    }
}

fn positive(option: &'static str, d: humantime::Duration) -> Result<Duration, ConfigError> {
    let d: Duration = d.into();
    if d.is_zero() {
        return Err(ConfigError::new(option, "0s", "must be greater than zero"));
    }
    Ok(d)
}

impl RunArgs {
    /// Checks every flag against the others and the environment, once.
    pub fn validate(&self, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        if !self.rate.is_finite() || self.rate < 0.0 {
            return Err(ConfigError::new(
                "--rate",
                self.rate.to_string(),
                "must be a finite number of transactions per second, 0 (unlimited) or more",
            ));
        }
        if self.rate > 1_000_000.0 {
            return Err(ConfigError::new(
                "--rate",
                self.rate.to_string(),
                "above 1,000,000/s is beyond what one process can schedule",
            ));
        }
        let rate = (self.rate > 0.0).then_some(self.rate);
        let pool_size = match self.pool_size {
            Some(0) => {
                return Err(ConfigError::new("--pool-size", "0", "must be at least 1"));
            }
            Some(n) if n > 10_000 => {
                return Err(ConfigError::new(
                    "--pool-size",
                    n.to_string(),
                    "more than 10000 connections is not a sensible pool",
                ));
            }
            Some(n) => n,
            None => default_pool_size(rate),
        };
        if self.pipeline_depth == 0 || self.pipeline_depth > 1024 {
            return Err(ConfigError::new(
                "--pipeline-depth",
                self.pipeline_depth.to_string(),
                "must be between 1 and 1024",
            ));
        }
        let max_backlog = match self.max_backlog {
            Some(0) => {
                return Err(ConfigError::new("--max-backlog", "0", "must be at least 1"));
            }
            Some(n) => n,
            None => rate.map_or(64, |r| (r.ceil() as usize).max(64)),
        };
        let duration = match self.duration {
            Some(d) => Some(positive("--duration", d)?),
            None => None,
        };
        let outage_threshold = positive("--outage-threshold", self.outage_threshold)?;
        let target = dsn::parse(self.dsn.as_deref(), env)?;
        let query_mode = match self.query_mode {
            QueryModeArg::Prepared => QueryMode::Prepared,
            QueryModeArg::Unnamed => QueryMode::Unnamed,
            QueryModeArg::Simple => QueryMode::Simple,
            // Named prepared statements break behind PgBouncer in transaction mode.
            QueryModeArg::Auto if target.pg.get_ports().contains(&6432) => QueryMode::Unnamed,
            QueryModeArg::Auto => QueryMode::Prepared,
        };
        let password = match (&self.password_file, &self.password_command) {
            (Some(path), _) => PasswordSource::File(path.clone()),
            (None, Some(command)) => PasswordSource::Command {
                command: command.clone(),
                ttl: self.password_ttl.into(),
            },
            (None, None) => PasswordSource::Dsn,
        }
        .validate()?;
        let retention = match self.retention {
            None => None,
            Some(window) => {
                let window = positive("--retention", window)?;
                let verify: Duration = self.verify_window.into();
                if window <= verify {
                    return Err(ConfigError::new(
                        "--retention",
                        humantime::format_duration(window).to_string(),
                        format!(
                            "must be longer than --verify-window ({}), or verification would count \
                             deleted rows as lost writes",
                            humantime::format_duration(verify)
                        ),
                    ));
                }
                if self.retention_batch_size == 0 || self.retention_batch_size > 1_000_000 {
                    return Err(ConfigError::new(
                        "--retention-batch-size",
                        self.retention_batch_size.to_string(),
                        "must be between 1 and 1000000",
                    ));
                }
                Some(crate::retention::RetentionSettings::new(
                    window,
                    self.retention_batch_size,
                ))
            }
        };
        Ok(Config {
            target,
            query_mode,
            query_mode_auto: self.query_mode == QueryModeArg::Auto,
            password,
            retention,
            rate,
            duration,
            pool_size,
            pipeline_depth: self.pipeline_depth,
            max_backlog,
            connect_timeout: positive("--connect-timeout", self.connect_timeout)?,
            statement_timeout: positive("--statement-timeout", self.statement_timeout)?,
            max_connection_lifetime: positive(
                "--max-connection-lifetime",
                self.max_connection_lifetime,
            )?,
            table: Table::parse(&self.table)?,
            create_table: !self.no_create_table,
            listen: self.listen,
            progress_interval: positive("--progress-interval", self.progress_interval)?,
            summary_json: self.summary_json.clone(),
            shutdown_grace: self.shutdown_grace.into(),
            outage_threshold,
            verify_window: positive("--verify-window", self.verify_window)?,
            recovery_window: Duration::from_secs(5),
            log_format: self.log_format,
            log_filter: self.log_filter.clone(),
        })
    }
}

/// One connection per 250/s (a loopback INSERT takes ~4 ms under load), clamped to
/// 4..=64. Pipelining does not shrink the pool: it is what carries the rate over a slow
/// link (32 connections x depth 16 = 512 in flight = 64 ms at 8000/s), while on a fast
/// link the connections share the load and keep their pipelines short.
fn default_pool_size(rate: Option<f64>) -> u32 {
    match rate {
        None => 32,
        Some(r) => ((r / 250.0).ceil() as u32).clamp(4, 64),
    }
}

impl Config {
    /// The shortest silence that can count as an outage at this rate.
    pub fn effective_outage_threshold(&self) -> Duration {
        match self.rate {
            Some(r) => self.outage_threshold.max(Duration::from_secs_f64(3.0 / r)),
            None => self.outage_threshold,
        }
    }
}

impl Config {
    /// Writes in flight with no acknowledgement and no failure for this long are
    /// an outage too: a second, or three schedule intervals at low rates.
    pub fn stall_threshold(&self) -> Duration {
        let floor = Duration::from_secs(1).max(self.outage_threshold);
        match self.rate {
            Some(r) => floor.max(Duration::from_secs_f64(3.0 / r)),
            None => floor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["pgdrill"];
        argv.extend_from_slice(extra);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        cli.run.validate(|_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_sensible() {
        let c = args(&[]).unwrap();
        assert_eq!(c.rate, Some(100.0));
        assert_eq!(c.pool_size, 4);
        assert_eq!(c.max_backlog, 100);
        assert_eq!(args(&["--rate", "1000"]).unwrap().pool_size, 4);
        assert_eq!(c.listen.port(), DEFAULT_PORT);
        assert_eq!(c.table.quoted, "\"transactions\"");
        assert_eq!(c.pipeline_depth, 16);
        let c = args(&["--rate", "8000"]).unwrap();
        assert_eq!(c.pool_size, 32);
        // Pipelining does not shrink the pool: it carries the rate over slow links.
        let c = args(&["--rate", "8000", "--pipeline-depth", "4"]).unwrap();
        assert_eq!(c.pool_size, 32);
        let c = args(&["--rate", "0"]).unwrap();
        assert_eq!(c.rate, None);
    }

    #[test]
    fn bad_values_name_the_flag_value_and_reason() {
        let e = args(&["--rate", "-5"]).unwrap_err();
        assert!(e.contains("--rate") && e.contains("-5"), "{e}");
        let e = args(&["--duration", "5 parsecs"]).unwrap_err();
        assert!(e.contains("--duration") && e.contains("5 parsecs"), "{e}");
        let e = args(&["--table", "x; drop table y"]).unwrap_err();
        assert!(e.contains("--table"), "{e}");
        let e = args(&["--pool-size", "0"]).unwrap_err();
        assert!(e.contains("--pool-size"), "{e}");
        let e = args(&["--listen", "nowhere"]).unwrap_err();
        assert!(e.contains("--listen"), "{e}");
        let e = args(&["--dsn", "postgres://u:hunter2@h:99999/db"]).unwrap_err();
        assert!(e.contains("--dsn") && !e.contains("hunter2"), "{e}");
        let e = args(&["--password-file", "/no/such/pw"]).unwrap_err();
        assert!(
            e.contains("--password-file") && e.contains("/no/such/pw"),
            "{e}"
        );
        let e = args(&[
            "--password-file",
            "/etc/hostname",
            "--password-command",
            "true",
        ])
        .unwrap_err();
        assert!(
            e.contains("--password-command") && e.contains("cannot be used"),
            "{e}"
        );
        let e = args(&["--retention", "0s"]).unwrap_err();
        assert!(e.contains("--retention"), "{e}");
        let e = args(&["--retention", "20s"]).unwrap_err();
        assert!(
            e.contains("--retention") && e.contains("--verify-window"),
            "{e}"
        );
        assert!(args(&["--retention", "20s", "--verify-window", "10s"]).is_ok());
    }

    #[test]
    fn production_flags_parse() {
        let c = args(&[
            "--password-command",
            "echo x",
            "--password-ttl",
            "5m",
            "--retention",
            "7d",
        ])
        .unwrap();
        assert_eq!(
            c.password,
            PasswordSource::Command {
                command: "echo x".into(),
                ttl: Duration::from_secs(300)
            }
        );
        let r = c.retention.unwrap();
        assert_eq!(r.window, Duration::from_secs(7 * 86400));
        assert_eq!(r.batch_size, 5000);
        assert!(args(&[]).unwrap().retention.is_none());
    }

    #[test]
    fn outage_threshold_never_below_three_intervals() {
        let c = args(&["--rate", "1"]).unwrap();
        assert_eq!(c.effective_outage_threshold(), Duration::from_secs(3));
        let c = args(&["--rate", "1000"]).unwrap();
        assert_eq!(c.effective_outage_threshold(), Duration::from_millis(20));
    }
}
