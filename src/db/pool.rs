//! The bb8 pool of [`Conn`]s (made by `connect::Manager`) and how pgdrill checks them out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bb8::{Pool, PooledConnection, RunError};
use tokio::sync::Notify;

use crate::db::connect::{Conn, ConnectError, Manager};
use crate::error::ErrorClass;
use crate::telemetry::metrics::PoolStats;

#[derive(Clone)]
pub struct DbPool {
    pool: Pool<Manager>,
    /// Also the pool's (bb8 does not hand it out), for `--query-mode auto`.
    manager: Manager,
    ahead: Arc<Ahead>,
}

/// Checkouts the lanes make way for. bb8 gives a returned connection to whoever asks next,
/// not to who has waited longest: under a saturated load a lane asking again at once won it
/// every time on a busy machine, and the identity probe (a switch behind a pooler) never ran.
#[derive(Default)]
struct Ahead {
    waiting: AtomicUsize,
    served: Notify,
}

/// A lane waits at most this long for a checkout it makes way for (a bound, not a pause:
/// the checkout is usually served within the returned connection's hand-over).
const MAKE_WAY_AT_MOST: Duration = Duration::from_millis(100);

/// One checkout ahead of the lanes, until it is served or given up.
struct AheadTurn<'a>(&'a Ahead);

impl AheadTurn<'_> {
    fn take(ahead: &Ahead) -> AheadTurn<'_> {
        ahead.waiting.fetch_add(1, Ordering::SeqCst);
        AheadTurn(ahead)
    }
}

impl Drop for AheadTurn<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
        self.0.served.notify_waiters();
    }
}

#[derive(Debug)]
pub struct CheckoutError {
    pub class: ErrorClass,
    pub message: String,
    /// The server's SQLSTATE, if the failed connect got one.
    pub sqlstate: Option<String>,
}

