//! `pgdrill cleanup`: removes pgdrill's rows (one run or all) in short batches, or drops pgdrill's
//! own table. It never touches a row without a `run_id`, never scans a table it shares with other
//! rows (it needs pgdrill's index there), and never drops a table pgdrill did not create.

use std::future::Future;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::db::table::Table;
use crate::db::table_check::{self, Relation, LOCK_WAIT};
use crate::db::Target;
use crate::error::TARGET_EXIT;

/// Rows per DELETE: each batch is one short transaction.
const BATCH: u32 = 5000;

/// A statement unanswered this long is given up: a server frozen after the connect (its zone
/// gone) would hold cleanup for TCP's keepalive, hours. A batch takes well under a second.
const STATEMENT_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Run(i64),
    AllRuns,
    /// pgdrill's own table, with everything in it.
    DropTable,
}

/// Why cleanup did nothing, with its exit status.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error("cannot connect: {0}")]
    Connect(String),
    /// Not pgdrill's to do: nothing was changed.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Database(String),
    /// A signal: it stopped between batches.
    #[error("{0}")]
    Stopped(String),
}

impl CleanupError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CleanupError::Connect(_) => TARGET_EXIT,
            CleanupError::Refused(_) => 2,
            CleanupError::Database(_) => 1,
            CleanupError::Stopped(_) => 130,
        }
    }
}

impl From<tokio_postgres::Error> for CleanupError {
    fn from(err: tokio_postgres::Error) -> CleanupError {
        CleanupError::Database(super::error_text(&err))
    }
}

/// Runs the cleanup and returns what it did, as one line to print.
pub async fn run(
    target: &Target,
    table: &Table,
    scope: Scope,
    connect_timeout: Duration,
    stop: &CancellationToken,
) -> Result<String, CleanupError> {
    let name = &table.name;
    let client = stoppable(stop, connect(target, connect_timeout)).await?;
    let relation = async { Ok(table_check::relation(&client, table).await?) };
    let Some(relation) = stoppable(stop, bounded(relation)).await? else {
        return Ok(format!("table {name} does not exist: nothing to clean"));
    };
    match scope {
        Scope::DropTable if !relation.ours => Err(CleanupError::Refused(format!(
            "{name} was not created by pgdrill (no 'pgdrill:' comment); pgdrill drops only its \
             own table. Use --run-id or --all-runs to delete pgdrill's rows from it"
        ))),
        Scope::DropTable => {
            // Failed, stopped or unanswered, the transaction ends with the connection: no DROP.
            let done = stoppable(stop, bounded(drop_own_table(&client, table))).await?;
            bounded(async { Ok(client.batch_execute("COMMIT").await?) }).await?;
            Ok(done)
        }
        _ if !relation.has_run_id => Ok(format!(
            "table {name} has no run_id column: pgdrill never wrote to it; nothing to clean"
        )),
        _ => {
            if let Some(problem) = relation.children_problem(table) {
                return Err(CleanupError::Refused(problem));
            }
            if !relation.deletable() {
                return Err(CleanupError::Refused(shared_table_needs(table, &relation)));
            }
            let run = match scope {
                Scope::Run(id) => Some(id),
                _ => None,
            };
            let sql = |partitioned| table.cleanup_delete_sql(partitioned, BATCH, run);
            let done = |n: u64| match run {
                Some(id) => format!("deleted {n} rows of run {id} from {name}"),
                None => format!("deleted {n} rows of pgdrill's runs (run_id set) from {name}"),
            };
            delete(&client, table, sql, stop)
                .await
                .map(done)
                .map_err(|(err, n)| match err {
                    CleanupError::Stopped(_) => {
                        CleanupError::Stopped(format!("stopped: {}", done(n)))
                    }
                    CleanupError::Database(why) => CleanupError::Database(format!(
                        "{why}; {}, in batches already committed",
                        done(n)
                    )),
                    other => other,
                })
        }
    }
}

/// Drops pgdrill's own table, in a transaction the caller commits: locked first, waiting at most
/// [`LOCK_WAIT`] behind another session's lock (a DROP waiting longer would hold up every
/// write queued behind it), then looked at again under the lock and dropped by its schema,
/// so that the table dropped is the one just found to be pgdrill's.
async fn drop_own_table(client: &Client, table: &Table) -> Result<String, CleanupError> {
    let lock = format!(
        "BEGIN; SET LOCAL lock_timeout = '{LOCK_WAIT}'; \
         LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        table.quoted
    );
    client
        .batch_execute(&lock)
        .await
        .map_err(|err| match err.code() {
            Some(&SqlState::LOCK_NOT_AVAILABLE) => CleanupError::Database(format!(
                "{} is in use by another session (its lock was not granted within \
                 {LOCK_WAIT}); nothing was dropped. Try again when that session is done",
                table.name
            )),
            _ => err.into(),
        })?;
    match table_check::relation(client, table).await? {
        Some(relation) if relation.ours => {
            let sql = format!("DROP TABLE {}.{}", relation.schema, table.own_quoted());
            client.batch_execute(&sql).await?;
            Ok(format!("dropped pgdrill's table {}", table.name))
        }
        _ => Err(CleanupError::Refused(format!(
            "{} changed while it was being dropped: it is no longer pgdrill's; nothing was \
             dropped",
            table.name
        ))),
    }
}

