//! Connecting with libpq's `connect_timeout` semantics: TCP, TLS, startup, authentication
//! and identity probe together are bounded per address (tokio-postgres bounds only TCP, so a
//! frozen VM whose kernel completes the handshake would hold a connect forever).
//!
//! Every host, `hostaddr` and resolved address (looked up per connection, to follow a DNS
//! switch-over) is an [`Endpoint`] with its own state: pending attempts are raced by another
//! every [`STAGGER`] (`race`); fast failures back off ([`BACKOFF`]), slow ones are retried at
//! once; quiet connections get their server checked ([`Silence::suspect`]).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use futures_util::future::Either;
use rand::Rng;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_postgres::config::{Host, LoadBalanceHosts};
use tokio_postgres::{Client, Config, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDrop, TaskTracker};

use self::endpoint::{Unanswered, Watch};
use crate::db::identity::Identity;
use crate::error::ErrorClass;
use crate::retry::Backoff;
use crate::telemetry::metrics::Metrics;

/// Writes unanswered this long start a liveness check of their server. Short, so that a
/// frozen primary is left within the `promote + connect timeout + 0.5 s` bound.
pub const SUSPECT_AFTER: Duration = Duration::from_millis(500);

/// TCP keepalive unless the DSN sets its own: an idle dead peer is reported within 8 s.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_RETRIES: u32 = 3;
/// TCP_USER_TIMEOUT unless the DSN sets one: a backstop for partitions (the liveness check
/// is faster, and works on loopback, where the kernel acknowledges for a frozen process).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

/// After a fast failure: the backoff outlasts an outage by a fraction of a second at most.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(25), Duration::from_millis(100));
/// While attempts are pending, another starts this often (a fresh client's cadence); an
/// attempt failing after longer failed slowly: no backoff.
pub const STAGGER: Duration = Duration::from_millis(100);
/// Parallel attempts per endpoint: three connect timeouts' worth, at most this (one ran out
/// behind a proxy still routing to a hung node while a fresh client already wrote).
const MAX_PENDING: u32 = 64;
/// The least time between attempts on one endpoint while others are pending: the races of
/// several connects start at most ~30 a second, as three fresh clients would.
const MIN_SPACING: Duration = Duration::from_millis(33);
/// Parallel attempts on an endpoint found silent. A thawed host takes them all from its
/// backlog at once: with 20 the first write came 0.11-0.14 s after the thaw (3: within 0.1 s).
const SILENT_MAX_PENDING: u32 = 3;
/// A host that answers but takes no writes yet (a standby): a promotion is seen quickly.
const BACKOFF_ANSWERING: Backoff =
    Backoff::new(Duration::from_millis(25), Duration::from_millis(50));
/// tokio-postgres's default keepalive idle time: "the DSN did not set one".
const DEFAULT_KEEPALIVES_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf, u16),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(addr) => write!(f, "{addr}"),
            Endpoint::Unix(dir, port) => write!(f, "{}/.s.PGSQL.{port}", dir.display()),
        }
    }
}

/// One `host` / `hostaddr` / `port` entry of the DSN.
struct HostEntry {
    host: Option<Host>,
    hostaddr: Option<IpAddr>,
    port: u16,
}

struct EndpointState {
    /// Consecutive failed attempts; 0 = healthy.
    failures: u32,
    retry_at: Instant,
    pending: u32,
    last_start: Option<Instant>,
    last_error: Option<(ErrorClass, String)>,
    /// Cancelled when the server is found silent; connections made before hold a clone.
    silent: Watch,
    /// The server those connections reached, and when one last did.
    silent_server: Option<Arc<Identity>>,
    reached_at: Option<Instant>,
    check_running: bool,
    /// The last liveness check that the server answered.
    answered_at: Option<Instant>,
    /// A liveness check found the server silent: fewer attempts at once.
    declared_silent: bool,
}

/// A failed connection attempt, classified; the message never contains a password.
#[derive(Debug, thiserror::Error)]
#[error("{class}: {message}")]
pub struct ConnectError {
    pub class: ErrorClass,
    pub message: String,
    #[source]
    pub source: Option<tokio_postgres::Error>,
}

impl ConnectError {
    fn new(class: ErrorClass, message: impl Into<String>) -> ConnectError {
        ConnectError {
            class,
            message: message.into(),
            source: None,
        }
    }
}

