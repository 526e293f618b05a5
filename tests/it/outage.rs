//! A single PostgreSQL that is down at start or stops mid-run: the outage is measured and
//! classified, the daemon recovers without a restart, and memory stays bounded.

use std::time::Duration;

use pgdrill_lab::sys::Signal;
use pgdrill_lab::StopMode;
use tokio::time::Instant;

use crate::support::drill::{http_get, metric, metric_sum, try_http_get, Binary, Drill};
use crate::support::{connect, count, eventually, start_single as single};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_with_the_database_down_and_recovers_without_restart() {
    let lab = single(None).await;
    let node = lab.primary();
    lab.stop(node, StopMode::Fast)
        .await
        .expect("stop PostgreSQL");
    let dsn = lab.dsn(node);
    let drill = Drill::start(&["--dsn", &dsn, "--rate", "200"]).await;

    let refused = "pgdrill_transaction_errors_total{class=\"connect_refused\"}";
    eventually(
        Duration::from_secs(10),
        "connect_refused counted",
        || async { drill.metric(refused).await >= 5.0 },
    )
    .await;
    eventually(Duration::from_secs(5), "state is outage", || async {
        drill
            .metric("pgdrill_failover_state{state=\"outage\"}")
            .await
            == 1.0
    })
    .await;
    assert!(
        drill
            .metric("pgdrill_connection_errors_total{class=\"connect_refused\"}")
            .await
            >= 5.0
    );

    lab.start_node(node).await.expect("start PostgreSQL");
    let before = drill.metric("pgdrill_transactions_total").await
        - metric_sum(&drill.scrape().await, "pgdrill_transaction_errors_total");
    eventually(Duration::from_secs(15), "writes succeed again", || async {
        let text = drill.scrape().await;
        let ok = metric(&text, "pgdrill_transactions_total")
            - metric_sum(&text, "pgdrill_transaction_errors_total");
        ok > before + 200.0
    })
    .await;
    let summary = drill.stop().await;
    assert_eq!(summary.outages.len(), 1, "{summary}");
    assert!(summary.outages[0].write_unavailable_seconds.is_some());
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_stopped_mid_run_is_classified_and_memory_stays_bounded() {
    let lab = single(None).await;
    let node = lab.primary();
    let dsn = lab.dsn(node);
    let watched = Watched::new();
    let (listen, json_arg, addr) = (&watched.listen, &watched.json, watched.addr);
    let bin = Binary::spawn(&[
        "--dsn",
        &dsn,
        "--rate",
        "2000",
        "--listen",
        listen,
        "--shutdown-grace",
        "5s",
        "--summary-json",
        json_arg,
        "--log-format",
        "json",
    ]);
    let scrape = || http_get(addr, "/metrics");
    eventually(Duration::from_secs(15), "load running", || async {
        let text = try_http_get(addr, "/metrics").await.unwrap_or_default();
        metric(&text, "pgdrill_transactions_total") > 2000.0
    })
    .await;
    let rss_before = metric(&scrape().await, "process_resident_memory_bytes");

    // A fast shutdown terminates sessions with 57P01; then connections are refused.
    lab.stop(node, StopMode::Fast)
        .await
        .expect("stop PostgreSQL");
    let outage_began = Instant::now();
    let mut rss_max: f64 = rss_before;
    while outage_began.elapsed() < Duration::from_secs(5) {
        rss_max = rss_max.max(metric(&scrape().await, "process_resident_memory_bytes"));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let text = scrape().await;
    let closed = metric(
        &text,
        "pgdrill_transaction_errors_total{class=\"admin_shutdown\"}",
    ) + metric(
        &text,
        "pgdrill_transaction_errors_total{class=\"connection_closed\"}",
    );
    let refused = metric(
        &text,
        "pgdrill_transaction_errors_total{class=\"connect_refused\"}",
    );
    // Writes in flight at the stop fail with its 57P01 (or a closed connection); with none
    // in flight at that instant (seen once on a loaded machine), connects during it get 57P03.
    let shutting_down = metric(
        &text,
        "pgdrill_transaction_errors_total{class=\"cannot_connect_now\"}",
    );
    assert!(
        closed + shutting_down >= 1.0,
        "the shutdown is classified:\n{text}"
    );
    assert!(refused >= 10.0, "refused connections counted: {refused}");
    assert_eq!(
        metric(&text, "pgdrill_transaction_errors_total{class=\"other\"}"),
        0.0
    );
    assert!(metric(&text, "pgdrill_transactions_skipped_total") > 5_000.0);
    assert!(metric(&text, "pgdrill_transactions_in_flight") <= 8.0);
    assert!(
        rss_max - rss_before < 16.0 * 1024.0 * 1024.0,
        "RSS grew from {rss_before} to {rss_max} during a 5 s outage at 2,000/s"
    );
    println!(
        "RSS before {:.1} MB, max during outage {:.1} MB",
        rss_before / 1e6,
        rss_max / 1e6
    );

    lab.start_node(node).await.expect("start PostgreSQL");
    bin.signal(Signal::Term);
    let (status, out, err) = bin.wait(Duration::from_secs(20)).await;
    assert!(status.success(), "exit {status:?}\n{err}");
    assert!(out.contains("summary"), "{out}");
    assert!(err.contains("SIGTERM"), "{err}");
    for line in err.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("--log-format json wrote a non-JSON line ({e}): {line}"));
    }
    let json = watched.summary();
    assert!(json["transactions"].as_u64().unwrap_or(0) > 2000, "{json}");
    assert!(
        json["errors"]["connect_refused"].as_u64().unwrap_or(0) >= 10,
        "{json}"
    );
    assert_eq!(json["outages"].as_array().map(Vec::len), Some(1), "{json}");
    assert!(json["latency"]["p99_ms"].as_f64().is_some(), "{json}");
    lab.shutdown().await;
}

