//! Rotating passwords against a real PostgreSQL with scram-sha-256: the role's password
//! changes while pgdrill runs; new connections fail as class `auth` until the file (or the
//! command's output) has the new secret, then recover. The secret never reaches /metrics,
//! logs, the summary or the `/` page.

use std::time::Duration;

use pgdrill_lab::sys::Signal;
use pgdrill_lab::Lab;

use crate::support::drill::{http_get, metric, try_http_get, Binary, Drill};
use crate::support::{connect, eventually, free_port, start_single};

const OLD: &str = "first-Secret-1";
const NEW: &str = "second-Secret-2";

/// Changes the role's password and ends every session that began before the change. A
/// connection that was authenticating during the ALTER has a session on the old password
/// and appears in pg_stat_activity only once authenticated (on a busy machine one wrote for
/// 0.5 s after the first kick): sessions that began before are ended again for pgdrill's
/// connect timeout (2 s), after which no attempt begun before the change can still finish.
async fn rotate_and_kick(lab: &Lab, to: &str) {
    let admin = connect(&lab.admin_dsn(lab.primary())).await;
    admin
        .batch_execute(&format!("ALTER ROLE pgdrill PASSWORD '{to}'"))
        .await
        .expect("rotate password");
    let rotated: String = admin
        .query_one("SELECT clock_timestamp()::text", &[])
        .await
        .expect("clock")
        .get(0);
    let kick = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE usename = 'pgdrill' AND backend_start <= '{rotated}'"
    );
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < until {
        admin
            .batch_execute(&kick)
            .await
            .expect("terminate sessions");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rotates while `drill` runs; `update` puts the new secret where pgdrill reads it.
async fn rotation_recovers(lab: &Lab, drill: &Drill, update: impl FnOnce()) {
    let ok = "pgdrill_transaction_duration_seconds_count";
    eventually(
        Duration::from_secs(10),
        "load runs with the first password",
        || async { drill.metric(ok).await > 200.0 },
    )
    .await;
    rotate_and_kick(lab, NEW).await;
    eventually(
        Duration::from_secs(10),
        "reconnects fail as auth",
        || async {
            drill
                .metric("pgdrill_connection_errors_total{class=\"auth\"}")
                .await
                >= 1.0
        },
    )
    .await;
    let before = drill.metric(ok).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        drill.metric(ok).await - before < 5.0,
        "no writes succeed with the old secret"
    );
    update();
    eventually(
        Duration::from_secs(10),
        "writes succeed with the new secret",
        || async { drill.metric(ok).await > before + 200.0 },
    )
    .await;
    let text = drill.scrape().await;
    assert!(
        !text.contains(OLD) && !text.contains(NEW),
        "a secret on /metrics"
    );
    assert!(metric(&text, "pgdrill_password_refreshes_total") >= 2.0);
}

