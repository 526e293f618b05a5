//! A wrong target fails fast, before the first write, with a plain message and exit 5; a
//! target that is only slow to come up is followed; after the first write nothing is fatal.
//! No secret, from any source, reaches any output, and a trigger leaves no process behind.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgdrill_lab::StopMode;

use crate::support::drill::{metric, try_http_get, without_ambient_env, Binary, KillOnDrop};
use crate::support::{eventually, free_port, start_lab, start_single};

const SECRET: &str = "Zq7-pgdrill-Secret-xQ";

/// The binary with `args` (a listen address added); (exit code, seconds, stdout, stderr).
async fn timed(args: &[&str], limit: Duration) -> (Option<i32>, f64, String, String) {
    let mut argv = vec!["--listen", "127.0.0.1:0"];
    argv.extend_from_slice(args);
    let started = Instant::now();
    let (status, out, err) = Binary::spawn(&argv).wait(limit).await;
    (status.code(), started.elapsed().as_secs_f64(), out, err)
}

fn first_error(err: &str) -> &str {
    err.lines().find(|l| l.starts_with("error:")).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_targets_exit_5_with_the_servers_message_and_a_hint() {
    let lab = start_single(Some(SECRET)).await;
    let port = lab.port(lab.primary());
    let base = format!("host=127.0.0.1 port={port} user=pgdrill");
    // Nothing listens on port 1: refused at once.
    let nobody = 1;
    // An HTTP server where PostgreSQL was expected: it answers the TLS request with a 400.
    let http = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let http_port = http.local_addr().expect("its address").port();
    // Ended with the test's runtime.
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = http.accept().await {
            let mut request = [0u8; 64];
            let _ = socket.read(&mut request).await;
            let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let cases = [
        (
            "wrong password",
            format!("{base} dbname=pgdrill password=not-the-password"),
            vec![],
            "password authentication failed",
            "the password given for it",
        ),
        (
            "unknown database",
            format!("{base} dbname=nosuchdb password={SECRET}"),
            vec![],
            "database \"nosuchdb\" does not exist",
            "check dbname in --dsn",
        ),
        (
            "an HTTP server on the port",
            format!("host=127.0.0.1 port={http_port} user=pgdrill dbname=pgdrill"),
            vec![],
            "127.0.0.1:",
            "does not speak the PostgreSQL protocol",
        ),
        (
            "a startup option the server does not know",
            format!("{base} dbname=pgdrill password={SECRET} options='-c no_such_setting=1'"),
            vec![],
            "unrecognized configuration parameter \"no_such_setting\"",
            "a startup option (options= in --dsn, or PGOPTIONS)",
        ),
        (
            "nothing listening",
            format!("host=127.0.0.1 port={nobody} user=pgdrill dbname=pgdrill"),
            vec!["--startup-timeout", "3s"],
            "no write succeeded within --startup-timeout 3s",
            "the server is up and reachable",
        ),
    ];
    for (what, dsn, extra, said, hint) in cases {
        // A run that never wrote has nothing for --linger to show: it exits at once
        // (within `timed`'s 40 s, not after 60 s).
        let mut args = vec![
            "--dsn",
            dsn.as_str(),
            "--duration",
            "60s",
            "--connect-timeout",
            "2s",
            "--linger",
            "60s",
        ];
        args.extend(&extra);
        let (code, secs, out, err) = timed(&args, Duration::from_secs(40)).await;
        println!(
            "{what}: exit {code:?} after {secs:.2} s: {}",
            first_error(&err)
        );
        assert_eq!(code, Some(5), "{what}:\n{err}");
        assert!(
            first_error(&err).contains(said),
            "{what}: not {said:?}:\n{err}"
        );
        assert!(err.contains(hint), "{what}: no hint {hint:?}:\n{err}");
        assert!(
            !err.contains("task ended"),
            "{what}: a stop read as a crash:\n{err}"
        );
        assert!(
            out.is_empty(),
            "{what}: a summary for a run that never wrote:\n{out}"
        );
        assert!(!err.contains(SECRET), "{what}: the password in stderr");
        // Refused at once: said as the reason to stop, not again as a write's first error.
        if extra.is_empty() {
            for noise in ["first error of this kind", "failover state changed"] {
                assert!(!err.contains(noise), "{what}: {noise:?}:\n{err}");
            }
        }
    }
    // A run that ends before its startup deadline without one write: its summary, and 5.
    let dsn = format!("host=127.0.0.1 port={nobody} user=pgdrill dbname=pgdrill");
    let (code, secs, out, err) = timed(
        &[
            "--dsn",
            &dsn,
            "--duration",
            "3s",
            "--startup-timeout",
            "60s",
        ],
        Duration::from_secs(40),
    )
    .await;
    println!("ended without a write: exit {code:?} after {secs:.2} s");
    assert_eq!(code, Some(5), "{out}\n{err}");
    assert!(out.contains("(0 ok"), "{out}");
    // A table in a schema that does not exist: a table problem (exit 2), and no GRANT to
    // give for it.
    let dsn = format!("{base} dbname=pgdrill password={SECRET}");
    let args = [
        "--dsn",
        &dsn,
        "--table",
        "no_such_schema.t",
        "--duration",
        "5s",
    ];
    let (code, _, _, err) = timed(&args, Duration::from_secs(40)).await;
    assert_eq!(code, Some(2), "{err}");
    let said = first_error(&err);
    assert!(
        said.contains("name a schema that exists") && !said.contains("grant CREATE"),
        "{said}"
    );
    lab.shutdown().await;
}

/// `hostaddr` without `host` (libpq: the address is the host): connected to, and shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostaddr_alone_is_the_target() {
    let lab = start_single(Some(SECRET)).await;
    let port = lab.port(lab.primary());
    let dsn =
        format!("hostaddr=127.0.0.1 port={port} user=pgdrill dbname=pgdrill password={SECRET}");
    // A loaded machine may take over the default 2 s connect timeout; not what is tested.
    let args = [
        "--dsn",
        &dsn,
        "--duration",
        "2s",
        "--rate",
        "50",
        "--connect-timeout",
        "10s",
    ];
    let (code, _, out, err) = timed(&args, Duration::from_secs(40)).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(!out.contains("(0 ok") && out.contains(" ok"), "{out}");
    assert!(err.contains(&format!("host=127.0.0.1:{port} ")), "{err}");
    assert!(!err.contains("localhost") && !err.contains(SECRET), "{err}");
    // `--listen 127.0.0.1:0`: the port it got is said, not 0.
    let started = err.lines().find(|l| l.contains("pgdrill started"));
    let said = started.and_then(|l| l.split("listen=127.0.0.1:").nth(1));
    let port = said.and_then(|s| s.split(' ').next()).unwrap_or("0");
    assert_ne!(port, "0", "{err}");
    lab.shutdown().await;
}

/// A host of several that refuses every connection, while the next one takes the writes:
/// no write fails, and the log still says it (once, not per attempt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_refuses_beside_one_that_works_is_said_once() {
    let lab = start_single(Some(SECRET)).await;
    // Nothing listens on port 1.
    let (port, closed) = (lab.port(lab.primary()), 1);
    let dsn = format!(
        "host=127.0.0.1,127.0.0.1 port={closed},{port} user=pgdrill dbname=pgdrill \
         password={SECRET}"
    );
    let args = ["--dsn", &dsn, "--duration", "2s", "--rate", "50"];
    let (code, _, out, err) = timed(&args, Duration::from_secs(40)).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains(" 0 failed"), "{out}");
    let said = err
        .lines()
        .filter(|l| l.contains("cannot connect; retrying"));
    let said: Vec<_> = said.collect();
    assert_eq!(said.len(), 1, "{err}");
    assert!(said[0].contains("connect_refused"), "{err}");
    lab.shutdown().await;
}