/// At a low rate most pooled connections sit idle; a stop closes them all. A lane that
/// finds them closed drops them and connects itself, so its write fails as a fresh client's
/// would (refused), never as `pool_timeout` from waiting on bb8's own connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_closed_by_a_stop_fail_as_refused_not_as_pool_timeouts() {
    let lab = single(None).await;
    let node = lab.primary();
    let dsn = lab.dsn(node);
    let watched = Watched::new();
    let (listen, addr) = (&watched.listen, watched.addr);
    let bin = Binary::spawn(&[
        "--dsn",
        &dsn,
        "--rate",
        "50",
        "--pool-size",
        "16",
        "--listen",
        listen,
    ]);
    eventually(Duration::from_secs(15), "load running", || async {
        let text = try_http_get(addr, "/metrics").await.unwrap_or_default();
        metric(&text, "pgdrill_transactions_total") > 100.0
    })
    .await;
    lab.stop(node, StopMode::Fast)
        .await
        .expect("stop PostgreSQL");
    // Past bb8's wait (connect timeout + 1 s, 3 s by default) for every lane.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let text = http_get(addr, "/metrics").await;
    let class = |c: &str| {
        metric(
            &text,
            &format!("pgdrill_transaction_errors_total{{class=\"{c}\"}}"),
        )
    };
    assert!(class("connect_refused") >= 10.0, "{text}");
    assert_eq!(class("pool_timeout"), 0.0, "{text}");
    bin.signal(Signal::Term);
    let (status, _, err) = bin.wait(Duration::from_secs(20)).await;
    assert!(status.success(), "exit {status:?}\n{err}");
    lab.shutdown().await;
}

/// Writes that cannot finish (the table locked, the server alive: no silence to detect)
/// hold the first SIGTERM's drain for the whole `--shutdown-grace`, even when it is delivered
/// twice at once (as `timeout` does, to its child and its group); a second signal cuts it
/// short, and the summary is still printed and written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_cuts_the_drain_short_and_still_prints_the_summary() {
    let lab = single(None).await;
    let dsn = lab.dsn(lab.primary());
    let watched = Watched::new();
    let (listen, json_arg, addr) = (&watched.listen, &watched.json, watched.addr);
    let mut bin = Binary::spawn(&[
        "--dsn",
        &dsn,
        "--rate",
        "100",
        "--statement-timeout",
        "1h",
        "--shutdown-grace",
        "1h",
        "--listen",
        listen,
        "--summary-json",
        json_arg,
    ]);
    let scrape = || async move { try_http_get(addr, "/metrics").await.unwrap_or_default() };
    let locker = lock_after(addr, &dsn, 100.0).await;
    eventually(
        Duration::from_secs(10),
        "writes waiting on the lock",
        || async { metric(&scrape().await, "pgdrill_transactions_in_flight") >= 1.0 },
    )
    .await;

    bin.signal(Signal::Term);
    // Delivered again once the first was taken (two at once would merge in the kernel).
    eventually(Duration::from_secs(10), "the load stopped", || async {
        metric(&scrape().await, "pgdrill_load_running") == 0.0
    })
    .await;
    bin.signal(Signal::Term);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let waiting = bin.child.try_wait().expect("try_wait");
    assert!(
        waiting.is_none(),
        "exited {waiting:?} with writes still in flight"
    );
    bin.signal(Signal::Term);
    let (status, out, err) = bin.wait(Duration::from_secs(30)).await;
    locker.batch_execute("ROLLBACK").await.expect("unlock");
    assert!(status.success(), "exit {status:?}\n{err}");
    assert!(err.contains("the same stop request again"), "{err}");
    assert_eq!(err.matches("second signal:").count(), 1, "{err}");
    assert!(out.contains("summary"), "{out}");
    let json = watched.summary();
    assert!(json["abandoned"].as_u64().unwrap_or(0) >= 1, "{json}");
    lab.shutdown().await;
}

