//! Failures that hang instead of refusing: a frozen primary (every process stopped), a
//! listener that accepts and never answers, a DNS name that moves while the old primary
//! hangs. Ground truth from the lab's stamps, the rows' `created_at` and, where the same
//! server comes back, a fresh client's first answer.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgdrill_lab::{HostsFile, Lab, LabOptions, Node, ReplicationMode, Stamp, ADDR_A};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::support::drill::{metric, try_http_get, without_ambient_env, Drill, KillOnDrop};
use crate::support::{
    assert_unknowns_resolved_as_rows, connect, eventually, free_port, start_lab, start_lab_with,
};

/// `--connect-timeout` in these tests, and the slack the issue allows on top of it.
const CONNECT_TIMEOUT: f64 = 2.0;
const SLACK: f64 = 0.5;

fn epoch(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn wall(s: &Stamp) -> f64 {
    epoch(s.wall)
}

/// What the rows of one run on one node say: the first `created_at` after `after` (epoch
/// seconds), the longest gap between consecutive rows, and how many rows came after.
struct Rows {
    first_after: f64,
    gap: f64,
    after: i64,
}

async fn rows(lab: &Lab, node: Node, run_id: i64, after: f64) -> Rows {
    let client = connect(&lab.dsn(node)).await;
    let row = client
        .query_one(
            "SELECT extract(epoch FROM min(created_at) FILTER (WHERE created_at > to_timestamp($2)))::float8, \
                    extract(epoch FROM max(gap))::float8, \
                    count(*) FILTER (WHERE created_at > to_timestamp($2)) \
             FROM (SELECT created_at, created_at - lag(created_at) OVER (ORDER BY created_at) AS gap \
                   FROM pgdrill_writes WHERE run_id = $1) r",
            &[&run_id, &after],
        )
        .await
        .expect("reading created_at");
    Rows {
        first_after: row
            .get::<_, Option<f64>>(0)
            .expect("rows after the failure"),
        gap: row.get::<_, Option<f64>>(1).expect("at least two rows"),
        after: row.get(2),
    }
}

/// When a fresh client, connecting from its own thread and runtime (pgdrill's burst after
/// the thaw does not delay it) just before the thaw, has its first answer. Rows alone would
/// date the thaw too early: writes pgdrill sent before the freeze, and gave up on, wait in
/// their connections and run the moment the server does, while new clients still queue
/// behind every connection attempt the postmaster has yet to accept. One client, not
/// `support::probe`: its attempts every 100 ms would fill the frozen server's backlog and
/// slow the very catch-up they time.
fn fresh_client_answer(dsn: String) -> std::thread::JoinHandle<SystemTime> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the fresh client");
        runtime.block_on(async move {
            let client = connect(&dsn).await;
            client.simple_query("SELECT 1").await.expect("SELECT 1");
            SystemTime::now()
        })
    })
}

/// TCP sockets of this machine in state ESTABLISHED whose remote port is `port`
/// (from /proc/net/tcp: `sl local rem st ...`, addresses as `HEXIP:HEXPORT`).
fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote = fields.get(2).and_then(|a| a.rsplit_once(':'));
            let remote_port = remote.and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            remote_port == Some(port) && fields.get(3) == Some(&"01")
        })
        .count()
}

