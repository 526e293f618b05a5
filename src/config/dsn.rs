//! Connection strings the libpq way: URL or key=value, multi-host, and the `PG*` environment
//! variables as defaults. Passwords never leave this module in printable form.

use std::path::PathBuf;
use std::str::FromStr;

use percent_encoding::percent_decode_str;

use tokio_postgres::config::{Host, TargetSessionAttrs};
use tokio_postgres::Config as PgConfig;

use crate::db::tls::{RootCert, SslMode, TlsSettings};
use crate::db::Target;
use crate::error::ConfigError;
use crate::secrets::{redact, REDACTED};

/// PgBouncer's conventional port (Azure Flexible Server's built-in PgBouncer listens
/// there too): the one sign of a pooler pgdrill has before it connects.
pub const PGBOUNCER_PORT: u16 = 6432;

/// Parses `dsn` (`None`: an empty one), then fills what it leaves unset from `env` as libpq does.
pub fn parse(
    dsn: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Target, ConfigError> {
    refuse_env(&env)?;
    let raw = &query_at_encoded(dsn.unwrap_or("").trim());
    check_url_user_info(raw)?;
    let (rest, ours) = take_our_params(&url_ports(raw, &env)?);
    // A blank DSN parses as libpq's: all defaults.
    let mut pg = PgConfig::from_str(&rest).map_err(|err| {
        let (shown, _) = crate::secrets::redact_unparsed(raw);
        let shown = without_unknown_value(&shown, &err);
        ConfigError::new("--dsn", shown, describe_parse_error(&err, &rest))
    })?;
    let value = |key: &str| our_value(key, &ours, &env);
    let tls = tls_settings(&value)?;
    pg.target_session_attrs(session_attrs(&value)?);
    check_gssencmode(&value)?;
    pass_through(&mut pg, &value)?;
    pg.ssl_mode(tls.mode.for_tokio_postgres());
    let ports_from_dsn = !pg.get_ports().is_empty();
    let names_from_dsn = (!pg.get_hosts().is_empty(), !pg.get_hostaddrs().is_empty());
    let (connect_timeout_from, connect_timeout_forever) = connect_timeout(&mut pg, &value)?;
    // The variables libpq reads that pgdrill honours, as defaults for what the DSN leaves unset.
    for var in "PGHOST PGHOSTADDR PGPORT PGUSER PGPASSWORD PGDATABASE PGAPPNAME".split(' ') {
        if let Some(v) = env(var).filter(|v| !v.is_empty()) {
            let shown = if var == "PGPASSWORD" { REDACTED } else { &v };
            apply_env_default(&mut pg, var, &v)
                .map_err(|reason| ConfigError::new(var, shown, reason))?;
        }
    }
    if let Some(password) = pg.get_password() {
        // The DSN's or PGPASSWORD's: never shown from here on, in any output.
        crate::secrets::remember(&String::from_utf8_lossy(password));
    }
    if pg.get_hosts().is_empty() && pg.get_hostaddrs().is_empty() {
        pg.host("localhost");
    }
    // A mistake is named where it was made: the DSN, or the variable it left `var` to.
    let blame = |var: &'static str, from_dsn: bool, reason: String| match from_dsn {
        true => ConfigError::new("--dsn", redact(raw), reason),
        false => ConfigError::new(var, redact(&env(var).unwrap_or_default()), reason),
    };
    check_hostaddr_count(&pg).map_err(|reason| match names_from_dsn {
        (_, false) => blame("PGHOSTADDR", false, reason),
        (names, true) => blame("PGHOST", names, reason),
    })?;
    check_host_names(&pg).map_err(|reason| blame("PGHOST", names_from_dsn.0, reason))?;
    check_ports(&pg).map_err(|reason| blame("PGPORT", ports_from_dsn, reason))?;
    if pg.get_user().is_none() {
        pg.user(env("USER").unwrap_or_else(|| "postgres".to_string()));
    }
    if pg.get_dbname().is_none() {
        pg.dbname(pg.get_user().unwrap_or("postgres").to_string());
    }
    // libpq reads the password file for an empty password too.
    let passfile = match pg.get_password() {
        Some(password) if !password.is_empty() => None,
        _ => match value("passfile") {
            Some((path, from)) => Some((PathBuf::from(path), from)),
            None => env("HOME").map(|home| (PathBuf::from(home).join(".pgpass"), "~/.pgpass")),
        },
    };
    if pg.get_application_name().is_none() {
        pg.application_name("pgdrill");
    }
    let hosts: Vec<_> = host_ports(&pg).map(|(h, p)| format!("{h}:{p}")).collect();
    let redacted = format!("{} {}", describe(&pg, &hosts), tls.describe());
    Ok(Target {
        passed_over: ignored_env(&env)
            .into_iter()
            .chain(unread_root_crt(&tls, &env))
            .collect(),
        pg,
        hosts,
        redacted,
        tls,
        connect_timeout_from,
        connect_timeout_forever,
        passfile,
    })
}

