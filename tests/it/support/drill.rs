//! Running pgdrill for a test: in-process through the library (same code as the
//! binary), or as the real binary when signals and exit codes matter.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clap::Parser;
use pgdrill::config::Cli;
use pgdrill::Summary;
use pgdrill_lab::sys::{send_signal, Signal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// pgdrill running inside the test process.
pub struct Drill {
    pub addr: SocketAddr,
    pub stop: CancellationToken,
    task: JoinHandle<Result<Summary, pgdrill::RunError>>,
}

impl Drill {
    /// `args` are command-line flags; `--listen` is chosen here.
    pub async fn start(args: &[&str]) -> Drill {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let listen = addr.to_string();
        let mut argv = vec!["pgdrill", "--listen", &listen, "--progress-interval", "1s"];
        argv.extend_from_slice(args);
        let config = Cli::try_parse_from(&argv)
            .unwrap_or_else(|e| panic!("{e}"))
            .run
            .validate(|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        // Through libtest's capture: shown for a failing test, quiet for a passing one.
        let _ = tracing_subscriber::fmt()
            // PGDRILL_TEST_LOG (RUST_LOG syntax) to look closer, e.g. pgdrill::db=debug.
            .with_env_filter(
                std::env::var("PGDRILL_TEST_LOG")
                    .unwrap_or_else(|_| "info,tokio_postgres=warn".to_string()),
            )
            .with_test_writer()
            // Plain text, as pgdrill's own log is when stderr is not a terminal.
            .with_ansi(false)
            .try_init();
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move { pgdrill::run(config, listener, stop, |r| r).await.0 }
        });
        Drill { addr, stop, task }
    }

    pub async fn scrape(&self) -> String {
        let text = http_get(self.addr, "/metrics").await;
        // What Prometheus parses the body by.
        let typed = "\r\ncontent-type: text/plain; version=0.0.4\r\n";
        assert!(
            !text.starts_with("HTTP/1.0 200") || text.contains(typed),
            "{text:.300}"
        );
        text
    }

    pub async fn metric(&self, series: &str) -> f64 {
        metric(&self.scrape().await, series)
    }

    /// Waits (up to 20 s) until more than `min` transactions were attempted.
    pub async fn wait_for_transactions(&self, min: f64) {
        crate::support::eventually(Duration::from_secs(20), "writes under way", || async {
            self.metric("pgdrill_transactions_total").await > min
        })
        .await;
    }

    /// Waits until an outage was recorded and is over.
    pub async fn wait_for_outage_over(&self, limit: Duration) {
        crate::support::eventually(limit, "outage recorded and over", || async {
            let text = self.scrape().await;
            metric(&text, "pgdrill_outages_total") >= 1.0
                && metric(&text, "pgdrill_failover_state{state=\"outage\"}") == 0.0
        })
        .await;
    }

    /// Waits until the load ran and stopped (`--duration` over): with `--linger`, /metrics then
    /// shows the run's final figures until [`Drill::stop`].
    pub async fn wait_for_load_over(&self, limit: Duration) {
        crate::support::eventually(limit, "the load over", || async {
            let text = self.scrape().await;
            // Writes are counted only once the load has started.
            metric(&text, "pgdrill_transactions_total") > 0.0
                && metric(&text, "pgdrill_load_running") == 0.0
        })
        .await;
    }

    /// Waits for the run to end by itself (`--duration`).
    pub async fn finish(self) -> Summary {
        tokio::time::timeout(Duration::from_secs(120), self.task)
            .await
            .expect("the drill ends by itself")
            .expect("the drill task does not panic")
            .expect("the drill starts")
    }

    /// Stops the run now, as SIGTERM would.
    pub async fn stop(self) -> Summary {
        self.stop.cancel();
        self.finish().await
    }
}

/// A bare HTTP/1.0 GET: enough for our own server, no client crate needed.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    try_http_get(addr, path)
        .await
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// Like [`http_get`], but a server that is not up yet is an error, not a panic.
pub async fn try_http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let fut = async {
        let mut stream = TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(req.as_bytes()).await?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await?;
        Ok(body)
    };
    tokio::time::timeout(Duration::from_secs(10), fut).await?
}

/// The value of one exact series (`name` or `name{labels}`), or NaN if absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(f64::NAN)
}

