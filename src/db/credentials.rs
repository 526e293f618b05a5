//! Passwords that change while pgdrill runs: a file re-read for each new connection
//! (Kubernetes secret mounts) or a command printing it (Entra ID tokens), cached for
//! `--password-ttl` or until the server rejects it. The command is split as a POSIX shell
//! would (`shlex`) and run without one, for the distroless image.
//!
//! The secret never appears in logs, errors or metrics: [`Secret`] does not print, and the
//! command's standard output is read only here; its standard error is logged, scrubbed.

use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::pin::pin;

use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::error::ConfigError;
use crate::retry::Backoff;
use crate::secrets::{printable, scrub};
use crate::telemetry::metrics::Metrics;

/// A command that prints the password must finish within this long.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// After an authentication failure, the command is not run again sooner than this.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// After the command failed: a broken command is retried twice a minute, not per connection.
const FAILURE_BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
/// A password longer than this is not a password (Entra tokens are ~2-3 KB).
const MAX_SECRET_BYTES: usize = 64 * 1024;
/// The command's standard error logged per run (the rest is read and dropped).
const MAX_STDERR_BYTES: usize = 16 * 1024;
/// Output read this long after the command exits, not until a process it left running closes it.
const PIPES_AFTER_EXIT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// The DSN or PGPASSWORD (or none).
    Dsn,
    /// `--password-file`: read for every new connection.
    File(PathBuf),
    /// `--password-command`, split into program and arguments, output cached for `ttl`.
    Command { argv: Vec<String>, ttl: Duration },
}

impl PasswordSource {
    /// `--password-command`'s program is runnable now (arguments not shown: they may hold secrets).
    pub fn check_program(&self) -> Result<(), ConfigError> {
        if let PasswordSource::Command { argv, .. } = self {
            return crate::error::runnable("--password-command", "(not shown)", argv);
        }
        Ok(())
    }

    /// Checks before starting: the file must be readable and non-empty.
    pub fn validate(self) -> Result<PasswordSource, ConfigError> {
        let (flag, value, why) = match &self {
            PasswordSource::File(path) => {
                let bad = |why: String| ConfigError::new("--password-file", path.display(), why);
                let text = read_limited(path).map_err(|e| bad(format!("cannot read: {e}")))?;
                if text.len() > MAX_SECRET_BYTES {
                    let why = format!("larger than {MAX_SECRET_BYTES} bytes: not a password");
                    return Err(bad(why));
                }
                if trim_secret(&text).is_empty() {
                    return Err(bad("the file is empty".into()));
                }
                return Ok(self);
            }
            PasswordSource::Command { argv, .. } if argv.is_empty() => {
                ("--password-command", "", "must not be empty")
            }
            PasswordSource::Command { ttl, .. } if ttl.is_zero() => {
                ("--password-ttl", "0s", "must be greater than zero")
            }
            PasswordSource::Command { .. } | PasswordSource::Dsn => return Ok(self),
        };
        Err(ConfigError::new(flag, value, why))
    }
}

/// A password file's first bytes, one more than a password may have. Only a regular file (or a
/// link to one): a FIFO or a device would hold every connect waiting on its read, with nothing said.
fn read_limited(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::other(
            "not a regular file (a FIFO or a device would hold every connect waiting on it); \
             for a password made on demand use --password-command",
        ));
    }
    let mut text = Vec::new();
    let limit = MAX_SECRET_BYTES as u64 + 1;
    (std::fs::File::open(path)?.take(limit)).read_to_end(&mut text)?;
    Ok(text)
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

/// The command's last failure, kept so that connections in the meantime fail at once.
struct Failing {
    error: String,
    at: Instant,
    /// Consecutive failed runs.
    runs: u32,
}

