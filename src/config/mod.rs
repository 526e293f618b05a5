//! Command line and environment → a validated [`Config`] the rest of the code requires. Only the
//! top-level wiring (`lib.rs`) reads the whole `Config`; each part gets its own settings. Depends
//! on `db` (table name, query mode, TLS, password source, retention settings) and `telemetry` (log
//! format); nothing depends on it but the wiring.

mod cli;
pub(crate) mod drill;
pub(crate) mod dsn;
mod flags;
pub(crate) mod fleet;
mod pgpass;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use crate::db::table::Table;
pub use cli::*;
pub use drill::DrillConfig;
pub use flags::{as_run as flags_as_run, join_negative_values, usage_message, writable_file};

use crate::db::cleanup::Scope;
use crate::db::credentials::PasswordSource;
use crate::db::retention::RetentionSettings;
use crate::db::table::QueryMode;
use crate::db::table_check::{IdsNeeded, TablePolicy};
use crate::db::Target;
use crate::drill::plan::TriggerAction;
use crate::error::ConfigError;
use crate::telemetry::webconfig::WebConfig;

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
    /// How long a due transaction may wait in the backlog before it is skipped (with a
    /// rate): `--max-backlog` ÷ `--rate`, or 1 s by default, though the backlog holds at
    /// least 64 (so a canary's post-outage writes never include seconds of pgdrill's queue).
    pub backlog_span: Option<Duration>,
    /// The connect timeout in force, and where it came from: `--connect-timeout`, the DSN,
    /// `PGCONNECT_TIMEOUT` or the default, in that order.
    pub connect_timeout: Duration,
    pub connect_timeout_from: &'static str,
    pub statement_timeout: Duration,
    pub max_connection_lifetime: Duration,
    pub table: Table,
    /// What pgdrill may do to the table: create its own, alter one it did not create.
    pub table_policy: TablePolicy,
    /// Until the first acknowledged write: how long errors that can heal are retried.
    pub startup_timeout: Duration,
    pub query_mode: QueryMode,
    /// `--query-mode auto`: falls back from prepared to unnamed if prepared statements break.
    pub query_mode_auto: bool,
    pub listen: SocketAddr,
    /// `--web.config.file`: TLS and basic auth on the HTTP endpoints.
    pub web: Option<Arc<WebConfig>>,
    pub progress_interval: Duration,
    pub summary_json: Option<PathBuf>,
    /// `--report`: checked writable at start.
    pub report: Option<PathBuf>,
    pub shutdown_grace: Duration,
    /// `--linger`: /metrics stays up this long after a run that ended by itself (a crash after the
    /// first write included; a wrong target, or a crash of /metrics itself, exits at once).
    pub linger: Duration,
    pub outage_threshold: Duration,
    pub verify_window: Duration,
    pub log_format: LogFormat,
    pub log_filter: String,
    pub password: PasswordSource,
    pub retention: Option<RetentionSettings>,
    /// The failover trigger (none: a canary run) and the objectives of the verdict.
    pub drill: DrillConfig,
}

