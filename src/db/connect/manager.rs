//! A connection's setup and its failures: the pool's manager (credentials, the identity
//! probe that keeps standbys out, the table check, session settings), and how a failed
//! attempt is classified, counted and logged. The bb8 side is in `db::pool`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bb8::ManageConnection;
use parking_lot::Mutex;
use tokio::sync::OnceCell;
use tokio::time::Instant;
use tokio_postgres::{Client, Statement};

use super::{ConnectError, Connector, Silence};
use crate::db::credentials::Credentials;
use crate::db::identity::{self, Identity, IdentityTracker};
use crate::db::table::Workload;
use crate::db::table_check::{self, TableError, TablePolicy};
use crate::db::tls::TlsSettings;
use crate::error::{classify, ErrorClass};
use crate::retry::Throttle;
use crate::supervisor::Fatal;
use crate::telemetry::metrics::Metrics;

/// A pooled connection with its prepared INSERT.
pub struct Conn {
    pub client: Client,
    pub insert: Option<Statement>,
    /// A query failed in a way that makes it unusable, or a request was given up on.
    pub broken: bool,
    /// A healthy connection is done (its lifetime is over): closed politely.
    pub retired: bool,
    pub created: Instant,
    pub silence: Silence,
    /// The task driving the connection, aborted by `drop` when broken or silent.
    pub(crate) driver: tokio::task::AbortHandle,
    /// Writes on it given up on: unless its server went silent, what it runs is cancelled
    /// (as often) once it is closed.
    pub gave_up: usize,
    /// The identity's generation when it was made (see [`Manager::has_broken`]).
    pub(crate) generation: u64,
}

impl Drop for Conn {
    /// Closed now: tokio-postgres would keep the socket open for requests given up on
    /// until the server answers or dies (a hung backend never does).
    fn drop(&mut self) {
        if self.broken || self.silence.is_silent() {
            self.driver.abort();
            if self.gave_up > 0 && !self.silence.is_silent() {
                self.silence
                    .cancel_after_close(&self.client, self.driver.clone(), self.gave_up);
            }
        }
    }
}

/// A name that does not resolve is the wrong target only if no other host of the DSN does
/// and the resolver answered: a lookup that timed out or failed for now (`EAI_AGAIN`) may heal.
pub(super) fn unresolved_is_wrong_target(message: &str, others_resolved: bool) -> bool {
    let for_now = message.contains("no answer within") || message.contains("Temporary failure");
    !others_resolved && !for_now
}

/// The same connection failure is logged at most this often.
const LOG_REPEAT_AFTER: Duration = Duration::from_secs(10);

/// The pool's manager: cheap to clone, for attempts that outlive their race.
#[derive(Clone)]
pub struct Manager(Arc<Setup>);

impl std::ops::Deref for Manager {
    type Target = Setup;

    fn deref(&self) -> &Setup {
        &self.0
    }
}

pub struct Setup {
    connector: Arc<Connector>,
    credentials: Arc<Credentials>,
    logged: Mutex<Throttle>,
    /// `--query-mode auto`: set once prepared statements broke (new connections prepare none).
    auto_fallback: Option<AtomicBool>,
    statement_timeout: Duration,
    /// [`crate::db::tls::TlsSettings::trusted_cas`], for TLS failures.
    trusted_cas: String,
    /// Whether the server applies it was checked (once per run).
    timeout_checked: AtomicBool,
    workload: Arc<Workload>,
    pub(super) identity: Arc<IdentityTracker>,
    metrics: Arc<Metrics>,
    /// The table checked (and created) once; concurrent first connections wait for it.
    table: TablePolicy,
    table_ready: OnceCell<()>,
    /// `--alter-table` is changing the table (see [`Setup::table_ready`]).
    changing_table: AtomicBool,
    /// Why the table cannot take the INSERT, once found: attempts still under way do not
    /// check (or change) it again.
    table_refused: OnceLock<String>,
    /// Told when the table cannot take our writes (no reconnect fixes that).
    fatal: Arc<Fatal>,
}

/// [`Manager::setup_within`], as the messages name it.
pub(super) const SETUP_BOUND: &str = "the longer of --connect-timeout and --statement-timeout + 1s";
/// How long `--alter-table`'s change may take (an index build included), and how long before
/// the startup deadline it must end, so that the server's reason (or the cancel's, up to
/// 1.5 s: see `table_check`) is the one reported.
const TABLE_CHANGE_TIMEOUT: Duration = Duration::from_secs(600);
const TABLE_CHANGE_ENDS_BEFORE_DEADLINE: Duration = Duration::from_secs(2);