/// libpq reads `~/.postgresql/root.crt` when `sslrootcert` is not given; pgdrill does not
/// (its containers manage the system store): said when the file is there, not left silent.
fn unread_root_crt(tls: &TlsSettings, env: &impl Fn(&str) -> Option<String>) -> Option<String> {
    let home = PathBuf::from(env("HOME")?);
    let default_roots = tls.root_cert == RootCert::Default && tls.mode != SslMode::Disable;
    (default_roots && home.join(".postgresql/root.crt").is_file()).then(|| {
        format!(
            "~/.postgresql/root.crt is not read (libpq would check the server's certificate \
             against it; pgdrill checks it against the system's store, and only with \
             sslmode=verify-ca or verify-full): to use it, add sslrootcert={}/.postgresql/root.crt \
             to --dsn",
            home.display()
        )
    })
}

/// A connection URL's scheme and what follows it; `None` for a key=value string.
fn url(raw: &str) -> Option<(&'static str, &str)> {
    (["postgres://", "postgresql://"].into_iter())
        .find_map(|scheme| Some((scheme, raw.strip_prefix(scheme)?)))
}

/// libpq gives a URL's portless host the query's `port`, else PGPORT's, else 5432; tokio-postgres
/// gives it 5432 at once (and refuses a `port` beside it). So ports are written into such hosts
/// here, from the query's `port` (taken out) or PGPORT, one for all or one each.
fn url_ports(raw: &str, env: &impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let Some((scheme, after)) = url(raw) else {
        return Ok(raw.to_string());
    };
    let (netloc, rest) = after.split_at(after.find(['/', '?']).unwrap_or(after.len()));
    let (user_info, hosts) = netloc.split_at(netloc.rfind('@').map_or(0, |i| i + 1));
    // `[::1]:5433` or `h:5433`: a port given.
    let has_port = |h: &str| h[h.rfind(']').unwrap_or(0)..].contains(':');
    if hosts.is_empty() || hosts.split(',').any(has_port) {
        return Ok(raw.to_string());
    }
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (ports, mut kept) = split_query(query, |k| k == "port");
    kept.retain(|pair| !pair.is_empty());
    let (ports, from) = match ports.into_iter().last() {
        Some((_, value)) => (value, "--dsn"),
        None => match env("PGPORT").filter(|p| !p.is_empty()) {
            Some(p) => (check_pgport(p)?, "PGPORT"),
            None => return Ok(raw.to_string()),
        },
    };
    let ports: Vec<&str> = ports.split(',').collect();
    let hosts: Vec<&str> = hosts.split(',').collect();
    if ports.len() != 1 && ports.len() != hosts.len() {
        // Before the parse, which remembers the password: nothing after it is shown (a
        // query's password may hold a space).
        let shown = match from {
            "PGPORT" => ports.join(","),
            _ => crate::secrets::redact_unparsed(raw).0,
        };
        let why = port_count(ports.len(), hosts.len());
        return Err(ConfigError::new(from, shown, why));
    }
    let hosts: Vec<String> = hosts
        .iter()
        .zip(ports.iter().cycle())
        .map(|(h, p)| format!("{h}:{p}"))
        .collect();
    let base = format!("{scheme}{user_info}{}{path}", hosts.join(","));
    Ok(with_query(base, &kept))
}

/// A URL query's pairs whose key `take` picks (unescaped), and the others.
fn split_query(query: &str, take: impl Fn(&str) -> bool) -> (Vec<(String, String)>, Vec<&str>) {
    let (mut taken, mut kept) = (Vec::new(), Vec::new());
    // Keys are percent-decoded too, as libpq and tokio-postgres decode them.
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some((k, v)) if take(&decode(k)) => taken.push((decode(k), decode(v))),
            _ => kept.push(pair),
        }
    }
    (taken, kept)
}

