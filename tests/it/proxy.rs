//! The fault-injecting proxy: bytes round-trip, retarget, refuse; delay, blackhole and
//! dropped connections against a real PostgreSQL; its overhead against pgbench (ignored
//! benchmark).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pgdrill_lab::proxy::{Proxy, ProxyOptions};
use pgdrill_lab::sys;
use pgdrill_lab::{Lab, Node};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::{timeout, Instant};

use crate::support::{self, connect, eventually, exec, start_lab, try_connect};

/// Bound on one exchange through the proxy: a hang fails the test instead.
const SQL_LIMIT: Duration = Duration::from_secs(10);

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    support::count(client, sql, &[]).await
}

/// A TCP server that greets each connection with `tag`, then echoes.
async fn tagged_echo_server(tag: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().expect("echo addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                if w.write_all(tag).await.is_ok() {
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
        }
    });
    addr
}

fn proxy_opts(upstream: SocketAddr) -> ProxyOptions {
    ProxyOptions {
        listen: "127.0.0.1:0".parse().expect("literal address"),
        upstream,
        delay: Duration::ZERO,
    }
}

/// Bytes round-trip intact (1 MiB, also with a delay); `set_upstream` moves new connections
/// only; `refuse` closes new connections at once; dropping the proxy closes its connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_round_trips_bytes_retargets_and_refuses() {
    let up_a = tagged_echo_server(b"A").await;
    let up_b = tagged_echo_server(b"B").await;
    let proxy = Proxy::start(proxy_opts(up_a)).await.expect("proxy");

    async fn open(addr: SocketAddr) -> (tokio::net::TcpStream, u8) {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let tag = timeout(SQL_LIMIT, s.read_u8())
            .await
            .expect("tag in time")
            .expect("tag");
        (s, tag)
    }
    async fn echo(s: &mut tokio::net::TcpStream, data: &[u8]) {
        let (mut r, mut w) = s.split();
        let mut back = vec![0u8; data.len()];
        let (wr, rd) = tokio::join!(w.write_all(data), r.read_exact(&mut back));
        wr.expect("write");
        rd.expect("read back");
        assert!(back == data, "bytes changed in transit");
    }

    let data: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let (mut old, tag) = open(proxy.local_addr()).await;
    assert_eq!(tag, b'A');
    timeout(SQL_LIMIT, echo(&mut old, &data))
        .await
        .expect("echo in time");
    proxy.set_delay(Duration::from_millis(5));
    timeout(SQL_LIMIT, echo(&mut old, &data))
        .await
        .expect("delayed echo in time");
    proxy.set_delay(Duration::ZERO);

    proxy.set_upstream(up_b);
    let (mut new, tag) = open(proxy.local_addr()).await;
    assert_eq!(tag, b'B', "new connection goes to the new upstream");
    echo(&mut old, b"still A").await; // the old one keeps its upstream
    echo(&mut new, b"now B").await;

    let stats = proxy.stats();
    println!("{stats:?}");
    assert_eq!((stats.accepted, stats.open), (2, 2));
    assert!(stats.bytes_to_upstream >= 2 << 20 && stats.bytes_to_client >= 2 << 20);

    // An ordinary close (FIN) is passed on and the connection is released.
    drop(old);
    eventually(SQL_LIMIT, "closed connection released", || async {
        proxy.stats().open == 1
    })
    .await;

    proxy.refuse(true);
    // The reset can land before connect() even returns, or on the first read.
    let mut one = [0u8; 1];
    if let Ok(mut refused) = tokio::net::TcpStream::connect(proxy.local_addr()).await {
        let r = timeout(SQL_LIMIT, refused.read(&mut one))
            .await
            .expect("refusal in time");
        assert!(
            matches!(r, Ok(0) | Err(_)),
            "refused connection got data: {r:?}"
        );
    }
    assert_eq!(proxy.stats().refused, 1);
    proxy.refuse(false);

    drop(proxy);
    let r = timeout(SQL_LIMIT, new.read(&mut one))
        .await
        .expect("close in time");
    assert!(
        matches!(r, Ok(0) | Err(_)),
        "connection outlived the proxy: {r:?}"
    );
}