/// The bounds of a failover away from a frozen primary, checked against the lab's stamps
/// and the rows on the new primary: the first write there within `--connect-timeout` +
/// 0.5 s of the promotion request, pgdrill's reported unavailability within that bound of
/// the promotion and within 0.1 s of the rows' longest gap.
async fn assert_frozen_failover_bounds(
    lab: &Lab,
    report: &pgdrill_lab::FailoverReport,
    run_id: i64,
    measured: f64,
) {
    let truth = rows(lab, report.new_primary, run_id, wall(&report.stop_begun)).await;
    let promoted = wall(&report.promote_requested);
    let frozen_to_promote = promoted - wall(&report.stop_begun);
    println!(
        "lab: {report}
first write on the new primary {:.3}s after the promotion request; \
         reported {measured:.3}s; rows' gap {:.3}s; lab promote→writable {:.3}s",
        truth.first_after - promoted,
        truth.gap,
        report.promote_to_writable().as_secs_f64()
    );
    assert!(
        truth.first_after - promoted <= CONNECT_TIMEOUT + SLACK,
        "first write on the new primary {:.3}s after promotion",
        truth.first_after - promoted
    );
    assert!(
        measured <= frozen_to_promote + CONNECT_TIMEOUT + SLACK,
        "reported {measured:.3}s for a promotion {frozen_to_promote:.3}s after the freeze"
    );
    assert!(
        (measured - truth.gap).abs() <= 0.1,
        "reported {measured:.3}s, the rows say {:.3}s",
        truth.gap
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_primary_then_promotion_writes_resume_within_the_connect_timeout() {
    let lab = start_lab(Some(ReplicationMode::Sync)).await;
    let dsn = lab.multi_host_dsn();
    let drill = Drill::start(&[
        "--dsn",
        &dsn,
        "--rate",
        "500",
        "--duration",
        "14s",
        "--connect-timeout",
        "2s",
    ])
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The count below sees the pool's connections while they are open.
    let open_before = established_to(lab.port(lab.primary()));
    assert!(open_before >= 1, "no connection seen to the primary");
    let report = lab
        .frozen_failover(Duration::from_secs(2), None)
        .await
        .expect("frozen failover");
    // Once writes have moved, pgdrill keeps no connection open to the frozen server: at
    // most one connect attempt is waiting on it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let left_open = established_to(lab.port(report.old_primary));
    let summary = drill.finish().await;
    assert!(
        left_open <= 1,
        "{left_open} connections still ESTABLISHED to the frozen server ({open_before} before)"
    );
    println!("{summary}\nconnections to the old primary: {open_before} before the freeze, {left_open} after");
    assert_eq!(summary.outages.len(), 1, "{summary}");
    let outage = &summary.outages[0];
    let measured = outage.write_unavailable_seconds.expect("outage ended");
    assert_frozen_failover_bounds(&lab, &report, summary.run_id, measured).await;
    assert_eq!(
        summary.counts.lost_writes, 0,
        "sync replication loses nothing"
    );
    assert_eq!(outage.lost_writes, Some(0));
    assert_eq!(
        summary.counts.unknown_outcome_writes,
        summary.counts.unknown_outcome_committed + summary.counts.unknown_outcome_not_committed,
        "every unknown outcome is resolved"
    );
    assert!(
        summary.counts.errors.contains_key("no_response"),
        "writes on the frozen server end as no_response: {:?}",
        summary.counts.errors
    );
    assert!(
        !summary.counts.errors.contains_key("statement_timeout"),
        "the server never sent 57014: {:?}",
        summary.counts.errors
    );
    assert_eq!(summary.primary_changes, 1);
    lab.kill_frozen(report.old_primary)
        .await
        .expect("kill the frozen old primary");
    lab.shutdown().await;
}

/// A proxy that moves its backend as the old primary hangs (HAProxy without
/// `on-marked-down shutdown-sessions`, PgBouncer after a RELOAD): the connections through it
/// stay on the frozen server, while a fresh one reaches the other. pgdrill leaves them when
/// its check finds another server behind the same address, not at its client timeout (21 s
/// here, beyond the run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_moving_its_backend_off_a_frozen_primary_is_followed() {
    let lab = start_lab(Some(ReplicationMode::Sync)).await;
    let (old, new) = (lab.primary(), lab.standby().expect("a standby"));
    let at = |n: Node| SocketAddr::new(lab.addr(n), lab.port(n));
    let (proxy, dsn) = crate::support::proxied(&lab, old, Duration::ZERO).await;
    let drill = Drill::start(&[
        "--dsn",
        &dsn,
        "--rate",
        "500",
        "--duration",
        "14s",
        "--connect-timeout",
        "2s",
        "--statement-timeout",
        "20s",
    ])
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let retarget = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        proxy.set_upstream(at(new));
    };
    let (report, ()) = tokio::join!(lab.frozen_failover(Duration::from_secs(2), None), retarget);
    let report = report.expect("frozen failover");
    let summary = drill.finish().await;
    println!("{summary}");
    assert_eq!(summary.outages.len(), 1, "{summary}");
    let outage = &summary.outages[0];
    assert!(!outage.open_at_shutdown, "{summary}");
    let measured = outage.write_unavailable_seconds.expect("outage ended");
    assert_frozen_failover_bounds(&lab, &report, summary.run_id, measured).await;
    assert_eq!(summary.primary_changes, 1, "{summary}");
    assert_eq!(summary.counts.lost_writes, 0, "{summary}");
    proxy.shutdown().await;
    lab.kill_frozen(report.old_primary)
        .await
        .expect("kill the frozen old primary");
    lab.shutdown().await;
}

