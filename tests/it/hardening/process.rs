//! The process under abuse: a flood of idle HTTP clients within a small `ulimit -n`, lookups
//! that never end, and lanes that panic.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use pgdrill_lab::sys::{send_signal, Signal};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::drill::{metric, metric_sum, try_http_get, without_ambient_env, KillOnDrop};
use crate::support::{connect, eventually, free_port, start_lab};

use super::admin_app_dsn;

/// pgdrill under `ulimit -n`, with extra environment, output to files.
struct Limited {
    child: Child,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Limited {
    fn spawn(nofile: u32, args: &[&str]) -> Limited {
        Limited::spawn_with(nofile, &[], args)
    }

    fn spawn_with(nofile: u32, env: &[(&str, &str)], args: &[&str]) -> Limited {
        let dir = tempfile::tempdir().expect("temp dir");
        let stderr = dir.path().join("stderr");
        let child = without_ambient_env(&mut Command::new("sh"))
            .arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_pgdrill"))
            .args(args)
            // After the removal: a test's own PGDRILL_* values are kept.
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout")).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawn pgdrill");
        Limited {
            child,
            stderr,
            _dir: dir,
        }
    }

    fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS")
            * 1024
    }

    fn stderr_bytes(&self) -> u64 {
        std::fs::metadata(&self.stderr).map_or(0, |m| m.len())
    }

    /// The exit status and standard error, read before the temp dir goes.
    async fn wait(mut self, limit: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return (
                    status,
                    std::fs::read_to_string(&self.stderr).unwrap_or_default(),
                );
            }
            assert!(
                Instant::now() < deadline,
                "pgdrill did not exit in {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The soft RLIMIT_NOFILE as it was, put back on drop: the servers and tools other tests
/// start afterwards inherit the limit they would have had.
struct NofileRestored(rustix::process::Rlimit);

impl Drop for NofileRestored {
    fn drop(&mut self) {
        let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, self.0);
    }
}

