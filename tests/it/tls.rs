//! TLS against a real PostgreSQL with `ssl=on` and a CA + server certificate made here with
//! the openssl CLI: verify-full, verify-ca and require connect and the sessions are encrypted; a wrong
//! CA, a self-signed certificate, a wrong host name and a server without TLS fail at once
//! (before any write: a wrong target, exit 5) with the words libpq uses and what to fix; a
//! connection dropped during the handshake is retried.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pgdrill_lab::Lab;

use crate::support::certs::{make_ca, make_server_cert};
use crate::support::drill::{metric, Binary, Drill};
use crate::support::{connect, eventually, start_lab};

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

/// pgdrill's sessions on the server, or only its encrypted ones.
async fn sessions(admin: &tokio_postgres::Client, encrypted_only: bool) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE application_name = 'pgdrill' AND (ssl OR NOT $1)",
            &[&encrypted_only],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_verify_ca_and_require_connect_encrypted() {
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
    // require without a root certificate: encrypted, nothing verified (libpq's semantics).
    let require = format!("host=127.0.0.1 port={port} user=pgdrill dbname=pgdrill sslmode=require");
    let admin = connect(&lab.admin_dsn(lab.primary())).await;
    for dsn in [full, ca_only, require] {
        // The sessions seen below are this run's, not the last one's still closing.
        eventually(
            Duration::from_secs(30),
            "no pgdrill session left",
            || async { sessions(&admin, false).await == 0 },
        )
        .await;
        // Long enough never to end before the checks; stopped once they are done.
        let drill = Drill::start(&["--dsn", &dsn, "--rate", "200", "--duration", "60s"]).await;
        eventually(
            Duration::from_secs(30),
            &format!("pgdrill's sessions use TLS ({dsn})"),
            || async { sessions(&admin, true).await >= 1 },
        )
        .await;
        // Writing over TLS, not just connected: at least a second's worth attempted, then
        // acknowledged (no error). (A count of the writes scheduled would measure the machine:
        // on a busy one the first TLS connection and the table took 1.6 s, and the 1-second
        // backlog overflowed.)
        drill.wait_for_transactions(200.0).await;
        let summary = drill.stop().await;
        assert!(
            summary.counts.errors.is_empty(),
            "{dsn}: {:?}",
            summary.counts.errors
        );
        assert!(summary.counts.successes >= 200, "{dsn}: {summary}");
    }
    // libpq ignores sslmode on a Unix socket, where the server never offers TLS: a
    // PGSSLMODE=require set for TCP hosts still connects there.
    let socket = format!(
        "{} user=pgdrill dbname=pgdrill sslmode=require",
        lab.admin_dsn(lab.primary())
    );
    let summary = Drill::start(&["--dsn", &socket, "--rate", "200", "--duration", "2s"])
        .await
        .finish()
        .await;
    assert!(summary.counts.errors.is_empty(), "{summary}");
    assert!(summary.counts.successes > 0, "{summary}");
    // `pgdrill cleanup` connects the same way.
    let run_id = summary.run_id.to_string();
    let cleanup = ["cleanup", "--dsn", &socket, "--run-id", &run_id];
    let (status, _, err) = Binary::spawn(&cleanup).wait(Duration::from_secs(20)).await;
    assert!(status.success(), "{err}");
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_self_signed_wrong_host_and_plaintext_server_fail_fast_in_plain_words() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (lab, ca, other_ca) = tls_lab(dir.path()).await;
    let plain = start_lab(None).await;
    // A server whose certificate is its own CA (`openssl req -x509`), trusted as such.
    let self_signed = start_lab(None).await;
    let own = make_ca(dir.path(), "own");
    self_signed
        .enable_ssl(self_signed.primary(), &own, &dir.path().join("own.key"))
        .await
        .unwrap_or_else(|e| panic!("enabling ssl: {e}"));
    let port = lab.port(lab.primary());
    // The wrong CA's message names the CA set the chain was checked against.
    let not_signed = format!(
        "unable to get local issuer certificate (the certificate is signed by none of the CA \
         certificates in sslrootcert={})",
        other_ca.display()
    );
    let cases = [
        (
            "wrong CA",
            format!(
                "host=localhost hostaddr=127.0.0.1 port={port} user=pgdrill dbname=pgdrill \
                 sslmode=verify-full sslrootcert={}",
                other_ca.display()
            ),
            not_signed.as_str(),
            "sslrootcert to the PEM file of the CA",
        ),
        (
            "self-signed",
            format!(
                "host=localhost hostaddr=127.0.0.1 port={} user=pgdrill dbname=pgdrill \
                 sslmode=verify-full sslrootcert={}",
                lab_port(&self_signed),
                own.display()
            ),
            "server certificate verification failed: self-signed certificate",
            "sslmode=require",
        ),
        (
            "wrong host name",
            format!(
                "host=127.0.0.1 port={port} user=pgdrill dbname=pgdrill sslmode=verify-full \
                 sslrootcert={}",
                ca.display()
            ),
            "does not match the host name",
            "sslmode=verify-ca",
        ),
        (
            "server without TLS",
            format!(
                "host=127.0.0.1 port={} user=pgdrill dbname=pgdrill sslmode=require",
                lab_port(&plain)
            ),
            "server does not support SSL, but SSL was required",
            "enable ssl on the server",
        ),
    ];
    // The real binary, all at once: its exit status and message are what an operator sees.
    // --duration 60s: exiting well before it is the fail-fast being tested.
    let runs: Vec<_> = cases
        .iter()
        .map(|(_, dsn, _, _)| {
            let started = std::time::Instant::now();
            let run = Binary::spawn(&[
                "--dsn",
                dsn,
                "--rate",
                "50",
                "--duration",
                "60s",
                "--listen",
                "127.0.0.1:0",
            ]);
            (started, run)
        })
        .collect();
    for ((started, run), (what, _, said, fix)) in runs.into_iter().zip(&cases) {
        let (status, out, err) = run.wait(Duration::from_secs(30)).await;
        let first = err.lines().find(|l| l.starts_with("error:")).unwrap_or("");
        println!(
            "{what}: exit {:?} after {:.2} s: {first}",
            status.code(),
            started.elapsed().as_secs_f64()
        );
        assert_eq!(status.code(), Some(5), "{what}: stderr:\n{err}");
        assert!(
            first.contains("cannot write to the target"),
            "{what}:\n{err}"
        );
        assert!(first.contains(said), "{what}: not '{said}':\n{err}");
        assert!(err.contains(fix), "{what}: no '{fix}':\n{err}");
        assert!(
            !err.contains("OtherError") && !err.contains('\u{1b}'),
            "{what}:\n{err}"
        );
        assert!(
            out.is_empty(),
            "{what}: no summary for a run that never started:\n{out}"
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
    assert!(
        summary.counts.errors.is_empty(),
        "{:?}",
        summary.counts.errors
    );
    plain.shutdown().await;
    self_signed.shutdown().await;
    lab.shutdown().await;
}

fn lab_port(lab: &Lab) -> u16 {
    lab.port(lab.primary())
}

/// A server that answers the TLS request and then drops the connection, as a server shutting
/// down or a proxy cutting it does: no certificate to fix, so before the first write pgdrill
/// retries until --startup-timeout instead of stopping at once on a TLS hint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_during_the_tls_handshake_is_retried_not_a_wrong_target() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let server = tokio::spawn(async move {
        // Bounded: the test aborts it, and it answers at most 1,000 connections.
        for _ in 0..1000 {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::Relaxed);
            let mut request = [0u8; 8];
            if socket.read_exact(&mut request).await.is_ok() {
                let _ = socket.write_all(b"S").await;
            }
            drop(socket);
        }
    });
    let dsn = format!("host=127.0.0.1 port={port} user=pgdrill dbname=pgdrill sslmode=require");
    let (status, out, err) = Binary::spawn(&[
        "--dsn",
        &dsn,
        "--rate",
        "10",
        "--duration",
        "60s",
        "--startup-timeout",
        "3s",
        "--listen",
        "127.0.0.1:0",
    ])
    .wait(Duration::from_secs(30))
    .await;
    server.abort();
    let first = err.lines().find(|l| l.starts_with("error:")).unwrap_or("");
    assert_eq!(status.code(), Some(5), "{err}");
    assert!(first.contains("--startup-timeout"), "{err}");
    // Not the TLS hint ("check sslmode and sslrootcert").
    assert!(!err.contains("sslrootcert"), "{err}");
    // Retried: more attempts than the pool's first connects (four at 10/s).
    let attempts = accepted.load(Ordering::Relaxed);
    assert!(attempts > 4, "{attempts} connections:\n{err}");
    assert!(out.is_empty(), "{out}");
}
