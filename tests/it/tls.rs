//! TLS against a real PostgreSQL with `ssl=on` and a CA + server certificate made here with
//! the openssl CLI: verify-full and verify-ca connect and the sessions are encrypted; a wrong
//! CA, a wrong host name and a server without TLS fail as class `tls`, with a message that
//! says what to fix, while the daemon keeps running and retrying.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pgdrill_lab::Lab;

use crate::support::certs::{make_ca, make_server_cert};
use crate::support::drill::{metric, Binary, Drill};
use crate::support::{connect, start_lab};

/// A lab whose primary has TLS on, its CA, and a second CA that signed nothing.
pub async fn tls_lab(dir: &Path) -> (Lab, PathBuf, PathBuf) {
    let ca = make_ca(dir, "ca");
    let other_ca = make_ca(dir, "other-ca");
    let (cert, key) = make_server_cert(dir, "ca");
    let lab = start_lab(None).await;
    lab.enable_ssl(lab.primary(), &cert, &key)
        .await
        .unwrap_or_else(|e| panic!("enabling ssl: {e}"));
    (lab, ca, other_ca)
}

async fn encrypted_sessions(lab: &Lab) -> i64 {
    let admin = connect(&lab.admin_dsn(lab.primary())).await;
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE application_name = 'pgdrill' AND ssl",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_and_verify_ca_connect_encrypted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (lab, ca, _) = tls_lab(dir.path()).await;
    let port = lab.port(lab.primary());
    let ca = ca.display().to_string();
    // verify-full: the name connected to (localhost) is in the certificate; hostaddr pins IPv4.
    let full = format!(
        "host=localhost hostaddr=127.0.0.1 port={port} user=pgdrill dbname=pgdrill \
         sslmode=verify-full sslrootcert={ca}"
    );
    // verify-ca through a URL: 127.0.0.1 is not in the certificate, which verify-ca accepts.
    let ca_only =
        format!("postgresql://pgdrill@127.0.0.1:{port}/pgdrill?sslmode=verify-ca&sslrootcert={ca}");
    for dsn in [full, ca_only] {
        let drill = Drill::start(&["--dsn", &dsn, "--rate", "200", "--duration", "3s"]).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            encrypted_sessions(&lab).await >= 1,
            "pgdrill's sessions use TLS ({dsn})"
        );
        let summary = drill.finish().await;
        assert!(summary.errors.is_empty(), "{dsn}: {:?}", summary.errors);
        assert!(summary.successes >= 500, "{dsn}: {summary}");
    }
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_wrong_host_and_plaintext_server_fail_as_tls_and_retry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (lab, ca, other_ca) = tls_lab(dir.path()).await;
    let plain = start_lab(None).await;
    let port = lab.port(lab.primary());
    let cases = [
        (
            "wrong CA",
            format!(
                "host=localhost hostaddr=127.0.0.1 port={port} user=pgdrill dbname=pgdrill \
                 sslmode=verify-full sslrootcert={}",
                other_ca.display()
            ),
            "sslrootcert to the PEM file of the CA",
        ),
        (
            "wrong host name",
            format!(
                "host=127.0.0.1 port={port} user=pgdrill dbname=pgdrill sslmode=verify-full \
                 sslrootcert={}",
                ca.display()
            ),
            "does not name the host",
        ),
        (
            "server without TLS",
            format!(
                "host=127.0.0.1 port={} user=pgdrill dbname=pgdrill sslmode=require",
                lab_port(&plain)
            ),
            "does not accept TLS",
        ),
    ];
    // The real binary, all three at once: its log is what an operator reads.
    let runs: Vec<_> = cases
        .iter()
        .map(|(_, dsn, _)| {
            Binary::spawn(&[
                "--dsn",
                dsn,
                "--rate",
                "50",
                "--duration",
                "3s",
                "--listen",
                "127.0.0.1:0",
            ])
        })
        .collect();
    for (run, (what, _, fix)) in runs.into_iter().zip(&cases) {
        let (status, out, err) = run.wait(Duration::from_secs(30)).await;
        let err = strip_ansi(&err);
        let logged = err
            .lines()
            .find(|l| l.contains("cannot connect"))
            .unwrap_or("");
        println!("{what}: {logged}");
        assert!(status.success(), "{what}: exit {status}\n{err}");
        assert!(
            err.contains("class=tls"),
            "{what}: no tls class in the log:\n{err}"
        );
        assert!(
            err.contains(fix),
            "{what}: the log does not say '{fix}':\n{err}"
        );
        assert!(
            out.contains("errors        tls="),
            "{what}: summary:\n{out}"
        );
        // Retried all along: several connection attempts failed, none got through.
        let failed: u64 = out
            .split("tls=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(
            failed >= 10,
            "{what}: only {failed} tls failures in 3 s:\n{out}"
        );
        assert!(
            out.contains("(0 ok"),
            "{what}: something got through:\n{out}"
        );
    }
    // prefer against the server without TLS falls back to plain text, as libpq does.
    let drill = Drill::start(&[
        "--dsn",
        &format!(
            "host=127.0.0.1 port={} user=pgdrill dbname=pgdrill",
            lab_port(&plain)
        ),
        "--rate",
        "100",
        "--duration",
        "2s",
    ])
    .await;
    let text_during = {
        tokio::time::sleep(Duration::from_secs(1)).await;
        drill.scrape().await
    };
    assert_eq!(
        metric(
            &text_during,
            "pgdrill_connection_errors_total{class=\"tls\"}"
        ),
        0.0
    );
    let summary = drill.finish().await;
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    plain.shutdown().await;
    lab.shutdown().await;
}

/// The log without terminal colour codes (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn lab_port(lab: &Lab) -> u16 {
    lab.port(lab.primary())
}