/// The idle clients' flood: this test process's descriptors too (and its neighbours', run in
/// the same process), so its soft limit goes up to the hard one while the guard lives; at most
/// half of that is taken. Returns how many to open.
fn idle_clients_within_our_limit(wanted: usize) -> (usize, NofileRestored) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let restored = NofileRestored(limit);
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    let ours = match setrlimit(Resource::Nofile, raised) {
        Ok(()) => limit.maximum,
        Err(e) => {
            println!("RLIMIT_NOFILE not raised: {e}");
            limit.current
        }
    };
    // None: unlimited.
    let room = ours.map_or(usize::MAX, |n| usize::try_from(n / 2).unwrap_or(usize::MAX));
    (wanted.min(room), restored)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http_clients_cannot_starve_the_database_side() {
    const RATE: f64 = 500.0;
    // pgdrill's `ulimit -n`: fewer descriptors than the idle clients hold.
    const NOFILE: u32 = 256;
    // PGDRILL_IT_IDLE_CONNECTIONS repeats the larger floods by hand.
    let wanted: usize = std::env::var("PGDRILL_IT_IDLE_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let (idle_count, _restored) = idle_clients_within_our_limit(wanted);
    assert!(
        idle_count > NOFILE as usize,
        "{idle_count} idle clients (of {wanted}) fit this process's RLIMIT_NOFILE: not more \
         than pgdrill's {NOFILE} descriptors; raise the hard limit (ulimit -Hn)"
    );
    const HOLD: Duration = Duration::from_secs(30);
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let pgdrill = Limited::spawn(
        NOFILE,
        &[
            "--dsn",
            &dsn,
            "--rate",
            &RATE.to_string(),
            "--duration",
            "120s",
            "--listen",
            &listen.to_string(),
        ],
    );
    eventually(Duration::from_secs(20), "writes under way", || async {
        try_http_get(listen, "/metrics")
            .await
            .is_ok_and(|t| metric(&t, "pgdrill_transactions_total") > 100.0)
    })
    .await;
    let admin = connect(&admin_app_dsn(&lab)).await;
    let db_now = || async {
        admin
            .query_one("SELECT now()", &[])
            .await
            .expect("now()")
            .get::<_, std::time::SystemTime>(0)
    };

    let from = db_now().await;
    let began = Instant::now();
    let mut idle = Vec::with_capacity(idle_count);
    for _ in 0..idle_count {
        idle.push(
            TcpStream::connect(listen)
                .await
                .expect("connect to /metrics"),
        );
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let killed: i64 = admin
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'pgdrill' AND usename = 'pgdrill') k",
            &[],
        )
        .await
        .expect("terminate pgdrill's backends")
        .get(0);
    assert!(killed > 0, "no backend of pgdrill to kill");
    let killed_at = db_now().await;

    // Once the accepted idle ones have timed out (5 s), a scrape answers. The bound only
    // keeps a starved accept loop (which never answers) from hanging the test.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let asked = Instant::now();
    let scrape = tokio::time::timeout(Duration::from_secs(10), try_http_get(listen, "/metrics"))
        .await
        .expect("/metrics answers while the idle connections are held")
        .expect("GET /metrics");
    let answered = asked.elapsed();
    assert!(scrape.contains("pgdrill_transactions_total"), "{scrape}");

    let mut max_rss = 0;
    while began.elapsed() < HOLD {
        max_rss = max_rss.max(pgdrill.rss_bytes());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let until = db_now().await;
    let end = tokio::time::timeout(Duration::from_secs(10), try_http_get(listen, "/metrics"))
        .await
        .expect("/metrics answers at the end of the hold")
        .expect("GET /metrics");
    drop(idle);
    let resumed: i64 = admin
        .query_one(
            "SELECT count(*) FROM pgdrill_writes WHERE created_at > $1 AND created_at < $2",
            &[&killed_at, &until],
        )
        .await
        .expect("count rows")
        .get(0);
    let connect_errors = metric_sum(&end, "pgdrill_connection_errors_total");
    let rows: i64 = admin
        .query_one(
            "SELECT count(*) FROM pgdrill_writes WHERE created_at >= $1 AND created_at < $2",
            &[&from, &until],
        )
        .await
        .expect("count rows")
        .get(0);
    let seconds = until
        .duration_since(from)
        .expect("database clock goes forward")
        .as_secs_f64();
    let rate = rows as f64 / seconds;
    let stderr = pgdrill.stderr_bytes();
    println!(
        "held {idle_count} idle connections {seconds:.1}s: {rate:.0} writes/s of {RATE}, \
         {killed} backends killed, {resumed} rows after, {connect_errors} connect errors, \
         /metrics in {answered:?}, max RSS {} kB, stderr {stderr} B",
        max_rss / 1024
    );
    // Not starved: the killed backends were replaced by new connections (each needs a
    // descriptor the idle clients must not hold) on the first attempt, and writes went on
    // while the idle clients were held. Counts, not a rate a busy machine could miss.
    assert_eq!(connect_errors, 0.0, "reconnecting failed:\n{end}");
    assert!(
        resumed > 0,
        "no write after the kill while the idle clients were held"
    );
    assert!(max_rss < 40 << 20, "RSS {max_rss} B");
    assert!(stderr < 100_000, "stderr {stderr} B");

    send_signal(pgdrill.child.id(), Signal::Term).expect("SIGTERM to pgdrill");
    let (status, err) = pgdrill.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}:\n{err}");
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_lanes_are_logged_unhealthy_and_end_the_run_non_zero() {
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let dir = tempfile::tempdir().expect("temp dir");
    let json_path = dir.path().join("summary.json");
    let pgdrill = Limited::spawn_with(
        4096,
        &[("PGDRILL_TEST_PANIC_LANE", "200")],
        &[
            "--dsn",
            &dsn,
            "--rate",
            "200",
            "--pool-size",
            "2",
            "--duration",
            "120s",
            "--listen",
            &listen.to_string(),
            "--summary-json",
            &json_path.display().to_string(),
            // A drill: its crash verdict stays on /metrics for --linger, as a clean end's.
            "--failover-command",
            "true",
            "--failover-after",
            "2s",
            "--linger",
            "60s",
        ],
    );
    let healthz = || async {
        try_http_get(listen, "/healthz")
            .await
            .map(|r| r.lines().next().unwrap_or_default().to_string())
    };
    eventually(Duration::from_secs(20), "healthy at first", || async {
        healthz().await.is_ok_and(|s| s.contains(" 200 "))
    })
    .await;
    eventually(
        Duration::from_secs(20),
        "503 while a lane restarts",
        || async { healthz().await.is_ok_and(|s| s.contains(" 503 ")) },
    )
    .await;
    eventually(
        Duration::from_secs(60),
        "the crashed drill's verdict on /metrics while it lingers",
        || async {
            let text = try_http_get(listen, "/metrics").await.unwrap_or_default();
            metric(&text, "pgdrill_drill_verdict{verdict=\"invalid\"}") == 1.0
                && metric(&text, "pgdrill_load_running") == 0.0
        },
    )
    .await;
    send_signal(pgdrill.child.id(), Signal::Term).expect("SIGTERM ends --linger");
    let (status, err) = pgdrill.wait(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(1), "{status}:\n{err}");
    let restarts = err.matches("a lane panicked; restarting it").count();
    assert_eq!(restarts as u32, 5, "{err}");
    assert!(
        err.contains("PGDRILL_TEST_PANIC_LANE: injected panic after 200 writes"),
        "{err}"
    );
    assert!(err.contains("a lane panicked 6 times"), "{err}");
    // Panics are log events with their location, not raw text from the default hook.
    assert!(err.contains("src/test_hooks.rs"), "{err}");
    assert!(!err.contains("' panicked at"), "{err}");
    // It had written: what it measured until then is still written out, before the error.
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_path).expect("summary JSON written"))
            .expect("summary JSON parses");
    assert!(json["successes"].as_u64().unwrap_or(0) >= 200, "{json}");
    let crashed = json["crashed"].as_str().unwrap_or_default();
    assert!(crashed.contains("a lane panicked 6 times"), "{json}");
    assert_eq!(json["drill"]["verdict"]["verdict"], "invalid", "{json}");
    let reasons = json["drill"]["verdict"]["invalid"].to_string();
    assert!(reasons.contains("the run crashed"), "{json}");
    lab.shutdown().await;
}