#[derive(Default)]
struct Cache {
    secret: Option<Secret>,
    fetched: Option<Instant>,
    /// The server rejected the cached secret: fetch a new one.
    stale: bool,
    failing: Option<Failing>,
    /// A run after `--password-ttl` is under way, beside the connects.
    refreshing: bool,
    /// Runs since a rejection that printed the password the server rejected: each waits
    /// twice as long for the next (a rotation not yet visible, or a wrong secret for weeks).
    unchanged: u32,
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
            cache: Default::default(),
            metrics,
        }
    }

    /// The password to connect with; `None` keeps the DSN's. Concurrent callers share one
    /// command run. An error never contains the password or the command's output.
    pub async fn password(self: &Arc<Self>) -> Result<Option<Secret>, String> {
        match &self.source {
            PasswordSource::Dsn => Ok(None),
            PasswordSource::File(path) => self
                .read_file(path)
                .await
                .inspect_err(|_| self.metrics.password_errors.inc())
                .map(Some),
            PasswordSource::Command { argv, ttl } => self.run_cached(argv, *ttl).await.map(Some),
        }
    }

    /// The server refused the password: the next connection fetches a fresh one.
    pub fn auth_failed(&self) {
        // If someone is fetching right now, what they fetch is fresh anyway.
        if let Ok(mut cache) = self.cache.try_lock() {
            cache.stale = true;
        }
    }

    async fn read_file(&self, path: &std::path::Path) -> Result<Secret, String> {
        let cannot =
            |e: &dyn fmt::Display| format!("cannot read --password-file {}: {e}", path.display());
        let owned = path.to_path_buf();
        let read = tokio::task::spawn_blocking(move || read_limited(&owned)).await;
        let text = read.map_err(|e| cannot(&e))?.map_err(|e| cannot(&e))?;
        if text.len() > MAX_SECRET_BYTES {
            return Err(cannot(&format!("larger than {MAX_SECRET_BYTES} bytes")));
        }
        let secret = secret_from(&text)
            .ok_or_else(|| format!("--password-file {} is empty", path.display()))?;
        let mut cache = self.cache.lock().await;
        if cache.secret.as_ref() != Some(&secret) {
            if cache.secret.replace(secret.clone()).is_some() {
                tracing::info!(path = %path.display(), "password file changed; new connections use the new password");
            }
            self.metrics.password_refreshes.inc();
        }
        Ok(secret)
    }

    /// A failure is counted once, not while the command backs off. Past `--password-ttl`,
    /// connections keep the last password while the command runs beside them (a token command takes
    /// seconds, which every waiting connect would add to an outage), as long as [`still_servable`]:
    /// an older token (no connect asked since) may have expired, and the command is waited for.
    async fn run_cached(
        self: &Arc<Self>,
        argv: &[String],
        ttl: Duration,
    ) -> Result<Secret, String> {
        let mut cache = self.cache.lock().await;
        let age = cache.fetched.map(|t| t.elapsed());
        let rerun_after = MIN_REFRESH_INTERVAL.max(FAILURE_BACKOFF.delay(cache.unchanged + 1));
        let fresh = age.is_some_and(|a| a < ttl && (!cache.stale || a < rerun_after));
        if let (true, Some(secret)) = (fresh, &cache.secret) {
            return Ok(secret.clone());
        }
        let backing_off = (cache.failing.as_ref())
            .is_some_and(|f| f.at.elapsed() < FAILURE_BACKOFF.delay(f.runs));
        let young = age.is_some_and(|a| still_servable(a, ttl));
        if let (Some(secret), false, true) = (cache.secret.clone(), cache.stale, young) {
            if !cache.refreshing && !backing_off {
                cache.refreshing = true;
                self.log_run("--password-ttl ran out", &cache);
                let (this, argv) = (self.clone(), argv.to_vec());
                tokio::spawn(async move {
                    let result = run_command(&argv).await;
                    let mut cache = this.cache.lock().await;
                    cache.refreshing = false;
                    let _ = this.record(&mut cache, result);
                });
            }
            return Ok(secret);
        }
        if let Some(failing) = cache.failing.as_ref().filter(|_| backing_off) {
            return Err(failing.error.clone());
        }
        let reason = match age {
            None => "first connection",
            Some(_) if cache.stale => "the server rejected the password",
            Some(_) => "--password-ttl ran out twice over",
        };
        self.log_run(reason, &cache);
        let result = run_command(argv).await;
        self.record(&mut cache, result)
    }

    fn log_run(&self, reason: &str, cache: &Cache) {
        if cache.failing.is_none() {
            tracing::info!(reason, "running --password-command");
        }
    }

    /// What a run printed, kept for the next connections, or why it failed.
    fn record(&self, cache: &mut Cache, result: Result<Secret, String>) -> Result<Secret, String> {
        let secret = result.inspect_err(|err| {
            let runs = cache.failing.as_ref().map_or(0, |f| f.runs) + 1;
            self.metrics.password_errors.inc();
            cache.failing = Some(Failing {
                error: err.clone(),
                at: Instant::now(),
                runs,
            });
            let meanwhile = match (&cache.secret, cache.stale) {
                (Some(_), false) => "new connections keep the password it printed last",
                _ => "new connections fail until it succeeds",
            };
            // Logged per run, and runs back off to one per 30 s.
            tracing::warn!(
                error = %err,
                failed_runs = runs,
                retry_in = %humantime::format_duration(FAILURE_BACKOFF.delay(runs)),
                "--password-command failed; {meanwhile}"
            );
        })?;
        if let Some(failing) = cache.failing.take() {
            tracing::info!(
                failed_runs = failing.runs,
                "--password-command succeeded again"
            );
        }
        if cache.secret.as_ref() != Some(&secret) {
            self.metrics.password_refreshes.inc();
            cache.unchanged = 0;
        } else if cache.stale {
            cache.unchanged += 1;
            tracing::warn!(
                next_run_after = %humantime::format_duration(FAILURE_BACKOFF.delay(cache.unchanged + 1)),
                "--password-command printed the password the server rejected; new connections \
                 fail until it prints one the server accepts"
            );
        }
        cache.secret = Some(secret.clone());
        cache.fetched = Some(Instant::now());
        cache.stale = false;
        Ok(secret)
    }
}