/// Sum of every series of a family (`name{...}` or `name`).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| {
            let rest = &l[name.len()..];
            rest.starts_with('{') || rest.starts_with(' ')
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The real binary, output captured to files so nothing blocks.
pub struct Binary {
    pub child: Child,
    pub stdout: std::path::PathBuf,
    pub stderr: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Binary {
    pub fn spawn(args: &[&str]) -> Binary {
        Binary::spawn_with(&[], args)
    }

    /// [`Binary::spawn`] with more environment variables.
    pub fn spawn_with(env: &[(&str, &str)], args: &[&str]) -> Binary {
        let dir = tempfile::tempdir().expect("temp dir");
        let stdout = dir.path().join("stdout");
        let stderr = dir.path().join("stderr");
        let child = without_ambient_env(&mut Command::new(env!("CARGO_BIN_EXE_pgdrill")))
            .args(args)
            // After the removal: a test's own PG*/PGDRILL_* values are kept.
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawn pgdrill");
        Binary {
            child,
            stdout,
            stderr,
            _dir: dir,
        }
    }

    pub fn signal(&self, signal: Signal) {
        let pid = self.child.id();
        send_signal(pid, signal).unwrap_or_else(|e| panic!("{signal:?} to {pid}: {e}"));
    }

    /// Waits up to `limit` for exit; kills it (by PID) if it overstays.
    pub async fn wait(mut self, limit: Duration) -> (std::process::ExitStatus, String, String) {
        let deadline = tokio::time::Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if tokio::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("pgdrill did not exit within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let out = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        (status, out, err)
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `cmd` without the caller's `PG*` (libpq's, and so `PGDRILL_*`) and `RUST_LOG` variables: a
/// developer's shell with PGHOST, PGSSLMODE or PGDRILL_RATE set must not change a test's run.
/// Variables a test sets on `cmd` afterwards are kept; PATH, HOME and the rest are inherited.
pub fn without_ambient_env(cmd: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        let name_bytes = name.as_encoded_bytes();
        if name_bytes.starts_with(b"PG") || name_bytes == b"RUST_LOG" {
            cmd.env_remove(&name);
        }
    }
    cmd
}

/// A child process killed and reaped when dropped, so that a test that panics leaves none
/// running; for the commands [`Binary`] does not fit (a wrapper such as `unshare` or `sh`,
/// piped output).
pub struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    pub fn new(child: Child) -> KillOnDrop {
        KillOnDrop(Some(child))
    }

    /// [`Child::wait_with_output`] bounded by `limit`: past it the child is killed (by PID)
    /// and the test fails.
    pub async fn output(mut self, limit: Duration) -> std::process::Output {
        let child = self.0.take().expect("a child not yet waited for");
        let pid = child.id();
        let waited = tokio::task::spawn_blocking(move || child.wait_with_output());
        match tokio::time::timeout(limit, waited).await {
            Ok(output) => output.expect("join").expect("the child's output"),
            Err(_) => {
                // Still running (not reaped), so the PID is still its own.
                let _ = send_signal(pid, Signal::Kill);
                panic!("{pid} did not exit within {limit:?}");
            }
        }
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("a child not yet waited for")
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("a child not yet waited for")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Polls the failover state set every 10 ms and keeps the sequence of
/// distinct states seen.
pub struct StateWatcher {
    stop: CancellationToken,
    task: JoinHandle<Vec<String>>,
}

impl StateWatcher {
    pub fn start(addr: SocketAddr) -> StateWatcher {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut seen: Vec<String> = Vec::new();
            while !token.is_cancelled() {
                if let Ok(text) = try_http_get(addr, "/metrics").await {
                    let state = ["healthy", "degraded", "outage", "recovering"]
                        .into_iter()
                        .find(|s| {
                            metric(&text, &format!("pgdrill_failover_state{{state=\"{s}\"}}"))
                                == 1.0
                        });
                    if let Some(s) = state {
                        if seen.last().map(String::as_str) != Some(s) {
                            seen.push(s.to_string());
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            seen
        });
        StateWatcher { stop, task }
    }

    pub async fn states(self) -> Vec<String> {
        self.stop.cancel();
        self.task.await.expect("watcher does not panic")
    }
}

/// Whether `needle` occurs in order (not necessarily adjacent) within `hay`.
pub fn in_order(hay: &[String], needle: &[&str]) -> bool {
    let mut it = hay.iter();
    needle.iter().all(|n| it.any(|h| h == n))
}