/// `base` with the query `pairs`, if there are any.
fn with_query(base: String, pairs: &[&str]) -> String {
    match pairs.is_empty() {
        true => base,
        false => format!("{base}?{}", pairs.join("&")),
    }
}

/// libpq reads a URL's user info only before its first `/`: an `@` after the path and in
/// the query (`?user=alice@contoso.com`, an Entra ID user) is part of a value. tokio-postgres
/// would take everything up to it as the user info, so it is percent-encoded here.
fn query_at_encoded(raw: &str) -> std::borrow::Cow<'_, str> {
    let Some((scheme, after)) = url(raw) else {
        return raw.into();
    };
    let first = |c: char| after.find(c).unwrap_or(after.len());
    let (at, query) = (first('@'), first('?'));
    if at == after.len() || at < first('/') || at < query {
        return raw.into();
    }
    let (head, tail) = after.split_at(query);
    format!("{scheme}{head}{}", tail.replace('@', "%40")).into()
}

/// tokio-postgres ends a URL's user info at its first `@`, wherever that is. An unencoded
/// `/`, `?` or white space before it, or a second `@` before the path, would put part of
/// the password into the host (shown in logs and labels), hide the query's `sslmode` from
/// pgdrill, or escape redaction. The error shows nothing before the last `@`.
fn check_url_user_info(raw: &str) -> Result<(), ConfigError> {
    let refused = |shown, why| Err(ConfigError::new("--dsn", shown, why));
    let Some((scheme, after)) = url(raw) else {
        // Not key=value (whose first key cannot hold "://"): another scheme's URL, or none.
        let other = (raw.split_once("://")).or_else(|| Some(("", raw.strip_prefix("//")?)));
        let Some((s, rest)) =
            other.filter(|(s, _)| !s.contains(|c: char| c == '=' || c.is_whitespace()))
        else {
            return Ok(());
        };
        // Named only if it reads as a scheme: a mistyped one may hold a password (`pg:/u:pw://`).
        let named = s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c));
        let (scheme, why) = match named {
            true => (
                format!("{s}://"),
                format!("is a URL of scheme {s}://: libpq's start postgresql:// or postgres://"),
            ),
            false => (
                "…".into(),
                "is not a postgresql:// or postgres:// URL".into(),
            ),
        };
        let shown = match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}{REDACTED}@{host}"),
            None => format!("{scheme}{rest}"),
        };
        return refused(shown, why);
    };
    // libpq refuses a `%` not followed by two hex digits; tokio-postgres would keep it as it is.
    let escapes = after.split('%').skip(1);
    if escapes
        .map(|e| e.as_bytes())
        .any(|e| !(e.len() >= 2 && e[..2].iter().all(u8::is_ascii_hexdigit)))
    {
        let why = "has a '%' not followed by two hex digits: write a literal % as %25";
        return refused(crate::secrets::redact_unparsed(raw).0, why.into());
    }
    let Some((user_info, rest)) = after.split_once('@') else {
        return Ok(());
    };
    let host = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    if user_info.contains(|c: char| "/?".contains(c) || c.is_whitespace()) || host.contains('@') {
        let shown = after.rsplit_once('@').map_or("", |(_, tail)| tail);
        let shown = format!("{scheme}REDACTED@{shown}");
        let why = "has a '/', '?', '@' or space before its host that is not percent-encoded: \
                   write them as %2F, %3F, %40 and %20 in the user name and password";
        return Err(ConfigError::new("--dsn", shown, why));
    }
    Ok(())
}