/// Whether a value `age` old, past `ttl`, may still be served while a run refreshes it: up to
/// `ttl` more, at least a run's own time limit (a token command slower than the TTL).
fn still_servable(age: Duration, ttl: Duration) -> bool {
    age < ttl.saturating_add(ttl.max(COMMAND_TIMEOUT))
}

async fn run_command(argv: &[String]) -> Result<Secret, String> {
    let (program, args) = argv.split_first().ok_or("--password-command is empty")?;
    // Only the program in errors: its arguments may hold secrets. Its own process group, ended with
    // it: what it started (`az` runs Python in a child) goes too, on a timeout as on success.
    let (mut child, group) = crate::child::spawn(program, args)
        .map_err(|e| format!("cannot start --password-command program `{program}`: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("--password-command: no stdout")?;
    let mut stderr = child.stderr.take().ok_or("--password-command: no stderr")?;
    let (mut out, mut err, mut read) = (Vec::new(), Vec::new(), Ok(0));
    let exited = {
        // Both drained past what is kept, so that a chatty command does not block on a
        // full pipe (and is told it printed too much, not that it never finished).
        let read_out = async {
            let limit = MAX_SECRET_BYTES as u64 + 1;
            read = (&mut stdout).take(limit).read_to_end(&mut out).await;
            let _ = tokio::io::copy(&mut stdout, &mut tokio::io::sink()).await;
        };
        let read_err = async {
            let limit = MAX_STDERR_BYTES as u64;
            let _ = (&mut stderr).take(limit).read_to_end(&mut err).await;
            if err.len() == MAX_STDERR_BYTES {
                // Cut at the limit, its last line may end inside a secret that is then
                // not whole to be recognised: kept up to the last full line only.
                err.truncate(err.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1));
            }
            let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
        };
        let mut reads = pin!(async { tokio::join!(read_out, read_err) });
        let mut read_all = false;
        let exited = tokio::time::timeout(COMMAND_TIMEOUT, async {
            loop {
                tokio::select! {
                    _ = &mut reads, if !read_all => read_all = true,
                    status = child.wait() => break status,
                }
            }
        })
        .await;
        if exited.is_ok() && !read_all {
            // What the command left running in the background may hold its pipes open.
            let _ = tokio::time::timeout(PIPES_AFTER_EXIT, &mut reads).await;
        }
        exited
    };
    // Reaped: what it left in its group ends now (killed with the group on a timeout).
    if matches!(exited, Ok(Ok(_))) {
        group.end_reaped();
    }
    let ok = matches!(exited, Ok(Ok(status)) if status.success());
    let secret = ok.then(|| secret_from(&out)).flatten();
    for line in stderr_lines(&err, (!ok).then_some(out.as_slice())) {
        match ok {
            true => tracing::info!(stream = "stderr", "--password-command: {line}"),
            false => tracing::warn!(stream = "stderr", "--password-command: {line}"),
        }
    }
    let status = exited
        .map_err(|_| format!("--password-command did not finish within {COMMAND_TIMEOUT:?}"))?
        .map_err(|e| format!("waiting for --password-command: {e}"))?;
    if !status.success() {
        let said = match err.iter().any(|b| !b.is_ascii_whitespace()) {
            true => "its standard error is above",
            false => "it printed nothing on standard error",
        };
        return Err(format!("--password-command failed ({status}); {said}"));
    }
    read.map_err(|e| format!("reading --password-command output: {e}"))?;
    if out.len() > MAX_SECRET_BYTES {
        return Err(format!(
            "--password-command printed more than {MAX_SECRET_BYTES} bytes; expected only the password"
        ));
    }
    Ok(secret.ok_or("--password-command printed nothing")?)
}

/// The first line, without surrounding whitespace (files and commands end with a newline).
fn trim_secret(raw: &[u8]) -> &[u8] {
    let first_line = raw.trim_ascii_start().split(|b| *b == b'\n').next();
    first_line.unwrap_or_default().trim_ascii()
}

/// The command's standard error, line by line, ready to log. A failed command's output is
/// not remembered as a secret, but may be one: kept out of these lines too.
fn stderr_lines(err: &[u8], failed_output: Option<&[u8]>) -> Vec<String> {
    // Shorter, it is more likely a word of the message (`null`, `{`) than a token.
    let unused = failed_output.map(|out| String::from_utf8_lossy(trim_secret(out)));
    let unused = unused.filter(|u| u.len() >= 8);
    String::from_utf8_lossy(err)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| match &unused {
            Some(u) => line.replace(u.as_ref(), crate::secrets::REDACTED),
            None => line.to_string(),
        })
        // Scrubbed as it is, before a JSON log line escapes its quotes.
        .map(|line| printable(&scrub(&line)))
        .collect()
}