/// Through a proxy to a real PostgreSQL: a 20 ms one-way delay adds at least 40 ms per round
/// trip; a blackhole stalls a query until lifted; drop_connections closes the client's session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_delays_blackholes_and_drops_postgres_connections() {
    let lab = start_lab(None).await;
    let upstream: SocketAddr = format!("127.0.0.1:{}", lab.port(Node::A))
        .parse()
        .expect("addr");
    let proxy = Proxy::start(proxy_opts(upstream)).await.expect("proxy");
    let via = format!(
        "host=127.0.0.1 port={} user=pgdrill dbname=pgdrill",
        proxy.local_addr().port()
    );
    let direct = connect(&lab.dsn(Node::A)).await;
    let proxied = connect(&via).await;

    async fn min_rtt(c: &tokio_postgres::Client, n: usize) -> Duration {
        let mut best = Duration::MAX;
        for _ in 0..n {
            let t = Instant::now();
            c.simple_query("SELECT 1").await.expect("SELECT 1");
            best = best.min(t.elapsed());
        }
        best
    }
    let base = min_rtt(&direct, 20).await;
    let zero = min_rtt(&proxied, 20).await;
    proxy.set_delay(Duration::from_millis(20));
    let delayed = min_rtt(&proxied, 5).await;
    println!(
        "SELECT 1 min RTT: direct {base:?}, proxy delay=0 {zero:?}, proxy delay=20ms {delayed:?}"
    );
    // The proxy holds each direction 20 ms, so a round trip cannot be shorter than 40 ms;
    // a lower bound the machine's load can only push further up (unlike one over `base`,
    // which a stall while measuring it would inflate).
    assert!(
        delayed >= Duration::from_millis(40),
        "{delayed:?} (direct {base:?})"
    );
    proxy.set_delay(Duration::ZERO);

    proxy.blackhole(true);
    // New connections are accepted but not forwarded: even the startup handshake stalls.
    assert!(
        timeout(Duration::from_millis(300), try_connect(&via))
            .await
            .is_err(),
        "connected through a blackhole"
    );
    let proxied = Arc::new(proxied);
    let mut query = tokio::spawn({
        let c = proxied.clone();
        async move { c.simple_query("SELECT 1").await.map(|_| ()) }
    });
    assert!(
        timeout(Duration::from_millis(300), &mut query)
            .await
            .is_err(),
        "query completed through a blackhole"
    );
    proxy.blackhole(false);
    timeout(SQL_LIMIT, query)
        .await
        .expect("query completes once the blackhole lifts")
        .expect("query task")
        .expect("SELECT 1 after the blackhole");

    // The abandoned handshake above is forwarded now, finds its client gone, and closes.
    eventually(SQL_LIMIT, "only the session is open", || async {
        proxy.stats().open == 1
    })
    .await;
    proxy.drop_connections();
    let r = timeout(SQL_LIMIT, proxied.simple_query("SELECT 1"))
        .await
        .expect("in time");
    let err = r.expect_err("query on a dropped connection");
    println!("after drop_connections: {err}");
    eventually(SQL_LIMIT, "client sees the connection closed", || async {
        proxied.is_closed()
    })
    .await;
    eventually(SQL_LIMIT, "proxy has no open connections", || async {
        proxy.stats().open == 0
    })
    .await;
    // The proxy itself still works.
    let again = connect(&via).await;
    assert_eq!(count(&again, "SELECT 1::bigint").await, 1);
    lab.shutdown().await;
}

/// CPU time (user + system) of this process's waited-for children (pgbench).
fn children_cpu() -> Duration {
    sys::children_cpu().expect("getrusage")
}

/// CPU time of one thread of this process.
fn thread_cpu(tid: i32) -> Duration {
    sys::thread_cpu(tid).expect("thread stat")
}

