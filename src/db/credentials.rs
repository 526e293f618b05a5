//! Passwords that change while pgdrill runs: a file re-read for each new connection
//! (Kubernetes secret mounts, sidecars) or a command whose output is the password
//! (Microsoft Entra ID access tokens: `az account get-access-token --resource-type oss-rdbms
//! --query accessToken -o tsv`), cached and run again before `--password-ttl` runs out or after
//! the server rejected it.
//!
//! The secret never appears in logs, errors or metrics: [`Secret`] does not print, and the
//! command's standard output is read only here. Its standard error is passed through to
//! pgdrill's, as the command wrote it, so that e.g. `az` can say why it failed.

use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::error::ConfigError;
use crate::telemetry::metrics::Metrics;

/// A command that prints the password must finish within this long.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// After an authentication failure, the command is not run again sooner than this.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// A password longer than this is not a password (Entra tokens are ~2-3 KB).
const MAX_SECRET_BYTES: usize = 64 * 1024;

/// Where the password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// The DSN or PGPASSWORD (or none).
    Dsn,
    /// `--password-file`: read for every new connection.
    File(PathBuf),
    /// `--password-command`: run through `sh -c`, output cached for `ttl`.
    Command { command: String, ttl: Duration },
}

impl PasswordSource {
    /// Checks what can be checked before starting: the file must be readable and non-empty.
    pub fn validate(self) -> Result<PasswordSource, ConfigError> {
        match &self {
            PasswordSource::File(path) => {
                let label = path.display().to_string();
                let text = std::fs::read(path).map_err(|e| {
                    ConfigError::new(
                        "--password-file",
                        label.clone(),
                        format!("cannot read: {e}"),
                    )
                })?;
                if trim_secret(&text).is_empty() {
                    return Err(ConfigError::new(
                        "--password-file",
                        label,
                        "the file is empty",
                    ));
                }
            }
            PasswordSource::Command { command, ttl } => {
                if command.trim().is_empty() {
                    return Err(ConfigError::new(
                        "--password-command",
                        "",
                        "must not be empty",
                    ));
                }
                if ttl.is_zero() {
                    return Err(ConfigError::new(
                        "--password-ttl",
                        "0s",
                        "must be greater than zero",
                    ));
                }
            }
            PasswordSource::Dsn => {}
        }
        Ok(self)
    }
}

/// A password. Prints as `REDACTED`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("REDACTED")
    }
}

/// Why no password could be had. Never contains the password or the command's output.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CredentialError(String);

struct Cache {
    secret: Option<Secret>,
    fetched: Option<Instant>,
    /// The server rejected the cached secret: fetch a new one.
    stale: bool,
}

/// The password for the next connection.
pub struct Credentials {
    source: PasswordSource,
    cache: tokio::sync::Mutex<Cache>,
    metrics: Arc<Metrics>,
}

impl Credentials {
    pub fn new(source: PasswordSource, metrics: Arc<Metrics>) -> Credentials {
        Credentials {
            source,
            cache: tokio::sync::Mutex::new(Cache {
                secret: None,
                fetched: None,
                stale: false,
            }),
            metrics,
        }
    }

    /// The password to connect with; `None` keeps the DSN's. Concurrent callers share one
    /// command run.
    pub async fn password(&self) -> Result<Option<Secret>, CredentialError> {
        let result = match &self.source {
            PasswordSource::Dsn => return Ok(None),
            PasswordSource::File(path) => self.read_file(path).await,
            PasswordSource::Command { command, ttl } => self.run_cached(command, *ttl).await,
        };
        if result.is_err() {
            self.metrics.password_errors.inc();
        }
        result.map(Some)
    }

    /// The server refused the password: the next connection fetches a fresh one.
    pub fn auth_failed(&self) {
        if let Ok(mut cache) = self.cache.try_lock() {
            cache.stale = true;
        } else {
            // Someone is fetching right now; what they fetch is fresh anyway.
        }
    }

    async fn read_file(&self, path: &std::path::Path) -> Result<Secret, CredentialError> {
        let text = tokio::fs::read(path).await.map_err(|e| {
            CredentialError(format!(
                "cannot read --password-file {}: {e}",
                path.display()
            ))
        })?;
        let secret = secret_from(&text).ok_or_else(|| {
            CredentialError(format!("--password-file {} is empty", path.display()))
        })?;
        let mut cache = self.cache.lock().await;
        if cache.secret.as_ref() != Some(&secret) {
            if cache.secret.is_some() {
                tracing::info!(path = %path.display(), "password file changed; new connections use the new password");
            }
            self.metrics.password_refreshes.inc();
            cache.secret = Some(secret.clone());
        }
        Ok(secret)
    }

