//! Never silent, never stuck: the users' own tables, a metrics port under abuse, restarts
//! that are not failovers, and configuration that libpq would reject.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use pgdrill_lab::sys::{send_signal, Signal};
use pgdrill_lab::{Lab, StopMode};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::drill::{metric, try_http_get, Binary, Drill};
use crate::support::{connect, eventually, free_port, start_lab};

/// The table as our users created it: no `run_id`, no `seq`.
fn users_table_sql(name: &str, id_type: &str) -> String {
    format!(
        "CREATE TABLE {name} (transaction_id {id_type} PRIMARY KEY, customer_id int, \
         merchant_id int, amount numeric, status text, created_at timestamptz DEFAULT now())"
    )
}

/// The admin user, in the application's database (where the tables are).
fn admin_app_dsn(lab: &Lab) -> String {
    lab.admin_dsn(lab.primary())
        .replace("dbname=postgres", "dbname=pgdrill")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_tables_with_bigserial_and_serial_ids_take_every_write() {
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    let client = connect(&dsn).await;
    for (table, id_type) in [("tx_big", "bigserial"), ("tx_serial", "serial")] {
        client
            .batch_execute(&users_table_sql(table, id_type))
            .await
            .expect("create the users' table");
        let drill = Drill::start(&[
            "--dsn",
            &dsn,
            "--table",
            table,
            "--rate",
            "1000",
            "--duration",
            "5s",
        ])
        .await;
        let summary = drill.finish().await;
        let rows: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE run_id = $1"),
                &[&summary.run_id],
            )
            .await
            .expect("count rows")
            .get(0);
        let failed: u64 = summary.errors.values().sum();
        assert_eq!(failed, 0, "{table}: errors {:?}", summary.errors);
        assert!(summary.successes > 4000, "{table}: {}", summary.successes);
        assert_eq!(
            rows as u64, summary.successes,
            "{table}: rows == acknowledged"
        );
        let added: i64 = client
            .query_one(
                "SELECT count(*) FROM information_schema.columns \
                 WHERE table_name = $1 AND column_name IN ('run_id', 'seq') \
                   AND is_nullable = 'YES' AND data_type = 'bigint'",
                &[&table],
            )
            .await
            .expect("columns")
            .get(0);
        assert_eq!(added, 2, "{table}: run_id and seq added, nullable bigint");
    }
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_pgdrill_may_not_change_stops_the_run_with_exit_2() {
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    let admin = connect(&admin_app_dsn(&lab)).await;
    admin
        .batch_execute(&format!(
            "{}; {}; GRANT SELECT, INSERT ON theirs, mine TO pgdrill; \
             GRANT USAGE ON SEQUENCE theirs_transaction_id_seq TO pgdrill; \
             ALTER TABLE mine OWNER TO pgdrill",
            users_table_sql("theirs", "bigserial"),
            users_table_sql("mine", "serial"),
        ))
        .await
        .expect("create the users' tables");

    // Owned by us, but --no-create-table: the statement is named, nothing is changed.
    // Not owned by us: ALTER TABLE is refused (42501).
    for (table, extra, expect) in [
        ("mine", Some("--no-create-table"), "--no-create-table"),
        ("theirs", None, "42501"),
    ] {
        let mut args = vec![
            "--dsn",
            dsn.as_str(),
            "--table",
            table,
            "--rate",
            "10",
            "--duration",
            "60s",
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend(extra);
        let (status, _out, err) = Binary::spawn(&args).wait(Duration::from_secs(30)).await;
        assert_eq!(status.code(), Some(2), "{table}: exit 2, stderr:\n{err}");
        let statement = format!(
            "ALTER TABLE \"{table}\" ADD COLUMN IF NOT EXISTS run_id bigint, \
             ADD COLUMN IF NOT EXISTS seq bigint;"
        );
        for word in ["run_id", "seq", expect, statement.as_str()] {
            assert!(err.contains(word), "{table}: stderr lacks {word:?}:\n{err}");
        }
    }
    let untouched: i64 = admin
        .query_one(
            "SELECT count(*) FROM information_schema.columns WHERE column_name = 'run_id'",
            &[],
        )
        .await
        .expect("columns")
        .get(0);
    assert_eq!(untouched, 0, "no table was changed");
    lab.shutdown().await;
}

#[tokio::test]
async fn port_count_mismatch_is_a_usage_error() {
    let (status, _out, err) = Binary::spawn(&["--dsn", "host=a,b,c port=1,2 password=hunter2"])
        .wait(Duration::from_secs(10))
        .await;
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("--dsn") && err.contains("2 ports for 3 hosts"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_of_one_server_are_not_primary_changes() {
    let lab = start_lab(None).await;
    let node = lab.primary();
    let drill = Drill::start(&[
        "--dsn",
        &lab.dsn(node),
        "--rate",
        "100",
        "--duration",
        "10m",
    ])
    .await;
    eventually(Duration::from_secs(20), "first writes", || async {
        drill.metric("pgdrill_transactions_total").await > 10.0
    })
    .await;
    for n in 1..=10 {
        let mode = if n % 2 == 0 {
            StopMode::Fast
        } else {
            StopMode::Immediate
        };
        lab.stop(node, mode).await.expect("stop");
        lab.start_node(node).await.expect("start");
        eventually(Duration::from_secs(30), "restart observed", || async {
            drill.metric("pgdrill_server_restarts_total").await >= f64::from(n)
        })
        .await;
    }
    let text = drill.scrape().await;
    assert_eq!(metric(&text, "pgdrill_server_restarts_total"), 10.0);
    assert_eq!(metric(&text, "pgdrill_primary_changes_total"), 0.0);
    let summary = drill.stop().await;
    assert_eq!(summary.primary_changes, 0);
    lab.shutdown().await;
}

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
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_pgdrill"))
            .args(args)
            .env_remove("PGDRILL_DSN")
            .env_remove("RUST_LOG")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http_clients_cannot_starve_the_database_side() {
    const RATE: f64 = 500.0;
    const IDLE: usize = 1000;
    const HOLD: Duration = Duration::from_secs(30);
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let pgdrill = Limited::spawn(
        256,
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
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
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

    // Once the accepted idle ones have timed out (5 s), a scrape answers at once.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let asked = Instant::now();
    let scrape = tokio::time::timeout(Duration::from_secs(1), try_http_get(listen, "/metrics"))
        .await
        .expect("/metrics answers within 1 s while 1,000 idle connections are held")
        .expect("GET /metrics");
    let answered = asked.elapsed();
    assert!(scrape.contains("pgdrill_transactions_total"), "{scrape}");

    let mut max_rss = 0;
    while began.elapsed() < HOLD {
        max_rss = max_rss.max(pgdrill.rss_bytes());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let until = db_now().await;
    drop(idle);
    let rows: i64 = admin
        .query_one(
            "SELECT count(*) FROM transactions WHERE created_at >= $1 AND created_at < $2",
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
        "held {IDLE} idle connections {seconds:.1}s: {rate:.0} writes/s of {RATE}, \
         {killed} backends killed, /metrics in {answered:?}, max RSS {} kB, stderr {stderr} B",
        max_rss / 1024
    );
    assert!(rate >= 0.95 * RATE, "writes at {rate:.0}/s of {RATE}/s");
    assert!(max_rss < 40 << 20, "RSS {max_rss} B");
    assert!(stderr < 100_000, "stderr {stderr} B");

    send_signal(pgdrill.child.id(), Signal::Term).expect("SIGTERM to pgdrill");
    let (status, err) = pgdrill.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}:\n{err}");
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_column_is_an_error_with_its_sqlstate_at_once() {
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    let listen = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("summary.json");
    let bin = Binary::spawn(&[
        "--dsn",
        &dsn,
        "--rate",
        "200",
        "--duration",
        "60s",
        "--listen",
        &listen,
        "--progress-interval",
        "1s",
        "--summary-json",
        &json.to_string_lossy(),
    ]);
    let addr: SocketAddr = listen.parse().expect("addr");
    eventually(Duration::from_secs(20), "writes under way", || async {
        try_http_get(addr, "/metrics")
            .await
            .is_ok_and(|t| metric(&t, "pgdrill_transactions_total") > 100.0)
    })
    .await;
    connect(&dsn)
        .await
        .batch_execute("ALTER TABLE transactions DROP COLUMN status")
        .await
        .expect("drop a column");
    let dropped = Instant::now();
    let stderr = bin.stderr.clone();
    let logged = || {
        std::fs::read_to_string(&stderr)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("42703") && l.contains("status"))
    };
    while !logged() && dropped.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let within = dropped.elapsed();
    assert!(logged(), "no ERROR line naming 42703 within {within:?}");
    // The progress line counts it per SQLSTATE.
    eventually(Duration::from_secs(3), "progress with 42703", || async {
        std::fs::read_to_string(&stderr)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("progress") && l.contains("42703="))
    })
    .await;
    bin.signal(Signal::Term);
    let (status, out, err) = bin.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}: {err}");
    assert!(
        out.lines().any(|l| l.contains("error 42703")),
        "summary lacks the SQLSTATE:\n{out}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("summary json")).expect("json");
    let kinds = summary["error_kinds"].as_array().expect("error_kinds");
    let kind = kinds
        .iter()
        .find(|k| k["sqlstate"] == "42703")
        .unwrap_or_else(|| panic!("42703 not listed: {kinds:?}"));
    assert!(kind["count"].as_u64().is_some_and(|n| n > 0), "{kind}");
    assert!(
        kind["message"]
            .as_str()
            .is_some_and(|m| m.contains("status")),
        "{kind}"
    );
    println!("ERROR line {within:?} after the DROP; {kind}");
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_lanes_are_logged_unhealthy_and_end_the_run_non_zero() {
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
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
    let (status, err) = pgdrill.wait(Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(1), "{status}:\n{err}");
    let restarts = err.matches("a lane panicked; restarting it").count();
    assert_eq!(restarts as u32, 5, "{err}");
    assert!(
        err.contains("PGDRILL_TEST_PANIC_LANE: injected panic after 200 writes"),
        "{err}"
    );
    assert!(err.contains("a lane panicked 6 times"), "{err}");
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_outcomes_from_killed_backends_resolve_without_an_outage() {
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    let client = connect(&dsn).await;
    // Each INSERT takes ~5 ms, so a backend killed while active has one in flight.
    client
        .batch_execute(
            "CREATE TABLE transactions (transaction_id bigserial PRIMARY KEY, \
               customer_id int, merchant_id int, amount numeric, status text, \
               created_at timestamptz DEFAULT now(), run_id bigint, seq bigint); \
             CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS \
               $$ BEGIN PERFORM pg_sleep(0.005); RETURN NEW; END $$; \
             CREATE TRIGGER slow BEFORE INSERT ON transactions \
               FOR EACH ROW EXECUTE FUNCTION slow()",
        )
        .await
        .expect("slow table");
    let drill = Drill::start(&[
        "--dsn",
        &dsn,
        "--rate",
        "300",
        "--duration",
        "60s",
        "--statement-timeout",
        "2s",
    ])
    .await;
    eventually(Duration::from_secs(20), "writes under way", || async {
        drill.metric("pgdrill_transactions_total").await > 300.0
    })
    .await;
    let admin = connect(&admin_app_dsn(&lab)).await;
    let mut killed = 0;
    for _ in 0..5 {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = 'pgdrill' AND state = 'active' \
                   AND query LIKE 'INSERT%' LIMIT 1) k",
                &[],
            )
            .await
            .expect("terminate one active backend")
            .get(0);
        killed += n;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(killed >= 3, "only {killed} active backends found to kill");
    let last_kill = Instant::now();
    let unknown = drill.metric("pgdrill_unknown_outcome_writes_total").await;
    assert!(
        unknown > 0.0,
        "killing active backends left no unknown outcome"
    );
    eventually(
        Duration::from_secs(10),
        "every unknown resolved",
        || async {
            let text = drill.scrape().await;
            let resolved = metric(
                &text,
                "pgdrill_unknown_outcome_resolved_total{outcome=\"committed\"}",
            ) + metric(
                &text,
                "pgdrill_unknown_outcome_resolved_total{outcome=\"not_committed\"}",
            );
            resolved == metric(&text, "pgdrill_unknown_outcome_writes_total")
        },
    )
    .await;
    let resolved_after = last_kill.elapsed();
    let text = drill.scrape().await;
    assert_eq!(metric(&text, "pgdrill_outages_total"), 0.0, "an outage");
    assert_eq!(
        metric(&text, "pgdrill_verifications_total"),
        0.0,
        "resolved by the periodic check, not an outage's verification"
    );
    let summary = drill.stop().await;
    assert_eq!(summary.unknown_outcome_unresolved, 0);
    assert_eq!(
        summary.unknown_outcome_committed + summary.unknown_outcome_not_committed,
        summary.unknown_outcome_writes
    );
    println!(
        "{killed} backends killed, {} unknown outcomes, all resolved {resolved_after:?} after \
         the last kill (committed {}, not committed {})",
        summary.unknown_outcome_writes,
        summary.unknown_outcome_committed,
        summary.unknown_outcome_not_committed
    );
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_pool_growth_does_not_fail_writes_open_connections_can_take() {
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    let admin = connect(&admin_app_dsn(&lab)).await;
    // ~5 ms per INSERT keeps both allowed connections busy at times, so lanes try to grow
    // the pool past the role's limit.
    admin
        .batch_execute(
            "CREATE TABLE transactions (transaction_id bigserial PRIMARY KEY, \
               customer_id int, merchant_id int, amount numeric, status text, \
               created_at timestamptz DEFAULT now(), run_id bigint, seq bigint); \
             ALTER TABLE transactions OWNER TO pgdrill; \
             CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS \
               $$ BEGIN PERFORM pg_sleep(0.005); RETURN NEW; END $$; \
             CREATE TRIGGER slow BEFORE INSERT ON transactions \
               FOR EACH ROW EXECUTE FUNCTION slow(); \
             ALTER ROLE pgdrill CONNECTION LIMIT 2",
        )
        .await
        .expect("slow table, role limited to 2 connections");
    let drill = Drill::start(&[
        "--dsn",
        &dsn,
        "--rate",
        "200",
        "--pool-size",
        "8",
        "--duration",
        "60s",
    ])
    .await;
    eventually(Duration::from_secs(20), "writes under way", || async {
        drill.metric("pgdrill_transactions_total").await > 200.0
    })
    .await;
    let sum = |text: &str, name: &str| crate::support::drill::metric_sum(text, name);
    let before = drill.scrape().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = drill.scrape().await;
    let refused = metric(
        &after,
        "pgdrill_connection_errors_total{class=\"too_many_connections\"}",
    ) - metric(
        &before,
        "pgdrill_connection_errors_total{class=\"too_many_connections\"}",
    );
    let failed = sum(&after, "pgdrill_transaction_errors_total")
        - sum(&before, "pgdrill_transaction_errors_total");
    let done = metric(&after, "pgdrill_transactions_total")
        - metric(&before, "pgdrill_transactions_total");
    println!("in 5 s: {done} writes, {failed} failed, {refused} pool growths refused");
    assert!(refused > 0.0, "the pool never tried to grow past the limit");
    assert_eq!(
        failed, 0.0,
        "writes failed although open connections could take them"
    );
    assert!(done > 900.0, "{done} writes in 5 s at 200/s");
    drill.stop().await;
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_open_at_shutdown_is_reported_with_its_duration_and_errors() {
    let lab = start_lab(None).await;
    let node = lab.primary();
    let drill = Drill::start(&[
        "--dsn",
        &lab.dsn(node),
        "--rate",
        "200",
        "--duration",
        "60s",
    ])
    .await;
    eventually(Duration::from_secs(20), "writes under way", || async {
        drill.metric("pgdrill_transactions_total").await > 200.0
    })
    .await;
    lab.stop(node, StopMode::Fast)
        .await
        .expect("stop the server");
    eventually(Duration::from_secs(10), "outage detected", || async {
        drill
            .metric("pgdrill_failover_state{state=\"outage\"}")
            .await
            == 1.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let summary = drill.stop().await;
    let text = summary.to_string();
    let o = summary.outages.last().expect("an outage record");
    assert!(o.open_at_shutdown, "{text}");
    assert_eq!(o.ended_at, None);
    let so_far = o.write_unavailable_seconds.expect("duration so far");
    assert!(so_far >= 2.0, "{so_far} s: {text}");
    assert!(
        o.error_classes.contains(&"connect_refused"),
        "{:?}",
        o.error_classes
    );
    assert!(
        text.contains("so far") && text.contains("still open"),
        "{text}"
    );
    println!("{text}");
    lab.shutdown().await;
}
