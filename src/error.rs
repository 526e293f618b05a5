//! Error types and the fixed, bounded set of failure classes exported as labels.

use std::error::Error as StdError;
use std::io;

use tokio_postgres::error::SqlState;

labelled! {
    /// Every failure pgdrill counts falls into exactly one of these classes.
    /// The set is fixed so that each `{class}` series can be pre-created at 0.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub enum ErrorClass {
        ConnectRefused = "connect_refused",
        ConnectTimeout = "connect_timeout",
        Dns = "dns",
        Tls = "tls",
        Auth = "auth",
        TooManyConnections = "too_many_connections",
        ReadOnly = "read_only",
        AdminShutdown = "admin_shutdown",
        CrashShutdown = "crash_shutdown",
        CannotConnectNow = "cannot_connect_now",
        ConnectionClosed = "connection_closed",
        StatementTimeout = "statement_timeout",
        /// The client gave up on a server that stopped answering (no reply within the
        /// client's bound, or the kernel reported the peer dead); never the server's 57014.
        NoResponse = "no_response",
        PoolTimeout = "pool_timeout",
        /// The connection pooler's own error (PgBouncer's SQLSTATE 08P01: "server conn crashed?",
        /// "pgbouncer cannot connect to server", query_wait_timeout, …), not the server's.
        Pooler = "pooler",
        /// The server refused the INSERT itself, and a new session would get the same: a
        /// privilege, a constraint, a value, a missing table or column, a trigger's error, or a
        /// trigger or rule that suppressed the row.
        Rejected = "rejected",
        Other = "other",
    }
}

impl ErrorClass {
    /// Index into per-class arrays (metrics, counters), stable with `ALL`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// No server spoke: nothing took the connection, or what did closed it unanswered.
    pub fn is_unreached(self) -> bool {
        use ErrorClass::*;
        matches!(
            self,
            ConnectRefused | ConnectTimeout | Dns | ConnectionClosed | NoResponse
        )
    }

    /// Whether the connection that produced this error (with the server's `sqlstate`) must go: it
    /// is closed (the outcome unknown), its server takes no writes, or its session may be at fault.
    /// A statement's own error (`rejected`, a lock, a serialization failure, a resource) keeps
    /// it: a backend per failed write loads the server. Sent as FATAL or PANIC instead, the
    /// server closes the connection: the lane sees that apart.
    pub fn discards_connection(self, sqlstate: Option<&str>) -> bool {
        let statement_only = |code: &str| matches!(code.get(..2), Some("40" | "53" | "54" | "55"));
        self.outcome_unknown_after_send()
            || matches!(self, ErrorClass::ReadOnly | ErrorClass::CannotConnectNow)
            || (self == ErrorClass::Other && !sqlstate.is_some_and(statement_only))
    }