    async fn run_cached(&self, command: &str, ttl: Duration) -> Result<Secret, CredentialError> {
        let mut cache = self.cache.lock().await;
        let age = cache.fetched.map(|t| t.elapsed());
        let fresh = age.is_some_and(|a| a < ttl && (!cache.stale || a < MIN_REFRESH_INTERVAL));
        if let (true, Some(secret)) = (fresh, &cache.secret) {
            return Ok(secret.clone());
        }
        let reason = match (age, cache.stale) {
            (None, _) => "first connection",
            (Some(_), true) => "the server rejected the password",
            (Some(_), false) => "--password-ttl ran out",
        };
        tracing::info!(reason, "running --password-command");
        let secret = run_command(command).await?;
        self.metrics.password_refreshes.inc();
        cache.secret = Some(secret.clone());
        cache.fetched = Some(Instant::now());
        cache.stale = false;
        Ok(secret)
    }
}

async fn run_command(command: &str) -> Result<Secret, CredentialError> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| CredentialError(format!("cannot start --password-command: {e}")))?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| CredentialError("--password-command: no stdout".to_string()))?;
    let run = async {
        let mut out = Vec::new();
        let read = (&mut stdout)
            .take(MAX_SECRET_BYTES as u64 + 1)
            .read_to_end(&mut out)
            .await;
        let status = child.wait().await;
        (read, status, out)
    };
    let (read, status, out) = tokio::time::timeout(COMMAND_TIMEOUT, run)
        .await
        .map_err(|_| {
            CredentialError(format!(
                "--password-command did not finish within {COMMAND_TIMEOUT:?}"
            ))
        })?;
    read.map_err(|e| CredentialError(format!("reading --password-command output: {e}")))?;
    let status =
        status.map_err(|e| CredentialError(format!("waiting for --password-command: {e}")))?;
    if !status.success() {
        return Err(CredentialError(format!(
            "--password-command failed ({status}); its standard error is above"
        )));
    }
    if out.len() > MAX_SECRET_BYTES {
        return Err(CredentialError(format!(
            "--password-command printed more than {MAX_SECRET_BYTES} bytes; expected only the password"
        )));
    }
    secret_from(&out)
        .ok_or_else(|| CredentialError("--password-command printed nothing".to_string()))
}

/// The first line, without surrounding whitespace (files and commands end with a newline).
fn trim_secret(raw: &[u8]) -> &[u8] {
    let line = raw
        .split(|b| *b == b'\n')
        .find(|l| !l.trim_ascii().is_empty());
    line.map_or(&[][..], |l| l.trim_ascii())
}

fn secret_from(raw: &[u8]) -> Option<Secret> {
    let trimmed = trim_secret(raw);
    if trimmed.is_empty() {
        return None;
    }
    Some(Secret(String::from_utf8_lossy(trimmed).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Arc<Metrics> {
        Metrics::new(&[])
    }

    #[test]
    fn secrets_are_trimmed_and_never_printed() {
        assert_eq!(secret_from(b"s3cret\n").map(|s| s.0), Some("s3cret".into()));
        assert_eq!(
            secret_from(b"\n  tok en \r\nnext\n").map(|s| s.0),
            Some("tok en".into())
        );
        assert!(secret_from(b" \n\n").is_none());
        assert_eq!(format!("{:?}", Secret("s3cret".into())), "REDACTED");
    }

    #[test]
    fn unreadable_or_empty_file_names_the_flag() {
        let e = PasswordSource::File("/no/such/file".into())
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--password-file") && e.contains("/no/such/file"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("pw");
        std::fs::write(&empty, "\n").unwrap();
        let e = PasswordSource::File(empty)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty"), "{e}");
    }

    #[tokio::test]
    async fn command_output_is_cached_until_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let counter = dir.path().join("runs");
        let command = format!("echo x >> {0}; wc -l < {0} | tr -d ' '", counter.display());
        let m = metrics();
        let creds = Credentials::new(
            PasswordSource::Command {
                command,
                ttl: Duration::from_secs(600),
            },
            m.clone(),
        );
        let first = creds.password().await.unwrap().unwrap();
        assert_eq!(first.expose(), "1");
        assert_eq!(
            creds.password().await.unwrap().unwrap().expose(),
            "1",
            "cached"
        );
        creds.auth_failed();
        // Within MIN_REFRESH_INTERVAL the cached one is still used, then it is refreshed.
        tokio::time::sleep(MIN_REFRESH_INTERVAL).await;
        assert_eq!(creds.password().await.unwrap().unwrap().expose(), "2");
        assert_eq!(m.password_refreshes.get(), 2);

        let failing = Credentials::new(
            PasswordSource::Command {
                command: "echo s3cret; exit 3".into(),
                ttl: Duration::from_secs(1),
            },
            m.clone(),
        );
        let e = failing.password().await.unwrap_err().to_string();
        assert!(e.contains("exit status: 3") && !e.contains("s3cret"), "{e}");
        assert_eq!(m.password_errors.get(), 1);
    }
}