pub struct Connector {
    entries: Vec<HostEntry>,
    /// All but hosts, ports and addresses.
    base: Config,
    /// `options` with the statement timeout, sent unless a pooler refused it.
    options: String,
    startup_option_refused: AtomicBool,
    timeout: Duration,
    /// `load_balance_hosts=random`.
    random: bool,
    tls: MakeRustlsConnect,
    metrics: Arc<Metrics>,
    endpoints: Mutex<HashMap<Endpoint, EndpointState>>,
    max_pending: u32,
    /// Notified whenever an attempt ends.
    changed: tokio::sync::Notify,
    /// Connections made by attempts that outlived their race, for the next connect.
    spares: Mutex<Vec<Conn>>,
    spare_added: tokio::sync::Notify,
    /// The load is over ([`Manager::close`]): connections are closed, not kept.
    closed: AtomicBool,
    lookups: resolve::Lookups,
    /// Cancel requests sent on their own tasks, which the pool's close waits for.
    cancels: TaskTracker,
}

/// A pooler that takes no startup options: PgBouncer before 1.20 unless told to ignore them,
/// and from 1.20 any setting it does not track (SQLSTATE 08P01 either way).
fn refuses_startup_option(err: &tokio_postgres::Error) -> bool {
    err.as_db_error().is_some_and(|e| {
        *e.code() == tokio_postgres::error::SqlState::PROTOCOL_VIOLATION
            && e.message().contains("startup parameter")
    })
}

const MAX_SPARES: usize = 16;

/// Past this many endpoints (names can resolve to ever new addresses), idle ones are
/// forgotten if healthy or not tried for [`FORGOTTEN_AFTER`]; else the one tried longest ago.
const MAX_ENDPOINTS: usize = 256;
const FORGOTTEN_AFTER: Duration = Duration::from_secs(600);

impl Connector {
    /// `statement_timeout` goes in the startup packet, not a `SET`: through a
    /// transaction-mode pooler a `SET` stays on a server connection other clients get next.
    pub fn new(
        pg: &Config,
        tls: MakeRustlsConnect,
        metrics: Arc<Metrics>,
        statement_timeout: Duration,
    ) -> Arc<Connector> {
        let hosts = pg.get_hosts();
        let addrs = pg.get_hostaddrs();
        let ports = pg.get_ports();
        let entries = (0..hosts.len().max(addrs.len()))
            .map(|i| HostEntry {
                host: hosts.get(i).cloned(),
                hostaddr: addrs.get(i).copied(),
                // libpq: one port for all hosts, or one per host.
                port: ports.get(i).or(ports.first()).copied().unwrap_or(5432),
            })
            .collect();
        let mut base = Config::new();
        // Each setting that is set, copied (hosts and ports are `resolve`'s).
        macro_rules! copy {
            ($($get:ident => $set:ident),*) => {$(if let Some(v) = pg.$get() { base.$set(v); })*};
        }
        copy!(get_user => user, get_password => password, get_dbname => dbname,
              get_options => options, get_application_name => application_name);
        base.ssl_mode(pg.get_ssl_mode())
            .ssl_negotiation(pg.get_ssl_negotiation())
            .channel_binding(pg.get_channel_binding())
            .target_session_attrs(pg.get_target_session_attrs())
            .keepalives(pg.get_keepalives());
        if pg.get_keepalives_idle() == DEFAULT_KEEPALIVES_IDLE {
            base.keepalives_idle(KEEPALIVE_IDLE)
                .keepalives_interval(KEEPALIVE_INTERVAL)
                .keepalives_retries(KEEPALIVE_RETRIES);
        } else {
            base.keepalives_idle(pg.get_keepalives_idle());
            copy!(get_keepalives_interval => keepalives_interval,
                  get_keepalives_retries => keepalives_retries);
        }
        base.tcp_user_timeout(*pg.get_tcp_user_timeout().unwrap_or(&TCP_USER_TIMEOUT));
        let timeout = *pg.get_connect_timeout().unwrap_or(&Duration::from_secs(2));
        base.connect_timeout(timeout);
        let ours = format!("-c statement_timeout={}", statement_timeout.as_millis());
        Arc::new(Connector {
            entries,
            base,
            options: match pg.get_options() {
                Some(theirs) => format!("{theirs} {ours}"),
                None => ours,
            },
            startup_option_refused: AtomicBool::new(false),
            timeout,
            random: pg.get_load_balance_hosts() == LoadBalanceHosts::Random,
            tls,
            metrics,
            endpoints: Mutex::new(HashMap::new()),
            max_pending: (3 * timeout.as_millis() / STAGGER.as_millis() + 1)
                .clamp(2, MAX_PENDING as u128) as u32,
            changed: tokio::sync::Notify::new(),
            spares: Mutex::new(Vec::new()),
            spare_added: tokio::sync::Notify::new(),
            closed: AtomicBool::new(false),
            cancels: TaskTracker::new(),
            lookups: resolve::Lookups::default(),
        })
    }