/// Writes still in flight when the grace runs out at the end of `--duration` are abandoned:
/// the summary, its JSON and `/metrics` (kept up by `--linger`) give the same count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_given_up_when_the_grace_runs_out_are_abandoned_in_every_output() {
    let lab = single(None).await;
    let dsn = lab.dsn(lab.primary());
    let watched = Watched::new();
    let addr = watched.addr;
    let (rate, duration, grace) = ("50", "4s", "1s");
    let mut argv = vec![
        "--dsn",
        dsn.as_str(),
        "--rate",
        rate,
        "--duration",
        duration,
    ];
    argv.extend_from_slice(&["--shutdown-grace", grace, "--statement-timeout", "1h"]);
    let bin = watched.lingering(&argv);
    let scrape = || async move { try_http_get(addr, "/metrics").await.unwrap_or_default() };
    let locker = lock_after(addr, &dsn, 20.0).await;
    // Counted once, when the grace runs out; then the run lingers.
    let abandoned_total = "pgdrill_transactions_abandoned_total";
    eventually(Duration::from_secs(20), "writes abandoned", || async {
        metric(&scrape().await, abandoned_total) > 0.0
    })
    .await;
    let exposition = scrape().await;
    let exported = metric(&exposition, abandoned_total);
    // Given up, no longer in flight.
    let in_flight = metric(&exposition, "pgdrill_transactions_in_flight");
    assert_eq!(in_flight, 0.0, "{exposition}");
    // Written before --linger, not when it ends.
    watched.summary_written().await;
    bin.signal(Signal::Term);
    let (status, out, err) = bin.wait(Duration::from_secs(30)).await;
    locker.batch_execute("ROLLBACK").await.expect("unlock");
    assert!(status.success(), "exit {status:?}\n{err}");
    let json = watched.summary();
    let abandoned = json["abandoned"].as_u64().unwrap_or(0);
    assert!(abandoned >= 1, "{json}");
    assert_eq!(exported, abandoned as f64);
    assert!(out.contains(&format!("abandoned {abandoned}")), "{out}");
    lab.shutdown().await;
}

/// A run that is over (its summary written) and kept on for `--linger` holds no session on
/// the server: the pool's connections are closed as the load ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lingering_run_holds_no_session_on_the_server() {
    let lab = single(None).await;
    let dsn = lab.dsn(lab.primary());
    let watched = Watched::new();
    let bin = watched.lingering(&["--dsn", &dsn, "--rate", "50", "--duration", "2s"]);
    watched.summary_written().await;
    let client = connect(&dsn).await;
    let sessions = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgdrill'";
    eventually(
        Duration::from_secs(10),
        "pgdrill's sessions closed",
        || async { count(&client, sessions, &[]).await == 0 },
    )
    .await;
    let text = try_http_get(watched.addr, "/metrics")
        .await
        .unwrap_or_default();
    assert_eq!(
        metric(&text, "pgdrill_load_running"),
        0.0,
        "still lingering:\n{text}"
    );
    ended_by_sigterm(bin).await;
    lab.shutdown().await;
}