/// How new connections are made and set up.
pub struct ConnectSettings {
    pub pg: tokio_postgres::Config,
    pub tls: TlsSettings,
    /// `--query-mode auto`: fall back from prepared to unnamed statements when they break.
    pub auto_query_mode: bool,
    pub statement_timeout: Duration,
    pub table: TablePolicy,
}

impl Manager {
    /// From now on no connection is kept: the spares are closed now, later ones when done.
    pub fn close(&self) {
        let connector = &self.0.connector;
        connector.closed.store(true, Ordering::Relaxed);
        connector.spares.lock().clear();
    }

    /// Made before the primary changed, behind a pooler that kept it: to be replaced, as a
    /// fresh client's would be; kept, its liveness check would take the new server for
    /// another process and abandon every connection at the next slow write.
    pub fn made_before_the_change(&self, conn: &Conn) -> bool {
        conn.generation != self.identity.generation()
    }

    /// Waits (a second at most) for the cancel requests on their way: the process may end next.
    pub async fn cancels_sent(&self) {
        let cancels = &self.0.connector.cancels;
        cancels.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), cancels.wait()).await;
    }

    /// `fatal`: where a table that cannot take the INSERT is reported (the run stops).
    pub fn new(
        settings: ConnectSettings,
        credentials: Arc<Credentials>,
        workload: Arc<Workload>,
        identity: Arc<IdentityTracker>,
        metrics: Arc<Metrics>,
        fatal: Arc<Fatal>,
    ) -> Manager {
        Manager(Arc::new(Setup {
            connector: Connector::new(
                &settings.pg,
                settings.tls.connector.clone(),
                metrics.clone(),
                settings.statement_timeout,
            ),
            credentials,
            logged: Mutex::new(Throttle::new(LOG_REPEAT_AFTER)),
            auto_fallback: settings.auto_query_mode.then(|| AtomicBool::new(false)),
            statement_timeout: settings.statement_timeout,
            trusted_cas: settings.tls.trusted_cas(),
            timeout_checked: AtomicBool::new(false),
            workload,
            identity,
            metrics,
            table: settings.table,
            table_ready: OnceCell::new(),
            changing_table: AtomicBool::new(false),
            table_refused: OnceLock::new(),
            fatal,
        }))
    }
}

impl Setup {
    /// A tokio-postgres error from connecting (to `at`, named first: a DSN may name several
    /// servers) or from the setup queries, classified and counted.
    pub(super) fn fail(
        &self,
        at: Option<&super::Endpoint>,
        source: tokio_postgres::Error,
    ) -> ConnectError {
        let class = classify(&source);
        let mut message = crate::db::connect_error_text(&source, class, &self.trusted_cas);
        if let Some(at) = at {
            message = format!("{at}: {message}");
        }
        if class == ErrorClass::Auth {
            self.credentials.auth_failed();
        }
        let _ = self.prepared_statements_broke(&source);
        self.failed(class, message, Some(source))
    }

    /// A failure, told to `fatal` (before the first write it may end the run), then counted.
    pub(super) fn failed(
        &self,
        class: ErrorClass,
        message: String,
        source: Option<tokio_postgres::Error>,
    ) -> ConnectError {
        let sqlstate = source.as_ref().and_then(|s| s.code()).map(|c| c.code());
        self.fatal.connect_failed(class, sqlstate, &message);
        self.counted(class, message, source)
    }

    pub(super) fn unresolved(&self, message: String, others_resolved: bool) -> ConnectError {
        if unresolved_is_wrong_target(&message, others_resolved) {
            return self.failed(ErrorClass::Dns, message, None);
        }
        self.fatal.waiting(message.clone());
        self.counted(ErrorClass::Dns, message, None)
    }