/// A duration as the flags spell it (`1m 30s`), for error messages.
fn text(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A flag given without the one whose setting it is (`--failover-timeout` without
/// `--failover-command`): refused, not ignored.
fn needs(
    flag: &'static str,
    value: Option<impl std::fmt::Display>,
    of: &str,
) -> Result<(), ConfigError> {
    let why = format!("is a setting of {of}, which is not given");
    value.map_or(Ok(()), |v| Err(ConfigError::new(flag, v, why)))
}

fn positive(option: &'static str, d: humantime::Duration) -> Result<Duration, ConfigError> {
    let d: Duration = d.into();
    if d.is_zero() {
        return Err(ConfigError::new(option, "0s", "must be greater than zero"));
    }
    Ok(d)
}

/// `d`, unless shorter than `min` (`why` says what would go wrong).
fn at_least(
    option: &'static str,
    d: impl Into<Duration>,
    min: Duration,
    why: &str,
) -> Result<Duration, ConfigError> {
    let d: Duration = d.into();
    if d < min {
        let reason = format!("must be at least {}{why}", text(min));
        return Err(ConfigError::new(option, text(d), reason));
    }
    Ok(d)
}

/// Whether two paths name one file: the same inode when both exist (a symbolic or hard link),
/// else the same place once symbolic links and directories are resolved (`./x`, `out/../x`, a
/// link to a file not yet written).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let inode = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    if let (Some(a), Some(b)) = (inode(a), inode(b)) {
        return a == b;
    }
    let resolved = |p: &Path| {
        // A few links deep: a loop ends here, and the kernel would refuse it anyway.
        let (p, dir) = follow_links(p, 8);
        Some(dir.canonicalize().ok()?.join(p.file_name()?))
    };
    a == b || matches!((resolved(a), resolved(b)), (Some(a), Some(b)) if a == b)
}

/// `path` with up to `max` symbolic links followed, and its directory (`.` for a bare name).
fn follow_links(path: &Path, max: usize) -> (PathBuf, PathBuf) {
    let mut p = path.to_path_buf();
    for _ in 0..max {
        let Ok(next) = std::fs::read_link(&p) else {
            break;
        };
        p = p.parent().map_or(next.clone(), |dir| dir.join(&next));
    }
    let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new(".")).to_path_buf();
    (p, dir)
}

const DEFAULT_RETENTION_BATCH_SIZE: u32 = 5000;
const DEFAULT_PASSWORD_TTL: Duration = Duration::from_secs(15 * 60);
/// The longest `--verify-window`: 36,000 ledger slices, a few MB even while held.
const MAX_VERIFY_WINDOW: Duration = Duration::from_secs(3600);

/// The slowest `--rate` other than 0 (unlimited).
const MIN_RATE: f64 = 0.001;

/// The most due transactions that may queue (`--max-backlog`): a second at the highest rate.
const MAX_BACKLOG: usize = 1_000_000;

/// The longest duration a flag takes (100 years of 365.25 days, humantime's): adding more
/// to a clock would overflow it.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(3_155_760_000);

/// A duration flag's value (humantime: `5s`, `2m`, `1h 30m`), at most [`MAX_DURATION`].
/// `-5s` reaches it joined to its flag ([`join_negative_values`]).
pub(crate) fn duration(value: &str) -> Result<humantime::Duration, String> {
    if value.trim_start().starts_with('-') {
        return Err("a duration cannot be negative".to_string());
    }
    let d: humantime::Duration = value.parse().map_err(|e| format!("{e}"))?;
    if *d > MAX_DURATION {
        return Err("must be at most 100 years".to_string());
    }
    Ok(d)
}

/// A `--rate`: a number whose digits say 0 is 0 (`1e-400` reads as 0.0, which would be
/// unlimited), not negative (`-0`).
pub(crate) fn rate_value(value: &str) -> Result<f64, String> {
    let rate: f64 = value.trim().parse().map_err(|e| format!("{e}"))?;
    let mantissa = value.split(['e', 'E']).next().unwrap_or_default();
    let zero_written = !mantissa.contains(|c: char| ('1'..='9').contains(&c));
    if rate == 0.0 && !zero_written {
        return Err("below 0.001/s (one write in 1,000 s); 0 means unlimited".into());
    }
    if rate.is_sign_negative() {
        return Err("must be 0 (unlimited) or more transactions per second".into());
    }
    Ok(rate)
}

/// The ids a run takes from a shared table's sequence: `--rate` × `--duration`, or a day's for
/// a canary; unknown at an unlimited rate.
fn ids_needed(rate: Option<f64>, duration: Option<Duration>) -> Option<IdsNeeded> {
    let per_second = rate?;
    Some(match duration {
        Some(d) => IdsNeeded::Run((per_second * d.as_secs_f64()).ceil() as u64),
        None => IdsNeeded::PerDay((per_second * 86_400.0).ceil() as u64),
    })
}

