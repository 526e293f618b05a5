//! Lab failures, each carrying what was being done.

use std::io;
use std::time::Duration;

/// Lab failures, each carrying what was being done.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// No usable PostgreSQL server binaries.
    #[error(
        "no PostgreSQL server binaries found ({0}); set PGDRILL_PG_BINDIR or LabOptions::bin_dir"
    )]
    NoBinaries(String),
    /// Running as root and no unprivileged user exists to run PostgreSQL as.
    #[error(
        "running as root, and neither user `postgres` nor `nobody` exists to run PostgreSQL as"
    )]
    NoUnprivilegedUser,
    /// A filesystem or process-spawn operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// An external command exited unsuccessfully.
    #[error("`{command}` failed ({status}); output tail:\n{output_tail}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// The end of its stderr and stdout.
        output_tail: String,
    },
    /// Something did not happen in time.
    #[error("timed out after {after:?} waiting for {what}{}", fmt_tail(.log_tail))]
    Timeout {
        /// What we waited for.
        what: String,
        /// How long we waited.
        after: Duration,
        /// The end of the relevant server log, if any.
        log_tail: String,
    },
    /// A SQL statement failed.
    #[error("{what}: {source}")]
    Sql {
        /// What was being done.
        what: String,
        /// The error (kept whole so `code()` still works).
        #[source]
        source: tokio_postgres::Error,
    },
    /// The operation does not fit the lab's current state (e.g. no standby to promote).
    #[error("{0}")]
    State(String),
}

pub(crate) fn fmt_tail(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; server log tail:\n{tail}")
    }
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

pub(crate) fn sql_err(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Sql { what, source }
}