/// Connects still under way when the load ends (every session ended while a lock held the
/// table, so the new ones wait on it in their setup) finish after it: none is kept for
/// `--linger`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_finishing_after_the_load_hold_no_session_while_lingering() {
    let lab = single(None).await;
    let dsn = lab.dsn(lab.primary());
    let watched = Watched::new();
    let bin = watched.lingering(&[
        "--dsn",
        &dsn,
        "--rate",
        "50",
        "--duration",
        "4s",
        // The connects wait on the lock longer than the run.
        "--connect-timeout",
        "30s",
        "--statement-timeout",
        "30s",
        "--shutdown-grace",
        "1s",
    ]);
    let locker = lock_after(watched.addr, &dsn, 20.0).await;
    let ours = "FROM pg_stat_activity WHERE application_name = 'pgdrill'";
    let ended = format!("SELECT count(pg_terminate_backend(pid)) {ours}");
    assert!(
        count(&locker, &ended, &[]).await > 0,
        "no pgdrill session to end"
    );
    watched.summary_written().await;
    // The lanes waiting for those connects had sent nothing: their writes are skipped, not
    // abandoned (sent and never answered).
    let summary = watched.summary();
    assert_eq!(summary["abandoned"], 0, "{summary}");
    // The outage was still open: no recovery time, in the summary as on /metrics.
    let outage = &summary["outages"][0];
    assert!(outage["time_to_full_rate_seconds"].is_null(), "{summary}");
    let text = try_http_get(watched.addr, "/metrics")
        .await
        .unwrap_or_default();
    let recovery = "pgdrill_last_recovery_duration_seconds NaN";
    assert!(text.lines().any(|l| l == recovery), "{text}");
    let sessions = format!("SELECT count(*) {ours}");
    assert!(
        count(&locker, &sessions, &[]).await > 0,
        "no connect was under way when the load ended"
    );
    locker
        .batch_execute("ROLLBACK")
        .await
        .expect("lock released");
    eventually(
        Duration::from_secs(20),
        "pgdrill's sessions closed",
        || async { count(&locker, &sessions, &[]).await == 0 },
    )
    .await;
    ended_by_sigterm(bin).await;
    lab.shutdown().await;
}

/// Through a proxy whose path to the server went dark (its connections hang) while new
/// connections are closed at once (HAProxy with no backend, a host that answers "unreachable"):
/// a fast failure of the check is no answer from the server, so the hung connections are
/// given up then, not at the client timeout (here past the end of the run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_connections_are_left_when_new_ones_are_closed_at_once() {
    let lab = single(None).await;
    let (proxy, dsn) = crate::support::proxied(&lab, lab.primary(), Duration::ZERO).await;
    let args = ["--dsn", &dsn, "--rate", "200", "--duration", "10s"];
    let drill = Drill::start(&[&args[..], &["--statement-timeout", "60s"]].concat()).await;
    drill.wait_for_transactions(200.0).await;
    proxy.refuse(true);
    proxy.blackhole(true);
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Closed at once, not timed out: the check says which.
    let timeouts = r#"pgdrill_connection_errors_total{class="connect_timeout"}"#;
    assert_eq!(drill.metric(timeouts).await, 0.0);
    let closed = r#"pgdrill_connection_errors_total{class="connection_closed"}"#;
    assert!(drill.metric(closed).await > 0.0);
    proxy.blackhole(false);
    proxy.refuse(false);
    let summary = drill.finish().await;
    let given_up = summary
        .counts
        .errors
        .get("no_response")
        .copied()
        .unwrap_or(0);
    assert!(given_up > 0, "the hung writes waited instead: {summary}");
    assert_eq!(summary.outages.len(), 1, "{summary}");
    // Writes resumed: the outage ended (a count of them would time the machine instead).
    assert!(summary.outages[0].ended_at.is_some(), "{summary}");
    proxy.shutdown().await;
    lab.shutdown().await;
}

/// Unknown outcomes from an outage are that outage's: while it lasts (here every INSERT is
/// refused while the server still takes connections and reads), the periodic check leaves
/// them to the outage's verification, so the outage's figures add up to the run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_outcomes_of_an_outage_are_resolved_by_its_verification() {
    let lab = single(None).await;
    let dsn = lab.dsn(lab.primary());
    let args = ["--dsn", &dsn, "--rate", "100", "--duration", "14s"];
    // Unknown outcomes settle for a periodic check 1 s past the statement timeout.
    let drill = Drill::start(&[&args[..], &["--statement-timeout", "1s"]].concat()).await;
    drill.wait_for_transactions(100.0).await;
    let locker = connect(&dsn).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE pgdrill_writes IN EXCLUSIVE MODE")
        .await
        .expect("lock pgdrill's table");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The INSERTs waiting on the lock lose their sessions: their outcome is unknown.
    let waiting = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                   WHERE application_name = 'pgdrill' AND wait_event_type = 'Lock'";
    assert!(count(&locker, waiting, &[]).await > 0, "no INSERT waited");
    // Then every INSERT is refused, while connections and reads go on, for longer than an
    // unknown outcome takes to settle.
    let refuse = "ALTER TABLE pgdrill_writes ADD CONSTRAINT refuse CHECK (false) NOT VALID; COMMIT";
    locker.batch_execute(refuse).await.expect("INSERTs refused");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let allow = "ALTER TABLE pgdrill_writes DROP CONSTRAINT refuse";
    locker.batch_execute(allow).await.expect("INSERTs allowed");
    let summary = drill.finish().await;
    let counts = &summary.counts;
    let resolved = counts.unknown_outcome_committed + counts.unknown_outcome_not_committed;
    assert!(resolved > 0, "no unknown outcome resolved: {summary}");
    let of_outages: u64 = summary
        .outages
        .iter()
        .map(|o| {
            o.unknown_outcome_committed.unwrap_or(0) + o.unknown_outcome_not_committed.unwrap_or(0)
        })
        .sum();
    assert_eq!(
        of_outages, resolved,
        "the outages' unknown outcomes against the run's: {summary}"
    );
    lab.shutdown().await;
}