/// `--connect-timeout`, else the DSN's or PGCONNECT_TIMEOUT, else `default`; and its source.
fn connect_timeout(
    flag: Option<humantime::Duration>,
    target: &mut Target,
    default: Duration,
) -> Result<(Duration, &'static str), ConfigError> {
    Ok(match (flag, target.connect_timeout_forever.take()) {
        (Some(flag), _) => {
            let why = ": no connection is set up faster, and every one would time out";
            let flag = at_least("--connect-timeout", flag, Duration::from_millis(100), why)?;
            (flag, "--connect-timeout")
        }
        (None, Some(forever)) => return Err(forever),
        (None, None) => match (target.pg.get_connect_timeout(), target.connect_timeout_from) {
            (Some(t), Some(from)) if !t.is_zero() => (*t, from),
            _ => (default, "default"),
        },
    })
}

/// An address to listen on: `IP:PORT`, `:PORT` (every interface, as Prometheus exporters
/// take it) or `HOST:PORT` (its first address).
pub(crate) fn listen_addr(value: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    if value.matches(':').count() > 1 && !value.starts_with('[') {
        return Err("an IPv6 address goes in brackets: [::1]:9743, [::]:9743".into());
    }
    if let Some(port) = value.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| "a port is 0 to 65535")?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    std::net::ToSocketAddrs::to_socket_addrs(value)
        .map_err(|e| format!("expected IP:PORT, :PORT or HOST:PORT ({e})"))?
        .next()
        .ok_or_else(|| format!("{value} has no address"))
}

/// `value`, if it is between 1 and `max`.
fn between<T: Copy + Ord + From<u8> + std::fmt::Display>(
    option: &'static str,
    value: T,
    max: T,
) -> Result<T, ConfigError> {
    if value < T::from(1) || value > max {
        let reason = format!("must be between 1 and {max}");
        return Err(ConfigError::new(option, value, reason));
    }
    Ok(value)
}