    /// A failure counted, and logged if it says what to fix.
    fn counted(
        &self,
        class: ErrorClass,
        message: String,
        source: Option<tokio_postgres::Error>,
    ) -> ConnectError {
        // The failed writes it causes are counted where they fail (the error book).
        self.metrics.connection_errors.inc(class);
        // Logged (throttled) so endless retries are not silent; not when stopping, nor for a
        // standby passed over. Failures that say what to fix are throttled per message.
        let said = self.fatal.is_set() || class == ErrorClass::ReadOnly;
        let key = match class {
            ErrorClass::Tls | ErrorClass::Auth | ErrorClass::Dns => message.as_str(),
            _ => class.as_str(),
        };
        if !said && self.logged.lock().hit_keyed(key, Instant::now()).is_some() {
            tracing::warn!(class = %class, error = %message, "cannot connect; retrying");
        }
        ConnectError {
            source,
            ..ConnectError::new(class, message)
        }
    }

    /// Whether the server applies `--statement-timeout` (a startup option, which a pooler may
    /// drop or refuse). Said once: pgdrill's client timeout still bounds writes.
    async fn check_statement_timeout(&self, client: &Client) -> Result<(), tokio_postgres::Error> {
        let sql = "SELECT setting FROM pg_settings WHERE name = 'statement_timeout'";
        let server_ms = crate::db::first_value(client, sql).await?;
        let wanted_ms = self.statement_timeout.as_millis().to_string();
        if server_ms.as_deref() != Some(wanted_ms.as_str()) {
            tracing::warn!(
                server_ms = %identity::shown(server_ms),
                wanted_ms,
                "the server does not apply --statement-timeout (a pooler in between drops \
                 startup options): pgdrill's client timeout bounds each write, and a write it \
                 gave up on may still commit later"
            );
        }
        Ok(())
    }

    /// Whether the table was checked (the run's first connection did it).
    pub(super) fn table_checked(&self) -> bool {
        self.table_ready.get().is_some()
    }

    /// The identity probe, inside the per-host connect timeout: a standby fails the attempt.
    pub(super) async fn probe(&self, client: &Client) -> Result<Identity, ConnectError> {
        let id = identity::probe(client)
            .await
            .map_err(|e| self.fail(None, e))?;
        // A standby (behind a proxy, or a host of a multi-host DSN) fails the attempt, so the
        // endpoint keeps being raced until it reaches a primary. A read-only server: before
        // the first write the table check says it (exit 2); after it, each write would fail
        // (25006) and its connection be made again at once.
        let why = if id.in_recovery == Some(true) {
            "the server is in recovery (a standby)"
        } else if id.read_only == Some(true) && self.fatal.has_written() {
            "the server takes no writes (default_transaction_read_only is on)"
        } else {
            return Ok(id);
        };
        let message = format!("{}: {why}", identity::shown(id.endpoint()));
        Err(self.failed(ErrorClass::ReadOnly, message, None))
    }

    /// How long what follows a connection may take (the table check, the session's setup): as
    /// long as a write may (the statement timeout and a second for its answer), or the connect
    /// `timeout` if longer. The server has answered: a slow link needs a round trip per query,
    /// and a locked table holds the prepared INSERT as it would hold a fresh client's write.
    pub(super) fn setup_within(&self, timeout: Duration) -> Duration {
        timeout.max(self.statement_timeout + Duration::from_secs(1))
    }

    /// The table, checked once within `timeout` ([`Manager::setup_within`]), or [`TABLE_CHANGE_TIMEOUT`] once
    /// `--alter-table` changes it: cut off, the change would go on in the server and be sent again.
    pub(super) async fn table_ready(
        &self,
        client: &Client,
        timeout: Duration,
        cancel: table_check::Cancel,
    ) -> Result<(), ConnectError> {
        // Within the startup deadline (the table is checked only before the first write).
        let left = self.fatal.startup_left().unwrap_or(Duration::MAX);
        let change_within = left
            .saturating_sub(TABLE_CHANGE_ENDS_BEFORE_DEADLINE)
            .min(TABLE_CHANGE_TIMEOUT);
        let change_by = Instant::now() + change_within;
        let check = self.table_ready.get_or_try_init(|| async move {
            if let Some(refusal) = self.table_refused.get() {
                return Err(TableError::Unusable(refusal.clone()));
            }
            let change = table_check::Change {
                started: &self.changing_table,
                by: change_by,
                session_timeout: self.statement_timeout,
                cancel,
                cancels: self.connector.cancels.clone(),
            };
            let checked = table_check::ensure(client, &self.workload, self.table, change).await;
            // Before the next waiter may run the check: it finds the refusal.
            if let Err(TableError::Unusable(message)) = &checked {
                if self.table_refused.set(message.clone()).is_ok() {
                    self.fatal.unusable_table(message.clone());
                }
            }
            checked
        });
        tokio::pin!(check);
        let took_over = |limit: Duration, bound: &str| {
            let limit = humantime::format_duration(limit);
            let message = format!(
                "checking the table took over {limit} ({bound}; a slow link, or the table locked?)"
            );
            self.failed(ErrorClass::StatementTimeout, message, None)
        };
        let checked = match tokio::time::timeout(timeout, &mut check).await {
            Ok(checked) => checked,
            Err(_) if self.changing_table.load(Ordering::Relaxed) => {
                self.fatal.waiting(format!(
                    "--alter-table's change to table {} was still running",
                    self.workload.table.name
                ));
                // The server ends the change by then; this is for a server gone silent.
                let waited = change_by + TABLE_CHANGE_ENDS_BEFORE_DEADLINE;
                let change = tokio::time::timeout_at(waited, check);
                change
                    .await
                    .map_err(|_| took_over(change_within, "--alter-table's change"))?
            }
            Err(_) => return Err(took_over(timeout, SETUP_BOUND)),
        };
        checked.map(|&()| ()).map_err(|e| match e {
            TableError::Query(e) => self.fail(None, e),
            TableError::Unusable(message) => self.failed(ErrorClass::Other, message, None),
        })
    }

