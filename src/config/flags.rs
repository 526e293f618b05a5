//! Where a run's settings came from: the report's "flags" table (those given on the
//! command line or in the environment, never a password), and the variable behind a bad value.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue};
use clap::parser::ValueSource;
use clap::CommandFactory;

use crate::config::Cli;
use crate::error::ConfigError;

/// `(flag, value)` (long name, no dashes) for each setting given explicitly, in `argv` or the
/// environment: the DSN as `redacted_target`, a password command as `(redacted)`, others scrubbed.
pub fn as_run(argv: &[OsString], redacted_target: &str) -> Vec<(String, String)> {
    let cmd = Cli::command();
    let Ok(matches) = cmd.clone().try_get_matches_from(argv) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        let (Some(long), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) =
            (arg.get_long(), matches.value_source(id))
        else {
            continue;
        };
        let value = match id {
            "dsn" => redacted_target.to_string(),
            _ if id.contains("password_command") => "(redacted)".to_string(),
            // Scrubbed as given: once the page escapes it (`"` as `&quot;`), no pattern
            // would recognise a `"password": "…"` in a trigger command any more.
            _ => matches
                .get_raw(id)
                .map(|vals| {
                    let vals: Vec<_> = vals.map(|v| v.to_string_lossy()).collect();
                    crate::secrets::scrub(&vals.join(","))
                })
                .unwrap_or_else(|| "true".to_string()),
        };
        out.push((long.to_string(), value));
    }
    out
}

/// `argv` with a value that starts with `-` and a digit joined to the flag before it
/// (`--duration -5s` as `--duration=-5s`): clap reads a lone `-5s` as short flags ("unexpected
/// argument '-5'"); joined, the flag's own parser says what is wrong with the value.
pub fn join_negative_values(argv: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    let mut options_ended = false;
    for arg in argv {
        let negative = arg
            .to_str()
            .and_then(|a| a.strip_prefix('-'))
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
        let flag = out
            .last()
            .and_then(|f| f.to_str())
            .filter(|f| f.len() > 2 && f.starts_with("--") && !f.contains('='));
        match flag {
            Some(flag) if negative && !options_ended => {
                let joined = format!("{flag}={}", arg.to_string_lossy());
                *out.last_mut().expect("a flag before") = joined.into();
            }
            _ => {
                options_ended |= arg == "--";
                out.push(arg);
            }
        }
    }
    out
}

/// A usage error's text (clap's, or a [`ConfigError`] given its flag as context), naming
/// the environment variable when the bad value came from one: clap names only the flag,
/// which the user may never have typed. `argv` is what was parsed.
pub fn usage_message(err: &clap::Error, argv: &[OsString]) -> String {
    // Rust's integer parse error, as clap passes it on, says nothing of what is wanted.
    let text = err.render().to_string().replace(
        "invalid digit found in string",
        "not a count (a whole number, 0 or more)",
    );
    if dsn_split_by_the_shell(argv).is_some_and(|w| text.contains(&format!("'{w}'"))) {
        let usage = text.split_once('\n').map_or("", |(_, rest)| rest);
        return format!(
            "error: --dsn: unexpected word after its value (not shown: it may be part of the \
             password); pgdrill takes no bare words: quote the whole DSN\n{usage}"
        );
    }
    let Some(ContextValue::String(shown)) = err.get(ContextKind::InvalidArg) else {
        return text;
    };
    let Some(long) = shown.split(' ').next().and_then(|s| s.strip_prefix("--")) else {
        return text;
    };
    // The values typed for the flag: `--flag v` or `--flag=v`.
    let given: Vec<&str> = argv.iter().filter_map(|a| a.to_str()).collect();
    let flag = format!("--{long}");
    let typed: Vec<&str> = given
        .iter()
        .enumerate()
        .filter_map(|(i, a)| match a.strip_prefix(flag.as_str())? {
            "" => given.get(i + 1).copied(),
            rest => rest.strip_prefix('='),
        })
        .collect();
    let from_env = |var: &std::ffi::OsStr| {
        std::env::var_os(var).is_some_and(|set| match err.get(ContextKind::InvalidValue) {
            // clap quotes the bad value: the variable's, unless the same was typed (a
            // subcommand's flag of the same name may have been, beside a bad variable).
            Some(ContextValue::String(value)) => {
                set == value.as_str() && !typed.contains(&value.as_str())
            }
            // pgdrill's own checks show the value as read (`25d` as `25days`).
            _ => typed.is_empty(),
        })
    };
    let cmd = Cli::command();
    let var = std::iter::once(&cmd)
        .chain(cmd.get_subcommands())
        .flat_map(|c| c.get_arguments())
        .filter(|a| a.get_long() == Some(long))
        .find_map(|a| a.get_env().filter(|var| from_env(var)));
    let Some(var) = var else {
        return text;
    };
    // clap quotes the flag with its value name; a ConfigError's text does not.
    let quoted = format!("for '{shown}'");
    let mention = if text.contains(&quoted) {
        quoted
    } else {
        format!("for {shown}")
    };
    let set_by = format!("{mention} (set by {})", var.to_string_lossy());
    text.replacen(&mention, &set_by, 1)
}

