//! Query modes through a real PgBouncer 1.18 in `pool_mode = transaction` in front of the lab
//! primary: unnamed and simple sustain the load, prepared breaks and `auto` falls back from it
//! without failing a write. (Outages behind PgBouncer are timed in `crate::timed::pgbouncer`.)

use std::time::Duration;

use crate::support::bouncer::Bouncer;
use crate::support::drill::{Binary, Drill};
use crate::support::{connect, count, eventually, exec, promote_standby, rows_of_run, start_lab};
use pgdrill_lab::ReplicationMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_modes_through_transaction_pooling() {
    let lab = start_lab(None).await;
    let bouncer = Bouncer::start(&lab, lab.port(lab.primary())).await;
    let dsn = bouncer.dsn();
    // Enough concurrency that transactions of one client land on different server connections.
    let load = ["--rate", "1500", "--pool-size", "16", "--duration", "4s"];
    for mode in ["unnamed", "simple", "auto", "prepared"] {
        let mut args = vec!["--dsn", dsn.as_str(), "--query-mode", mode];
        args.extend_from_slice(&load);
        let summary = Drill::start(&args).await.finish().await;
        println!("{mode}: {summary}");
        match mode {
            // Sustained: every write started succeeded and is a row (counts, not a rate, so a
            // busy machine cannot fail it; in flight at the end may have committed too).
            "unnamed" | "simple" => {
                assert!(
                    summary.counts.errors.is_empty(),
                    "{mode}: {:?}",
                    summary.counts.errors
                );
                assert!(summary.counts.successes > 0, "{mode}: {summary}");
                assert_eq!(
                    summary.counts.successes, summary.counts.transactions,
                    "{mode}: {summary}"
                );
                let rows = rows_of_run(&lab, lab.primary(), summary.run_id).await as u64;
                assert!(
                    (summary.counts.successes..=summary.counts.successes + summary.abandoned)
                        .contains(&rows),
                    "{mode}: {rows} rows for {summary}"
                );
            }
            // auto starts prepared (the port is not 6432), sees 26000/42P05 (on a write or at
            // connect), switches once and sends those INSERTs again unnamed: no failed write,
            // no outage.
            "auto" => {
                assert!(summary.counts.errors.is_empty(), "auto: {summary}");
                assert!(summary.outages.is_empty(), "auto: {summary}");
                assert_eq!(
                    summary.counts.successes, summary.counts.transactions,
                    "auto: {summary}"
                );
            }
            _ => assert!(
                summary.counts.errors.get("other").copied().unwrap_or(0) >= 10,
                "prepared should break through transaction pooling: {summary}"
            ),
        }
    }
    drop(bouncer);
    lab.shutdown().await;
}

/// A process's statements are named `s0`, `s1`, … and stay on PgBouncer's server
/// connections: another process's `--query-mode auto` meets 42P05 (`"s0" already exists`)
/// when it prepares at connect, and falls back there too, without failing a write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_falls_back_at_connect_on_statements_another_process_left() {
    let lab = start_lab(None).await;
    let bouncer = Bouncer::start(&lab, lab.port(lab.primary())).await;
    let dsn = bouncer.dsn();
    let dir = tempfile::tempdir().expect("temp dir");
    for mode in ["prepared", "auto"] {
        let json = dir
            .path()
            .join(format!("{mode}.json"))
            .display()
            .to_string();
        let args = [
            "--dsn",
            &dsn,
            "--query-mode",
            mode,
            "--rate",
            "500",
            "--pool-size",
            "8",
            "--duration",
            "2s",
            "--listen",
            "127.0.0.1:0",
            "--summary-json",
            &json,
        ];
        let (status, _out, err) = Binary::spawn(&args).wait(Duration::from_secs(40)).await;
        let text = std::fs::read_to_string(&json).unwrap_or_default();
        let summary: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if mode == "auto" {
            assert!(status.success(), "auto: exit {status:?}\n{err}");
            assert_eq!(
                summary["errors"],
                serde_json::json!({}),
                "auto: {summary}\n{err}"
            );
            assert!(err.contains("switches to unnamed statements"), "{err}");
        }
    }
    drop(bouncer);
    lab.shutdown().await;
}