async fn lab() -> (Lab, String) {
    let lab = start_single(Some(OLD)).await;
    // No password in the DSN: it comes from the file or the command only.
    let dsn = format!(
        "host=127.0.0.1 port={} user=pgdrill dbname=pgdrill",
        lab.port(lab.primary())
    );
    (lab, dsn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_file_is_reread_for_new_connections() {
    let (lab, dsn) = lab().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{OLD}\n")).expect("write password file");
    let path = file.display().to_string();
    let drill = Drill::start(&["--dsn", &dsn, "--rate", "300", "--password-file", &path]).await;
    rotation_recovers(&lab, &drill, || {
        std::fs::write(&file, format!("{NEW}\n")).expect("rewrite password file");
    })
    .await;
    let summary = drill.stop().await;
    assert!(
        summary.counts.errors.contains_key("auth"),
        "{:?}",
        summary.counts.errors
    );
    println!("{summary}");
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_command_is_rerun_after_an_auth_failure() {
    let (lab, dsn) = lab().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let token = dir.path().join("token");
    let runs = dir.path().join("runs");
    std::fs::write(&token, OLD).expect("write token");
    // Stands in for `az account get-access-token ... -o tsv`; counts its runs. pgdrill
    // runs no shell of its own, so the `;` and `>>` need an explicit one.
    let script = format!("echo run >> {}; cat {}", runs.display(), token.display());
    let command = shlex::try_join(["sh", "-c", &script]).expect("quotable");
    let drill = Drill::start(&[
        "--dsn",
        &dsn,
        "--rate",
        "300",
        "--password-command",
        &command,
        "--password-ttl",
        "1h",
    ])
    .await;
    rotation_recovers(&lab, &drill, || {
        std::fs::write(&token, NEW).expect("rewrite token");
    })
    .await;
    let summary = drill.stop().await;
    let ran = std::fs::read_to_string(&runs)
        .unwrap_or_default()
        .lines()
        .count();
    // Once at start, then only after auth failures (at most once a second), not per connection.
    assert!((2..=15).contains(&ran), "the command ran {ran} times");
    assert!(
        summary.counts.errors.contains_key("auth"),
        "{:?}",
        summary.counts.errors
    );
    lab.shutdown().await;
}

/// A slow token command (`az account get-access-token` takes seconds) run again as
/// `--password-ttl` runs out, while every connection reaches its lifetime: the connections
/// keep the last token meanwhile, so the writes never wait on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_password_command_refreshing_holds_no_write_back() {
    let (lab, dsn) = lab().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let runs = dir.path().join("runs");
    let script = format!("echo run >> {}; sleep 1.5; echo {OLD}", runs.display());
    let command = shlex::try_join(["sh", "-c", &script]).expect("quotable");
    let drill = Drill::start(&[
        "--dsn",
        &dsn,
        "--rate",
        "200",
        "--password-command",
        &command,
        "--password-ttl",
        "1s",
        "--max-connection-lifetime",
        "2s",
        "--duration",
        "10s",
    ])
    .await;
    let summary = drill.finish().await;
    let ran = std::fs::read_to_string(&runs)
        .unwrap_or_default()
        .lines()
        .count();
    // Once at start, then again as the connections were renewed.
    assert!(ran >= 3, "the command ran {ran} times");
    assert!(summary.outages.is_empty(), "{summary}");
    assert!(summary.counts.errors.is_empty(), "{summary}");
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_appears_nowhere() {
    const SECRET: &str = "pw-Zq7x-never-print-me";
    let lab = start_single(Some(SECRET)).await;
    let dsn = lab.dsn(lab.primary());
    assert!(dsn.contains(SECRET), "the lab DSN carries the password");
    let url = format!(
        "postgres://pgdrill:{SECRET}@127.0.0.1:{}/pgdrill",
        lab.port(lab.primary())
    );
    let wrong = format!(
        "postgres://pgdrill:{SECRET}-wrong@127.0.0.1:{}/pgdrill",
        lab.port(lab.primary())
    );
    for dsn in [dsn.as_str(), url.as_str()] {
        let listen = format!("127.0.0.1:{}", free_port());
        let bin = Binary::spawn(&[
            "--dsn",
            dsn,
            "--rate",
            "50",
            "--duration",
            "3s",
            "--listen",
            &listen,
            "--log-filter",
            "debug,tokio_postgres=debug",
            // Not what is tested: a loaded machine may take over the default 2 s to connect.
            "--connect-timeout",
            "10s",
            // The pages stay up after the run, however late they are read; SIGTERM ends it.
            "--linger",
            "60s",
        ]);
        let addr = listen.parse().expect("addr");
        let scrape = || async { try_http_get(addr, "/metrics").await.unwrap_or_default() };
        // Read mid-run, with writes made (the target connected to with the password).
        eventually(Duration::from_secs(20), "writes under way", || async {
            metric(&scrape().await, "pgdrill_transactions_total") > 0.0
        })
        .await;
        let metrics = http_get(addr, "/metrics").await;
        let page = http_get(addr, "/").await;
        eventually(
            Duration::from_secs(30),
            "the run over, lingering",
            || async { metric(&scrape().await, "pgdrill_load_running") == 0.0 },
        )
        .await;
        bin.signal(Signal::Term);
        let (status, out, err) = bin.wait(Duration::from_secs(20)).await;
        assert!(status.success(), "{err}");
        for (what, text) in [
            ("/metrics", &metrics),
            ("/", &page),
            ("stdout", &out),
            ("stderr", &err),
        ] {
            assert!(!text.contains(SECRET), "password found in {what}:\n{text}");
        }
        assert!(
            page.contains("REDACTED"),
            "the page shows the target, redacted: {page}"
        );
    }
    // --password-command's standard error is logged, with the password it printed scrubbed.
    let bare = format!(
        "postgres://pgdrill@127.0.0.1:{}/pgdrill",
        lab.port(lab.primary())
    );
    // Scrubbed before a JSON log line escapes the quotes of `token: "ab cd-77e1"`.
    let command = format!(
        "sh -c 'echo {SECRET}; echo debug: using {SECRET} >&2; echo token: \\\"ab cd-77e1\\\" >&2'"
    );
    // Three seconds at 20/s (a loaded machine may take a second to the first write: a run that
    // never wrote exits 5), /metrics on any free port.
    let short = [
        "--rate",
        "20",
        "--duration",
        "3s",
        "--listen",
        "127.0.0.1:0",
        "--connect-timeout",
        "10s",
    ];
    let args = [
        "--log-format",
        "json",
        "--dsn",
        &bare,
        "--password-command",
        &command,
    ];
    let (status, out, err) = Binary::spawn(&[&args[..], &short[..]].concat())
        .wait(Duration::from_secs(20))
        .await;
    assert!(status.success(), "{err}");
    assert!(
        err.contains("--password-command: debug: using REDACTED"),
        "{err}"
    );
    assert!(!out.contains(SECRET) && !err.contains(SECRET), "{err}");
    assert!(
        err.contains("token: \\\"REDACTED\\\"") && !err.contains("77e1"),
        "{err}"
    );
    // Standard error past its 16 KiB limit: the line cut there is not logged, or the part of
    // the password before the cut would be (a part is not recognised as the password).
    let cut =
        format!("sh -c 'printf %16376s \"\" >&2; echo >&2; echo {SECRET} >&2; echo {SECRET}'");
    let args = ["--dsn", &bare, "--password-command", &cut];
    let (status, _, err) = Binary::spawn(&[&args[..], &short[..]].concat())
        .wait(Duration::from_secs(20))
        .await;
    assert!(status.success(), "{err}");
    assert!(!err.contains(&SECRET[..7]), "{err}");
    // Output past what a password can be: said at once, not after the command's timeout
    // (it blocked on the full pipe).
    let flood = "sh -c 'head -c 300000 /dev/zero; echo ok'";
    let args = ["--dsn", &bare, "--password-command", flood];
    let (status, _, err) = Binary::spawn(&[&args[..], &short[..]].concat())
        .wait(Duration::from_secs(20))
        .await;
    assert!(!status.success(), "{err}");
    assert!(err.contains("printed more than 65536 bytes"), "{err}");
    // A wrong password: the run ends before its first write (exit 5), saying why, with
    // neither password in what it printed.
    let (status, out, err) = Binary::spawn(&["--dsn", &wrong, "--listen", "127.0.0.1:0"])
        .wait(Duration::from_secs(20))
        .await;
    assert_eq!(status.code(), Some(5), "{err}");
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!out.contains(SECRET) && !err.contains(SECRET), "{err}");
    assert!(
        !err.contains("retrying"),
        "nothing retries a stopping run: {err}"
    );
    // `pgdrill cleanup` says the same, with the same hint.
    let (status, out, err) = Binary::spawn(&["cleanup", "--dsn", &wrong, "--run-id", "1"])
        .wait(Duration::from_secs(20))
        .await;
    assert_eq!(status.code(), Some(5), "{err}");
    assert!(
        err.contains("password authentication failed") && err.contains("hint: "),
        "{err}"
    );
    assert!(!out.contains(SECRET) && !err.contains(SECRET), "{err}");
    // The password from a libpq password file (PGPASSFILE), for a DSN that names none.
    let dir = tempfile::tempdir().expect("temp dir");
    let passfile = dir.path().join("pgpass");
    let line = format!(
        "127.0.0.1:{}:pgdrill:pgdrill:{SECRET}\n",
        lab.port(lab.primary())
    );
    std::fs::write(&passfile, line).expect("write the password file");
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(&passfile, mode).expect("chmod the password file");
    let passfile = passfile.display().to_string();
    let args = [&["--dsn", bare.as_str()][..], &short[..]].concat();
    let (status, out, err) = Binary::spawn_with(&[("PGPASSFILE", &passfile)], &args)
        .wait(Duration::from_secs(20))
        .await;
    assert!(status.success(), "{err}");
    assert!(!out.contains(SECRET) && !err.contains(SECRET), "{err}");
    // Readable by others, the file is passed over, as libpq does: `pgdrill cleanup` says
    // why, next to the authentication failure that follows.
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o644);
    std::fs::set_permissions(&passfile, mode).expect("chmod the password file");
    let cleanup = ["cleanup", "--dsn", bare.as_str(), "--run-id", "1"];
    let (status, out, err) = Binary::spawn_with(&[("PGPASSFILE", &passfile)], &cleanup)
        .wait(Duration::from_secs(20))
        .await;
    assert_eq!(status.code(), Some(5), "{err}");
    assert!(err.contains("group or others can read it"), "{err}");
    assert!(!out.contains(SECRET) && !err.contains(SECRET), "{err}");
    // `pgdrill cleanup` takes the password from a command or a file as a run does.
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).expect("write the secret");
    let command = format!("cat {}", secret_file.display());
    let secret_file = secret_file.display().to_string();
    for source in [
        ["--password-command", &command],
        ["--password-file", &secret_file],
    ] {
        let (status, out, err) = Binary::spawn(&[&cleanup[..], &source[..]].concat())
            .wait(Duration::from_secs(20))
            .await;
        assert!(status.success(), "{source:?}: {err}");
        assert!(
            out.contains("nothing to clean") || out.contains("deleted"),
            "{out}"
        );
        assert!(!out.contains(SECRET) && !err.contains(SECRET), "{err}");
    }
    lab.shutdown().await;
}
