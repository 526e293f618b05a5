//! What the feature tests share: the one lab starter, the one free-port helper, database
//! connections and row counts, waiting, the pgdrill drivers (`drill`), PgBouncer
//! (`bouncer`), certificates (`certs`), Prometheus (`prometheus`), a Patroni cluster
//! (`patroni`) and an independent fresh-connection probe (`probe`).

pub mod bouncer;
pub mod certs;
pub mod drill;
pub mod patroni;
pub mod probe;
pub mod prometheus;

use std::future::Future;
use std::time::Duration;

use pgdrill_lab::proxy::{Proxy, ProxyOptions};
use pgdrill_lab::{Lab, LabOptions, Node, ReplicationMode};
use tokio::time::Instant;

/// Runs `work` to completion on its own single-threaded runtime in its own thread, so that
/// its timing is not disturbed by the test's runtime (the in-process drill's bursts).
pub fn on_own_thread<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime of its own")
            .block_on(work)
    })
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for a server started later (PgBouncer,
/// Prometheus, pgdrill's `--listen`): below the ephemeral range (the lab's picker), so that
/// no outgoing connection of a neighbouring test is given it before that server binds it. A
/// port that must stay closed is port 1, not this.
pub fn free_port() -> u16 {
    pgdrill_lab::free_server_port().unwrap_or_else(|e| panic!("picking a free port: {e}"))
}

/// Connect with tokio-postgres (no TLS) and drive the connection in the background.
pub async fn connect(dsn: &str) -> tokio_postgres::Client {
    try_connect(dsn)
        .await
        .unwrap_or_else(|e| panic!("connecting to `{dsn}`: {e}"))
}

/// Like [`connect`], but returns the error; bounded by a 10 s connect timeout.
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
pub async fn start_lab(standby: Option<ReplicationMode>) -> Lab {
    start_lab_with(LabOptions {
        standby,
        ..LabOptions::default()
    })
    .await
}

/// The lab starter every test uses; panics with the lab's error.
pub async fn start_lab_with(options: LabOptions) -> Lab {
    let began = Instant::now();
    let standby = options.standby;
    let lab = Lab::start(LabOptions {
        initdb_once: true,
        ..options
    })
    .await
    .unwrap_or_else(|e| panic!("starting the lab: {e}"));
    println!("lab (standby {standby:?}) started in {:?}", began.elapsed());
    lab
}

/// The run's unknown outcomes were resolved as its rows on `node` say: the rows are the
/// acknowledged writes and those judged committed, plus at most the abandoned ones (none
/// judged not committed commits later).
pub async fn assert_unknowns_resolved_as_rows(lab: &Lab, node: Node, summary: &pgdrill::Summary) {
    let c = &summary.counts;
    let rows = rows_of_run(lab, node, summary.run_id).await as u64;
    let committed = c.successes + c.unknown_outcome_committed;
    assert!(
        (committed..=committed + summary.abandoned).contains(&rows),
        "{rows} rows; {} acknowledged, {} unknown judged committed, {} abandoned at the end",
        c.successes,
        c.unknown_outcome_committed,
        summary.abandoned
    );
}

/// Promotes the lab's standby (`pg_promote()`, which waits for it) and returns it.
pub async fn promote_standby(lab: &Lab) -> Node {
    let standby = lab.standby().expect("a standby");
    connect(&lab.admin_dsn(standby))
        .await
        .query_one("SELECT pg_promote()", &[])
        .await
        .expect("promote the standby");
    standby
}

/// A single PostgreSQL; with a password, TCP logins need it (scram-sha-256).
pub async fn start_single(password: Option<&str>) -> Lab {
    start_lab_with(LabOptions {
        password: password.map(str::to_string),
        ..LabOptions::default()
    })
    .await
}

/// Bound on one helper query: a server that hangs fails the test instead.
const SQL_LIMIT: Duration = Duration::from_secs(10);

/// The single number `sql` returns (a count), with `params`.
pub async fn count(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> i64 {
    tokio::time::timeout(SQL_LIMIT, client.query_one(sql, params))
        .await
        .unwrap_or_else(|_| panic!("`{sql}` timed out"))
        .unwrap_or_else(|e| panic!("`{sql}`: {e}"))
        .get(0)
}

/// Runs `sql` (one or more statements), bounded like [`count`].
pub async fn exec(client: &tokio_postgres::Client, sql: &str) {
    tokio::time::timeout(SQL_LIMIT, client.batch_execute(sql))
        .await
        .unwrap_or_else(|_| panic!("`{sql}` timed out"))
        .unwrap_or_else(|e| panic!("`{sql}`: {e}"));
}

/// Rows pgdrill run `run_id` left in `pgdrill_writes` on `node`.
pub async fn rows_of_run(lab: &Lab, node: Node, run_id: i64) -> i64 {
    let client = connect(&lab.dsn(node)).await;
    count(
        &client,
        "SELECT count(*) FROM pgdrill_writes WHERE run_id = $1",
        &[&run_id],
    )
    .await
}

/// The longest gap between consecutive rows of this run, by the server's `created_at`: the
/// last write before an outage to the first one after it (CloudNativePG's failover tests
/// measure the same way). The ground truth for pgdrill's write unavailability.
pub async fn ground_truth_gap(lab: &Lab, node: Node, run_id: i64) -> f64 {
    let client = connect(&lab.dsn(node)).await;
    let rows = tokio::time::timeout(
        SQL_LIMIT,
        client.query(
            "SELECT extract(epoch FROM created_at)::float8 FROM pgdrill_writes \
             WHERE run_id = $1 ORDER BY created_at",
            &[&run_id],
        ),
    )
    .await
    .expect("reading created_at timed out")
    .expect("reading created_at");
    let times: Vec<f64> = rows.iter().map(|r| r.get(0)).collect();
    times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
}

/// The run that wrote last on `node`, for tests that read no summary.
pub async fn latest_run_id(lab: &Lab, node: Node) -> i64 {
    let client = connect(&lab.dsn(node)).await;
    count(&client, "SELECT max(run_id) FROM pgdrill_writes", &[]).await
}

/// The fault-injecting proxy in front of `node` (each way delayed by `delay`), and `node`'s DSN
/// through it.
pub async fn proxied(lab: &Lab, node: Node, delay: Duration) -> (Proxy, String) {
    let proxy = Proxy::start(ProxyOptions {
        listen: "127.0.0.1:0".parse().expect("socket address"),
        upstream: std::net::SocketAddr::new(lab.addr(node), lab.port(node)),
        delay,
    })
    .await
    .expect("proxy starts");
    let dsn = lab.dsn(node).replace(
        &format!("port={}", lab.port(node)),
        &format!("port={}", proxy.local_addr().port()),
    );
    (proxy, dsn)
}
