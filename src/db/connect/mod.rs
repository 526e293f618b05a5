//! Connecting with libpq's `connect_timeout` semantics: the whole establishment (TCP, TLS,
//! startup, authentication, identity probe) is bounded per address, then the next address or
//! host is tried. tokio-postgres bounds only the TCP connect, so a server that completes the
//! handshake in the kernel and never answers (a frozen VM) would hold a connect forever.
//!
//! Every host, `hostaddr` and resolved address (looked up again per connection, to follow a
//! DNS switch-over) is an [`Endpoint`] with its own state:
//! - while an attempt is pending (a proxy routing to a hung node), another starts every
//!   [`STAGGER`] (after [`SUSPECT_AFTER`] on a healthy endpoint), up to a bound; the first to
//!   connect wins, as a fresh client every 100 ms would (`race`); attempts that outlive
//!   their race leave their connection for the next connect;
//! - a fast failure (refused) backs off, jittered, at most 100 ms ([`BACKOFF`]); a slow one (a
//!   timeout) is tried again at once;
//! - an endpoint whose connections go quiet is checked with a fresh connect
//!   ([`Silence::suspect`]); unanswered within the connect timeout, its server is declared
//!   silent and every connection to it abandoned.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use rand::Rng;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_postgres::config::{Host, LoadBalanceHosts};
use tokio_postgres::{Client, Config, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDrop;

use self::endpoint::{Unanswered, Watch};
use self::race::Claim;
use crate::db::identity::Identity;
use crate::error::ErrorClass;
use crate::retry::Backoff;
use crate::telemetry::metrics::Metrics;

/// Writes outstanding this long with no answer start a liveness check of their server.
/// Short, so that a frozen primary is left by `SUSPECT_AFTER + connect timeout` after it
/// froze: within the `promote + connect timeout + 0.5 s` bound however early the promotion.
pub const SUSPECT_AFTER: Duration = Duration::from_millis(500);

/// TCP keepalive settings (unless the DSN sets its own): a dead peer of an idle
/// connection is reported by the kernel within 5 + 3 x 1 = 8 s.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_RETRIES: u32 = 3;
/// TCP_USER_TIMEOUT (unless the DSN sets one): a backstop for real partitions; the liveness
/// check is faster, and works on loopback, where the kernel acknowledges for a frozen process.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

/// After a fast failure: from 25 ms, doubling per consecutive failure, at most 100 ms, so
/// the backoff outlasts an outage by a fraction of a second at most.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(25), Duration::from_millis(100));
/// While attempts on an endpoint are pending, another starts this often (a fresh client's
/// cadence); an attempt that failed after longer than this failed slowly: no backoff.
pub const STAGGER: Duration = Duration::from_millis(100);
/// Parallel attempts per endpoint: three connect timeouts' worth at [`STAGGER`], at most this.
/// One timeout's worth ran out behind a proxy still sending new connections to a hung node,
/// and pgdrill waited on those while a fresh client was already writing.
const MAX_PENDING: u32 = 64;
/// The least time between two attempts on one endpoint while others are pending: each
/// race joins every [`STAGGER`] (jittered), and the races of several connects together
/// start at most ~30 attempts a second, as three fresh clients polling every 100 ms would.
const MIN_SPACING: Duration = Duration::from_millis(33);
/// Parallel attempts on an endpoint whose server was found silent. Not more: a frozen host
/// takes them all from its listen backlog at once on thaw, and with 20 the first write after a
/// thaw came 0.11-0.14 s after the server was back (3: within 0.1 s).
const SILENT_MAX_PENDING: u32 = 3;
/// A host that answers but takes no writes yet (a standby, a server starting up), as in a
/// failover: checked at most 50 ms apart, so that a promotion is seen quickly.
const BACKOFF_ANSWERING: Backoff =
    Backoff::new(Duration::from_millis(25), Duration::from_millis(50));
/// tokio-postgres's default keepalive idle time, i.e. "the DSN did not set one".
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
    /// The server those connections reached ([`EndpointState::token_for`]), and when a
    /// connection last did.
    silent_server: Option<Arc<Identity>>,
    reached_at: Option<Instant>,
    check_running: bool,
    /// The last liveness check that the server answered.
    answered_at: Option<Instant>,
    /// A liveness check found the server silent (a frozen host, or a proxy's backend):
    /// fewer attempts at once ([`EndpointState::cap`]).
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

pub struct Connector {
    entries: Vec<HostEntry>,
    /// Everything but hosts, ports and addresses, for one single-address config per attempt,
    /// with the statement timeout as a startup option ([`Connector::new`]).
    base: Config,
    /// The same without that option, once a pooler refused it ([`refuses_startup_option`]).
    base_plain: Config,
    startup_option_refused: AtomicBool,
    timeout: Duration,
    /// `load_balance_hosts=random`: hosts and addresses in random order per connection.
    random: bool,
    tls: MakeRustlsConnect,
    metrics: Arc<Metrics>,
    endpoints: Mutex<HashMap<Endpoint, EndpointState>>,
    max_pending: u32,
    /// Notified whenever an attempt ends.
    changed: tokio::sync::Notify,
    /// Connections made by attempts that outlived their race ([`Connector::race`]), for
    /// the next connect; notified when one is added.
    spares: Mutex<Vec<Conn>>,
    spare_added: tokio::sync::Notify,
    /// Set once the load is over ([`Manager::close`]): a connection made or handed back
    /// after it is closed, not kept.
    closed: AtomicBool,
    lookups: Arc<tokio::sync::Semaphore>,
}

/// A pooler that takes no startup options: PgBouncer before 1.20 unless told to ignore them,
/// and from 1.20 any setting it does not track (SQLSTATE 08P01 either way).
fn refuses_startup_option(err: &tokio_postgres::Error) -> bool {
    err.as_db_error().is_some_and(|e| {
        *e.code() == tokio_postgres::error::SqlState::PROTOCOL_VIOLATION
            && e.message().contains("startup parameter")
    })
}

/// getaddrinfo calls running at once, each on a blocking thread that a timeout cannot stop:
/// with DNS black-holed, lanes reconnecting would otherwise start threads faster than the
/// lookups give up (10–30 s each).
const MAX_LOOKUPS: usize = 4;

/// Connections kept for the next connect at most (see [`Connector::take_spare`]).
const MAX_SPARES: usize = 16;

/// Entries of an endpoint map that is growing past this are dropped when healthy, or
/// failing but not tried for [`FORGOTTEN_AFTER`] (host names can resolve to ever new
/// addresses, and an old pod's address fails until the name stops naming it); if all fail
/// recently, the one tried longest ago goes, unless an attempt or a check is under way.
const MAX_ENDPOINTS: usize = 256;
const FORGOTTEN_AFTER: Duration = Duration::from_secs(600);

impl Connector {
    /// `pg`'s connect timeout bounds each address. `statement_timeout` goes in the startup
    /// packet, not a `SET`: a setting sent through a transaction-mode pooler stays on
    /// whichever server connection ran it, for the other clients that get it next.
    pub fn new(
        pg: &Config,
        tls: MakeRustlsConnect,
        metrics: Arc<Metrics>,
        statement_timeout: Duration,
    ) -> Arc<Connector> {
        let hosts = pg.get_hosts();
        let addrs = pg.get_hostaddrs();
        let ports = pg.get_ports();
        let n = hosts.len().max(addrs.len());
        let entries = (0..n)
            .map(|i| HostEntry {
                host: hosts.get(i).cloned(),
                hostaddr: addrs.get(i).copied(),
                // libpq: one port for all hosts, or one per host.
                port: ports.get(i).or(ports.first()).copied().unwrap_or(5432),
            })
            .collect();
        let mut base = Config::new();
        if let Some(user) = pg.get_user() {
            base.user(user);
        }
        if let Some(password) = pg.get_password() {
            base.password(password);
        }
        if let Some(dbname) = pg.get_dbname() {
            base.dbname(dbname);
        }
        if let Some(options) = pg.get_options() {
            base.options(options);
        }
        if let Some(name) = pg.get_application_name() {
            base.application_name(name);
        }
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
            if let Some(i) = pg.get_keepalives_interval() {
                base.keepalives_interval(i);
            }
            if let Some(r) = pg.get_keepalives_retries() {
                base.keepalives_retries(r);
            }
        }
        base.tcp_user_timeout(*pg.get_tcp_user_timeout().unwrap_or(&TCP_USER_TIMEOUT));
        let timeout = *pg.get_connect_timeout().unwrap_or(&Duration::from_secs(2));
        base.connect_timeout(timeout);
        let base_plain = base.clone();
        let ours = format!("-c statement_timeout={}", statement_timeout.as_millis());
        base.options(&match pg.get_options() {
            Some(theirs) => format!("{theirs} {ours}"),
            None => ours,
        });
        Arc::new(Connector {
            entries,
            base,
            base_plain,
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
            lookups: Arc::new(tokio::sync::Semaphore::new(MAX_LOOKUPS)),
        })
    }

    /// DSN entries or a host's addresses in the order to try them: as written, or shuffled
    /// for every connection with `load_balance_hosts=random` (as libpq does).
    fn balance<T>(&self, v: &mut [T]) {
        if self.random {
            use rand::seq::SliceRandom;
            v.shuffle(&mut rand::rng());
        }
    }

    /// Tries the endpoints in DSN order (skipping those backing off) until one connects and
    /// passes the manager's setup, each attempt bounded by the connect timeout and raced by
    /// the next ones ([`Connector::race`]).
    pub async fn connect(
        self: &Arc<Self>,
        password: Option<&str>,
        manager: &Manager,
    ) -> Result<Conn, ConnectError> {
        // With every endpoint backing off or probed by another attempt, wait (at most one
        // connect timeout) for one: a failed connect always stands for a real attempt.
        let deadline = Instant::now() + self.timeout;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(conn) = self.take_spare() {
                return Ok(conn);
            }
            let mut last: Option<ConnectError> = None;
            let mut skipped: Option<ConnectError> = None;
            let mut candidates = Vec::new();
            let mut entries: Vec<&HostEntry> = self.entries.iter().collect();
            self.balance(&mut entries);
            // All at once: a resolver slow for one name delays none of the others.
            let lookups = entries.iter().map(|entry| self.resolve(entry));
            let mut unresolved = Vec::new();
            for found in futures_util::future::join_all(lookups).await {
                match found {
                    Ok(list) => candidates.extend(list),
                    Err(message) => unresolved.push(message),
                }
            }
            for message in unresolved {
                last = Some(manager.unresolved(message, !candidates.is_empty()));
            }
            if let Some(pw) = password {
                for (_, config) in &mut candidates {
                    config.password(pw);
                }
            }
            for (first, (endpoint, _)) in candidates.iter().enumerate() {
                let Some(claim) = self.claim(endpoint, Some(&mut skipped)) else {
                    continue;
                };
                match self.race(&candidates, first, claim, manager).await {
                    Ok(conn) => return Ok(conn),
                    Err(err) => last = Some(err),
                }
            }
            if let Some(err) = last {
                return Err(err);
            }
            let Some(skipped) = skipped else {
                return Err(ConnectError {
                    class: ErrorClass::Dns,
                    message: "no host in the connection string resolves to an address".to_string(),
                    source: None,
                });
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

    /// The earliest time one of `candidates` that is failing may take another attempt. Only
    /// those: an address a moved name no longer resolves to keeps its state (backing off, its
    /// retry time long past), which would wake this wait at once, again and again.
    fn next_retry(&self, candidates: &[(Endpoint, Config)]) -> Option<Instant> {
        let endpoints = self.endpoints.lock();
        (candidates.iter())
            .filter_map(|(endpoint, _)| endpoints.get(endpoint))
            .filter(|s| s.failures > 0 && s.pending < s.cap(self.max_pending))
            .map(EndpointState::ready_at)
            .min()
    }

    /// One endpoint: connect, drive the connection, set it up, all within the timeout (on
    /// expiry, dropping the attempt closes its socket and aborts its driver task).
    async fn attempt(
        &self,
        endpoint: &Endpoint,
        config: &Config,
        manager: &Manager,
        answered: &AtomicBool,
    ) -> Result<(Client, Option<Statement>, AbortHandle, Identity), ConnectError> {
        self.metrics.connection_attempts.inc();
        let began = Instant::now();
        let result = tokio::time::timeout(self.timeout, async {
            // Every attempt that carried the option (those racing when the first refusal
            // came too) tries again without it.
            let carried = config.get_options() != self.base_plain.get_options();
            let connected = match config.connect(self.tls.clone()).await {
                Err(e) if carried && refuses_startup_option(&e) => {
                    if !self.startup_option_refused.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            server = %endpoint,
                            "the server (a pooler) refuses startup options: connecting \
                             without the statement timeout; pgdrill's client timeout bounds \
                             each write"
                        );
                    }
                    self.plain(config).connect(self.tls.clone()).await
                }
                connected => connected,
            };
            let (client, connection) = connected.map_err(|e| manager.fail(e))?;
            // Aborted (closing the socket) unless the attempt succeeds.
            let driver = AbortOnDrop::new(tokio::spawn(connection).abort_handle());
            let id = manager.probe(&client).await?;
            Ok::<_, ConnectError>((client, driver, id))
        })
        .await;
        tracing::debug!(
            server = %endpoint,
            ms = began.elapsed().as_millis() as u64,
            result = match &result {
                Ok(Ok(_)) => "connected",
                Ok(Err(err)) => err.class.as_str(),
                Err(_) => "timeout",
            },
            "connection attempt"
        );
        let timed_out = |what: &str| {
            let within = humantime::format_duration(self.timeout);
            let message = format!("{endpoint}: {what} within {within}; trying the next host");
            manager.failed(ErrorClass::ConnectTimeout, message, None)
        };
        let (client, driver, id) = result.map_err(|_| {
            timed_out("not connected (TCP, TLS, startup, authentication and identity probe)")
        })??;
        answered.store(true, Ordering::Relaxed);
        // One connect timeout for all but the table check (first connection only).
        let checking = Instant::now();
        let cancel = cancel::cancel(
            client.cancel_token(),
            endpoint.clone(),
            config,
            self.tls.clone(),
        );
        manager.table_ready(&client, self.timeout, cancel).await?;
        let deadline = began + self.timeout + checking.elapsed();
        let ready = tokio::time::timeout_at(deadline, manager.ready(&client, &id));
        let Ok(insert) = ready.await else {
            // The server answers but the setup waits (a lock on the table): its backend would
            // wait on after the socket closes, holding one of the server's connection slots.
            // The connection stays open until the cancel is through: a pooler (PgBouncer)
            // drops a cancel for a client already gone.
            let (token, endpoint) = (client.cancel_token(), endpoint.clone());
            let (config, tls) = (config.clone(), self.tls.clone());
            tokio::spawn(async move {
                let cancel = cancel::cancel(token, endpoint, &config, tls);
                let _ = tokio::time::timeout(STAGGER * 10, cancel).await;
                drop((client, driver));
            });
            return Err(timed_out("session not set up (the table locked?)"));
        };
        Ok((client, insert?, driver.detach(), id))
    }

    /// `config` (one endpoint's) without pgdrill's startup option, once a pooler refused it.
    fn plain(&self, config: &Config) -> Config {
        if !self.startup_option_refused.load(Ordering::Relaxed) {
            return config.clone();
        }
        let mut plain = self.base_plain.clone();
        for host in config.get_hosts() {
            match host {
                Host::Tcp(name) => plain.host(name),
                Host::Unix(dir) => plain.host_path(dir),
            };
        }
        for addr in config.get_hostaddrs() {
            plain.hostaddr(*addr);
        }
        for port in config.get_ports() {
            plain.port(*port);
        }
        if let Some(password) = config.get_password() {
            plain.password(password);
        }
        plain
    }

    /// Claims an attempt on `endpoint`: a connect's first, saying why not (backing off, or
    /// another attempt is probing the failing endpoint) into `skipped`; or, without
    /// `skipped`, one more beside those pending, if it may take one now.
    fn claim(
        self: &Arc<Self>,
        endpoint: &Endpoint,
        skipped: Option<&mut Option<ConnectError>>,
    ) -> Option<Claim> {
        let now = Instant::now();
        let mut map = self.endpoints.lock();
        if skipped.is_some() && map.len() >= MAX_ENDPOINTS && !map.contains_key(endpoint) {
            map.retain(|_, s| {
                let tried = s.last_start.map(|t| now.saturating_duration_since(t));
                s.pending > 0
                    || s.check_running
                    || (s.failures > 0 && tried.is_some_and(|t| t < FORGOTTEN_AFTER))
            });
            let idle = |s: &EndpointState| s.pending == 0 && !s.check_running;
            let oldest = (map.iter().filter(|(_, s)| idle(s)))
                .min_by_key(|(_, s)| s.last_start)
                .map(|(e, _)| e.clone());
            if let Some(oldest) = oldest.filter(|_| map.len() >= MAX_ENDPOINTS) {
                map.remove(&oldest);
            }
        }
        let state = map
            .entry(endpoint.clone())
            .or_insert_with(|| EndpointState::new(now));
        let may = match skipped {
            Some(_) => state.eligible(now, self.max_pending),
            None => state.may_join(now, self.max_pending),
        };
        if !may {
            if let Some(skipped) = skipped.filter(|s| s.is_none()) {
                let (class, message) = state
                    .last_error
                    .clone()
                    .unwrap_or((ErrorClass::ConnectRefused, "failing".to_string()));
                *skipped = Some(ConnectError {
                    class,
                    message: format!(
                        "{endpoint}: backing off after {} failed attempts; last: {message}",
                        state.failures
                    ),
                    source: None,
                });
            }
            return None;
        }
        Some(Claim::start(self, endpoint, state, now))
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