/// A reader that goes away (a log collector restarting, `pgdrill | head`) loses the lines,
/// and nothing else: the run ends as it would have (here: a target never reached, exit 5),
/// not in an abort from reporting a failed write to the same closed stderr.
#[tokio::test]
async fn closed_stdout_and_stderr_lose_lines_not_the_run() {
    let child = without_ambient_env(&mut Command::new(env!("CARGO_BIN_EXE_pgdrill")))
        .args(["--dsn", "host=127.0.0.1 port=1", "--duration", "2s"])
        .args(["--listen", "127.0.0.1:0", "--summary-json", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pgdrill");
    let mut child = KillOnDrop::new(child);
    let mut stderr = child.stderr.take().expect("stderr");
    let mut first = [0u8; 16];
    std::io::Read::read_exact(&mut stderr, &mut first).expect("a first log line");
    drop((stderr, child.stdout.take()));
    // At most 30 s (600 looks), so a hang ends the test.
    let mut status = None;
    for _ in 0..600 {
        status = child.try_wait().expect("wait");
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = status.expect("pgdrill hangs");
    assert_eq!(status.code(), Some(5), "{status:?}");
}

/// A host name whose lookup never ends (a resolver that takes queries and answers none):
/// the run that cannot start exits when its startup timeout says so, not when the lookups
/// would give up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_that_never_ends_does_not_hold_the_exit() {
    // Port 53 and a private /etc/resolv.conf need root, as the hang tests do.
    if !pgdrill_lab::private_hosts_available() {
        eprintln!(
            "SKIPPED: binding port 53 and a private /etc/resolv.conf (a mount namespace) need \
             root (CAP_NET_BIND_SERVICE, CAP_SYS_ADMIN); run the tests as root"
        );
        return;
    }
    let resolver = std::net::UdpSocket::bind("127.0.0.153:53").expect("bind a silent resolver");
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("resolv.conf");
    let silent = "nameserver 127.0.0.153\noptions timeout:30 attempts:1\n";
    std::fs::write(&conf, silent).expect("write resolv.conf");
    let stderr = dir.path().join("stderr");
    let listen = format!("127.0.0.1:{}", free_port());
    let child = without_ambient_env(&mut Command::new("unshare"))
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"")
        .arg(&conf)
        .arg(env!("CARGO_BIN_EXE_pgdrill"))
        .args(["--dsn", "host=db.pgdrill-hung.example user=u dbname=d"])
        .args(["--startup-timeout", "2s", "--listen", &listen])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("spawn unshare");
    let mut child = KillOnDrop::new(child);
    // Well before the lookups' 30 s (which is how long the exit waited for them).
    let deadline = Instant::now() + Duration::from_secs(25);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after 25 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let err = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert_eq!(status.code(), Some(5), "{err}");
    drop(resolver);
}

/// `pgdrill cleanup` stopped by a signal ends between batches and says what it deleted,
/// which is what is gone: not killed mid-way with nothing said. The signal comes while its
/// first batch waits for a row another session has locked, so it cannot be done already.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleanup_stopped_by_a_signal_says_what_it_deleted() {
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    let create = crate::support::drill::Binary::spawn(&["--dsn", &dsn, "--duration", "1s"]);
    let (status, _, err) = create.wait(Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(0), "{err}");
    let client = connect(&dsn).await;
    let rows = 300_000;
    crate::support::exec(
        &client,
        &format!(
            "INSERT INTO pgdrill_writes (customer_id, merchant_id, amount, status, run_id, seq) \
             SELECT 1, 1, 1, 'x', 42, g FROM generate_series(1, {rows}) g"
        ),
    )
    .await;
    let left = "SELECT count(*) FROM pgdrill_writes WHERE run_id = 42";
    // The run's first row (batches go in primary-key order), locked: the first batch's DELETE
    // waits for it. Not a trigger: cleanup refuses a table with one. Released within the
    // batch's lock_timeout (5 s).
    let locker = connect(&dsn).await;
    crate::support::exec(
        &locker,
        "BEGIN; SELECT 1 FROM pgdrill_writes WHERE run_id = 42 \
         ORDER BY transaction_id LIMIT 1 FOR UPDATE",
    )
    .await;
    let bin = crate::support::drill::Binary::spawn(&["cleanup", "--dsn", &dsn, "--run-id", "42"]);
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                   AND query LIKE 'DELETE FROM%'";
    eventually(
        Duration::from_secs(30),
        "a batch waiting for the row",
        || async { crate::support::count(&client, waiting, &[]).await > 0 },
    )
    .await;
    // Signalled while the batch waits: it ends that batch, and stops before the next one
    // (or the one after, if the signal is seen late), with 59 of them still to go.
    bin.signal(Signal::Term);
    crate::support::exec(&locker, "ROLLBACK").await;
    let (status, _, err) = bin.wait(Duration::from_secs(40)).await;
    let left = crate::support::count(&client, left, &[]).await;
    println!("{err}\n{left} rows left");
    assert_eq!(status.code(), Some(130), "{err}");
    let said = format!("stopped: deleted {} rows of run 42", rows - left);
    assert!(err.contains(&said), "{said}: {err}");
    assert!(left > 0, "it stopped before the end");
    lab.shutdown().await;
}