/// Accepts TCP connections and never answers; counts them and when each was closed.
struct SilentListener {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Seconds from accept to the client's close, per closed socket.
    closed_after: Arc<Mutex<Vec<f64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SilentListener {
    async fn start() -> SilentListener {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed_after = Arc::new(Mutex::new(Vec::new()));
        let (a, c) = (accepted.clone(), closed_after.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let c = c.clone();
                let at = Instant::now();
                tokio::spawn(async move {
                    // Read (the startup packet) and never write, until the client closes.
                    let mut buf = [0u8; 1024];
                    while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
                    c.lock()
                        .expect("closed list")
                        .push(at.elapsed().as_secs_f64());
                });
            }
        });
        SilentListener {
            addr,
            accepted,
            closed_after,
            task,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_first_host_is_left_for_the_next_within_the_connect_timeout() {
    let lab = start_lab(None).await;
    let silent = SilentListener::start().await;
    let dsn = format!(
        "host=127.0.0.1,{} port={},{} user=pgdrill dbname=pgdrill target_session_attrs=read-write",
        lab.addr(Node::A),
        silent.addr.port(),
        lab.port(Node::A)
    );
    let started = epoch(SystemTime::now());
    let run = Duration::from_secs(8);
    let drill = Drill::start(&[
        "--dsn",
        &dsn,
        "--rate",
        "200",
        "--pool-size",
        "4",
        "--duration",
        "8s",
        "--connect-timeout",
        "2s",
    ])
    .await;
    tokio::time::sleep(run - Duration::from_millis(500)).await;
    let text = drill.scrape().await;
    let summary = drill.finish().await;
    let truth = rows(&lab, Node::A, summary.run_id, started).await;
    let timeouts = metric(
        &text,
        "pgdrill_connection_errors_total{class=\"connect_timeout\"}",
    );
    let accepted = silent.accepted.load(Ordering::SeqCst);
    println!(
        "{summary}\nfirst write {:.3}s after start; {accepted} connections to the silent host, \
         {timeouts} connect_timeout",
        truth.first_after - started
    );
    assert!(
        truth.first_after - started <= CONNECT_TIMEOUT + SLACK,
        "the second host was used {:.3}s after start",
        truth.first_after - started
    );
    assert!(timeouts >= 1.0, "attempts counted as connect_timeout");
    assert!(accepted >= 1);
    // Not hammered: the first attempts of the 4 lanes, then one attempt at a time
    // (each lasting the connect timeout).
    let bound = 4 + (run.as_secs_f64() / CONNECT_TIMEOUT).ceil() as usize + 1;
    assert!(accepted <= bound, "{accepted} connections in {run:?}");
    // Every half-open connection was closed by pgdrill, within the connect timeout of its
    // accept (or when the run ended).
    eventually(
        Duration::from_secs(5),
        "pgdrill closes every socket",
        || async { silent.closed_after.lock().expect("list").len() == accepted },
    )
    .await;
    let longest = silent
        .closed_after
        .lock()
        .expect("list")
        .iter()
        .copied()
        .fold(0.0, f64::max);
    assert!(
        longest <= CONNECT_TIMEOUT + SLACK,
        "a socket stayed open {longest:.3}s"
    );
    silent.task.abort();
    lab.shutdown().await;
}

/// The pgdrill binary in its own mount namespace where `hosts` is `/etc/hosts`.
fn spawn_with_private_hosts(hosts: &Path, dir: &Path, args: &[&str]) -> KillOnDrop {
    let child = without_ambient_env(&mut Command::new("unshare"))
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
        .arg(hosts)
        .arg(env!("CARGO_BIN_EXE_pgdrill"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("stdout")).expect("stdout file"))
        .stderr(std::fs::File::create(dir.join("stderr")).expect("stderr file"))
        .spawn()
        .expect("spawn unshare");
    KillOnDrop::new(child)
}

/// Waits (bounded) for the spawned pgdrill to exit successfully and returns its JSON summary.
async fn wait_for_summary(
    child: &mut std::process::Child,
    dir: &Path,
    summary_path: &Path,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pgdrill did not exit");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stderr = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
    assert!(status.success(), "{stderr}");
    println!(
        "{}",
        std::fs::read_to_string(dir.join("stdout")).unwrap_or_default()
    );
    serde_json::from_str(&std::fs::read_to_string(summary_path).expect("summary written"))
        .expect("summary JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_switch_with_the_old_primary_frozen_is_followed_without_restart() {
    if !pgdrill_lab::private_hosts_available() {
        eprintln!(
            "SKIPPED: a private /etc/hosts needs a mount namespace, which needs root \
             (CAP_SYS_ADMIN); run the tests as root"
        );
        return;
    }
    let lab = start_lab_with(LabOptions {
        standby: Some(ReplicationMode::Sync),
        separate_addresses: true,
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let name = "primary.pgdrill-hang.test";
    let hosts = HostsFile::create(&dir.path().join("hosts"), name, ADDR_A).expect("hosts file");
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let summary_path = dir.path().join("summary.json");
    let dsn = lab.named_dsn(name);
    let mut child = spawn_with_private_hosts(
        hosts.path(),
        dir.path(),
        &[
            "--dsn",
            &dsn,
            "--rate",
            "500",
            "--duration",
            "14s",
            // Longer than the bounds' 2 s: the name's move is seen by a lookup while the
            // liveness check waits, not once a connect to the old address timed out.
            "--connect-timeout",
            "5s",
            "--progress-interval",
            "1s",
            "--listen",
            &listen.to_string(),
            "--summary-json",
            &summary_path.to_string_lossy(),
        ],
    );
    eventually(Duration::from_secs(15), "load running", || async {
        let text = try_http_get(listen, "/metrics").await.unwrap_or_default();
        metric(&text, "pgdrill_transactions_total") > 500.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = lab
        .frozen_failover(Duration::from_secs(2), Some(&hosts))
        .await
        .expect("frozen failover with a DNS switch");
    let summary = wait_for_summary(&mut child, dir.path(), &summary_path).await;
    let outages = summary["outages"].as_array().expect("outages");
    assert_eq!(outages.len(), 1, "{summary}");
    let measured = outages[0]["write_unavailable_seconds"]
        .as_f64()
        .expect("outage ended");
    let run_id = summary["run_id"].as_i64().expect("run_id");
    assert_frozen_failover_bounds(&lab, &report, run_id, measured).await;
    assert_eq!(summary["primary_changes"], 1, "{summary}");
    assert_eq!(summary["lost_writes"], 0, "{summary}");
    let unknown = summary["unknown_outcome_writes"].as_u64().expect("unknown");
    let resolved = summary["unknown_outcome_committed"].as_u64().expect("c")
        + summary["unknown_outcome_not_committed"]
            .as_u64()
            .expect("n");
    assert_eq!(unknown, resolved, "every unknown outcome is resolved");
    // The name moved for pgdrill alone.
    let host_etc = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    assert!(!host_etc.contains(name), "the private hosts file leaked");
    lab.kill_frozen(report.old_primary)
        .await
        .expect("kill the frozen old primary");
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_primary_that_comes_back_is_one_outage_measured_by_the_rows() {
    let lab = start_lab(None).await;
    let node = lab.primary();
    let drill = Drill::start(&[
        "--dsn",
        &lab.dsn(node),
        "--rate",
        "500",
        "--duration",
        "22s",
        "--connect-timeout",
        "2s",
    ])
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let freeze = lab.freeze(node).await.expect("freeze");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let fresh = fresh_client_answer(lab.dsn(node));
    let thawed = lab.thaw(node).await.expect("thaw");
    let fresh = fresh.join().expect("the fresh client's thread");
    let summary = drill.finish().await;
    let truth = rows(&lab, node, summary.run_id, wall(&thawed)).await;
    // The last row before the freeze, to a fresh client's first answer after the thaw.
    let unavailable = epoch(fresh) - (truth.first_after - truth.gap);
    println!(
        "{summary}\nfrozen {} processes for {:.3}s; rows' gap {:.3}s; first write {:.3}s and a \
         fresh client's answer {:.3}s after the thaw: {unavailable:.3}s unavailable",
        freeze.processes,
        thawed.since(&freeze.freeze_begun).as_secs_f64(),
        truth.gap,
        truth.first_after - wall(&thawed),
        epoch(fresh) - wall(&thawed),
    );
    assert!(freeze.processes > 3, "postmaster and its children");
    assert_eq!(summary.outages.len(), 1, "{summary}");
    let measured = summary.outages[0]
        .write_unavailable_seconds
        .expect("outage ended");
    assert!(
        (measured - unavailable).abs() <= 0.1,
        "reported {measured:.3}s, a fresh client {unavailable:.3}s"
    );
    assert!(
        measured >= truth.gap - 0.1,
        "reported {measured:.3}s, shorter than the rows' gap {:.3}s",
        truth.gap
    );
    assert!(measured >= 9.9, "frozen 10 s, reported {measured:.3}s");
    assert!(truth.after > 1000, "writes resumed without restart");
    assert_eq!(summary.counts.lost_writes, 0);
    assert_eq!(
        summary.counts.unknown_outcome_writes,
        summary.counts.unknown_outcome_committed + summary.counts.unknown_outcome_not_committed,
        "every unknown outcome is resolved"
    );
    // Resolved as the rows say: the writes given up during the freeze that the server ran
    // after the thaw are among the committed ones, not judged before they ran.
    assert_unknowns_resolved_as_rows(&lab, node, &summary).await;
    assert_eq!(summary.primary_changes, 0, "the same server came back");
    lab.shutdown().await;
}

/// Stopping while the primary is frozen: the lanes' writes are given up, retention's batch
/// (on its own connection, sent after the freeze) is abandoned, and the whole drain ends
/// within one shutdown grace, not when the server answers (never).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_while_the_primary_is_frozen_ends_within_the_grace() {
    let lab = start_lab(None).await;
    let node = lab.primary();
    let drill = Drill::start(&[
        "--dsn",
        &lab.dsn(node),
        "--rate",
        "200",
        "--retention",
        "10s",
        "--verify-window",
        "5s",
        "--shutdown-grace",
        "3s",
        "--connect-timeout",
        "1s",
    ])
    .await;
    drill.wait_for_transactions(400.0).await;
    lab.freeze(node).await.expect("freeze");
    // Retention sweeps every second (a tenth of the window): its next batch hangs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let asked = Instant::now();
    let summary = drill.stop().await;
    let took = asked.elapsed();
    lab.thaw(node).await.expect("thaw");
    println!("{summary}\nstopped in {:.3}s", took.as_secs_f64());
    // The grace (3 s) and slack for a loaded machine; without the bound it never ends.
    assert!(took < Duration::from_secs(30), "stopping took {took:?}");
    assert_eq!(summary.outages.len(), 1, "{summary}");
    assert!(summary.outages[0].open_at_shutdown, "{summary}");
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_host_is_retried_with_backoff_not_hammered() {
    // Nothing listens on port 1: every connect is refused at once.
    let dsn = "host=127.0.0.1 port=1 user=pgdrill dbname=pgdrill";
    let drill = Drill::start(&[
        "--dsn",
        dsn,
        "--rate",
        "200",
        "--pool-size",
        "8",
        "--duration",
        "6s",
        // /metrics stays up once the load is over, so the scrape of the whole run cannot
        // come too late; the stop below ends it.
        "--linger",
        "60s",
    ])
    .await;
    drill.wait_for_load_over(Duration::from_secs(30)).await;
    let text = drill.scrape().await;
    let summary = drill.stop().await;
    let attempts = metric(&text, "pgdrill_connection_attempts_total");
    let refused = metric(
        &text,
        "pgdrill_connection_errors_total{class=\"connect_refused\"}",
    );
    println!("{summary}\n{attempts} connection attempts, {refused} refused in ~6 s");
    // Backoff from 25 ms doubling to 100 ms (jittered down to half), one attempt at a time
    // once failing: at most ~6 s / 50 ms = 120 attempts in 6 s (about 80 on average), where
    // 8 lanes without it made thousands; and a server that comes back is seen within 100 ms.
    assert!(refused >= 5.0, "retried: {refused}");
    assert!(attempts <= 130.0, "hammered: {attempts} attempts");
    assert!(
        summary
            .counts
            .errors
            .get("connect_refused")
            .copied()
            .unwrap_or(0)
            >= 5,
        "failed writes name the cause: {:?}",
        summary.counts.errors
    );
}