/// The rest of a URL's query or key=value string (for tokio-postgres) and its [`OUR_KEYS`] pairs,
/// unescaped; a string that does not tokenize stays whole, for tokio-postgres to report.
fn take_our_params(raw: &str) -> (String, Vec<(String, String)>) {
    let ours = |k: &str| OUR_KEYS.iter().any(|(key, _)| *key == k);
    if url(raw).is_some() {
        let Some((base, query)) = raw.split_once('?') else {
            return (raw.to_string(), Vec::new());
        };
        let (taken, kept) = split_query(query, ours);
        return (with_query(base.to_string(), &kept), taken);
    }
    let (mut taken, mut kept, mut s) = (Vec::new(), Vec::new(), raw.trim_start());
    while !s.is_empty() {
        let Some(eq) = s.find('=') else {
            return (raw.to_string(), Vec::new());
        };
        let key = s[..eq].trim_end();
        let after = s[eq + 1..].trim_start();
        let (value, len) = kv_value(after);
        let pair_len = s.len() - after.len() + len;
        match ours(key) {
            true => taken.push((key.to_string(), value)),
            false => kept.push(&s[..pair_len]),
        }
        s = s[pair_len..].trim_start();
    }
    (kept.join(" "), taken)
}

/// One libpq key=value value: quoted with backslash escapes, or up to whitespace.
/// Returns the unescaped value and the bytes it took.
fn kv_value(s: &str) -> (String, usize) {
    let (mut out, mut escaped) = (String::new(), false);
    let quoted = s.starts_with('\'');
    let skip = usize::from(quoted);
    for (i, c) in s[skip..].char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '\'' if quoted && !escaped => return (out, i + 2),
            c if !quoted && !escaped && c.is_whitespace() => return (out, i),
            c => {
                out.push(c);
                escaped = false;
            }
        }
    }
    (out, s.len())
}

/// Applies one `PG*` variable where the DSN left its key unset.
fn apply_env_default(pg: &mut PgConfig, var: &str, value: &str) -> Result<(), String> {
    let one = |key: &str| one_key(key, value);
    match var {
        "PGHOST" if pg.get_hosts().is_empty() => {
            for host in one("host")?.get_hosts() {
                match host {
                    Host::Tcp(h) => pg.host(h),
                    Host::Unix(p) => pg.host_path(p),
                };
            }
        }
        "PGHOSTADDR" if pg.get_hostaddrs().is_empty() => {
            for addr in one("hostaddr")?.get_hostaddrs() {
                pg.hostaddr(*addr);
            }
        }
        "PGPORT" if pg.get_ports().is_empty() => {
            for port in one("port")?.get_ports() {
                pg.port(*port);
            }
        }
        "PGUSER" if pg.get_user().is_none() => _ = pg.user(value),
        "PGPASSWORD" if pg.get_password().is_none() => _ = pg.password(value),
        "PGDATABASE" if pg.get_dbname().is_none() => _ = pg.dbname(value),
        "PGAPPNAME" if pg.get_application_name().is_none() => _ = pg.application_name(value),
        _ => {}
    }
    Ok(())
}

impl Target {
    /// The password from libpq's password file if the DSN, environment, `--password-file` and
    /// `--password-command` give none; a file passed over goes in `passed_over`.
    pub(crate) fn use_password_file(&mut self) {
        let Some((path, from)) = &self.passfile else {
            return;
        };
        let hosts: Vec<_> = host_ports(&self.pg).collect();
        let (db, user) = (self.pg.get_dbname(), self.pg.get_user());
        match super::pgpass::lookup(path, &hosts, db.unwrap_or(""), user.unwrap_or("")) {
            Ok(Some(password)) => {
                crate::secrets::remember(&password);
                self.pg.password(password);
            }
            Ok(None) => {}
            Err(why) => {
                let path = path.display();
                self.passed_over
                    .push(format!("password file {path} ({from}) not used: {why}"));
            }
        }
    }

    /// `pgdrill_target_info`'s labels (host, port, database, pooler; never the password), one per
    /// configured host, in order. The pooler is `pgbouncer` when the port is [`PGBOUNCER_PORT`],
    /// else `none`: an assumption from the port (the one `--query-mode auto` acts on), not a probe.
    pub fn info(&self) -> Vec<[String; 4]> {
        let database = self.pg.get_dbname().unwrap_or("");
        host_ports(&self.pg)
            .map(|(host, port)| {
                let pooler = match port {
                    PGBOUNCER_PORT => "pgbouncer",
                    _ => "none",
                };
                [host, port.to_string(), database.into(), pooler.into()]
            })
            .collect()
    }
}

/// libpq accepts as many hostaddrs as hosts, or hostaddrs alone.
fn check_hostaddr_count(pg: &PgConfig) -> Result<(), String> {
    let (hosts, addrs) = (pg.get_hosts().len(), pg.get_hostaddrs().len());
    if hosts > 0 && addrs > 0 && hosts != addrs {
        return Err(format!(
            "{addrs} hostaddrs for {hosts} hosts: give one hostaddr per host"
        ));
    }
    Ok(())
}