    /// A write sent before this error may have committed: its outcome is unknown until verified.
    pub fn outcome_unknown_after_send(self) -> bool {
        matches!(
            self,
            ErrorClass::AdminShutdown
                | ErrorClass::CrashShutdown
                | ErrorClass::ConnectionClosed
                | ErrorClass::NoResponse
                | ErrorClass::Pooler
        )
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classify an error from tokio-postgres, whether it came from connecting or from a query.
pub fn classify(err: &tokio_postgres::Error) -> ErrorClass {
    if let Some(code) = err.code() {
        // PgBouncer refuses logins with its catch-all 08P01: a wrong target, as 28P01 or 3D000.
        let pooler = err
            .as_db_error()
            .filter(|_| *code == SqlState::PROTOCOL_VIOLATION);
        return match pooler.map(|db| db.message()) {
            Some(message) if pooler_refused_login(message) => ErrorClass::Auth,
            Some(message) if pooler_full(message) => ErrorClass::TooManyConnections,
            _ => classify_sqlstate(code),
        };
    }
    if err.is_closed() {
        return ErrorClass::ConnectionClosed;
    }
    // tokio-postgres exposes its error kind only through Display.
    let kind = err.to_string();
    let mut sources = std::iter::successors(err.source(), |&e| e.source());
    let io_source = sources.find_map(|e| e.downcast_ref::<io::Error>());
    if kind.starts_with("error performing TLS handshake") {
        // The connection dropped mid-handshake (a server shutting down, a proxy cutting it):
        // no certificate or setting to fix, and not a wrong target.
        return match io_source.map(|io| classify_io(io, true)) {
            Some(class @ (ErrorClass::ConnectionClosed | ErrorClass::ConnectTimeout)) => class,
            _ => ErrorClass::Tls,
        };
    }
    if kind.starts_with("authentication error") {
        return ErrorClass::Auth;
    }
    if kind.starts_with("invalid configuration") {
        return match err.source().map(|s| s.to_string()) {
            Some(detail) if detail.contains("password") => ErrorClass::Auth,
            _ => ErrorClass::Other,
        };
    }
    if kind.starts_with("timeout waiting for server") {
        return ErrorClass::ConnectTimeout;
    }
    let connecting = kind.starts_with("error connecting to server");
    if let Some(io_err) = io_source {
        return classify_io(io_err, connecting);
    }
    if kind.starts_with("error communicating with the server") {
        return ErrorClass::ConnectionClosed;
    }
    ErrorClass::Other
}

/// The user a 28P01 names is `name@server` (no dot after the `@`: not an e-mail address as
/// Entra ID or Cloud SQL IAM users are).
fn single_server_user(message: &str) -> bool {
    let user = message
        .split_once("for user \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or("", |(user, _)| user);
    user.split_once('@').is_some_and(|(name, server)| {
        !name.is_empty() && !server.is_empty() && !server.contains('.')
    })
}

/// A connect failure's message without the server it names first (`127.0.0.1:5432: FATAL:
/// …`, a socket's `/run/postgresql/.s.PGSQL.5432: …`), for grouping and for saying it once.
pub fn without_endpoint(message: &str) -> &str {
    let endpoint = message
        .split_once(": ")
        .filter(|(at, _)| at.parse::<std::net::SocketAddr>().is_ok() || at.contains("/.s.PGSQL."));
    endpoint.map_or(message, |(_, rest)| rest)
}

/// PgBouncer's messages for a login it refuses (user, password, database, a startup option
/// it does not take), as of 1.18: `password`, `SASL` or `"trust" authentication failed`,
/// `No such database: …`, `unsupported startup parameter: options`.
fn pooler_refused_login(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    // `database "x" does not exist`, `role "x" does not exist`: with those words only.
    if message.contains("does not exist")
        && (message.contains("database \"") || message.contains("role \""))
    {
        return true;
    }
    let refusals = [
        "authentication failed",
        "no such database",
        "no such user",
        "unsupported startup parameter",
        "unsupported options startup parameter",
        "ssl required",
        "login rejected",
        "no authentication method",
        "transaction blocks not allowed",
        // The server's refusal of PgBouncer's own login, passed on as 08P01 before 1.19.
        "no pg_hba.conf entry",
        "pg_hba.conf rejects",
        "permission denied for database",
    ];
    refusals.iter().any(|m| message.contains(m))
}

/// PgBouncer's own client limits (max_client_conn, max_db/user_client_connections): a
/// connection already open can still take the write, as with the server's 53300.
fn pooler_full(message: &str) -> bool {
    let full = ["no more connections allowed", "client connections exceeded"];
    full.iter().any(|m| message.contains(m))
}

/// PgBouncer's errors for a query it never passed to a server (no server to be had): the
/// write certainly did not run, unlike after the server connection broke mid-statement.
pub fn pooler_never_sent(message: &str) -> bool {
    let never = [
        "pgbouncer cannot connect to server",
        "server login has been failing",
        "query_wait_timeout",
    ];
    never.iter().any(|m| message.contains(m))
}

pub fn classify_sqlstate(code: &SqlState) -> ErrorClass {
    match *code {
        SqlState::READ_ONLY_SQL_TRANSACTION => ErrorClass::ReadOnly,
        SqlState::ADMIN_SHUTDOWN => ErrorClass::AdminShutdown,
        SqlState::CRASH_SHUTDOWN => ErrorClass::CrashShutdown,
        SqlState::CANNOT_CONNECT_NOW => ErrorClass::CannotConnectNow,
        SqlState::QUERY_CANCELED => ErrorClass::StatementTimeout,
        SqlState::INVALID_PASSWORD | SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
            ErrorClass::Auth
        }
        SqlState::TOO_MANY_CONNECTIONS => ErrorClass::TooManyConnections,
        // PostgreSQL itself sends 08P01 for a broken protocol, which pgdrill never does;
        // PgBouncer sends it for every error of its own.
        SqlState::PROTOCOL_VIOLATION => ErrorClass::Pooler,
        // The rest of class 08 (a proxy's 08006 when the server dropped mid-statement) and
        // the server ending an idle session: the connection is gone, a write's fate unknown.
        SqlState::IDLE_SESSION_TIMEOUT => ErrorClass::ConnectionClosed,
        _ if code.code().starts_with("08") => ErrorClass::ConnectionClosed,
        // Data (22), a constraint (23), a privilege or a missing table or column (42: a new
        // session gets the same), a trigger's RAISE (P0). A prepared statement's name taken
        // (42P05) is the session's.
        SqlState::DUPLICATE_PSTATEMENT => ErrorClass::Other,
        _ if matches!(code.code().get(..2), Some("22" | "23" | "42" | "P0")) => {
            ErrorClass::Rejected
        }
        _ => ErrorClass::Other,
    }
}

fn classify_io(err: &io::Error, connecting: bool) -> ErrorClass {
    use io::ErrorKind::*;
    match err.kind() {
        ConnectionRefused => ErrorClass::ConnectRefused,
        // Once connected, a timeout is the kernel's (TCP_USER_TIMEOUT, keepalives): a silent peer.
        TimedOut if connecting => ErrorClass::ConnectTimeout,
        TimedOut => ErrorClass::NoResponse,
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | NotConnected => {
            ErrorClass::ConnectionClosed
        }
        // target_session_attrs=read-write found only read-only servers (tokio-postgres's own
        // error; an operating system's EACCES or EPERM is a socket or a firewall's refusal).
        PermissionDenied if connecting && err.raw_os_error().is_none() => ErrorClass::ReadOnly,
        // A socket file missing while the server is stopped, or a firewall's EPERM.
        NotFound | PermissionDenied if connecting => ErrorClass::ConnectRefused,
        _ if connecting && is_dns_failure(err) => ErrorClass::Dns,
        // A host that cannot be reached at all is, for a client, a refused connect.
        HostUnreachable | NetworkUnreachable | AddrNotAvailable if connecting => {
            ErrorClass::ConnectRefused
        }
        _ => ErrorClass::Other,
    }
}

fn is_dns_failure(err: &io::Error) -> bool {
    let text = err.to_string();
    text.contains("lookup address")
        || text.contains("Name or service not known")
        || text.contains("nodename nor servname")
        || text.contains("could not resolve")
        || text.contains("Temporary failure in name resolution")
}

/// Exit status when pgdrill never wrote: a wrong or unreachable target.
pub const TARGET_EXIT: u8 = 5;

/// The server refused a session's startup options (a name it does not know, a bad value, one
/// this user may not set).
const STARTUP_OPTION_HINT: &str = "a startup option (options= in --dsn, or PGOPTIONS) sets a \
    parameter the server does not know, or to a value it refuses, or one this user may not set: \
    fix or remove it";

/// Before the first successful write, an error that waiting cannot fix, and what to check;
/// `None` for errors that can heal (refused, timeout, starting up, only standbys).
pub fn wrong_target_hint(
    class: ErrorClass,
    sqlstate: Option<&str>,
    message: &str,
) -> Option<&'static str> {
    let says = |words: &[&str]| words.iter().any(|w| message.contains(w));
    Some(match (class, sqlstate.unwrap_or("")) {
        (_, "28P01") if single_server_user(message) => {
            "the server rejected the user name or password; if this is Azure Single Server's \
             user@server form, Flexible Server takes the plain user name"
        }
        (_, "28P01") => {
            "the server rejected the user name or password (it says so for a user that does \
             not exist too); check the user, and the password given for it (the DSN's \
             password, PGPASSWORD, --password-file or --password-command)"
        }
        (_, "28000") if says(&["PAM authentication", "LDAP authentication", "RADIUS"]) => {
            "the server's external authentication (PAM, LDAP; RDS checks IAM tokens through \
             PAM) rejected the credentials: an IAM token lives 15 minutes and is made for one \
             host, port, user and region; check --password-command and --password-ttl"
        }
        (_, "28000") => {
            "the server does not let this user in from here: check the user name, and the \
             server's pg_hba.conf (or firewall rules) for this client address, database and \
             sslmode"
        }
        (_, "3D000") => "the database does not exist: check dbname in --dsn (or PGDATABASE)",
        (_, "42501") if says(&["to set parameter"]) => STARTUP_OPTION_HINT,
        (_, "42501") => {
            "the user lacks a privilege (CONNECT on the database, CREATE or INSERT): see \
             docs/configuration.md#privileges for the GRANT statements"
        }
        (ErrorClass::Auth, "08P01") => {
            "the connection pooler (PgBouncer) refused the login: check the user, password and \
             dbname in --dsn against its [databases] and auth_file or auth_query, and startup \
             options (options= in --dsn, PGOPTIONS), which it takes only when listed in its \
             ignore_startup_parameters"
        }
        (ErrorClass::Auth, _)
            if says(&["unsupported authentication method", "channel binding"]) =>
        {
            "the server asks for an authentication method pgdrill does not support (GSSAPI, \
             SSPI, Kerberos), or channel binding failed: give this user password, md5 or \
             scram-sha-256 in pg_hba.conf, or drop channel_binding=require"
        }
        (ErrorClass::Auth, _) => {
            "no password could be used: check the DSN's password, PGPASSWORD, ~/.pgpass \
             (PGPASSFILE), --password-file or --password-command"
        }
        (ErrorClass::Tls, _) => {
            "check sslmode and sslrootcert in --dsn (or PGSSLMODE, PGSSLROOTCERT) against the \
             server's TLS setup"
        }
        (ErrorClass::Dns, _) => "the host name does not resolve: check host in --dsn (or PGHOST)",
        // The server refuses a session's startup options (a name it does not know, a bad value).
        (_, "42704" | "22023" | "55P02") if says(&["parameter"]) => STARTUP_OPTION_HINT,
        // tokio-postgres's words for bytes that are not the PostgreSQL protocol.
        (ErrorClass::Other, _)
            if says(&[
                "bytes remaining on stream",
                "unexpected message from server",
                "invalid message length",
            ]) =>
        {
            "the server at this host and port does not speak the PostgreSQL protocol: check \
             the port in --dsn (or PGPORT)"
        }
        _ => return None,
    })
}

/// `argv`'s program can be run now, as `execvp` finds it (a path, or a name on `PATH`); else an
/// error naming `option` with `shown` as its value (a trigger's or password command's, at start).
pub fn runnable(option: &'static str, shown: &str, argv: &[String]) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let program = argv.first().map_or("", String::as_str);
    let executable = |p: &std::path::Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = match program.contains('/') {
        true => executable(std::path::Path::new(program)),
        false => std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| executable(&d.join(program)))),
    };
    if found {
        return Ok(());
    }
    let why = format!("`{program}` is not an executable file nor found on PATH");
    Err(ConfigError::new(option, shown, why))
}