    /// Shuffled per connection with `load_balance_hosts=random`, as libpq does.
    fn balance<T>(&self, v: &mut [T]) {
        if self.random {
            use rand::seq::SliceRandom;
            v.shuffle(&mut rand::rng());
        }
    }

    /// Tries the endpoints in DSN order (skipping those backing off) until one connects and
    /// passes the manager's setup.
    pub async fn connect(
        self: &Arc<Self>,
        password: Option<&str>,
        manager: &Manager,
    ) -> Result<Conn, ConnectError> {
        // All endpoints busy or backing off: wait (up to the connect timeout), so that a
        // failed connect always stands for a real attempt.
        let deadline = Instant::now() + self.timeout;
        loop {
            let mut changed = std::pin::pin!(self.changed.notified());
            changed.as_mut().enable();
            if let Some(conn) = self.take_spare() {
                return Ok(conn);
            }
            let mut last: Option<ConnectError> = None;
            let mut skipped: Option<ConnectError> = None;
            let mut entries: Vec<&HostEntry> = self.entries.iter().collect();
            self.balance(&mut entries);
            // All at once: a resolver slow for one name delays none of the others.
            let lookups = entries.iter().map(|entry| self.resolve(entry));
            let found = futures_util::future::join_all(lookups).await;
            let (found, unresolved): (Vec<_>, Vec<_>) = found.into_iter().partition(Result::is_ok);
            let mut candidates: Vec<_> = found.into_iter().flatten().flatten().collect();
            for message in unresolved.into_iter().filter_map(Result::err) {
                last = Some(manager.unresolved(message, !candidates.is_empty()));
            }
            if let Some(pw) = password {
                for (_, config) in &mut candidates {
                    config.password(pw);
                }
            }
            for (first, (endpoint, _)) in candidates.iter().enumerate() {
                if let Some(claim) = self.claim(endpoint, Some(&mut skipped)) {
                    match self.race(&candidates, first, claim, manager).await {
                        Ok(conn) => return Ok(conn),
                        Err(err) => last = Some(err),
                    }
                }
            }
            if let Some(err) = last {
                return Err(err);
            }
            let Some(skipped) = skipped else {
                let message = "no host in the connection string resolves to an address";
                return Err(ConnectError::new(ErrorClass::Dns, message));
            };
            if Instant::now() >= deadline {
                return Err(skipped);
            }
            let wake = self
                .next_retry(&candidates)
                .map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                _ = &mut changed => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// When one of `candidates` that is failing may take another attempt. Only those: an
    /// address a moved name left keeps a retry time long past, which would wake at once.
    fn next_retry(&self, candidates: &[(Endpoint, Config)]) -> Option<Instant> {
        let endpoints = self.endpoints.lock();
        (candidates.iter())
            .filter_map(|(endpoint, _)| endpoints.get(endpoint))
            .filter(|s| s.failures > 0 && s.pending < s.cap(self.max_pending))
            .map(EndpointState::ready_at)
            .min()
    }

    /// One endpoint: connect, drive the connection, set it up, within the timeout.
    async fn attempt(
        &self,
        endpoint: &Endpoint,
        config: &Config,
        manager: &Manager,
        answered: &AtomicBool,
    ) -> Result<Option<(Client, Option<Statement>, AbortHandle, Identity)>, ConnectError> {
        self.metrics.connection_attempts.inc();
        let began = Instant::now();
        let deadline = began + self.timeout;
        let connected = tokio::time::timeout_at(deadline, async {
            let first = self.with_option(config);
            let carried = first.get_options() != config.get_options();
            match first.connect(self.tls.clone()).await {
                // Also for attempts that started before the first refusal.
                Err(e) if carried && refuses_startup_option(&e) => {
                    if !self.startup_option_refused.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            server = %endpoint,
                            "the server (a pooler) refuses startup options: connecting \
                             without the statement timeout; pgdrill's client timeout bounds \
                             each write"
                        );
                    }
                    config.connect(self.tls.clone()).await
                }
                connected => connected,
            }
        })
        .await;
        let connected = connected.map(|c| c.map_err(|e| manager.fail(Some(endpoint), e)));
        let (client, connection) = match connected {
            Ok(Ok(connected)) => connected,
            Ok(Err(err)) => return self.attempted(endpoint, began, Err(err)),
            Err(_) => {
                return self.attempted(endpoint, began, Err(self.timed_out(endpoint, manager)))
            }
        };
        // Aborted (closing the socket) unless the attempt succeeds.
        let driver = AbortOnDrop::new(tokio::spawn(connection).abort_handle());
        // The server answered: what follows may take as long as a write (see `setup_within`).
        let within = manager.setup_within(self.timeout);
        let (id, ready) = {
            let probe = Box::pin(tokio::time::timeout_at(deadline, manager.probe(&client)));
            // Once nothing is left to check first, the INSERT is prepared alongside the identity
            // probe: one round trip after connecting, as a fresh client's read-write check, not
            // two (each one more a fresh client would not wait for: 50 ms over a 25 ms link).
            let (probed, early) = if manager.prepares_early() {
                let ready = Box::pin(tokio::time::timeout(within, manager.ready(&client)));
                match futures_util::future::select(probe, ready).await {
                    Either::Left((probed, ready)) => (probed, Some(Either::Left(ready))),
                    Either::Right((prepared, probe)) => (
                        probe.await,
                        Some(Either::Right(std::future::ready(prepared))),
                    ),
                }
            } else {
                (probe.await, None)
            };
            let probed = probed.unwrap_or_else(|_| Err(self.timed_out(endpoint, manager)));
            let id = self.attempted(endpoint, began, probed)?;
            let another_answered = answered.swap(true, Ordering::Relaxed);
            let ready = match early {
                Some(ready) => ready.await,
                None => {
                    if another_answered && !manager.table_checked() {
                        // Another attempt of this connect reached a server first and checks the
                        // table on it: this one would hold a connection slot meanwhile (seconds,
                        // over a slow link). Dropped, its socket closes. Later, setting up takes
                        // no round trip of its own, and this one goes on: the first may still fail
                        // (a switchover ending its server).
                        return Ok(None);
                    }
                    let cancel =
                        || cancel::cancel(client.cancel_token(), endpoint, config, &self.tls);
                    manager
                        .table_ready(&client, within, Box::pin(cancel()))
                        .await?;
                    tokio::time::timeout(within, manager.ready(&client)).await
                }
            };
            (id, ready)
        };
        let Ok(insert) = ready else {
            // Its backend would wait on the setup (a lock on the table), holding a connection slot.
            // Open until the cancel is through: PgBouncer drops one whose client is gone.
            let cancel = cancel::cancel(client.cancel_token(), endpoint, config, &self.tls);
            tokio::spawn(async move {
                let _ = tokio::time::timeout(STAGGER * 10, cancel).await;
                drop((client, driver));
            });
            let within = humantime::format_duration(within);
            let message = format!(
                "{endpoint}: session not set up within {within} ({}; the table locked, or a \
                 slow link?)",
                manager::SETUP_BOUND
            );
            return Err(manager.failed(ErrorClass::StatementTimeout, message, None));
        };
        let insert = insert?;
        manager.identity.observe(&id);
        Ok(Some((client, insert, driver.detach(), id)))
    }