/// A host name holds no `@` and no `://`: a connection URL given as `host=` (or as PGHOST)
/// would be looked up in DNS, and its password shown wherever the host is named. An empty
/// one (`host=$H` with H unset, `host=a,,b`) would be looked up as '' after start.
fn check_host_names(pg: &PgConfig) -> Result<(), String> {
    if (pg.get_hosts().iter()).any(|h| matches!(h, Host::Tcp(h) if h.trim().is_empty())) {
        let reason = "a host name is empty: name every host; pgdrill does not fill an empty \
                      one from PGHOST or a default as libpq does (an unset variable in host=?)";
        return Err(reason.into());
    }
    let is_url = |h: &Host| matches!(h, Host::Tcp(h) if h.contains("://") || h.contains('@'));
    if pg.get_hosts().iter().any(is_url) {
        let reason = "a host name cannot hold '@' or '://': give a connection URL as the whole \
                      DSN, not as its host";
        return Err(reason.into());
    }
    Ok(())
}

/// libpq accepts one port for all hosts or exactly one per host; anything else would
/// otherwise surface only at the first connection, as an error retried forever.
fn check_ports(pg: &PgConfig) -> Result<(), String> {
    let hosts = pg.get_hosts().len().max(pg.get_hostaddrs().len());
    let ports = pg.get_ports().len();
    no_port_zero(pg)?;
    if ports > 1 && ports != hosts {
        return Err(port_count(ports, hosts));
    }
    Ok(())
}

fn no_port_zero(pg: &PgConfig) -> Result<(), String> {
    match pg.get_ports().contains(&0) {
        true => Err("port 0: a port runs from 1 to 65535".to_string()),
        false => Ok(()),
    }
}

/// PGPORT, written into a URL's hosts, checked first as the key=value path checks it: its
/// error names PGPORT, not the DSN (which shows no port).
fn check_pgport(value: String) -> Result<String, ConfigError> {
    let mut ports = PgConfig::new();
    apply_env_default(&mut ports, "PGPORT", &value)
        .and_then(|()| no_port_zero(&ports))
        .map_err(|reason| ConfigError::new("PGPORT", &value, reason))?;
    Ok(value)
}

/// libpq's rule for ports (one for all hosts, or one per host), broken.
fn port_count(ports: usize, hosts: usize) -> String {
    format!("{ports} ports for {hosts} hosts: give one port for all hosts or one per host")
}

/// Each configured host (its hostaddr when it has no name) with its port (libpq: one
/// port for all hosts, or one per host).
fn host_ports(pg: &PgConfig) -> impl Iterator<Item = (String, u16)> + '_ {
    let (hosts, addrs, ports) = (pg.get_hosts(), pg.get_hostaddrs(), pg.get_ports());
    (0..hosts.len().max(addrs.len())).map(move |i| {
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let host = match (hosts.get(i), addrs.get(i)) {
            (Some(Host::Tcp(h)), _) => h.clone(),
            (Some(Host::Unix(p)), _) => p.display().to_string(),
            (None, addr) => addr.map(ToString::to_string).unwrap_or_default(),
        };
        (host, port)
    })
}

fn describe(pg: &PgConfig, hosts: &[String]) -> String {
    let mut out = format!(
        "host={} user={} dbname={}",
        hosts.join(","),
        pg.get_user().unwrap_or(""),
        pg.get_dbname().unwrap_or("")
    );
    if hosts.len() > 1 {
        // libpq's words, as the user wrote them.
        let attrs = match pg.get_target_session_attrs() {
            TargetSessionAttrs::ReadWrite => "read-write",
            TargetSessionAttrs::ReadOnly => "read-only",
            _ => "any",
        };
        out.push_str(&format!(" target_session_attrs={attrs}"));
    }
    if pg.get_password().is_some() {
        out.push_str(" password=REDACTED");
    }
    out
}

#[path = "dsn_error.rs"]
mod error;
#[path = "dsn_keys.rs"]
mod keys;
use error::{describe_parse_error, without_unknown_value};
use keys::*;

#[cfg(test)]
#[path = "dsn_tests.rs"]
mod tests;