/// Down at start, up 2 s later: followed normally. Then a server that goes away after the
/// first write, for longer than --startup-timeout: an outage, not an exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_server_is_followed_and_after_the_first_write_nothing_is_fatal() {
    let lab = start_lab(None).await;
    let node = lab.primary();
    lab.stop(node, StopMode::Fast).await.expect("stop");
    let dsn = lab.dsn(node);
    let listen = format!("127.0.0.1:{}", free_port());
    let run = Binary::spawn(&[
        "--dsn",
        &dsn,
        "--listen",
        &listen,
        "--rate",
        "100",
        "--duration",
        "14s",
        // Room for the server's start (0.4-0.7 s, more beside other tests on 2 cores)
        // and the next connect attempt after it.
        "--startup-timeout",
        "5s",
        "--outage-threshold",
        "1s",
    ]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    lab.start_node(node).await.expect("start again");
    let addr: SocketAddr = listen.parse().expect("listen");
    eventually(Duration::from_secs(20), "first writes", || async {
        try_http_get(addr, "/metrics")
            .await
            .is_ok_and(|t| metric(&t, "pgdrill_transaction_duration_seconds_count") > 50.0)
    })
    .await;
    lab.stop(node, StopMode::Immediate)
        .await
        .expect("stop after writes");
    tokio::time::sleep(Duration::from_secs(4)).await;
    lab.start_node(node).await.expect("start after the outage");
    let (status, out, err) = run.wait(Duration::from_secs(60)).await;
    println!("{out}");
    assert_eq!(status.code(), Some(0), "{out}\n{err}");
    assert!(out.contains("outage #1"), "the stop is an outage:\n{out}");
    assert!(!err.contains("cannot write to the target"), "{err}");
    lab.shutdown().await;
}

