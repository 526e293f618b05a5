//! The connection keys pgdrill reads itself (tokio-postgres lacks them, or reads them
//! otherwise than libpq) and the libpq environment variables: each from the DSN, else
//! from its variable, checked and named where it was set.

use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::TargetSessionAttrs;
use tokio_postgres::Config as PgConfig;

use super::describe_parse_error;
use crate::db::tls::{RootCert, SslMode, TlsSettings};
use crate::error::ConfigError;

/// Connection-string keys pgdrill handles itself (tokio-postgres knows only three sslmodes,
/// has no sslrootcert, and no target_session_attrs newer than PostgreSQL 14's), with the
/// environment variable libpq reads for each.
pub(super) const OUR_KEYS: &[(&str, &str)] = &[
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("target_session_attrs", "PGTARGETSESSIONATTRS"),
    ("gssencmode", "PGGSSENCMODE"),
    ("passfile", "PGPASSFILE"),
    ("connect_timeout", "PGCONNECT_TIMEOUT"),
    ("sslnegotiation", "PGSSLNEGOTIATION"),
    ("load_balance_hosts", "PGLOADBALANCEHOSTS"),
    ("options", "PGOPTIONS"),
    ("channel_binding", "PGCHANNELBINDING"),
    // libpq has no variable for it; tokio-postgres reads it in seconds, libpq in milliseconds.
    ("tcp_user_timeout", ""),
];

/// What libpq takes and pgdrill does not: connection keys tokio-postgres does not know (a
/// parse error that quotes one names an option, not a piece of a password) and environment
/// variables pgdrill does not read (a set one is said at start).
pub(super) const UNSUPPORTED_KEYS: &str =
    "service sslcert sslkey sslcertmode sslcrl sslcrldir sslsni \
    ssl_min_protocol_version ssl_max_protocol_version require_auth requirepeer client_encoding \
    krbsrvname gsslib gssdelegation fallback_application_name keepalives_count \
    replication requiressl sslcompression sslpassword";
pub(super) const UNREAD_VARS: &str =
    "PGSERVICEFILE PGSSLSNI PGSSLMAXPROTOCOLVERSION PGCLIENTENCODING \
    PGKRBSRVNAME PGGSSLIB PGGSSDELEGATION";
/// Of those, the ones that choose the server or tighten the connection's security: going on
/// without them would write to another database, or with less protection than asked for.
pub(super) const REFUSED_VARS: &str = "PGSERVICE PGREQUIREAUTH PGREQUIREPEER PGSSLCERT PGSSLKEY \
    PGSSLCERTMODE PGSSLCRL PGSSLCRLDIR PGSSLMINPROTOCOLVERSION";