impl RunArgs {
    /// Checks every flag against the others and the environment, once.
    pub fn validate(&self, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let rate = self.rate()?;
        let pool_size = self.pool_size(rate)?;
        between("--pipeline-depth", self.pipeline_depth, 1024)?;
        // The queue takes its whole capacity up front.
        let max_backlog = match self.max_backlog {
            Some(n) => between("--max-backlog", n, MAX_BACKLOG)?,
            None => rate.map_or(64, |r| (r.ceil() as usize).max(64)),
        };
        // A log line more often than once a second would flood the log, not inform.
        let second = Duration::from_secs(1);
        let duration = self
            .duration
            .map(|d| at_least("--duration", d, second, ""))
            .transpose()?;
        let outage_threshold = positive("--outage-threshold", self.outage_threshold)?;
        let mut target = dsn::parse(self.dsn.as_deref(), env)?;
        let query_mode = self.query_mode(&target);
        let password = self.password.source(&mut target)?;
        let retention = self.retention()?;
        let drill = self.drill.validate(duration)?;
        let table = Table::parse(&self.table)?;
        let (connect_timeout, connect_timeout_from) =
            connect_timeout(self.connect_timeout, &mut target, Duration::from_secs(2))?;
        let json = self.summary_json.as_deref();
        let config = Config {
            drill,
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
            backlog_span: rate.map(|r| match self.max_backlog {
                Some(n) => Duration::from_secs_f64(n as f64 / r),
                None => Duration::from_secs(1),
            }),
            connect_timeout,
            connect_timeout_from,
            statement_timeout: self.statement_timeout()?,
            max_connection_lifetime: at_least(
                "--max-connection-lifetime",
                self.max_connection_lifetime,
                second,
                ": shorter, nearly every write would wait for a new connection",
            )?,
            table_policy: TablePolicy {
                create: !self.no_create_table,
                alter: self.alter_table,
                triggers: self.allow_table_triggers,
                named: !table.is_default(),
                deletes: retention.is_some(),
                ids_needed: ids_needed(rate, duration),
            },
            table,
            startup_timeout: at_least(
                "--startup-timeout",
                self.startup_timeout,
                second,
                ": the time to connect and check the table",
            )?,
            listen: self.listen,
            web: self
                .web_config_file
                .as_deref()
                .map(WebConfig::load)
                .transpose()?
                .map(Arc::new),
            progress_interval: at_least("--progress-interval", self.progress_interval, second, "")?,
            summary_json: match &self.summary_json {
                Some(path) if path.as_os_str() != "-" => {
                    Some(writable_file("--summary-json", path)?)
                }
                stdout_or_none => stdout_or_none.clone(),
            },
            report: match &self.report {
                Some(path)
                    if path.as_os_str() != "-" && json.is_some_and(|j| same_file(j, path)) =>
                {
                    let why = "is also --summary-json's file: the page would overwrite the summary";
                    return Err(ConfigError::new("--report", path.display(), why));
                }
                Some(path) => Some(writable_file("--report", path)?),
                None => None,
            },
            shutdown_grace: self.shutdown_grace.into(),
            linger: self.linger.into(),
            outage_threshold,
            verify_window: match positive("--verify-window", self.verify_window)? {
                d if d > MAX_VERIFY_WINDOW => {
                    let reason = format!(
                        "must be at most {}: the ledger keeps the window's acknowledged writes \
                         in memory, and a verification reads them all back",
                        text(MAX_VERIFY_WINDOW)
                    );
                    return Err(ConfigError::new("--verify-window", text(d), reason));
                }
                d => d,
            },
            log_format: self.log_format,
            log_filter: self.log_filter.clone(),
        };
        config.objective_seen()?;
        Ok(config)
    }

    /// `None` = unlimited.
    fn rate(&self) -> Result<Option<f64>, ConfigError> {
        let reason = if !self.rate.is_finite() || self.rate < 0.0 {
            "must be a finite number of transactions per second, 0 (unlimited) or more"
        } else if self.rate > 0.0 && self.rate < MIN_RATE {
            "below 0.001/s (one write in 1,000 s) is too slow to watch a database with"
        } else if self.rate > 1_000_000.0 {
            "above 1,000,000/s is beyond what one process can schedule"
        } else {
            return Ok((self.rate > 0.0).then_some(self.rate));
        };
        Err(ConfigError::new("--rate", self.rate, reason))
    }

    /// Sent as `SET statement_timeout` in whole milliseconds, which the server keeps in
    /// an int: 0 would turn the limit off, and above `i32::MAX` no connection sets up.
    fn statement_timeout(&self) -> Result<Duration, ConfigError> {
        let d: Duration = self.statement_timeout.into();
        let max = Duration::from_millis(i32::MAX as u64);
        if d < Duration::from_millis(1) || d > max {
            let reason = format!(
                "must be between 1ms and {} (PostgreSQL's limit: 2147483647 ms)",
                text(max)
            );
            return Err(ConfigError::new("--statement-timeout", text(d), reason));
        }
        Ok(d)
    }

    /// Unset: one connection per 250/s (a loopback INSERT takes ~4 ms under load), clamped
    /// to 4..=64; 32 at --rate 0. Pipelining does not shrink the pool: it is what carries the
    /// rate over a slow link (32 connections x depth 16 = 512 in flight = 64 ms at 8000/s),
    /// while on a fast link the connections share the load and keep their pipelines short.
    fn pool_size(&self, rate: Option<f64>) -> Result<u32, ConfigError> {
        match self.pool_size {
            Some(n) if n > 10_000 => {
                let why = "more than 10000 connections is not a sensible pool";
                Err(ConfigError::new("--pool-size", n, why))
            }
            Some(n) => Ok(n),
            None => Ok(rate.map_or(32, |r| ((r / 250.0).ceil() as u32).clamp(4, 64))),
        }
    }