struct Bench {
    tps: f64,
    latency_ms: f64,
    txns: f64,
    proxy_cpu: Duration,
    client_cpu: Duration,
}

async fn pgbench(
    lab: &Lab,
    port: u16,
    script: &std::path::Path,
    args: &[&str],
    proxy_cpu: &dyn Fn() -> Duration,
) -> Bench {
    let (p0, child0) = (proxy_cpu(), children_cpu());
    let mut cmd = tokio::process::Command::new(lab.bin_dir().join("pgbench"));
    cmd.env_clear()
        .args(["-n", "-M", "prepared", "-h", "127.0.0.1", "-U", "pgdrill"])
        .arg("-p")
        .arg(port.to_string())
        .arg("-f")
        .arg(script)
        .args(args)
        .arg("pgdrill")
        .kill_on_drop(true);
    let out = timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("pgbench in time")
        .expect("running pgbench");
    let (p1, child1) = (proxy_cpu(), children_cpu());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pgbench failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |prefix: &str| -> f64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no `{prefix}` in pgbench output:\n{text}"))
    };
    Bench {
        tps: field("tps = "),
        latency_ms: field("latency average = "),
        txns: field("number of transactions actually processed: "),
        proxy_cpu: p1 - p0,
        client_cpu: child1 - child0,
    }
}

