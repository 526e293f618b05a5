//! bb8 + tokio-postgres: connections that know which server they reach and
//! are thrown away once they have seen a fatal error.

use std::sync::Arc;
use std::time::Duration;

use bb8::{ManageConnection, Pool, PooledConnection, RunError};
use bb8_postgres::PostgresConnectionManager;
use tokio::sync::OnceCell;
use tokio_postgres::{Client, NoTls, Statement};

use crate::error::{classify, ErrorClass};
use crate::identity::{self, IdentityTracker};
use crate::metrics::{Metrics, PoolStats};
use crate::workload::Workload;

/// A pooled connection with its prepared INSERT.
pub struct Conn {
    pub client: Client,
    pub insert: Option<Statement>,
    /// Set when a query failed in a way that makes this connection unusable.
    pub broken: bool,
    pub created: tokio::time::Instant,
}

/// A failed connection attempt, already classified.
#[derive(Debug, thiserror::Error)]
#[error("{class}: {source}")]
pub struct ConnectError {
    pub class: ErrorClass,
    #[source]
    pub source: tokio_postgres::Error,
}

pub struct Manager {
    inner: PostgresConnectionManager<NoTls>,
    statement_timeout: Duration,
    workload: Arc<Workload>,
    identity: Arc<IdentityTracker>,
    metrics: Arc<Metrics>,
    /// Create the table once, on the first connection to a writable server;
    /// concurrent first connections wait for it instead of racing in the catalog.
    create_table: bool,
    table_ready: OnceCell<()>,
}

impl Manager {
    pub fn new(
        pg: tokio_postgres::Config,
        statement_timeout: Duration,
        workload: Arc<Workload>,
        create_table: bool,
        identity: Arc<IdentityTracker>,
        metrics: Arc<Metrics>,
    ) -> Manager {
        Manager {
            inner: PostgresConnectionManager::new(pg, NoTls),
            statement_timeout,
            workload,
            identity,
            metrics,
            create_table,
            table_ready: OnceCell::new(),
        }
    }

    fn fail(&self, source: tokio_postgres::Error) -> ConnectError {
        let class = classify(&source);
        self.metrics.connection_errors.inc(class);
        ConnectError { class, source }
    }

    async fn set_up(&self, client: &Client) -> Result<Option<Statement>, tokio_postgres::Error> {
        client
            .batch_execute(&format!(
                "SET statement_timeout = {}",
                self.statement_timeout.as_millis()
            ))
            .await?;
        self.workload.prepare(client).await
    }
}

impl ManageConnection for Manager {
    type Connection = Conn;
    type Error = ConnectError;

    async fn connect(&self) -> Result<Conn, ConnectError> {
        self.metrics.connection_attempts.inc();
        // bb8-postgres resolves host names again for every connection, so a DNS
        // switch-over (managed services) is followed.
        let client = self.inner.connect().await.map_err(|e| self.fail(e))?;
        let id = identity::probe(&client).await;
        if id.in_recovery != Some(true) && self.create_table {
            self.table_ready
                .get_or_try_init(|| async {
                    self.workload.create_table(&client).await?;
                    tracing::info!(table = %self.workload.table.name, "table ready");
                    Ok(())
                })
                .await
                .map_err(|e| self.fail(e))?;
        }
        let insert = self.set_up(&client).await.map_err(|e| self.fail(e))?;
        if id.in_recovery == Some(true) {
            // Connected to a standby: writes would fail with 25006, so do not pool it.
            self.metrics.connection_errors.inc(ErrorClass::ReadOnly);
            tracing::debug!(server = ?id.endpoint(), "connected server is in recovery; discarding");
        } else {
            self.identity.observe(&id);
        }
        Ok(Conn {
            client,
            insert,
            broken: id.in_recovery == Some(true),
            created: tokio::time::Instant::now(),
        })
    }

    async fn is_valid(&self, conn: &mut Conn) -> Result<(), ConnectError> {
        conn.client
            .simple_query("")
            .await
            .map(|_| ())
            .map_err(|e| self.fail(e))
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken || conn.client.is_closed()
    }
}

/// The pool plus the way pgdrill checks connections out of it.
#[derive(Clone)]
pub struct DbPool {
    pool: Pool<Manager>,
}

/// Why no connection could be had.
#[derive(Debug)]
pub struct CheckoutError {
    pub class: ErrorClass,
    pub message: String,
}

impl DbPool {
    pub fn new(
        manager: Manager,
        size: u32,
        connect_timeout: Duration,
        lifetime: Duration,
    ) -> DbPool {
        let pool = Pool::builder()
            .max_size(size)
            .min_idle(None)
            .idle_timeout(None)
            .max_lifetime(lifetime)
            // A round trip on every checkout would double the cost of a transaction;
            // broken connections are caught by has_broken instead.
            .test_on_check_out(false)
            .retry_connection(false)
            .connection_timeout(connect_timeout + Duration::from_secs(1))
            .build_unchecked(manager);
        DbPool { pool }
    }

    pub fn stats(&self) -> PoolStats {
        let state = self.pool.state();
        PoolStats {
            idle: state.idle_connections,
            in_use: state.connections.saturating_sub(state.idle_connections),
            max: self.pool.config().max_size,
        }
    }

    /// An idle connection if there is one; otherwise connects here so that a
    /// failure comes back to the caller classified (bb8 would only time out).
    pub async fn checkout(&self) -> Result<PooledConnection<'_, Manager>, CheckoutError> {
        let state = self.pool.state();
        if state.idle_connections == 0 && state.connections < self.pool.config().max_size {
            let conn = self
                .pool
                .dedicated_connection()
                .await
                .map_err(|e| CheckoutError {
                    class: e.class,
                    message: e.to_string(),
                })?;
            if conn.broken {
                return Err(CheckoutError {
                    class: ErrorClass::ReadOnly,
                    message: "server is in recovery (a standby)".to_string(),
                });
            }
            // Losing the race for capacity just drops the extra connection.
            let _ = self.pool.add(conn);
        }
        self.pool.get().await.map_err(|e| match e {
            RunError::User(e) => CheckoutError {
                class: e.class,
                message: e.to_string(),
            },
            RunError::TimedOut => CheckoutError {
                class: ErrorClass::PoolTimeout,
                message: "timed out waiting for a pool connection".to_string(),
            },
        })
    }

    /// A connection outside the pool's accounting, for verification and bootstrap.
    pub async fn dedicated(&self) -> Result<Conn, ConnectError> {
        self.pool.dedicated_connection().await
    }
}