    fn query_mode(&self, target: &Target) -> QueryMode {
        match self.query_mode {
            QueryModeArg::Prepared => QueryMode::Prepared,
            QueryModeArg::Unnamed => QueryMode::Unnamed,
            QueryModeArg::Simple => QueryMode::Simple,
            // Named prepared statements break behind PgBouncer in transaction mode.
            QueryModeArg::Auto if target.pg.get_ports().contains(&dsn::PGBOUNCER_PORT) => {
                QueryMode::Unnamed
            }
            QueryModeArg::Auto => QueryMode::Prepared,
        }
    }

    fn retention(&self) -> Result<Option<RetentionSettings>, ConfigError> {
        let Some(window) = self.retention else {
            needs(
                "--retention-batch-size",
                self.retention_batch_size,
                "--retention",
            )?;
            return Ok(None);
        };
        let window = positive("--retention", window)?;
        let verify: Duration = self.verify_window.into();
        if window <= verify {
            let why = format!(
                "must be longer than --verify-window ({}), or verification would count \
                 deleted rows as lost writes",
                text(verify)
            );
            return Err(ConfigError::new("--retention", text(window), why));
        }
        let batch_size = between(
            "--retention-batch-size",
            self.retention_batch_size
                .unwrap_or(DEFAULT_RETENTION_BATCH_SIZE),
            1_000_000,
        )?;
        Ok(Some(RetentionSettings {
            fired_allowed: self.allow_table_triggers,
            ..RetentionSettings::new(window, batch_size)
        }))
    }
}

/// `pgdrill cleanup`, validated.
#[derive(Debug, Clone)]
pub struct CleanupConfig {
    pub target: Target,
    pub password: PasswordSource,
    pub table: Table,
    pub scope: Scope,
    pub connect_timeout: Duration,
}

impl ReportArgs {
    /// The files it writes: writable, and none overwriting the other or a summary it reads.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let json = self.json.iter().map(|j| ("--json", j));
        for (flag, path) in std::iter::once(("--output", &self.output)).chain(json) {
            writable_file(flag, path)?;
            if self.summaries.iter().any(|s| same_file(s, path)) {
                let why = "is also a SUMMARY it reads: writing would overwrite it";
                return Err(ConfigError::new(flag, path.display(), why));
            }
        }
        if let Some(json) = self.json.as_ref().filter(|j| same_file(j, &self.output)) {
            let why = "is also --output's file: the JSON would overwrite the page";
            return Err(ConfigError::new("--json", json.display(), why));
        }
        Ok(())
    }
}

impl PasswordArgs {
    /// The password's source, validated; the DSN's takes the password file as libpq does.
    fn source(&self, target: &mut Target) -> Result<PasswordSource, ConfigError> {
        let unsplit = "cannot be split into words: unbalanced quotes or a trailing backslash";
        let source = match (&self.password_file, &self.password_command) {
            (Some(path), _) => PasswordSource::File(path.clone()),
            (None, Some(command)) => PasswordSource::Command {
                // The value is not echoed: it is a command line, which may hold a secret; the
                // secrets in it are remembered, in case the command prints one.
                argv: shlex::split(command)
                    .inspect(|_| crate::secrets::remember_in_command(command))
                    .ok_or_else(|| {
                        ConfigError::new("--password-command", "(not shown)", unsplit)
                    })?,
                ttl: self
                    .password_ttl
                    .map_or(DEFAULT_PASSWORD_TTL, Duration::from),
            },
            (None, None) => {
                needs("--password-ttl", self.password_ttl, "--password-command")?;
                PasswordSource::Dsn
            }
        }
        .validate()?;
        if matches!(source, PasswordSource::Dsn) {
            target.use_password_file();
        }
        Ok(source)
    }
}

