//! Shared support: free ports, real server helpers.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// A TCP port on 127.0.0.1 that was free a moment ago.
#[allow(dead_code)] // not every test module needs it
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 to pick a free port")
}

/// Connect with tokio-postgres (no TLS) and drive the connection in the background.
#[allow(dead_code)]
pub async fn connect(dsn: &str) -> tokio_postgres::Client {
    try_connect(dsn)
        .await
        .unwrap_or_else(|e| panic!("connecting to `{dsn}`: {e}"))
}

/// Like [`connect`], but returns the error; bounded by a 10 s connect timeout.
#[allow(dead_code)]
pub async fn try_connect(dsn: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut cfg: tokio_postgres::Config = dsn.parse()?;
    cfg.connect_timeout(Duration::from_secs(10));
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        // Errors show up on the client's next call.
        let _ = conn.await;
    });
    Ok(client)
}

/// Poll `check` every 10 ms until it returns true; panic naming `what` after `limit`.
#[allow(dead_code)]
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A lab with an optional standby, trust auth; panics with the lab's error.
#[allow(dead_code)]
pub async fn start_lab(standby: Option<pgdrill_lab::ReplicationMode>) -> pgdrill_lab::Lab {
    pgdrill_lab::Lab::start(pgdrill_lab::LabOptions {
        standby,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("starting the lab: {e}"))
}
