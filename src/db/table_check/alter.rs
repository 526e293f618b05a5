//! `--alter-table`'s changes to a table pgdrill did not create: its columns, then its index, each
//! bounded by the startup deadline, and an index build left waiting is cancelled (by the server,
//! else by pgdrill) so that it does not hold its lock on the users' table after pgdrill gave up.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures_util::future::OptionFuture;
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use tokio_util::task::TaskTracker;

use super::{quote_literal, relation, TableError};
use crate::db::table::Table;
use crate::retry::Backoff;

/// `ALTER TABLE` waits for a lock behind every open transaction on the table; a busy table
/// must not stall every new connection (and with it every INSERT queued behind the lock).
/// Less if less is left before [`Change::by`].
const ALTER_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// Each try waits this long for its lock at most, then gives up and tries again after a
/// pause: while an `ACCESS EXCLUSIVE` request waits in the lock queue, every reader and
/// writer of the users' table waits behind it.
const LOCK_TRY: Duration = Duration::from_millis(200);
const LOCK_RETRY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));

pub struct Change<'a> {
    pub started: &'a AtomicBool,
    /// When the server must have ended it, done or cancelled.
    pub by: Instant,
    /// `--statement-timeout`, the session's when it is pgdrill's alone (startup options reach it).
    pub session_timeout: Duration,
    /// Sends the cancel request that ends an index build still running then.
    pub cancel: Cancel,
    /// Where a cancel sent when pgdrill stops runs (the pool's close waits for it).
    pub cancels: TaskTracker,
}

pub type Cancel = Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>;

/// Sends its cancel if dropped armed: pgdrill stopped (a signal, `--duration` over) while
/// the build ran. Its connection closes with it, but a build waiting for other transactions
/// does not notice: it would wait on, holding its lock on the users' table.
struct CancelOnDrop<'a> {
    cancel: Option<Cancel>,
    cancels: TaskTracker,
    table: &'a Table,
    schema: &'a str,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        let Some(cancel) = self.cancel.take() else {
            return;
        };
        tracing::warn!(
            table = %self.table.name,
            "pgdrill stopped during --alter-table's index build; it asks the server to cancel \
             it, which leaves an invalid index; drop it, as the table's owner: {}",
            self.table.index_drop_sql(self.schema)
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let cancel = tokio::time::timeout(CANCEL_WITHIN * 2, cancel);
            self.cancels.spawn_on(cancel, &runtime);
        }
    }
}

/// A change is not started with less time than this left before [`Change::by`].
const MIN_CHANGE_TIME: Duration = Duration::from_secs(1);

/// How long after [`Change::by`] the client cancels a build the server has not ended, and
/// how long the cancel request (a pooler logs in to the server to pass it on), then the
/// build's end, may take: all within the 2 s the caller waits past `by`.
const CANCEL_AFTER: Duration = Duration::from_millis(500);
const CANCEL_WITHIN: Duration = Duration::from_millis(500);

/// How [`Table::index_sql`] must be run by hand.
pub(crate) fn index_alone(table: &Table, schema: &str) -> String {
    format!(
        " (the index on its own, not in one transaction with the others: CONCURRENTLY cannot \
         run in one; if a failed build left an invalid index of that name, first: {};)",
        table.index_drop_sql(schema)
    )
}