/// PgBouncer refuses a wrong database or user with its catch-all 08P01: a wrong target all
/// the same, so the run stops at once (exit 5) with PgBouncer's message and a hint, instead of
/// retrying until --startup-timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_pgbouncer_refuses_is_a_wrong_target() {
    let lab = start_lab(None).await;
    let bouncer = Bouncer::start(&lab, lab.port(lab.primary())).await;
    for (wrong, said) in [
        ("dbname=pgdrill", "dbname=nosuchdb"),
        ("user=pgdrill", "user=nobody"),
    ] {
        let dsn = bouncer.dsn().replace(wrong, said);
        let args = [
            "--dsn",
            &dsn,
            "--duration",
            "60s",
            "--startup-timeout",
            "30s",
            "--listen",
            "127.0.0.1:0",
        ];
        let started = std::time::Instant::now();
        let (status, out, err) = Binary::spawn(&args).wait(Duration::from_secs(40)).await;
        println!(
            "{said}: exit {:?} after {:?}",
            status.code(),
            started.elapsed()
        );
        assert_eq!(status.code(), Some(5), "{said}:\n{err}");
        assert!(
            err.contains("hint: the connection pooler (PgBouncer) refused"),
            "{err}"
        );
        assert!(out.is_empty(), "{out}");
    }
    // A startup option of the user's own (PGOPTIONS) that the pooler does not take: the
    // login is refused whatever pgdrill leaves out, so it is a wrong target, said as such.
    let strict = Bouncer::start_ignoring(&lab, lab.port(lab.primary()), "extra_float_digits").await;
    let dsn = strict.dsn();
    let args = [
        "--dsn",
        &dsn,
        "--duration",
        "60s",
        "--listen",
        "127.0.0.1:0",
    ];
    let options = ("PGOPTIONS", "-c search_path=public");
    let (status, _, err) = Binary::spawn_with(&[options], &args)
        .wait(Duration::from_secs(40))
        .await;
    assert_eq!(status.code(), Some(5), "{err}");
    assert!(
        err.contains("PGOPTIONS") && err.contains("ignore_startup_parameters"),
        "{err}"
    );
    lab.shutdown().await;
}

/// `--statement-timeout` travels in the startup packet: the server applies it to pgdrill's
/// own sessions, and no session `SET` is left on a transaction-mode pooler's server
/// connections for the clients that get them next. Through a PgBouncer that drops startup
/// options, or refuses them (08P01), pgdrill connects all the same and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statement_timeout_is_pgdrills_alone_direct_and_through_a_pooler() {
    let lab = start_lab(None).await;
    let primary = lab.port(lab.primary());
    // Direct: writes held by a lock end with the server's 57014 after 1 s.
    let dsn = lab.dsn(lab.primary());
    let locker = connect(&dsn).await;
    let drill = Drill::start(&["--dsn", &dsn, "--rate", "50", "--statement-timeout", "1s"]).await;
    drill.wait_for_transactions(50.0).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE pgdrill_writes IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock pgdrill's table");
    tokio::time::sleep(Duration::from_secs(3)).await;
    locker.batch_execute("ROLLBACK").await.expect("unlock");
    let summary = drill.stop().await;
    assert!(
        summary
            .counts
            .errors
            .get("statement_timeout")
            .copied()
            .unwrap_or(0)
            >= 1,
        "the server's own timeout ended the held writes: {summary}"
    );

    for ignore in ["extra_float_digits,options", "extra_float_digits"] {
        let bouncer = Bouncer::start_ignoring(&lab, primary, ignore).await;
        let args = ["--rate", "200", "--pool-size", "8", "--duration", "3s"];
        let dsn = bouncer.dsn();
        let mut run = vec!["--dsn", dsn.as_str(), "--statement-timeout", "7s"];
        run.extend_from_slice(&args);
        let bin = Binary::spawn(&run);
        let (status, _out, err) = bin.wait(Duration::from_secs(60)).await;
        assert!(status.success(), "ignoring {ignore}: {status}\n{err}");
        assert!(
            err.contains("does not apply --statement-timeout"),
            "ignoring {ignore}: not said\n{err}"
        );
        // PgBouncer 1.18 refuses an `options` it does not ignore: said, and connected without.
        assert_eq!(
            err.contains("refuses startup options"),
            !ignore.contains("options"),
            "ignoring {ignore}:\n{err}"
        );
        // Every server connection of the pool at once, each asked.
        let mut held = Vec::new();
        for _ in 0..20 {
            let client = connect(&bouncer.dsn()).await;
            client.batch_execute("BEGIN").await.expect("begin");
            held.push(client);
        }
        for client in &held {
            let row = client
                .query_one("SHOW statement_timeout", &[])
                .await
                .expect("show");
            let shown: String = row.get(0);
            assert_eq!(
                shown, "0",
                "ignoring {ignore}: a setting left for other clients"
            );
        }
        drop(held);
        drop(bouncer);
    }
    lab.shutdown().await;
}