/// Proxy overhead at delay 0: added round-trip latency (SELECT 1, one client) and the CPU the
/// proxy spends per small INSERT transaction under pgbench, direct vs through the proxy.
/// Run alone, optimized:
/// `cargo test --release --test it proxy::proxy_overhead -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: ~1 minute of full CPU; run explicitly"]
async fn proxy_overhead() {
    let lab = start_lab(None).await;
    let port = lab.port(Node::A);
    let setup = connect(&lab.dsn(Node::A)).await;
    exec(
        &setup,
        "CREATE TABLE transactions (transaction_id bigserial PRIMARY KEY, \
         customer_id bigint NOT NULL, merchant_id bigint NOT NULL, amount numeric(12,2) NOT NULL, \
         status text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())",
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("insert.sql");
    std::fs::write(
        &script,
        "INSERT INTO transactions (customer_id, merchant_id, amount, status) \
         VALUES (1, 1, 10, 'completed') RETURNING transaction_id;\n",
    )
    .expect("write insert.sql");

    let upstream: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    // The proxy runs on its own single-threaded runtime in its own thread, as the separate
    // `pgdrill proxy` process would; its CPU is that thread's CPU, read from /proc.
    let (handle_tx, handle_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let proxy_thread = crate::support::on_own_thread(async move {
        let proxy = Proxy::start(proxy_opts(upstream)).await.expect("proxy");
        let tid = sys::current_thread_id();
        let _ = handle_tx.send((proxy, tid));
        // Keep the runtime (and so the proxy's tasks) alive until told to stop.
        let _ = stop_rx.await;
    });
    let (proxy, proxy_tid) = handle_rx.await.expect("proxy handle");
    let proxy_cpu = move || thread_cpu(proxy_tid);
    let pport = proxy.local_addr().port();

    // Added latency: sequential SELECT 1 round trips, same client, direct vs proxied.
    async fn rtts(c: &tokio_postgres::Client, n: usize) -> Vec<Duration> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            c.simple_query("SELECT 1").await.expect("SELECT 1");
            v.push(t.elapsed());
        }
        v.sort();
        v
    }
    let direct = connect(&lab.dsn(Node::A)).await;
    let via = connect(&format!(
        "host=127.0.0.1 port={pport} user=pgdrill dbname=pgdrill"
    ))
    .await;
    let _ = (rtts(&direct, 500).await, rtts(&via, 500).await); // warm up
    let (d, p) = (rtts(&direct, 5000).await, rtts(&via, 5000).await);
    let q = |v: &[Duration], f: f64| v[((v.len() as f64 * f) as usize).min(v.len() - 1)];
    println!(
        "SELECT 1 RTT, 5000 sequential: direct p50 {:?} p99 {:?}; proxy p50 {:?} p99 {:?}; added p50 {:?}",
        q(&d, 0.5),
        q(&d, 0.99),
        q(&p, 0.5),
        q(&p, 0.99),
        q(&p, 0.5).saturating_sub(q(&d, 0.5))
    );

    let runs: [(&str, u16, &[&str]); 6] = [
        ("direct  -c 1 ", port, &["-c", "1", "-j", "1", "-T", "5"]),
        ("proxied -c 1 ", pport, &["-c", "1", "-j", "1", "-T", "5"]),
        ("direct  -c 32", port, &["-c", "32", "-j", "2", "-T", "10"]),
        ("proxied -c 32", pport, &["-c", "32", "-j", "2", "-T", "10"]),
        (
            "direct  -c 32 -R 8000",
            port,
            &["-c", "32", "-j", "2", "-T", "10", "-R", "8000"],
        ),
        (
            "proxied -c 32 -R 8000",
            pport,
            &["-c", "32", "-j", "2", "-T", "10", "-R", "8000"],
        ),
    ];
    for (name, port, args) in runs {
        let b = pgbench(&lab, port, &script, args, &proxy_cpu).await;
        let per_txn = |d: Duration| d.as_secs_f64() * 1e6 / b.txns;
        let secs: f64 = args
            .windows(2)
            .find(|w| w[0] == "-T")
            .and_then(|w| w[1].parse().ok())
            .expect("-T");
        println!(
            "{name}: tps {:>8.0}  lat avg {:>6.3} ms  proxy CPU {:>5.1} µs/txn = {:>4.1}% of a core  pgbench CPU {:>5.1} µs/txn",
            b.tps,
            b.latency_ms,
            per_txn(b.proxy_cpu),
            b.proxy_cpu.as_secs_f64() / secs * 100.0,
            per_txn(b.client_cpu),
        );
    }
    // The benchmark's case: 50 ms RTT, 64 connections. Unpipelined clients are capped at
    // 64 / 0.05 s = 1,280 tx/s, so keep 8 INSERTs in flight per connection (tokio-postgres
    // pipelines concurrent queries on one connection).
    proxy.set_delay(Duration::from_millis(25));
    let (conns, depth, secs) = (64, 8, 10u64);
    let mut clients = Vec::new();
    for _ in 0..conns {
        clients.push(
            connect(&format!(
                "host=127.0.0.1 port={pport} user=pgdrill dbname=pgdrill"
            ))
            .await,
        );
    }
    let (cpu0, t0) = (proxy_cpu(), Instant::now());
    let end = t0 + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in clients {
        let c = Arc::new(c);
        let stmt = c
            .prepare(
                "INSERT INTO transactions (customer_id, merchant_id, amount, status) \
                 VALUES (1, 1, 10, 'completed') RETURNING transaction_id",
            )
            .await
            .expect("prepare");
        for _ in 0..depth {
            let (c, stmt) = (c.clone(), stmt.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < end {
                    let t = Instant::now();
                    c.query_one(&stmt, &[]).await.expect("pipelined INSERT");
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("load task"));
    }
    let (cpu, wall) = (proxy_cpu() - cpu0, t0.elapsed());
    lat.sort();
    println!(
        "pipelined via proxy, delay 25 ms each way, {conns} conns x {depth} in flight: {:.0} tx/s, \
         latency p50 {:?} p99 {:?}, proxy CPU {:.1} µs/txn = {:.1}% of a core",
        lat.len() as f64 / wall.as_secs_f64(),
        q(&lat, 0.5),
        q(&lat, 0.99),
        cpu.as_secs_f64() * 1e6 / lat.len() as f64,
        cpu.as_secs_f64() / wall.as_secs_f64() * 100.0
    );

    println!("proxy stats: {:?}", proxy.stats());
    drop(proxy);
    let _ = stop_tx.send(());
    tokio::task::spawn_blocking(move || proxy_thread.join())
        .await
        .expect("join task")
        .expect("proxy thread");
    lab.shutdown().await;
}
