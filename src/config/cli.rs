//! The command line: clap structs, every flag `long` with an `PGDRILL_*` environment variable.
//! [`RunArgs::validate`](super::RunArgs) turns them into a [`Config`](super::Config).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::config::drill::DrillArgs;
use crate::config::{duration, listen_addr, rate_value};
pub use crate::telemetry::logging::LogFormat;

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
    /// Render the drill report (HTML) from a summary written by --summary-json, or merge
    /// the summaries of one drill run by several processes into one report and verdict
    /// (exit 0 pass, 3 fail, 4 invalid).
    Report(ReportArgs),
    /// Remove pgdrill's rows (one run or every run), or drop pgdrill's own table.
    Cleanup(CleanupArgs),
    #[cfg(feature = "lab")]
    /// Start a local primary + standby, run load, force a failover, print the drill report, clean up.
    Demo(DemoArgs),
    #[cfg(feature = "lab")]
    /// A TCP proxy that delays traffic (for benchmarks through a slow link).
    Proxy(ProxyArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// libpq connection string (URL or key=value; several hosts with target_session_attrs=read-write).
    /// Unset parts come from the PG* variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE,
    /// …: docs/configuration.md) and the password file (PGPASSFILE, ~/.pgpass), as in libpq.
    #[arg(long, env = "PGDRILL_DSN", hide_env_values = true)]
    pub dsn: Option<String>,

    /// Target INSERT transactions per second; 0 = as fast as the pool allows.
    #[arg(long, env = "PGDRILL_RATE", default_value_t = 100.0, allow_negative_numbers = true,
          value_parser = rate_value)]
    pub rate: f64,

    /// Stop after this long (e.g. 5m); runs until SIGINT/SIGTERM when unset.
    #[arg(value_parser = duration, long, env = "PGDRILL_DURATION")]
    pub duration: Option<humantime::Duration>,

    /// Maximum pool connections [default: rate/250 clamped to 4..=64; 32 for --rate 0;
    /// with the default pipeline depth that holds 64 ms of round trip at the rate].
    #[arg(long, env = "PGDRILL_POOL_SIZE", value_parser = clap::value_parser!(u32).range(1..))]
    pub pool_size: Option<u32>,

    /// Independent autocommit INSERTs pipelined on one connection, used once every
    /// connection is busy (a slow link: 50 ms round trips at 8000/s need 400 in flight).
    #[arg(long, env = "PGDRILL_PIPELINE_DEPTH", default_value_t = 16)]
    pub pipeline_depth: u32,

    /// Due transactions that may wait for a connection; beyond it, or once due longer ago
    /// than this divided by --rate, they are skipped [default: one second of schedule, at
    /// least 64].
    #[arg(long, env = "PGDRILL_MAX_BACKLOG")]
    pub max_backlog: Option<usize>,

    /// Give up on one connection attempt to a host address after this long (TCP, TLS,
    /// startup, authentication, identity probe, as libpq's connect_timeout), then try the
    /// next; a slow attempt never holds back the others. Wins over connect_timeout in the
    /// DSN and PGCONNECT_TIMEOUT [default: 2s].
    #[arg(value_parser = duration, long, env = "PGDRILL_CONNECT_TIMEOUT")]
    pub connect_timeout: Option<humantime::Duration>,

    /// Server-side statement_timeout for each INSERT.
    #[arg(value_parser = duration, long, env = "PGDRILL_STATEMENT_TIMEOUT", default_value = "5s")]
    pub statement_timeout: humantime::Duration,

    /// Replace connections older than this.
    #[arg(value_parser = duration, long, env = "PGDRILL_MAX_CONNECTION_LIFETIME", default_value = "30m")]
    pub max_connection_lifetime: humantime::Duration,

    /// Table to insert into (optionally schema-qualified; unquoted names fold to lower case).
    /// Unset: pgdrill's own table, created if missing and marked by a comment. A table
    /// pgdrill did not create is written only when named here, and never altered without
    /// --alter-table; pgdrill's rows carry a run_id, and it deletes no other row.
    #[arg(long, env = "PGDRILL_TABLE", default_value = crate::db::table::DEFAULT_TABLE)]
    pub table: String,

    /// Do not create the table if it is missing.
    #[arg(long, env = "PGDRILL_NO_CREATE_TABLE", value_parser = BoolishValueParser::new())]
    pub no_create_table: bool,

    /// Allow pgdrill to add what it needs to a --table it did not create: nullable run_id
    /// and seq columns, and a partial index on its rows (so that it never reads the others).
    /// Without it, pgdrill exits 2 printing the statements to run.
    #[arg(long, env = "PGDRILL_ALTER_TABLE", value_parser = BoolishValueParser::new())]
    pub alter_table: bool,

    /// Write to a table although INSERT or DELETE triggers or rules are enabled on it, a
    /// publication sends its inserts to subscribers (or, with --retention, foreign keys
    /// cascade its deletes): every write
    /// (and delete) fires them, and they may change data that is not pgdrill's. They are
    /// named in a warning at start; without the flag, pgdrill exits 2 naming them.
    #[arg(long, env = "PGDRILL_ALLOW_TABLE_TRIGGERS", value_parser = BoolishValueParser::new())]
    pub allow_table_triggers: bool,

    /// Until the first write succeeds, errors that can heal (refused, timeout, starting up)
    /// are retried this long; then the run fails (exit 5). Errors that waiting cannot fix
    /// (password, database, privilege, TLS, unknown host) fail at once.
    #[arg(value_parser = duration, long, env = "PGDRILL_STARTUP_TIMEOUT", default_value = "60s")]
    pub startup_timeout: humantime::Duration,

    /// Address for /metrics, /healthz and /.
    #[arg(long, env = "PGDRILL_LISTEN", value_parser = listen_addr,
          default_value_t = SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)))]
    pub listen: SocketAddr,

    /// TLS and basic auth for --listen, in the Prometheus exporter-toolkit web config format
    /// (tls_server_config cert_file/key_file/min_version, basic_auth_users with bcrypt hashes).
    #[arg(long = "web.config.file", env = "PGDRILL_WEB_CONFIG_FILE")]
    pub web_config_file: Option<PathBuf>,

    /// Interval between one-line progress logs (at least 1s).
    #[arg(value_parser = duration, long, env = "PGDRILL_PROGRESS_INTERVAL", default_value = "5s")]
    pub progress_interval: humantime::Duration,

    /// Also write the end-of-run summary as JSON to this file; `-` prints it as one line
    /// on stdout after the text summary (stdout's last line).
    #[arg(long, env = "PGDRILL_SUMMARY_JSON")]
    pub summary_json: Option<PathBuf>,

    /// Also write the drill report, one self-contained HTML page, to this file at the end.
    #[arg(long, env = "PGDRILL_REPORT")]
    pub report: Option<PathBuf>,

    /// After a run that ended by itself (--duration, or a crash after its first write), keep
    /// /metrics up this long with the final figures and verdict, for a scrape to see them
    /// (Kubernetes Jobs: 2x the scrape interval); SIGINT/SIGTERM ends it.
    #[arg(value_parser = duration, long, env = "PGDRILL_LINGER", default_value = "0s")]
    pub linger: humantime::Duration,

    /// On SIGINT/SIGTERM or at the end, wait this long for in-flight transactions and
    /// pending verifications; a second SIGINT/SIGTERM cuts it short.
    #[arg(value_parser = duration, long, env = "PGDRILL_SHUTDOWN_GRACE", default_value = "10s")]
    pub shutdown_grace: humantime::Duration,

    /// No acknowledged write for this long, after a failure or with writes stalled, is an outage
    /// (never less than three schedule intervals).
    #[arg(value_parser = duration, long, env = "PGDRILL_OUTAGE_THRESHOLD", default_value = "20ms")]
    pub outage_threshold: humantime::Duration,

    /// After an outage, check that writes acknowledged in this window before it survived.
    #[arg(value_parser = duration, long, env = "PGDRILL_VERIFY_WINDOW", default_value = "30s")]
    pub verify_window: humantime::Duration,

    /// How the INSERT is sent: prepared (fastest), unnamed (PgBouncer transaction mode safe),
    /// simple; auto picks unnamed when a port is 6432 (PgBouncer's), else prepared, and
    /// switches to unnamed if prepared statements break (SQLSTATE 26000/42P05) at run time.
    #[arg(long, env = "PGDRILL_QUERY_MODE", value_enum, default_value_t = QueryModeArg::Auto)]
    pub query_mode: QueryModeArg,

    #[command(flatten)]
    pub password: PasswordArgs,

    /// Delete this run's rows older than this from the table, continuously, in small batches
    /// (for long-running canaries; off by default so drills keep every row); other pgdrill
    /// runs' rows only once also a day old (another pgdrill may still read them back).
    #[arg(value_parser = duration, long, env = "PGDRILL_RETENTION")]
    pub retention: Option<humantime::Duration>,

    /// Rows deleted per retention batch (one short transaction each) [default: 5000].
    #[arg(long, env = "PGDRILL_RETENTION_BATCH_SIZE")]
    pub retention_batch_size: Option<u32>,

    /// Runtime threads for the load and /metrics, 0 to 256 (0: one per core); 1 runs
    /// everything on one thread [default: 1; the database, not the client, should be what
    /// limits the rate].
    #[arg(long, env = "PGDRILL_WORKER_THREADS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(0..=256))]
    pub worker_threads: u16,

    /// Log format.
    #[arg(long, env = "PGDRILL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter in RUST_LOG syntax (e.g. info,pgdrill=debug).
    #[arg(long, env = "RUST_LOG", default_value = "info,tokio_postgres=warn")]
    pub log_filter: String,

    /// Drills as code: the failover trigger and the objectives (docs/drills.md).
    #[command(flatten)]
    pub drill: DrillArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueryModeArg {
    Auto,
    Prepared,
    Unnamed,
    Simple,
}