/// A pooler that switches servers behind the client connections it keeps (a RELOAD pointing
/// it at the promoted standby, the old primary left up): no error and no new connection,
/// yet the periodic fresh connection sees the new primary within seconds (and the writes
/// are verified against it), not at the next reconnect half an hour later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_behind_the_poolers_kept_connections_is_seen() {
    a_switch_behind_kept_connections_is_seen("transaction").await;
}

/// The same in session pooling, where the connections pgdrill keeps stay on the old primary
/// for as long as it is up (a pooled connection's probe would never see the switch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_behind_session_pooling_is_seen() {
    a_switch_behind_kept_connections_is_seen("session").await;
}

async fn a_switch_behind_kept_connections_is_seen(mode: &'static str) {
    let lab = start_lab(Some(ReplicationMode::Async)).await;
    let bouncer = Bouncer::start_in(&lab, lab.port(lab.primary()), mode).await;
    let dsn = bouncer.dsn();
    let drill = Drill::start(&["--dsn", &dsn, "--rate", "100", "--query-mode", "unnamed"]).await;
    drill.wait_for_transactions(100.0).await;
    let standby = promote_standby(&lab).await;
    // What the old primary acknowledges from here to the switch, the new one never gets.
    tokio::time::sleep(Duration::from_secs(1)).await;
    bouncer.retarget(lab.port(standby));
    eventually(
        Duration::from_secs(20),
        "the lost writes verified",
        || async { drill.metric("pgdrill_last_failover_lost_writes").await > 0.0 },
    )
    .await;
    let rpo = drill.metric("pgdrill_last_failover_rpo_seconds").await;
    // Writes slow for a second on the new primary: its liveness check answers, and the
    // connections made before the switch are gone by then (not taken for another server's,
    // every write on them failed as no_response).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let no_response = "pgdrill_transaction_errors_total{class=\"no_response\"}";
    let before = drill.metric(no_response).await;
    let locker = connect(&lab.dsn(standby)).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE pgdrill_writes IN SHARE MODE")
        .await
        .expect("hold the writes back");
    tokio::time::sleep(Duration::from_secs(1)).await;
    locker.batch_execute("COMMIT").await.expect("let them go");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let failed = drill.metric(no_response).await - before;
    let summary = drill.stop().await;
    println!("{summary}");
    assert_eq!(
        failed, 0.0,
        "writes held back a second failed as no_response"
    );
    assert_eq!(summary.primary_changes, 1, "{summary}");
    // No outage record holds this verification: the run's counts do.
    let c = &summary.counts;
    assert!(
        c.lost_writes > 0 && c.checked_writes > c.lost_writes,
        "{c:?}"
    );

    // The RPO is the span of the lost writes (the rows the new primary lacks), not the time
    // until the probe saw the switch, which may be up to 5 s later.
    let times =
        "SELECT seq, extract(epoch FROM created_at)::float8 FROM pgdrill_writes WHERE run_id = $1";
    let rows = |node| {
        let dsn = lab.dsn(node);
        async move {
            connect(&dsn)
                .await
                .query(times, &[&summary.run_id])
                .await
                .expect("reading the rows")
                .iter()
                .map(|r| (r.get::<_, i64>(0), r.get::<_, f64>(1)))
                .collect::<std::collections::HashMap<_, _>>()
        }
    };
    let (old, new) = (rows(lab.primary()).await, rows(standby).await);
    let lost: Vec<f64> = (old.iter())
        .filter(|(seq, _)| !new.contains_key(seq))
        .map(|(_, at)| *at)
        .collect();
    let span = lost.iter().copied().fold(f64::MIN, f64::max)
        - lost.iter().copied().fold(f64::MAX, f64::min);
    println!("RPO {rpo:.3} s; {} rows lost over {span:.3} s", lost.len());
    assert!(!lost.is_empty() && span > 0.5, "{span}");
    // One 100 ms slice of rounding, and scheduling jitter between a commit and its ack
    // (three tests share two cores here); the probe's lag would be seconds.
    assert!(
        (span - 0.3..=span + 0.5).contains(&rpo),
        "RPO {rpo} for a span of {span}"
    );
    lab.shutdown().await;
}