/// The bare word right after `--dsn`'s value. pgdrill takes no bare words (clap tries it as
/// a subcommand, or calls it unexpected, and quotes it), so that is an unquoted DSN split at a
/// space, as in a password (`--dsn postgres://u:pa ss@h/db`): the quote would show its tail.
fn dsn_split_by_the_shell(argv: &[OsString]) -> Option<String> {
    let given: Vec<_> = argv.iter().map(|a| a.to_string_lossy()).collect();
    let at = given
        .iter()
        .position(|a| a == "--dsn" || a.starts_with("--dsn="))?;
    let next = at + if given[at] == "--dsn" { 2 } else { 1 };
    let word = given.get(next)?;
    (!word.starts_with('-')).then(|| word.to_string())
}

/// `path` can be written: an existing file (or device, like `/dev/stdout`) opens for
/// writing, else its directory exists and takes a new file. Returns the path.
pub fn writable_file(option: &'static str, path: &Path) -> Result<PathBuf, ConfigError> {
    let bad = |reason: String| ConfigError::new(option, path.display(), reason);
    if path.as_os_str() == "-" {
        return Err(bad(
            "standard output is not written here; name the file to write".into(),
        ));
    }
    if path.is_dir() {
        return Err(bad("is a directory; name the file to write".to_string()));
    }
    if path.exists() {
        return std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map(|_| path.to_path_buf())
            .map_err(|e| bad(format!("cannot write it: {e}")));
    }
    // A dangling link is written through: the file is made where it points.
    let (target, dir) = super::follow_links(path, 40);
    if target.is_symlink() {
        return Err(bad("is a loop of symbolic links".into()));
    }
    if !dir.is_dir() {
        return Err(bad(format!("directory {} does not exist", dir.display())));
    }
    // Permission bits cannot tell (root, ACLs, read-only mounts): try it. Unique per call: a probe
    // a killed process left (pid 1 in every container) must not fail the next start.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let pid = std::process::id();
    let probe = dir.join(format!(".pgdrill-write-check-{pid}-{nanos}"));
    std::fs::File::create_new(&probe)
        .map_err(|e| bad(format!("cannot write in {}: {e}", dir.display())))?;
    let _ = std::fs::remove_file(&probe);
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_flags_only_and_no_secrets() {
        let argv: Vec<OsString> = [
            "pgdrill",
            "--dsn",
            "postgres://u:hunter2@h/db",
            "--rate",
            "50",
            "--password-command",
            "echo hunter2",
            "--no-create-table",
            "--failover-command",
            r#"curl -u patroni:s3cret -d {"password":"hunter2"} http://pg1:8008/failover"#,
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let flags = as_run(&argv, "postgres://u@h/db");
        let text = format!("{flags:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("s3cret"),
            "{text}"
        );
        assert!(text.contains("curl -u patroni:REDACTED"), "{text}");
        assert!(flags.contains(&("rate".into(), "50".into())), "{text}");
        assert!(flags.contains(&("dsn".into(), "postgres://u@h/db".into())));
        assert!(flags.contains(&("no-create-table".into(), "true".into())));
        assert!(!flags.iter().any(|(f, _)| f == "pool-size"), "{text}");
    }

    #[test]
    fn a_report_path_needs_a_writable_directory() {
        let dir = std::env::temp_dir();
        assert!(writable_file("--report", &dir.join("r.html")).is_ok());
        let err = writable_file("--report", &dir.join("no-such-dir-xyz/r.html"))
            .err()
            .map(|e| (e.option, e.reason))
            .unwrap_or_default();
        assert_eq!(err.0, "--report");
        assert!(err.1.contains("does not exist"), "{}", err.1);
        assert!(writable_file("--report", &dir).is_err());
        // An existing file or device: opened, not probed beside (`/dev` takes no new file).
        assert!(writable_file("--summary-json", Path::new("/dev/null")).is_ok());
        // A dangling link: its target's directory must exist; a loop is refused.
        let links = tempfile::tempdir().unwrap();
        let link = |name: &str, to: &str| {
            let at = links.path().join(name);
            std::os::unix::fs::symlink(to, &at).unwrap();
            at
        };
        let lost = link("lost.json", "nodir/x.json");
        let err = writable_file("--summary-json", &lost).unwrap_err();
        assert!(
            err.reason.contains("nodir does not exist"),
            "{}",
            err.reason
        );
        assert!(writable_file("--summary-json", &link("ok.json", "made.json")).is_ok());
        link("a", "b");
        let err = writable_file("--report", &link("b", "a")).unwrap_err();
        assert!(err.reason.contains("loop"), "{}", err.reason);
    }
}