#[cfg(feature = "lab")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoFailover {
    /// Primary stopped with -m immediate, standby promoted 0.2 s later.
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

#[cfg(feature = "lab")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoReplication {
    Sync,
    Async,
}

#[cfg(feature = "lab")]
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Replication between the lab's primary and standby.
    #[arg(long, value_enum, default_value_t = DemoReplication::Sync)]
    pub replication: DemoReplication,
    /// How the primary goes away.
    #[arg(long, value_enum, default_value_t = DemoFailover::Forced)]
    pub failover: DemoFailover,
    /// Load before the failover.
    #[arg(value_parser = duration, long, default_value = "5s")]
    pub failover_after: humantime::Duration,
    /// Load after the failover.
    #[arg(value_parser = duration, long, default_value = "10s")]
    pub run_after: humantime::Duration,
    /// Frozen and dns modes: time from the freeze to the promotion (the HA service's
    /// failure detection).
    #[arg(value_parser = duration, long, default_value = "2s")]
    pub promote_after: humantime::Duration,
    /// Frozen-back mode: how long the primary stays frozen.
    #[arg(value_parser = duration, long, default_value = "10s")]
    pub thaw_after: humantime::Duration,
    /// Target transactions per second.
    #[arg(long, default_value_t = 1000.0, value_parser = rate_value)]
    pub rate: f64,
    /// The drill's objective: longest acceptable write unavailability (as for pgdrill runs).
    #[arg(value_parser = duration, long, default_value = "120s")]
    pub rto_objective: humantime::Duration,
    /// The drill's objective: most acknowledged writes that may be lost.
    #[arg(long, default_value_t = 0)]
    pub rpo_objective: u64,
    /// Address for /metrics while the demo runs.
    #[arg(long, value_parser = listen_addr,
          default_value_t = SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)))]
    pub listen: SocketAddr,
    /// Also write the drill report as JSON to this file.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
    /// Write the drill report (HTML) here.
    #[arg(long, default_value = "pgdrill-demo-report.html")]
    pub report: PathBuf,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("scope").required(true).args(["run_id", "all_runs", "drop_table"]))]