/// The same switch under a saturated load (`--rate 0`: jobs always waiting, so a lane would
/// keep its connection for good): the switch is seen, the lanes give their connections back
/// often enough for them to be replaced, and the writes go on, on the new primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_behind_the_pooler_is_seen_under_a_saturated_load() {
    let lab = start_lab(Some(ReplicationMode::Async)).await;
    let bouncer = Bouncer::start(&lab, lab.port(lab.primary())).await;
    let dsn = bouncer.dsn();
    let args = [
        "--dsn",
        &dsn,
        "--rate",
        "0",
        "--pool-size",
        "2",
        "--query-mode",
        "unnamed",
    ];
    let drill = Drill::start(&args).await;
    drill.wait_for_transactions(500.0).await;
    let standby = promote_standby(&lab).await;
    // Rows it has from after this were written on it, not replicated from the old primary.
    let new_primary = connect(&lab.dsn(standby)).await;
    let promoted: std::time::SystemTime = (new_primary.query_one("SELECT now()", &[]).await)
        .expect("now() on the new primary")
        .get(0);
    bouncer.retarget(lab.port(standby));
    eventually(Duration::from_secs(20), "the switch seen", || async {
        drill.metric("pgdrill_primary_changes_total").await == 1.0
    })
    .await;
    let seen = drill.metric("pgdrill_transactions_total").await;
    drill.wait_for_transactions(seen + 500.0).await;
    let summary = drill.stop().await;
    println!("{summary}");
    assert_eq!(summary.primary_changes, 1, "{summary}");
    let written = count(
        &new_primary,
        "SELECT count(*) FROM pgdrill_writes WHERE run_id = $1 AND created_at > $2",
        &[&summary.run_id, &promoted],
    )
    .await;
    println!("{written} rows written on the new primary");
    assert!(written > 0, "no write reached the new primary: {summary}");
    lab.shutdown().await;
}

/// Behind a pooler that drops startup options, --alter-table's index build sets no session
/// timeout: the SET could stay on a server connection other clients get (and the RESET reach
/// another). The build is still bounded: pgdrill cancels it through the pooler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_build_through_a_pooler_leaves_no_session_setting_behind() {
    let lab = start_lab(None).await;
    let admin = connect(&format!("{} dbname=pgdrill", lab.admin_dsn(lab.primary()))).await;
    exec(
        &admin,
        // The role's own default equal to --statement-timeout (as compose sets it) must
        // not read as pgdrill's startup option having reached the server.
        "ALTER ROLE pgdrill SET log_statement = 'all'; \
         ALTER ROLE pgdrill SET statement_timeout = '5s'; \
         CREATE TABLE orders (transaction_id bigserial PRIMARY KEY, customer_id int, \
         merchant_id int, amount numeric, status text, created_at timestamptz DEFAULT now()); \
         ALTER TABLE orders OWNER TO pgdrill",
    )
    .await;
    let bouncer = Bouncer::start(&lab, lab.port(lab.primary())).await;
    let dsn = bouncer.dsn();
    let args = [
        "--dsn",
        &dsn,
        "--table",
        "orders",
        "--alter-table",
        "--retention",
        "1m",
        "--rate",
        "100",
        "--duration",
        "2s",
    ];
    let summary = Drill::start(&args).await.finish().await;
    assert!(summary.counts.successes > 0, "{summary}");
    let valid = count(
        &admin,
        "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE i.indrelid = 'orders'::regclass AND i.indisvalid AND c.relname LIKE '%pgdrill%'",
        &[],
    )
    .await;
    assert_eq!(valid, 1, "the partial index on pgdrill's rows is built");
    let log = std::fs::read_to_string(lab.log_path(lab.primary())).expect("server log");
    assert!(
        log.contains("statement: CREATE INDEX CONCURRENTLY"),
        "logged"
    );
    assert!(!log.contains("SET statement_timeout"), "no session setting");
    lab.shutdown().await;
}

/// Behind PgBouncer, a primary restarted in place: while it is down PgBouncer still takes
/// logins and fails their identity probe (08P01, it cannot reach the server). A failed probe
/// names no server, so it is no primary change: an outage and a restart in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_behind_pgbouncer_is_no_primary_change() {
    let lab = start_lab(None).await;
    let bouncer = Bouncer::start(&lab, lab.port(lab.primary())).await;
    let dsn = bouncer.dsn();
    let args = ["--dsn", &dsn, "--rate", "200", "--query-mode", "unnamed"];
    let drill = Drill::start(&args).await;
    // Writes flowing through PgBouncer before the primary goes.
    drill.wait_for_transactions(200.0).await;
    let primary = lab.primary();
    lab.stop(primary, pgdrill_lab::StopMode::Fast)
        .await
        .expect("stop the primary");
    tokio::time::sleep(Duration::from_secs(2)).await;
    lab.start_node(primary).await.expect("start it again");
    drill.wait_for_outage_over(Duration::from_secs(30)).await;
    let summary = drill.stop().await;
    println!("{summary}");
    assert!(!summary.outages.is_empty(), "{summary}");
    assert_eq!(summary.primary_changes, 0, "{summary}");
    assert_eq!(summary.server_restarts, 1, "{summary}");
    drop(bouncer);
    lab.shutdown().await;
}