impl CheckoutError {
    fn from_connect(e: ConnectError) -> CheckoutError {
        CheckoutError {
            class: e.class,
            message: e.to_string(),
            sqlstate: e.source.and_then(|s| Some(s.code()?.code().to_string())),
        }
    }
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
            .build_unchecked(manager.clone());
        DbPool {
            pool,
            manager,
            ahead: Arc::default(),
        }
    }

    /// A connection may still be used (a lane's, retention's): within `--max-connection-lifetime`
    /// (its name looked up again after it), and made since the last primary change.
    pub fn still_current(&self, conn: &Conn) -> bool {
        let lifetime = self.pool.config().max_lifetime;
        lifetime.is_none_or(|l| conn.created.elapsed() < l)
            && !self.manager.made_before_the_change(conn)
    }

    /// The manager's (for `--query-mode auto`): whether the INSERT may be sent again.
    pub fn prepared_statements_broke(&self, err: &tokio_postgres::Error) -> bool {
        self.manager.prepared_statements_broke(err)
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
    /// failure comes back to the caller classified (bb8 would only time out, its own
    /// connect's error unseen: `pool_timeout`, which no fresh client meets). `ahead` of the
    /// lanes: each lane that gives a connection back while this one waits leaves it to this one.
    pub async fn checkout(
        &self,
        ahead: bool,
    ) -> Result<PooledConnection<'_, Manager>, CheckoutError> {
        let max = self.pool.config().max_size;
        // Idle connections to a server found silent, or closed, are dropped unused, not
        // written to; each time, the next is made here if none is left idle.
        for _ in 0..=max {
            let state = self.pool.state();
            if state.idle_connections == 0 && state.connections < max {
                match self.pool.dedicated_connection().await {
                    Ok(conn) => {
                        // Losing the race for capacity just drops the extra connection.
                        let _ = self.pool.add(conn);
                    }
                    // The server (or the role) has no connection to spare: growing failed,
                    // but an open connection can still take this write once it is free.
                    Err(e)
                        if e.class == ErrorClass::TooManyConnections
                            && self.pool.state().connections > 0 => {}
                    Err(e) => return Err(CheckoutError::from_connect(e)),
                }
            }
            // Ahead only while waiting for a connection given back, not while making one.
            let turn = ahead.then(|| AheadTurn::take(&self.ahead));
            let got = self.pool.get().await;
            drop(turn);
            let mut conn = got.map_err(|e| match e {
                RunError::User(e) => CheckoutError::from_connect(e),
                RunError::TimedOut => CheckoutError {
                    class: ErrorClass::PoolTimeout,
                    message: "timed out waiting for a pool connection".to_string(),
                    sqlstate: None,
                },
            })?;
            // Closed while idle (the server ended its backend): a fresh client would not
            // fail on it, so no write does either.
            if conn.silence.is_silent() || conn.client.is_closed() {
                conn.broken = true;
            } else if self.manager.made_before_the_change(&conn) {
                conn.retired = true;
            } else {
                return Ok(conn);
            }
        }
        Err(CheckoutError {
            class: ErrorClass::NoResponse,
            message: "every pooled connection reaches a server that stopped answering".to_string(),
            sqlstate: None,
        })
    }

    /// Once the load is over, closes every connection politely: a run kept on for `--linger`
    /// holds no session on the server.
    pub async fn close(&self) {
        self.manager.close();
        while self.pool.state().idle_connections > 0 {
            match tokio::time::timeout(Duration::from_secs(1), self.pool.get()).await {
                Ok(Ok(mut conn)) => conn.retired = true,
                _ => break,
            }
        }
        self.manager.cancels_sent().await;
    }

    /// Called by a lane that has just given its connection back, before it asks for another:
    /// waits while a [`DbPool::checkout`] ahead is waiting (a bounded time).
    pub async fn make_way(&self) {
        if self.ahead.waiting.load(Ordering::Relaxed) == 0 {
            return;
        }
        // Registered before the second look, so a turn ending in between still wakes us.
        let served = self.ahead.served.notified();
        if self.ahead.waiting.load(Ordering::SeqCst) > 0 {
            let _ = tokio::time::timeout(MAKE_WAY_AT_MOST, served).await;
        }
    }

    /// A connection outside the pool (closed when dropped: what a fresh client gets), for
    /// verification and bootstrap.
    pub async fn dedicated(&self) -> Result<Conn, ConnectError> {
        self.pool.dedicated_connection().await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Arc;

    /// A pool for database-free tests: it would connect to 127.0.0.1:1, and only if asked.
    pub(crate) fn unconnected(
        metrics: Arc<crate::telemetry::metrics::Metrics>,
    ) -> (DbPool, Arc<crate::db::table::Workload>) {
        unconnected_at(metrics, 1, Duration::from_secs(1))
    }

    /// [`unconnected`] to 127.0.0.1:`port`, each connect bounded by `timeout`.
    pub(crate) fn unconnected_at(
        metrics: Arc<crate::telemetry::metrics::Metrics>,
        port: u16,
        timeout: Duration,
    ) -> (DbPool, Arc<crate::db::table::Workload>) {
        use crate::db::connect::ConnectSettings;
        use crate::db::credentials::{Credentials, PasswordSource};
        use crate::db::identity::IdentityTracker;
        use crate::db::table::{QueryMode, Table, Workload};
        use crate::db::table_check::TablePolicy;
        use crate::db::tls::{RootCert, SslMode, TlsSettings};
        let mut pg = tokio_postgres::Config::new();
        pg.host("127.0.0.1").port(port).connect_timeout(timeout);
        let table = Table::parse("t").expect("a plain table name");
        let workload = Arc::new(Workload::new(table, 1, QueryMode::Unnamed));
        let manager = Manager::new(
            ConnectSettings {
                pg,
                tls: TlsSettings::new(SslMode::Prefer, RootCert::Default).expect("tls"),
                auto_query_mode: false,
                statement_timeout: Duration::from_secs(1),
                table: TablePolicy {
                    create: false,
                    alter: false,
                    triggers: false,
                    named: true,
                    deletes: false,
                    ids_needed: None,
                },
            },
            Arc::new(Credentials::new(PasswordSource::Dsn, metrics.clone())),
            workload.clone(),
            Arc::new(IdentityTracker::new(
                Vec::new(),
                metrics.clone(),
                crate::clock::WallClock::now(),
            )),
            metrics,
            Arc::default(),
        );
        let pool = DbPool::new(manager, 1, timeout, Duration::from_secs(60));
        (pool, workload)
    }

    #[tokio::test(start_paused = true)]
    async fn a_lane_waits_for_a_checkout_ahead_of_it_but_only_so_long() {
        use tokio::time::Instant;
        let (pool, _) = unconnected(crate::telemetry::metrics::Metrics::new(&[]));
        let t0 = Instant::now();
        pool.make_way().await;
        assert_eq!(t0.elapsed(), Duration::ZERO, "nothing ahead: no wait");

        let turn = AheadTurn::take(&pool.ahead);
        let way = pool.make_way();
        tokio::pin!(way);
        let half = tokio::time::sleep(MAKE_WAY_AT_MOST / 2);
        tokio::select! {
            () = &mut way => panic!("made no way for the checkout ahead"),
            () = half => {}
        }
        drop(turn);
        way.await;
        assert_eq!(
            t0.elapsed(),
            MAKE_WAY_AT_MOST / 2,
            "served: the lane goes on at once"
        );

        // A checkout ahead that is never served holds a lane back no longer than the bound.
        let _stuck = AheadTurn::take(&pool.ahead);
        let t1 = Instant::now();
        pool.make_way().await;
        assert_eq!(t1.elapsed(), MAKE_WAY_AT_MOST);
    }
}