/// [`Table::index_sql`], on its own (CONCURRENTLY cannot run in a transaction), then
/// checked: a build that failed leaves an invalid index, which `IF NOT EXISTS` keeps.
///
/// The build ends by [`Change::by`]: it waits for every transaction that writes the table or
/// holds an older snapshot, and left waiting it would hold its lock (blocking vacuum and DDL)
/// long after pgdrill gave up. The server ends it (`statement_timeout`, even if pgdrill is
/// killed), else pgdrill cancels it (a pooler forwards a cancel to the build's server
/// connection): behind a pooler that dropped the startup options, a `SET` may reach another
/// server connection than the build's, and stay there for others.
pub(super) async fn build_index(
    client: &Client,
    table: &Table,
    schema: &str,
    change: Change<'_>,
) -> Result<(), TableError> {
    let statement = table.index_sql();
    let within = change.by.saturating_duration_since(Instant::now());
    if within < MIN_CHANGE_TIME {
        return Err(TableError::Unusable(format!(
            "--alter-table's index build on {} was not started: less than {} of \
             --startup-timeout was left for it. Start pgdrill again with a longer \
             --startup-timeout, or as the table's owner build it: {statement}; (on its own, \
             outside a transaction)",
            table.name,
            humantime::format_duration(MIN_CHANGE_TIME)
        )));
    }
    let cancelled = |what: &str| {
        TableError::Unusable(format!(
            "--alter-table's index build on {} {what} (it waits for every transaction that \
             writes the table or holds an older snapshot). As the table's owner, remove what \
             it left: {}; then build it: {statement}; (on its own, outside a transaction), or \
             start pgdrill again with a longer --startup-timeout",
            table.name,
            table.index_drop_sql(schema)
        ))
    };
    let ms = within.as_millis();
    let took = humantime::format_duration(Duration::from_millis(ms as u64));
    let own_session = session_has(client, change.session_timeout).await?;
    let set_timeout = own_session && !crate::test_hooks::build_without_statement_timeout();
    if set_timeout {
        client
            .batch_execute(&format!("SET statement_timeout = {ms}"))
            .await?;
    }
    let mut armed = CancelOnDrop {
        cancel: Some(change.cancel),
        cancels: change.cancels,
        table,
        schema,
    };
    let mut build = std::pin::pin!(client.batch_execute(&statement));
    let mut built = tokio::time::timeout_at(change.by + CANCEL_AFTER, &mut build).await;
    if built.is_err() {
        tracing::warn!(table = %table.name, "--alter-table's index build ran past its deadline; pgdrill cancels it");
        // Each step bounded, within the second the caller waits past `by`; the build's
        // own result says whether the cancel took.
        let sent = OptionFuture::from(armed.cancel.take());
        match tokio::time::timeout(CANCEL_WITHIN, sent).await {
            Ok(None | Some(Ok(()))) => {}
            Ok(Some(Err(err))) => {
                tracing::warn!(table = %table.name, error = %err, "cannot cancel --alter-table's index build")
            }
            Err(_) => {
                tracing::warn!(table = %table.name, "--alter-table's cancel request got no answer")
            }
        }
        built = tokio::time::timeout(CANCEL_WITHIN, &mut build).await;
    }
    let Ok(built) = built else {
        return Err(cancelled(&format!(
            "did not end within {took} nor when pgdrill cancelled it: it may still \
             be running, holding its lock on the table; end it with \
             SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query = {};",
            quote_literal(&statement)
        )));
    };
    // Ended, done or not: nothing to cancel.
    armed.cancel = None;
    // Back to the session's own timeout (its startup option) for the INSERTs that follow.
    if set_timeout {
        let _ = client.batch_execute("RESET statement_timeout").await;
    }
    built.map_err(|err| match crate::db::db_message(&err) {
        Some(_) if err.code() == Some(&SqlState::QUERY_CANCELED) => {
            cancelled(&format!("did not end within {took}, so it was cancelled"))
        }
        Some(m) => TableError::Unusable(format!(
            "--alter-table could not build the index on {}: {m}. Run as the table's owner: \
             {statement};",
            table.name
        )),
        None => TableError::Query(err),
    })?;
    if relation(client, table).await?.is_some_and(|r| r.indexed) {
        tracing::warn!(table = %table.name, %statement, "--alter-table: changed a table pgdrill did not create");
        return Ok(());
    }
    Err(TableError::Unusable(format!(
        "pgdrill's index on {} is not valid (a build that failed, or one still running); once \
         no build runs, as the table's owner: {}; then start pgdrill again",
        table.name,
        table.index_drop_sql(schema)
    )))
}

/// Runs one statement `--alter-table` asked for (nullable columns: a catalog change, no
/// rewrite; an index), with a lock timeout so a busy table does not stall every connection.
pub(super) async fn alter(
    client: &Client,
    table: &str,
    statement: &str,
    by: Instant,
) -> Result<(), TableError> {
    let within = by.saturating_duration_since(Instant::now());
    if within < MIN_CHANGE_TIME {
        return Err(TableError::Unusable(format!(
            "--alter-table did not change {table}: less than {} of --startup-timeout was left \
             for it. Start pgdrill again with a longer --startup-timeout, or run as the table's \
             owner: {statement};",
            humantime::format_duration(MIN_CHANGE_TIME)
        )));
    }
    let until = Instant::now() + ALTER_LOCK_TIMEOUT.min(within);
    let mut tries = 0;
    let result = loop {
        let wait = LOCK_TRY.min(until.saturating_duration_since(Instant::now()));
        let ms = wait.as_millis().max(1);
        let sql = format!("BEGIN; SET LOCAL lock_timeout = {ms}; {statement}; COMMIT");
        tries += 1;
        let pause = LOCK_RETRY.jittered(tries, &mut rand::rng());
        match client.batch_execute(&sql).await {
            Err(err)
                if err.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
                    && Instant::now() + pause < until =>
            {
                let _ = client.batch_execute("ROLLBACK").await;
                tokio::time::sleep(pause).await;
            }
            done => break done,
        }
    };
    if let Err(err) = result {
        // A failed statement leaves the transaction aborted; the connection is reused.
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(match crate::db::db_message(&err) {
            Some(m) if err.code() == Some(&SqlState::DUPLICATE_COLUMN) => {
                TableError::Unusable(format!(
                    "--alter-table did not change {table}: {m}; it was added since pgdrill \
                     looked at the table, so it is not pgdrill's to mark. Start pgdrill again: \
                     it looks again"
                ))
            }
            Some(m) => TableError::Unusable(format!(
                "--alter-table could not change {table}: {m}. Run as the \
                 table's owner: {statement};"
            )),
            None => TableError::Query(err),
        });
    }
    tracing::warn!(table, %statement, "--alter-table: changed a table pgdrill did not create");
    Ok(())
}

/// Whether the session's `statement_timeout` is `timeout` from pgdrill's startup option
/// (source `client`): it reached the server, so the session is pgdrill's alone, not a
/// pooler's shared server connection. A role or database default of the same value does not.
async fn session_has(client: &Client, timeout: Duration) -> Result<bool, TableError> {
    let sql = "SELECT setting FROM pg_settings \
               WHERE name = 'statement_timeout' AND source = 'client'";
    let setting = crate::db::first_value(client, sql).await?;
    Ok(setting == Some(timeout.as_millis().to_string()))
}