    /// The session's settings checked (the run's first session) and its INSERT prepared.
    pub(super) async fn ready(&self, client: &Client) -> Result<Option<Statement>, ConnectError> {
        if !self.timeout_checked.swap(true, Ordering::Relaxed) {
            self.check_statement_timeout(client)
                .await
                .map_err(|e| self.fail(None, e))?;
        }
        Ok(match &self.auto_fallback {
            Some(fell_back) if fell_back.load(Ordering::Relaxed) => None,
            // A pooler's server connection held another client's statement (42P05).
            _ => match self.workload.prepare(client).await {
                Err(err) if self.prepared_statements_broke(&err) => None,
                other => other.map_err(|e| self.fail(None, e))?,
            },
        })
    }

    /// Whether a new session needs only its INSERT prepared: the table and the statement
    /// timeout were checked (each by the run's first connection to get that far).
    pub(super) fn prepares_early(&self) -> bool {
        self.table_checked() && self.timeout_checked.load(Ordering::Relaxed)
    }

    /// Whether, under `--query-mode auto`, `err` says a named prepared statement did not stay
    /// with its session (26000, 42P05): it did not run, and may be sent again unnamed.
    pub(crate) fn prepared_statements_broke(&self, err: &tokio_postgres::Error) -> bool {
        use tokio_postgres::error::SqlState;
        let Some(fallback) = &self.auto_fallback else {
            return false;
        };
        let broken = matches!(
            err.code(),
            Some(&SqlState::INVALID_SQL_STATEMENT_NAME) | Some(&SqlState::DUPLICATE_PSTATEMENT)
        );
        if broken && !fallback.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                sqlstate = err.code().map_or("", |c| c.code()),
                "prepared statements do not survive this connection (PgBouncer in transaction \
                 mode?); --query-mode auto switches to unnamed statements, once, without \
                 failing a write"
            );
        }
        broken
    }
}

impl ManageConnection for Manager {
    type Connection = Conn;
    type Error = ConnectError;

    async fn connect(&self) -> Result<Conn, ConnectError> {
        // Rotated files, fresh tokens.
        let secret = self.credentials.password().await;
        let secret = secret.map_err(|err| self.failed(ErrorClass::Auth, err, None))?;
        let password = secret.as_ref().map(|s| s.expose());
        let conn = self.connector.connect(password, self).await?;
        // Made after the load was over (bb8 would keep it idle): not a failure, not kept.
        match self.0.connector.closed.load(Ordering::Relaxed) {
            false => Ok(conn),
            true => Err(ConnectError::new(ErrorClass::Other, "the load is over")),
        }
    }

    async fn is_valid(&self, conn: &mut Conn) -> Result<(), ConnectError> {
        conn.client
            .batch_execute("")
            .await
            .map_err(|e| self.fail(None, e))
    }

    /// bb8 asks when a connection is given back.
    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken
            || conn.retired
            || conn.client.is_closed()
            || conn.silence.is_silent()
            || self.0.connector.closed.load(Ordering::Relaxed)
            || self.made_before_the_change(conn)
    }
}