impl CleanupArgs {
    pub fn validate(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<CleanupConfig, ConfigError> {
        let scope = match (self.run_id, self.all_runs, self.drop_table) {
            (Some(id), _, _) => Scope::Run(id),
            (None, true, _) => Scope::AllRuns,
            _ => Scope::DropTable,
        };
        let mut target = dsn::parse(self.dsn.as_deref(), env)?;
        let password = self.password.source(&mut target)?;
        password.check_program()?;
        let ten = Duration::from_secs(10);
        let (connect_timeout, _) = connect_timeout(self.connect_timeout, &mut target, ten)?;
        Ok(CleanupConfig {
            password,
            target,
            table: Table::parse(&self.table)?,
            scope,
            connect_timeout,
        })
    }
}

impl Config {
    /// Three schedule intervals: less silence than that is the schedule, not an outage.
    fn three_intervals(&self) -> Duration {
        self.rate
            .map_or(Duration::ZERO, |r| Duration::from_secs_f64(3.0 / r))
    }

    /// The failover and password commands' programs can be run now (`pgdrill demo`'s
    /// in-process trigger needs none): a typo found when one is due would cost the run.
    pub fn check_programs(&self) -> Result<(), ConfigError> {
        self.password.check_program()?;
        (self.drill.trigger.as_ref()).map_or(Ok(()), |t| t.action.check_program())
    }

    /// An outage as long as the RTO objective must count as one: with a longer threshold,
    /// one between the two would pass the objective unseen.
    fn objective_seen(&self) -> Result<(), ConfigError> {
        let (rto, shortest) = (self.drill.objectives.rto, self.effective_outage_threshold());
        if shortest <= rto {
            return Ok(());
        }
        let (flag, value, fix) = match self.outage_threshold >= self.three_intervals() {
            true => (
                "--outage-threshold",
                text(shortest),
                "lower --outage-threshold",
            ),
            false => {
                let value = self.rate.map_or_else(String::new, |r| r.to_string());
                ("--rate", value, "raise --rate (three schedule intervals)")
            }
        };
        let (shortest, rto) = (text(shortest), text(rto));
        let reason = format!(
            "the shortest outage pgdrill counts ({shortest}) is longer than --rto-objective \
             ({rto}): an outage between the two would pass unseen; {fix}, or raise --rto-objective"
        );
        Err(ConfigError::new(flag, value, reason))
    }

    /// The shortest silence that can count as an outage at this rate.
    pub fn effective_outage_threshold(&self) -> Duration {
        self.outage_threshold.max(self.three_intervals())
    }

    /// Said at start: allowed, but likely to spoil the drill. A run ending less than the RTO
    /// objective after its last trigger cannot see a failover end within it (INVALID).
    pub fn caution(&self) -> Option<String> {
        let trigger = self.drill.trigger.as_ref()?;
        // The demo's lab fails over in a fraction of a second, and it has no --duration.
        let in_process = matches!(trigger.action, TriggerAction::InProcess(_));
        let duration = self.duration.filter(|_| !in_process)?;
        let left = duration.saturating_sub(trigger.schedule.last());
        let rto = self.drill.objectives.rto;
        (left < rto).then(|| {
            let (duration, left, rto) = (text(duration), text(left), text(rto));
            format!(
                "--duration ({duration}) leaves {left} after the last failover trigger, less \
                 than --rto-objective ({rto}): a failover slower than that is still under way \
                 when the run ends, and the drill is INVALID; lengthen --duration"
            )
        })
    }

    /// Writes in flight with no acknowledgement and no failure for this long are
    /// an outage too: a second, or three schedule intervals at low rates.
    pub fn stall_threshold(&self) -> Duration {
        self.effective_outage_threshold()
            .max(Duration::from_secs(1))
    }
}

#[cfg(test)]
pub(crate) mod tests;