/// [`our_value`] for one DSN and environment.
pub(super) type Value<'a> = &'a dyn Fn(&str) -> Option<(String, &'static str)>;

/// One of [`OUR_KEYS`]: the DSN's (the last given), else its variable's, with where it came from.
pub(super) fn our_value(
    key: &str,
    from_dsn: &[(String, String)],
    env: &impl Fn(&str) -> Option<String>,
) -> Option<(String, &'static str)> {
    let (_, var) = OUR_KEYS.iter().find(|(k, _)| *k == key)?;
    match from_dsn.iter().rev().find(|(k, _)| k == key) {
        Some((_, v)) => Some((v.clone(), "--dsn")),
        None if var.is_empty() => None,
        None => env(var).filter(|v| !v.is_empty()).map(|v| (v, *var)),
    }
}

/// An error about `key`'s value `v`, shown as it was written where it was set: `key=v` in
/// `--dsn`, `v` alone in its variable.
fn bad_key(key: &str, v: &str, from: &'static str, why: impl Into<String>) -> ConfigError {
    let shown = match from {
        "--dsn" => format!("{key}={v}"),
        _ => v.to_string(),
    };
    ConfigError::new(from, shown, why)
}

/// libpq's target_session_attrs for a writer: `primary` is `read-write` (a server in
/// recovery is refused either way); the values that pick a standby cannot take writes.
pub(super) fn session_attrs(value: Value) -> Result<TargetSessionAttrs, ConfigError> {
    let Some((v, option)) = value("target_session_attrs") else {
        return Ok(TargetSessionAttrs::Any);
    };
    match v.as_str() {
        "any" => Ok(TargetSessionAttrs::Any),
        "read-write" | "primary" => Ok(TargetSessionAttrs::ReadWrite),
        "read-only" | "standby" | "prefer-standby" => Err("pgdrill writes, so it needs a \
            primary: target_session_attrs must be any, read-write or primary"),
        _ => Err(
            "target_session_attrs must be any, read-write or primary (libpq's \
            read-only, standby and prefer-standby pick servers that cannot take writes)",
        ),
    }
    .map_err(|reason| bad_key("target_session_attrs", &v, option, reason))
}

/// pgdrill has no GSSAPI encryption, as a libpq built without it: `prefer` (libpq's
/// default, common in providers' URLs) and `disable` connect without it.
pub(super) fn check_gssencmode(value: Value) -> Result<(), ConfigError> {
    match value("gssencmode") {
        Some((v, option)) if !matches!(v.as_str(), "disable" | "prefer") => {
            let why = "pgdrill has no GSSAPI encryption: gssencmode must be disable or prefer \
                       (TLS through sslmode protects the connection)";
            Err(bad_key("gssencmode", &v, option, why))
        }
        _ => Ok(()),
    }
}

/// Keys with a libpq variable tokio-postgres does not read, and the two it reads otherwise
/// than libpq: from the DSN, else from their variable.
pub(super) fn pass_through(pg: &mut PgConfig, value: Value) -> Result<(), ConfigError> {
    for key in "options channel_binding sslnegotiation load_balance_hosts".split(' ') {
        let Some((v, from)) = value(key) else {
            continue;
        };
        let bad = |reason: &str| bad_key(key, &v, from, reason);
        let one = one_key(key, &v).map_err(|reason| bad(&reason))?;
        match key {
            "options" => _ = pg.options(one.get_options().unwrap_or_default()),
            "channel_binding" => _ = pg.channel_binding(one.get_channel_binding()),
            // Direct TLS needs the ALPN pgdrill's TLS does not offer.
            "sslnegotiation" if v != "postgres" => {
                return Err(bad("pgdrill negotiates TLS the PostgreSQL way only: \
                    sslnegotiation must be postgres"));
            }
            "load_balance_hosts" => _ = pg.load_balance_hosts(one.get_load_balance_hosts()),
            _ => {}
        }
    }
    if let Some((v, from)) = value("tcp_user_timeout") {
        match v.trim().parse::<u64>() {
            // libpq's 0 is the system's default; pgdrill's default bounds a dead server.
            Ok(0) => {}
            // The kernel takes an int: above it every connect fails with EINVAL.
            Ok(ms) if ms <= i32::MAX as u64 => _ = pg.tcp_user_timeout(Duration::from_millis(ms)),
            _ => {
                let why = "`tcp_user_timeout` must be whole milliseconds, at most 2147483647";
                return Err(bad_key("tcp_user_timeout", &v, from, why));
            }
        }
    }
    Ok(())
}

/// A set variable of [`REFUSED_VARS`]: an error naming it, before anything starts.
pub(super) fn refuse_env(env: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    let set = |var| env(var).filter(|v| !v.is_empty()).map(|v| (var, v));
    let Some((var, value)) = REFUSED_VARS.split_whitespace().find_map(set) else {
        return Ok(());
    };
    let why = "pgdrill does not read this libpq variable, and going on without it would \
               connect elsewhere or with less protection than it asks for; unset it";
    Err(ConfigError::new(var, value, why))
}

/// sslmode / sslrootcert from the DSN, else from PGSSLMODE / PGSSLROOTCERT, else libpq's
/// defaults (prefer, no root certificate).
pub(super) fn tls_settings(value: Value) -> Result<TlsSettings, ConfigError> {
    let root = value("sslrootcert");
    let root_cert = match &root {
        None => RootCert::Default,
        Some((v, _)) if v == "system" => RootCert::System,
        Some((v, _)) => RootCert::File(v.into()),
    };
    let system = root_cert == RootCert::System;
    let mode = match value("sslmode") {
        // libpq: the system's CAs vouch for names, so only the name check makes sense.
        None if system => SslMode::VerifyFull,
        None => SslMode::Prefer,
        Some((v, option)) => match SslMode::parse(&v) {
            None => {
                Err("sslmode must be disable, allow, prefer, require, verify-ca or verify-full")
            }
            Some(mode) if system && mode != SslMode::VerifyFull => Err(
                "sslrootcert=system needs sslmode=verify-full (libpq refuses weaker modes with it)",
            ),
            Some(mode) => Ok(mode),
        }
        .map_err(|reason| bad_key("sslmode", &v, option, reason))?,
    };
    // Named where it was set, as every other key: the DSN or its variable (with no
    // sslrootcert, an explicit sslmode=verify-* is what reads the system's store).
    TlsSettings::new(mode, root_cert).map_err(|e| match (&root, value("sslmode")) {
        (Some((v, from)), _) => bad_key("sslrootcert", v, from, e.reason),
        (None, Some((v, from))) => bad_key("sslmode", &v, from, e.reason),
        (None, None) => e,
    })
}

/// libpq's environment variables that pgdrill does not read (their keys in `--dsn` are
/// refused), when any is set: said at start, not silently dropped.
pub(super) fn ignored_env(env: &impl Fn(&str) -> Option<String>) -> Option<String> {
    let set: Vec<&str> = (UNREAD_VARS.split(' '))
        .filter(|v| env(v).is_some_and(|value| !value.is_empty()))
        .collect();
    (!set.is_empty()).then(|| {
        format!(
            "libpq environment variables pgdrill does not read are set and ignored: {}",
            set.join(" ")
        )
    })
}

pub(super) const WAITS_FOREVER: &str =
    "`connect_timeout` 0 or less waits forever in libpq; pgdrill needs \
     a bound: whole seconds above 0, or --connect-timeout";

/// libpq's `connect_timeout`, in whole seconds, set on `pg`; returns where it came from, or for
/// zero or less, not read as unset, the error to give where it is in force ([`WAITS_FOREVER`]).
pub(super) fn connect_timeout(
    pg: &mut PgConfig,
    value: Value,
) -> Result<(Option<&'static str>, Option<ConfigError>), ConfigError> {
    let Some((v, from)) = value("connect_timeout") else {
        return Ok((None, None));
    };
    let bad = |reason| bad_key("connect_timeout", &v, from, reason);
    match v.trim().parse::<i64>() {
        // libpq takes an int; beyond it no deadline can be computed.
        Ok(seconds) if seconds > i64::from(i32::MAX) => {
            Err(bad("`connect_timeout` must be at most 2147483647 seconds"))
        }
        Ok(seconds) if seconds > 0 => {
            pg.connect_timeout(Duration::from_secs(seconds as u64));
            let from = match from {
                "--dsn" => "connect_timeout in --dsn",
                var => var,
            };
            Ok((Some(from), None))
        }
        Ok(_) => Ok((None, Some(bad(WAITS_FOREVER)))),
        Err(_) => Err(bad("`connect_timeout` must be whole seconds")),
    }
}

/// A one-key DSN, so that a value from the environment gets exactly libpq's syntax.
pub(super) fn one_key(key: &str, value: &str) -> Result<PgConfig, String> {
    let escaped = value.replace('\\', "\\\\").replace('\'', "\\'");
    PgConfig::from_str(&format!("{key}='{escaped}'")).map_err(|e| describe_parse_error(&e, ""))
}
