//! `--web.config.file` through a real Prometheus: pgdrill serves `/metrics` over TLS behind
//! basic auth (a bcrypt hash in an exporter-toolkit web config), Prometheus scrapes it with
//! `scheme: https`, `tls_config` and `basic_auth`; a wrong password and plain HTTP are refused.
//! No database: pgdrill serves its metrics while it retries a closed port.

use std::time::Duration;

use serde_json::json;

use crate::support::certs::{make_ca, make_server_cert};
use crate::support::drill::{try_http_get, Drill};
use crate::support::eventually;
use crate::support::prometheus::{Prometheus, ScrapeJob};

const USER: &str = "prometheus";
const PASSWORD: &str = "scrape-Secret-7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_over_tls_with_basic_auth_and_nothing_else_gets_in() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = make_ca(dir.path(), "ca");
    make_server_cert(dir.path(), "ca");
    // Cost 4 keeps the test fast; production hashes use 10 or more.
    let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
    let web = dir.path().join("web.yml");
    // Relative paths: relative to the web config file, as in exporter-toolkit.
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
             basic_auth_users:\n  {USER}: '{hash}'\n"
        ),
    )
    .expect("write web.yml");
    // Nothing listens on port 1: no database is needed.
    let dsn = "host=127.0.0.1 port=1 user=pgdrill";
    let drill = Drill::start(&[
        "--dsn",
        dsn,
        "--rate",
        "5",
        "--web.config.file",
        &web.display().to_string(),
    ])
    .await;
    // Plain HTTP gets no answer from a TLS server.
    let plain = try_http_get(drill.addr, "/metrics")
        .await
        .unwrap_or_default();
    assert!(!plain.contains("pgdrill_build_info"), "{plain}");

    let job = |name: &str| ScrapeJob {
        name: name.into(),
        targets: vec![drill.addr],
        labels: Default::default(),
    };
    let ca_file = ca.display().to_string();
    let prom = Prometheus::start_with(
        &[job("tls-auth"), job("tls-wrong-password"), job("plain")],
        "groups: []\n",
        |name| {
            let tls = json!({"ca_file": ca_file, "server_name": "localhost"});
            match name {
                "tls-auth" => json!({"scheme": "https", "tls_config": tls,
                    "basic_auth": {"username": USER, "password": PASSWORD}}),
                "tls-wrong-password" => json!({"scheme": "https", "tls_config": tls,
                    "basic_auth": {"username": USER, "password": "wrong"}}),
                _ => json!({}),
            }
        },
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "three scrapes of each job",
        || async {
            prom.optional("min(count_over_time(up[1m]))")
                .await
                .unwrap_or(0.0)
                >= 3.0
        },
    )
    .await;
    let up = prom.query("max_over_time(up[1m])").await;
    let build_info = prom.query("pgdrill_build_info").await;
    let targets = prom.targets().await;
    drop(prom);
    drill.stop().await;
    println!("up {up:?}\ntargets {targets:?}");

    let up_of = |job: &str| {
        up.iter()
            .find(|(m, _)| m["job"] == job)
            .map(|(_, v)| *v)
            .unwrap_or(f64::NAN)
    };
    assert_eq!(up_of("tls-auth"), 1.0, "{targets:?}");
    assert_eq!(up_of("tls-wrong-password"), 0.0, "{targets:?}");
    assert_eq!(up_of("plain"), 0.0, "{targets:?}");
    assert_eq!(build_info.len(), 1, "{build_info:?}");
    assert_eq!(build_info[0].0["job"], "tls-auth");
    let error_of = |job: &str| {
        targets
            .iter()
            .find(|(j, _, _)| j == job)
            .map(|(_, _, e)| e.clone())
            .unwrap_or_default()
    };
    assert!(
        error_of("tls-wrong-password").contains("401"),
        "{targets:?}"
    );
    assert!(!error_of("plain").is_empty(), "{targets:?}");
}
