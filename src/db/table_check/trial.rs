//! The trial INSERTs: the load's INSERT for its lowest and highest row, each rolled back, so that
//! what the table would say on every write (or on part of them) is said once, at start.

use tokio_postgres::Client;

use super::{hazards, TableError};
use crate::db::table::{Row, Workload};

/// Which INSERT [`trial_insert`] tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trial {
    /// Exactly as the load sends it.
    Full,
    /// Without pgdrill's columns, before `--alter-table` adds them.
    UsersColumns,
}

/// The INSERT (`trial`) for each of [`Row::extremes`], alone in a transaction rolled back.
pub(super) async fn trial_insert(
    client: &Client,
    workload: &Workload,
    trial: Trial,
) -> Result<(), TableError> {
    for (row, which) in Row::extremes().into_iter().zip(["lowest", "highest"]) {
        client
            .batch_execute("BEGIN; SET LOCAL statement_timeout = '10s'")
            .await?;
        let result = match trial {
            Trial::Full => workload.insert(client, None, row).await,
            Trial::UsersColumns => {
                let sql = workload.target().users_insert_sql(row);
                client.batch_execute(&sql).await.map(|()| None)
            }
        };
        let rollback = client.batch_execute("ROLLBACK").await;
        match result {
            Ok(None) if trial == Trial::Full => {
                return Err(TableError::Unusable(format!(
                    "the INSERT pgdrill runs on table {} returns no row for the {which} row \
                     its load draws: a trigger or rule on the table suppresses it, so no \
                     write would be written",
                    workload.target().quoted
                )));
            }
            // A rolled-back INSERT still draws its id from the sequence: the first is the
            // floor, if every later write draws a higher one.
            Ok(id) => {
                rollback?;
                if let Some(id) = id.filter(|_| which == "lowest") {
                    if hazards::ids_in_order(client, &workload.target().quoted).await? {
                        let _ = workload.id_floor.set(id);
                    }
                }
            }
            Err(err) => {
                // Read-only: a setting of this primary, or a standby a pooler or proxy
                // reached since the probe (a failover under way: tried again).
                let by_setting = err.code().map(|c| c.code()) == Some(READ_ONLY)
                    && read_only_by_setting(client).await;
                return Err(trial_failed(err, workload, which, trial, by_setting));
            }
        }
    }
    Ok(())
}

/// Data, constraint, schema and privilege errors, and a trigger that raises (P0), say the same on
/// every try (or on every write like this one); anything else (a server shutting down, a statement
/// cancelled, a deadlock, no resources) is tried again within --startup-timeout.
pub(super) fn fails_the_same_again(err: &tokio_postgres::Error) -> bool {
    err.code().is_some_and(|code| {
        matches!(
            code.code().get(..2).unwrap_or_default(),
            "22" | "23" | "3F" | "42" | "0A" | "2B" | "44" | "P0"
        )
    })
}

/// The server is out of recovery and read-only by `default_transaction_read_only`: a setting
/// to change, which retrying will not.
async fn read_only_by_setting(client: &Client) -> bool {
    let sql = "SELECT (NOT pg_is_in_recovery() \
                 AND current_setting('default_transaction_read_only') = 'on')::text";
    crate::db::is_true(client, sql).await.unwrap_or(false)
}

/// `read_only_sql_transaction`, and what to change for it.
const READ_ONLY: &str = "25006";
const READ_ONLY_FIX: &str = " (the server is a primary, read-only by setting: \
    default_transaction_read_only is on for this user, database or server, as Azure sets it \
    when its storage is full; turn it off, e.g. ALTER ROLE … SET default_transaction_read_only \
    = off, or free the storage)";

fn trial_failed(
    err: tokio_postgres::Error,
    workload: &Workload,
    which: &str,
    trial: Trial,
    read_only_by_setting: bool,
) -> TableError {
    let fixable_by_retry = !(read_only_by_setting || fails_the_same_again(&err));
    let detail = err.as_db_error().and_then(|db| db.detail());
    let unchanged = match trial {
        Trial::Full => "",
        Trial::UsersColumns => "; pgdrill changed nothing",
    };
    match crate::db::db_message(&err) {
        Some(m) if !fixable_by_retry => TableError::Unusable(format!(
            "the INSERT pgdrill runs fails on table {} for the {which} row its load draws \
             ({}): {m}{}{}{unchanged}",
            workload.target().quoted,
            Row::RANGES,
            detail.map(|d| format!("; {d}")).unwrap_or_default(),
            match read_only_by_setting {
                true => READ_ONLY_FIX,
                false => "",
            }
        )),
        _ => TableError::Query(err),
    }
}