/// Runs the binary with a password from one source and a trigger whose arguments and
/// output carry it; returns everything it wrote.
async fn outputs_with_secret(source: &str, port: u16, dir: &Path) -> Vec<(String, String)> {
    let summary = dir.join(format!("{source}.json"));
    let report = dir.join(format!("{source}.html"));
    let secret_file = dir.join("password");
    std::fs::write(&secret_file, format!("{SECRET}\n")).expect("password file");
    let listen = format!("127.0.0.1:{}", free_port());
    let base = format!("host=127.0.0.1 port={port} user=pgdrill dbname=pgdrill");
    // $0 is --admin-password and $1 the secret: echoed, with a NUL byte and a child left
    // running in the background.
    let trigger = "sh -c 'echo \"out $1\"; echo \"err $1\" >&2; printf \"nul\\000byte\\n\"; \
                   sleep 300 & echo child=$!' --admin-password "
        .to_string()
        + SECRET;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgdrill"));
    // The caller's PG* variables removed first: PGPASSWORD below is the test's own.
    without_ambient_env(&mut cmd)
        .args(["--listen", &listen, "--rate", "100", "--duration", "6s"])
        .args(["--failover-command", &trigger, "--failover-after", "2s"])
        .arg("--summary-json")
        .arg(&summary)
        .arg("--report")
        .arg(&report)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match source {
        "dsn" => cmd.args(["--dsn", &format!("{base} password={SECRET}")]),
        "file" => cmd
            .args(["--dsn", &base])
            .arg("--password-file")
            .arg(&secret_file),
        "command" => cmd.args([
            "--dsn",
            &base,
            "--password-command",
            &format!("cat {}", secret_file.display()),
        ]),
        _ => cmd.args(["--dsn", &base]).env("PGPASSWORD", SECRET),
    };
    let child = KillOnDrop::new(cmd.spawn().expect("spawn pgdrill"));
    let addr: SocketAddr = listen.parse().expect("listen");
    eventually(Duration::from_secs(20), "trigger ran", || async {
        try_http_get(addr, "/metrics")
            .await
            .is_ok_and(|t| metric(&t, "pgdrill_failover_trigger_end_timestamp_seconds") > 0.0)
    })
    .await;
    let mut pages = vec![(
        "/metrics".to_string(),
        try_http_get(addr, "/metrics").await.unwrap_or_default(),
    )];
    pages.push((
        "/".into(),
        try_http_get(addr, "/").await.unwrap_or_default(),
    ));
    let out = child.output(Duration::from_secs(60)).await;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    pages.push(("stdout".into(), text(&out.stdout)));
    pages.push(("stderr".into(), text(&out.stderr)));
    for (name, path) in [("summary JSON", &summary), ("report", &report)] {
        pages.push((
            name.into(),
            std::fs::read_to_string(path).unwrap_or_default(),
        ));
    }
    pages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_from_any_source_reaches_any_output_and_no_trigger_process_stays() {
    let lab = start_single(Some(SECRET)).await;
    let port = lab.port(lab.primary());
    let dir = tempfile::tempdir().expect("temp dir");
    for source in ["dsn", "file", "command", "PGPASSWORD"] {
        let outputs = outputs_with_secret(source, port, dir.path()).await;
        let stderr = &outputs
            .iter()
            .find(|(n, _)| n == "stderr")
            .expect("stderr")
            .1;
        let json = &outputs
            .iter()
            .find(|(n, _)| n == "summary JSON")
            .expect("json")
            .1;
        for (name, text) in &outputs {
            assert!(!text.is_empty(), "{source}: {name} is empty\n{stderr}");
            assert!(
                !text.contains(SECRET),
                "{source}: the password in {name}:\n{text}"
            );
        }
        serde_json::from_str::<serde_json::Value>(json).expect("the summary is still JSON");
        // The trigger ran and its output was kept, scrubbed and as text.
        assert!(
            json.contains("out REDACTED") && json.contains("err REDACTED"),
            "{json}"
        );
        assert!(
            json.contains("--admin-password REDACTED"),
            "{source}: {json}"
        );
        assert!(!stderr.contains('\0'), "{source}: a NUL byte in stderr");
        assert!(stderr.contains("nul\\x00byte"), "{source}: {stderr}");
        // The child it left running was ended as pgdrill exited.
        let pid: u32 = json
            .split("child=")
            .find_map(|s| s.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .unwrap_or_else(|| panic!("{source}: no child pid in {json}"));
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let alive = state
            .split(") ")
            .nth(1)
            .is_some_and(|s| !s.starts_with('Z'));
        assert!(
            !alive,
            "{source}: the trigger's child {pid} still runs: {state}"
        );
        assert!(
            stderr.contains("left processes running; ending them"),
            "{stderr}"
        );
        println!(
            "{source}: no secret in {} outputs; child {pid} ended",
            outputs.len()
        );
    }
    lab.shutdown().await;
}