/// A configuration mistake found before anything starts. It names the option,
/// the offending value (passwords redacted) and why it is wrong.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid value '{value}' for {option}: {reason}")]
pub struct ConfigError {
    pub option: &'static str,
    pub value: String,
    pub reason: String,
}

/// A run that could not start: found while building, before any task or connection.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot register the pool metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The table cannot take pgdrill's INSERT, found at the first connection (the database
    /// may be down at start); the message names what to change.
    #[error("{0}")]
    Table(String),
    /// A task of the run panicked or ended on its own; logged where it happened.
    #[error("{0}")]
    Crashed(String),
    /// Before the first acknowledged write: a target that waiting cannot fix (password,
    /// database, privilege, TLS, host name), or no write within `--startup-timeout`.
    #[error("cannot write to the target: {0}")]
    Target(String),
}

impl StartError {
    /// A setup to fix exits 2, like a bad flag; anything else is a plain failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Table(_) => 2,
            StartError::Target(_) => TARGET_EXIT,
            StartError::Metrics(_) | StartError::Crashed(_) => 1,
        }
    }
}

impl ConfigError {
    pub fn new(option: &'static str, value: impl ToString, reason: impl Into<String>) -> Self {
        ConfigError {
            option,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbouncer_login_refusals_are_told_from_its_other_errors() {
        for refused in [
            "password authentication failed",
            "\"trust\" authentication failed",
            "No such database: nosuchdb",
            "no such user",
            "unsupported startup parameter: options",
            "unsupported options startup parameter: only '-c config=val' allowed",
            "SSL required",
            "login rejected",
            "no authentication method is found",
            "transaction blocks not allowed in statement pooling mode",
            "database \"app\" does not exist",
            "role \"app\" does not exist",
            "no pg_hba.conf entry for host \"10.0.0.5\", user \"app\", database \"app\"",
            "permission denied for database \"app\"",
        ] {
            assert!(pooler_refused_login(refused), "{refused}");
        }
        for heals in [
            "server conn crashed?",
            "pgbouncer cannot connect to server",
            "prepared statement \"s1\" does not exist",
        ] {
            assert!(!pooler_refused_login(heals), "{heals}");
        }
        // Never passed to a server: certainly not written; a broken one mid-statement may be.
        assert!(pooler_never_sent("query_wait_timeout"));
        assert!(pooler_never_sent(
            "server login has been failing, cached error: x"
        ));
        assert!(!pooler_never_sent("server conn crashed?"));
        assert!(pooler_full("no more connections allowed (max_client_conn)"));
        assert!(pooler_full(
            "client connections exceeded (max_db_client_connections)"
        ));
        assert!(!pooler_full("server conn crashed?"));
    }

    #[test]
    fn wrong_target_hints_follow_what_the_server_said() {
        let hint = |class, code, message| wrong_target_hint(class, code, message).unwrap_or("");
        let azure = "password authentication failed for user \"app@myserver\"";
        assert!(hint(ErrorClass::Auth, Some("28P01"), azure).contains("Single Server"));
        let entra = "password authentication failed for user \"alice@contoso.com\"";
        assert!(!hint(ErrorClass::Auth, Some("28P01"), entra).contains("Single Server"));
        assert_eq!(without_endpoint("127.0.0.1:5432: FATAL: x"), "FATAL: x");
        assert_eq!(without_endpoint("[::1]:6432: FATAL: x"), "FATAL: x");
        assert_eq!(
            without_endpoint("/run/pg/.s.PGSQL.5432: FATAL: x"),
            "FATAL: x"
        );
        assert_eq!(without_endpoint("FATAL: database: x"), "FATAL: database: x");
        let plain = "password authentication failed for user \"app\"";
        assert!(hint(ErrorClass::Auth, Some("28P01"), plain).contains("user name or password"));
        let pam = "PAM authentication failed for user \"iam_user\"";
        assert!(hint(ErrorClass::Auth, Some("28000"), pam).contains("IAM token"));
        let denied = "permission denied to set parameter \"log_min_messages\"";
        assert!(hint(ErrorClass::Rejected, Some("42501"), denied).contains("PGOPTIONS"));
        let hba = "no pg_hba.conf entry for host \"10.0.0.5\"";
        assert!(hint(ErrorClass::Auth, Some("28000"), hba).contains("pg_hba.conf"));
        let gss = "authentication error: unsupported authentication method: GSS";
        assert!(hint(ErrorClass::Auth, None, gss).contains("does not support"));
        let http = "127.0.0.1:8080: unexpected message from server";
        assert!(hint(ErrorClass::Other, None, http).contains("PostgreSQL protocol"));
        assert_eq!(
            wrong_target_hint(ErrorClass::Other, None, "connection reset"),
            None
        );
    }

    #[test]
    fn sqlstates_map_to_their_classes() {
        for (code, class) in [
            (SqlState::READ_ONLY_SQL_TRANSACTION, ErrorClass::ReadOnly),
            (SqlState::ADMIN_SHUTDOWN, ErrorClass::AdminShutdown),
            (SqlState::CANNOT_CONNECT_NOW, ErrorClass::CannotConnectNow),
            (SqlState::QUERY_CANCELED, ErrorClass::StatementTimeout),
            (SqlState::INVALID_PASSWORD, ErrorClass::Auth),
            (SqlState::UNIQUE_VIOLATION, ErrorClass::Rejected),
            (SqlState::INSUFFICIENT_PRIVILEGE, ErrorClass::Rejected),
            (SqlState::UNDEFINED_TABLE, ErrorClass::Rejected),
            (SqlState::NUMERIC_VALUE_OUT_OF_RANGE, ErrorClass::Rejected),
            (SqlState::RAISE_EXCEPTION, ErrorClass::Rejected),
            (SqlState::DUPLICATE_PSTATEMENT, ErrorClass::Other),
            (SqlState::T_R_SERIALIZATION_FAILURE, ErrorClass::Other),
            (SqlState::DISK_FULL, ErrorClass::Other),
            (SqlState::PROTOCOL_VIOLATION, ErrorClass::Pooler),
            (SqlState::CONNECTION_FAILURE, ErrorClass::ConnectionClosed),
            (
                SqlState::CONNECTION_DOES_NOT_EXIST,
                ErrorClass::ConnectionClosed,
            ),
            (SqlState::IDLE_SESSION_TIMEOUT, ErrorClass::ConnectionClosed),
        ] {
            assert_eq!(classify_sqlstate(&code), class, "{code:?}");
        }
        // A proxy's 08006 mid-statement: the write may have committed.
        assert!(classify_sqlstate(&SqlState::CONNECTION_FAILURE).outcome_unknown_after_send());
    }

    #[test]
    fn io_errors_distinguish_connecting_from_querying() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(classify_io(&refused, true), ErrorClass::ConnectRefused);
        let timed_out = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(classify_io(&timed_out, true), ErrorClass::ConnectTimeout);
        assert_eq!(classify_io(&timed_out, false), ErrorClass::NoResponse);
        let dns =
            io::Error::other("failed to lookup address information: Name or service not known");
        assert_eq!(classify_io(&dns, true), ErrorClass::Dns);
        // A socket file missing (server stopped), EACCES on it, a firewall's EPERM.
        for errno in [2, 13, 1] {
            let os = io::Error::from_raw_os_error(errno);
            assert_eq!(classify_io(&os, true), ErrorClass::ConnectRefused, "{os}");
        }
        let no_writable_server = io::Error::new(io::ErrorKind::PermissionDenied, "read-only");
        assert_eq!(classify_io(&no_writable_server, true), ErrorClass::ReadOnly);
    }

    #[test]
    fn connections_are_discarded_for_these_classes_only() {
        use ErrorClass::*;
        let discards: Vec<_> = (ErrorClass::ALL.into_iter())
            .filter(|c| c.discards_connection(None))
            .collect();
        let want = [
            ReadOnly,
            AdminShutdown,
            CrashShutdown,
            CannotConnectNow,
            ConnectionClosed,
            NoResponse,
            Pooler,
            Other,
        ];
        assert_eq!(discards, want);
        // A statement's own error keeps its session; one that may be the session's does not.
        for kept in ["40001", "55P03", "53100"] {
            assert!(!Other.discards_connection(Some(kept)), "{kept}");
        }
        for dropped in ["42P05", "0A000", "26000", "XX000"] {
            assert!(Other.discards_connection(Some(dropped)), "{dropped}");
        }
        assert!(ReadOnly.discards_connection(Some("25006")));
    }

    #[test]
    fn class_indexes_follow_all() {
        for (i, class) in ErrorClass::ALL.iter().enumerate() {
            assert_eq!(class.index(), i);
        }
        let mut names: Vec<_> = ErrorClass::ALL.iter().map(|c| c.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ErrorClass::ALL.len());
    }
}