/// Once more than `writes` are acknowledged on `addr`'s `/metrics`, locks pgdrill's table
/// from a session of its own; `ROLLBACK` on it ends the lock.
async fn lock_after(addr: std::net::SocketAddr, dsn: &str, writes: f64) -> tokio_postgres::Client {
    eventually(Duration::from_secs(20), "writes acknowledged", || async {
        let text = try_http_get(addr, "/metrics").await.unwrap_or_default();
        metric(&text, "pgdrill_transactions_total") > writes
    })
    .await;
    let locker = connect(dsn).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE pgdrill_writes IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock pgdrill's table");
    locker
}

/// Ends a lingering run, which exits 0.
async fn ended_by_sigterm(bin: Binary) {
    bin.signal(Signal::Term);
    let (status, _, err) = bin.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "exit {status:?}\n{err}");
}

/// Where a spawned run is watched: a free `--listen` address and a `--summary-json` path in
/// a temp dir of its own.
struct Watched {
    listen: String,
    addr: std::net::SocketAddr,
    json: String,
    _dir: tempfile::TempDir,
}

impl Watched {
    fn new() -> Watched {
        let listen = format!("127.0.0.1:{}", crate::support::free_port());
        let dir = tempfile::tempdir().expect("temp dir");
        let json = dir.path().join("summary.json").display().to_string();
        let addr = listen.parse().expect("addr");
        Watched {
            listen,
            addr,
            json,
            _dir: dir,
        }
    }

    /// pgdrill with `args`, then kept on by `--linger` with `/metrics` and the summary here.
    fn lingering(&self, args: &[&str]) -> Binary {
        let mut argv = args.to_vec();
        argv.extend_from_slice(&["--linger", "60s", "--listen", &self.listen]);
        argv.extend_from_slice(&["--summary-json", &self.json]);
        Binary::spawn(&argv)
    }

    /// Once the summary is written: the run is over, lingering. Written in place (not renamed
    /// into it), the file can be there and empty or cut short for a moment: written is parsed.
    async fn summary_written(&self) {
        let path = std::path::Path::new(&self.json);
        eventually(Duration::from_secs(20), "summary written", || async {
            std::fs::read(path)
                .is_ok_and(|text| serde_json::from_slice::<serde_json::Value>(&text).is_ok())
        })
        .await;
    }

    /// The summary the run wrote.
    fn summary(&self) -> serde_json::Value {
        let text = std::fs::read(&self.json).expect("summary JSON written");
        serde_json::from_slice(&text).expect("summary JSON parses")
    }
}

/// A locked table holds a new connection's setup (its prepared INSERT) as it holds a write: a
/// fresh client's INSERT would wait until its statement timeout, so both count as
/// `statement_timeout`, not as a connect timeout (the server answered at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_table_fails_new_connections_as_statement_timeouts() {
    let lab = single(None).await;
    let dsn = lab.dsn(lab.primary());
    let drill = Drill::start(&[
        "--dsn",
        &dsn,
        "--rate",
        "200",
        "--statement-timeout",
        "1s",
        "--connect-timeout",
        "500ms",
    ])
    .await;
    let locker = lock_after(drill.addr, &dsn, 100.0).await;
    // Its connections go: the lanes connect again, into the lock.
    let admin = connect(&dsn).await;
    let ended = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = 'pgdrill' AND pid <> pg_backend_pid()";
    admin
        .execute(ended, &[])
        .await
        .expect("terminate pgdrill's sessions");
    let setup_timeouts = "pgdrill_connection_errors_total{class=\"statement_timeout\"}";
    eventually(
        Duration::from_secs(20),
        "new connections held by the lock",
        || async { drill.metric(setup_timeouts).await >= 2.0 },
    )
    .await;
    locker.batch_execute("ROLLBACK").await.expect("unlock");
    let summary = drill.stop().await;
    let class = |c: &str| summary.counts.errors.get(c).copied().unwrap_or(0);
    assert_eq!(class("connect_timeout"), 0, "{:?}", summary.counts.errors);
    assert!(
        class("statement_timeout") >= 2,
        "{:?}",
        summary.counts.errors
    );
    lab.shutdown().await;
}