pub struct CleanupArgs {
    /// libpq connection string, as for a run (PG* environment variables fill unset parts).
    #[arg(long, env = "PGDRILL_DSN", hide_env_values = true)]
    pub dsn: Option<String>,
    /// The table pgdrill wrote to.
    #[arg(long, env = "PGDRILL_TABLE", default_value = crate::db::table::DEFAULT_TABLE)]
    pub table: String,
    /// Delete the rows of this run (the run id the summary and the startup log show).
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    pub run_id: Option<i64>,
    /// Delete the rows of every pgdrill run (rows with a run_id; no other row).
    #[arg(long)]
    pub all_runs: bool,
    /// Drop the table, if pgdrill created it (refused for any other table).
    #[arg(long)]
    pub drop_table: bool,
    /// Give up connecting after this long. Wins over connect_timeout in the DSN and
    /// PGCONNECT_TIMEOUT [default: 10s].
    #[arg(value_parser = duration, long, env = "PGDRILL_CONNECT_TIMEOUT")]
    pub connect_timeout: Option<humantime::Duration>,
    #[command(flatten)]
    pub password: PasswordArgs,
}

/// Where the password comes from when not from the DSN, PGPASSWORD or the password file.
#[derive(Debug, Clone, Args)]
pub struct PasswordArgs {
    /// Read the password from this file for every new connection (rotated secrets);
    /// overrides the DSN's and PGPASSWORD. The first non-empty line is used.
    #[arg(long, env = "PGDRILL_PASSWORD_FILE")]
    #[arg(conflicts_with = "password_command")]
    pub password_file: Option<PathBuf>,

    /// Run this command to obtain the password (e.g. an Entra ID token:
    /// `az account get-access-token --resource-type oss-rdbms --query accessToken -o tsv`);
    /// split into words like a shell would but run without one (write `sh -c '…'` for pipes);
    /// cached for --password-ttl and re-run after an authentication failure. Never logged.
    #[arg(long, env = "PGDRILL_PASSWORD_COMMAND", hide_env_values = true)]
    pub password_command: Option<String>,

    /// Re-run --password-command once its output is this old (Entra tokens last 60-90
    /// minutes) [default: 15m].
    #[arg(value_parser = duration, long, env = "PGDRILL_PASSWORD_TTL")]
    pub password_ttl: Option<humantime::Duration>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The summary JSON of a run (`--summary-json`); several: the summaries of one drill
    /// run by several processes (`--drill-id`), merged into one report.
    #[arg(required = true, num_args = 1..)]
    pub summaries: Vec<PathBuf>,
    /// The HTML file to write.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Also write the merged figures and the verdict as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[cfg(feature = "lab")]
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Address to accept connections on.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Address to forward to.
    #[arg(long)]
    pub upstream: SocketAddr,
    /// One-way delay added in each direction (round trip grows by twice this).
    #[arg(value_parser = duration, long, default_value = "25ms")]
    pub delay: humantime::Duration,
}
