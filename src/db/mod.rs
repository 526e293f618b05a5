//! Talking to PostgreSQL: connecting per host the libpq way and setting connections up
//! (`connect/`), TLS and credentials, the bb8 pool, the server identity probe, the table with every
//! SQL statement pgdrill sends, and retention. Depends on `telemetry` (it counts connections and
//! errors) and `error`; nothing above.

pub mod cleanup;
pub(crate) mod clock;
pub(crate) mod connect;
pub(crate) mod credentials;
pub(crate) mod identity;
pub(crate) mod pool;
pub(crate) mod retention;
pub(crate) mod table;
pub(crate) mod table_check;
pub(crate) mod tls;

use tokio_postgres::{Client, Config as PgConfig, SimpleQueryMessage};

use crate::db::tls::TlsSettings;
use crate::error::ErrorClass;

/// A parsed target database.
#[derive(Clone)]
pub struct Target {
    pub pg: PgConfig,
    /// `host:port` per configured host, in order: bounded label values.
    pub hosts: Vec<String>,
    /// A printable description without the password.
    pub redacted: String,
    /// sslmode / sslrootcert, with the rustls connector built from them.
    pub tls: TlsSettings,
    /// Where `pg`'s connect timeout came from, if it has one.
    pub connect_timeout_from: Option<&'static str>,
    /// A `connect_timeout` of 0 or less (libpq: wait forever): refused where it would be in
    /// force, i.e. without `--connect-timeout`.
    pub connect_timeout_forever: Option<crate::error::ConfigError>,
    /// libpq's password file and where its name came from, for a DSN without a password
    /// (read by [`Target::use_password_file`], in `config`).
    pub passfile: Option<(std::path::PathBuf, &'static str)>,
    /// What was passed over, said at start: the password file (libpq warns and goes on
    /// without it), libpq environment variables pgdrill does not read.
    pub passed_over: Vec<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// What a failed connect says: the server's `SEVERITY: message`, else the error with its
/// causes (`a: b: c`; tokio-postgres prints only the first), a TLS one explained (`trusted`:
/// [`tls::TlsSettings::trusted_cas`]).
pub(crate) fn connect_error_text(
    err: &tokio_postgres::Error,
    class: ErrorClass,
    trusted: &str,
) -> String {
    if let Some(db) = err.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut text = err.to_string();
    for cause in std::iter::successors(std::error::Error::source(err), |&e| e.source()) {
        let more = cause.to_string();
        if !text.ends_with(&more) {
            text = format!("{text}: {more}");
        }
    }
    match class {
        ErrorClass::Tls => tls::explain(&text, trusted),
        _ => text,
    }
}

/// `message (SQLSTATE code)` of an error the server sent; `None` for any other error.
pub(crate) fn db_message(err: &tokio_postgres::Error) -> Option<String> {
    let db = err.as_db_error()?;
    Some(format!("{} (SQLSTATE {})", db.message(), db.code().code()))
}

/// An error as a user reads it: the server's message and SQLSTATE, not tokio-postgres's
/// bare "db error".
pub(crate) fn error_text(err: &tokio_postgres::Error) -> String {
    db_message(err).unwrap_or_else(|| err.to_string())
}

/// Whether `sql`'s first value is `true` (a boolean cast to text, by the simple protocol).
pub(crate) async fn is_true(client: &Client, sql: &str) -> Result<bool, tokio_postgres::Error> {
    Ok(first_value(client, sql).await?.as_deref() == Some("true"))
}

/// Every row `sql` returns, each value as text (NULL as `None`), by the simple protocol.
pub(crate) async fn text_rows(
    client: &Client,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, tokio_postgres::Error> {
    let mut rows = Vec::new();
    for m in client.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(r) = m {
            rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
        }
    }
    Ok(rows)
}

/// The first value `sql` returns, as text (simple protocol).
pub(crate) async fn first_value(
    client: &Client,
    sql: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    let rows = text_rows(client, sql).await?;
    Ok(rows.first().and_then(|r| r.first().cloned().flatten()))
}

/// What one DELETE did: how many rows it deleted and, if it returns their ids
/// (`RETURNING transaction_id`), the highest of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Deleted {
    pub rows: u64,
    pub last_id: Option<i64>,
}

/// Runs `sql`, one DELETE, by the simple protocol.
pub(crate) async fn delete(client: &Client, sql: &str) -> Result<Deleted, tokio_postgres::Error> {
    let mut done = Deleted::default();
    for m in client.simple_query(sql).await? {
        match m {
            SimpleQueryMessage::CommandComplete(n) => done.rows = n,
            SimpleQueryMessage::Row(r) => {
                let id = r.get(0).and_then(|id| id.parse::<i64>().ok());
                done.last_id = done.last_id.max(id);
            }
            _ => {}
        }
    }
    Ok(done)
}