/// Why pgdrill will not delete from a table it shares, and the statements that fix it.
fn shared_table_needs(table: &Table, relation: &Relation) -> String {
    let mut needs = Vec::new();
    if !relation.indexed {
        let build = match relation.kind.as_str() {
            // CONCURRENTLY cannot build an index on a partitioned table.
            "p" => table.partitioned_index_sql(&relation.schema),
            _ => table.index_sql() + &table_check::index_alone(table, &relation.schema),
        };
        needs.push((
            "has no index on pgdrill's rows (pgdrill does not scan rows that are not its own)",
            build,
        ));
    }
    if !relation.rows_marked {
        needs.push((
            "has a run_id that pgdrill did not add (rows with it set may not be pgdrill's)",
            table.mark_rows_sql(),
        ));
    }
    let (why, fix): (Vec<&str>, Vec<String>) = needs.into_iter().unzip();
    format!(
        "{} was not created by pgdrill and {}. Run as the table's owner (the COMMENT only if \
         every row with run_id set is pgdrill's), then clean up again: {};",
        table.name,
        why.join(" and "),
        fix.join("; ")
    )
}

async fn connect(target: &Target, timeout: Duration) -> Result<Client, CleanupError> {
    let mut pg = target.pg.clone();
    pg.connect_timeout(timeout);
    // libpq ignores sslmode on a socket, where the server never offers TLS.
    if (pg.get_hosts().iter()).all(|h| matches!(h, tokio_postgres::config::Host::Unix(_))) {
        pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
    }
    let connecting = pg.connect(target.tls.connector.clone());
    let (client, connection) = tokio::time::timeout(timeout * 2, connecting)
        .await
        .map_err(|_| CleanupError::Connect(format!("no answer within {timeout:?}")))?
        .map_err(|e| {
            let class = crate::error::classify(&e);
            let code = e.code().map(|c| c.code());
            let mut text = super::connect_error_text(&e, class, &target.tls.trusted_cas());
            if let Some(hint) = crate::error::wrong_target_hint(class, code, &text) {
                text = format!("{text}\nhint: {hint}");
            }
            CleanupError::Connect(crate::secrets::scrub(&text))
        })?;
    tokio::spawn(connection);
    Ok(client)
}

/// [`STATEMENT_LIMIT`] on `statement`.
async fn bounded<T>(
    statement: impl Future<Output = Result<T, CleanupError>>,
) -> Result<T, CleanupError> {
    let limit = humantime::format_duration(STATEMENT_LIMIT);
    let unanswered = || CleanupError::Database(format!("the server did not answer within {limit}"));
    tokio::time::timeout(STATEMENT_LIMIT, statement)
        .await
        .unwrap_or_else(|_| Err(unanswered()))
}

/// `statement`, unless a signal comes first: then the connection is dropped with what it ran.
async fn stoppable<T>(
    stop: &CancellationToken,
    statement: impl Future<Output = Result<T, CleanupError>>,
) -> Result<T, CleanupError> {
    tokio::select! {
        done = statement => done,
        () = stop.cancelled() => Err(CleanupError::Stopped("stopped: nothing was changed".into())),
    }
}

/// Deletes batch after batch, each guarded, until one comes back short or `stop`; returns the
/// rows deleted, also with an error.
async fn delete(
    client: &Client,
    table: &Table,
    sql: impl Fn(bool) -> String,
    stop: &CancellationToken,
) -> Result<u64, (CleanupError, u64)> {
    let mut total = 0;
    loop {
        if stop.is_cancelled() {
            return Err((CleanupError::Stopped(String::new()), total));
        }
        let batch = async { Ok(table_check::guarded_delete(client, table, &sql, false).await?) };
        let batch = bounded(batch).await.map_err(|e| (e, total))?;
        let deleted = batch.map(|d| d.rows).map_err(|hazard| {
            let refused = CleanupError::Refused(format!(
                "{hazard}; {total} rows were deleted before it was seen, none after. Remove \
                 what it names first, or delete pgdrill's rows yourself"
            ));
            (refused, total)
        })?;
        total += deleted;
        if deleted < u64::from(BATCH) {
            return Ok(total);
        }
    }
}