    /// The attempt's outcome up to the identity probe, logged at debug level.
    fn attempted<T>(
        &self,
        endpoint: &Endpoint,
        began: Instant,
        result: Result<T, ConnectError>,
    ) -> Result<T, ConnectError> {
        tracing::debug!(
            server = %endpoint,
            ms = began.elapsed().as_millis() as u64,
            result = match &result {
                Ok(_) => "connected",
                Err(err) => err.class.as_str(),
            },
            "connection attempt"
        );
        result
    }

    /// No connection and identity within the connect timeout.
    fn timed_out(&self, endpoint: &Endpoint, manager: &Manager) -> ConnectError {
        let within = humantime::format_duration(self.timeout);
        let message = format!(
            "{endpoint}: not connected (TCP, TLS, startup, authentication and identity \
             probe) within {within} (the connect timeout: --connect-timeout); trying the \
             next host"
        );
        manager.failed(ErrorClass::ConnectTimeout, message, None)
    }

    /// `config` (one endpoint's) with pgdrill's startup option, unless a pooler refused it.
    fn with_option(&self, config: &Config) -> Config {
        let mut config = config.clone();
        if !self.startup_option_refused.load(Ordering::Relaxed) {
            config.options(&self.options);
        }
        config
    }
}

mod cancel;
mod endpoint;
pub(crate) mod manager;
mod race;
mod resolve;
mod silence;
#[cfg(test)]
mod tests;

pub use manager::{Conn, ConnectSettings, Manager};
pub use silence::Silence;