fn secret_from(raw: &[u8]) -> Option<Secret> {
    let trimmed = trim_secret(raw);
    if trimmed.is_empty() {
        return None;
    }
    let secret = String::from_utf8_lossy(trimmed).into_owned();
    // From here on it is scrubbed from everything pgdrill writes, trigger output included.
    crate::secrets::remember_rotated(&secret);
    Some(Secret(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Credentials from `sh -c script`, cached for `ttl_secs`.
    fn shell_command(script: String, ttl_secs: u64, m: &Arc<Metrics>) -> Arc<Credentials> {
        let argv = vec!["sh".into(), "-c".into(), script];
        let ttl = Duration::from_secs(ttl_secs);
        Arc::new(Credentials::new(
            PasswordSource::Command { argv, ttl },
            m.clone(),
        ))
    }

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
    fn a_failed_commands_output_stays_out_of_its_logged_stderr() {
        let err = b"got tok-9c1e-unused\n\n  retrying\n";
        assert_eq!(
            stderr_lines(err, Some(b"\n tok-9c1e-unused \nmore\n")),
            ["got REDACTED", "  retrying"]
        );
        assert_eq!(stderr_lines(err, None)[0], "got tok-9c1e-unused");
        assert_eq!(stderr_lines(err, Some(b" \n")).len(), 2);
        assert_eq!(stderr_lines(b"got null", Some(b"null")), ["got null"]);
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
        // A wrong path to a large file (a log, an image) is read no further than a password.
        let large = dir.path().join("large");
        std::fs::write(&large, vec![b'x'; MAX_SECRET_BYTES + 1]).unwrap();
        let e = PasswordSource::File(large)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a password"), "{e}");
    }

    /// A FIFO's read would never end: refused at start, and a failed read later (a file
    /// replaced by one), not a connect that waits for good.
    #[tokio::test]
    async fn a_fifo_is_refused_at_start_and_fails_a_later_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        let e = PasswordSource::File(fifo.clone()).validate().unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let creds = Arc::new(Credentials::new(PasswordSource::File(fifo), metrics()));
        let read = tokio::time::timeout(Duration::from_secs(10), creds.password()).await;
        let e = read.expect("the read ends").unwrap_err();
        assert!(
            e.contains("--password-file") && e.contains("not a regular file"),
            "{e}"
        );
        assert_eq!(creds.metrics.password_errors.get(), 1);
    }

    #[tokio::test]
    async fn the_command_runs_without_a_shell() {
        let argv = shlex::split("printf '%s;%s' 'a b' $HOME").unwrap();
        assert_eq!(argv, ["printf", "%s;%s", "a b", "$HOME"]);
        let creds = Arc::new(Credentials::new(
            PasswordSource::Command {
                argv,
                ttl: Duration::from_secs(60),
            },
            metrics(),
        ));
        // No shell: `$HOME` reaches printf as written, and `;` is just a character.
        let secret = creds.password().await.unwrap().unwrap();
        assert_eq!(secret.expose(), "a b;$HOME");
        assert_eq!(shlex::split("az 'unbalanced"), None);
        let missing = Arc::new(Credentials::new(
            PasswordSource::Command {
                argv: vec!["/no/such/program".into(), "s3cret-arg".into()],
                ttl: Duration::from_secs(60),
            },
            metrics(),
        ));
        let e = missing.password().await.unwrap_err().to_string();
        assert!(
            e.contains("/no/such/program") && !e.contains("s3cret-arg"),
            "{e}"
        );
        // A failure says whether there is standard error to read above.
        for (argv, said) in [
            (vec!["false"], "it printed nothing on standard error"),
            (
                vec!["sh", "-c", "echo denied >&2; exit 3"],
                "its standard error is above",
            ),
        ] {
            let argv = argv.into_iter().map(String::from).collect();
            let ttl = Duration::from_secs(60);
            let source = PasswordSource::Command { argv, ttl };
            let failing = Arc::new(Credentials::new(source, metrics()));
            let e = failing.password().await.unwrap_err();
            assert!(e.contains(said), "{e}");
        }
    }

    #[tokio::test]
    async fn a_process_the_command_leaves_running_does_not_hold_it() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        // The background sleep keeps stdout and stderr open past the command's own
        // timeout; the password is what the command printed before it exited (distinctive:
        // it is remembered as a secret for the whole test process).
        let script = format!(
            "sleep {} & echo $! > {}; echo held-open-7f3a; echo ok >&2",
            COMMAND_TIMEOUT.as_secs() + 10,
            pid_file.display()
        );
        let got = run_command(&["sh".into(), "-c".into(), script]).await;
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        // Ended with the command (its process group), not left running; a zombie waiting
        // for a parent that never reaps it is ended too.
        let running = || {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
            stat.is_ok_and(|s| s.rsplit(") ").next().is_some_and(|s| !s.starts_with('Z')))
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while running() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!running(), "the sleep {pid} outlived the command");
        assert_eq!(got.unwrap().expose(), "held-open-7f3a");
    }

    #[tokio::test]
    async fn command_output_is_cached_until_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let counter = dir.path().join("runs");
        // Distinctive values: each one is remembered as a secret for the whole test process.
        let script = format!(
            "echo x >> {0}; echo token-$(wc -l < {0} | tr -d ' ')",
            counter.display()
        );
        let m = metrics();
        let creds = shell_command(script, 600, &m);
        let first = creds.password().await.unwrap().unwrap();
        assert_eq!(first.expose(), "token-1");
        assert_eq!(
            creds.password().await.unwrap().unwrap().expose(),
            "token-1",
            "cached"
        );
        creds.auth_failed();
        // Within MIN_REFRESH_INTERVAL the cached one is still used, then it is refreshed.
        tokio::time::sleep(MIN_REFRESH_INTERVAL).await;
        assert_eq!(creds.password().await.unwrap().unwrap().expose(), "token-2");
        assert_eq!(m.password_refreshes.get(), 2);

        let failing = shell_command("echo s3cret; exit 3".into(), 1, &m);
        let e = failing.password().await.unwrap_err().to_string();
        assert!(e.contains("exit status: 3") && !e.contains("s3cret"), "{e}");
        assert_eq!(m.password_errors.get(), 1);
    }

    #[test]
    fn a_value_twice_the_ttl_old_is_not_served_while_it_refreshes() {
        let (secs, min) = (Duration::from_secs, |m: u64| Duration::from_secs(m * 60));
        // RDS IAM tokens live 15 min; with --password-ttl 7m none older than 14 min is served.
        assert!(still_servable(min(13), min(7)));
        assert!(!still_servable(min(14), min(7)));
        // A TTL shorter than a run may take keeps a run's time limit as its slack.
        assert!(still_servable(secs(30), secs(1)));
        assert!(!still_servable(secs(61), secs(1)));
    }

    #[tokio::test]
    async fn a_rejected_password_printed_again_is_no_refresh_and_backs_off() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        let script = format!("echo x >> {0}; echo tok-same-5b1e", runs.display());
        let m = metrics();
        let creds = shell_command(script, 600, &m);
        let count = || std::fs::read_to_string(&runs).map_or(0, |t| t.lines().count());
        creds.password().await.unwrap();
        creds.auth_failed();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        creds.password().await.unwrap();
        assert_eq!(count(), 2, "rerun a second after the rejection");
        // The same secret again: the next rerun waits 2 s, not 1.
        creds.auth_failed();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        creds.password().await.unwrap();
        assert_eq!(count(), 2, "backing off");
        tokio::time::sleep(Duration::from_millis(1000)).await;
        creds.password().await.unwrap();
        assert_eq!(count(), 3);
        assert_eq!(
            m.password_refreshes.get(),
            1,
            "one secret, however often printed"
        );
    }

    #[tokio::test]
    async fn a_failing_command_backs_off() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        let healed = dir.path().join("healed");
        // Fails until `healed` exists; counts every run.
        let script = format!(
            "echo x >> {0}; test -e {1} || exit 7; echo tok-healed-7f3",
            runs.display(),
            healed.display()
        );
        let m = metrics();
        let creds = shell_command(script, 600, &m);
        let count = || {
            std::fs::read_to_string(&runs)
                .map(|t| t.lines().count())
                .unwrap_or(0)
        };
        // Connections asking every 10 ms for 2.5 s: runs at 0 s and ~1 s (then 2 s later).
        let begin = Instant::now();
        let mut calls = 0;
        while begin.elapsed() < Duration::from_millis(2500) {
            let e = creds.password().await.unwrap_err().to_string();
            assert!(e.contains("exit status: 7"), "{e}");
            calls += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(calls > 100, "{calls} calls");
        assert_eq!(count(), 2, "runs in 2.5 s of calls every 10 ms");
        assert_eq!(m.password_errors.get(), 2, "each failed run counted once");

        std::fs::write(&healed, "").unwrap();
        tokio::time::sleep(Duration::from_millis(2000)).await;
        assert_eq!(
            creds.password().await.unwrap().unwrap().expose(),
            "tok-healed-7f3"
        );
        assert_eq!(count(), 3);
        assert_eq!(m.password_errors.get(), 2);
    }
}
