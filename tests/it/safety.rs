//! Safe on a production database: a team's own `transactions` table (1,000 business rows
//! over 28 days) is never changed by a run with the default table; it is written only when
//! named, altered only with `--alter-table`, and retention and cleanup delete only
//! pgdrill's rows. Tables whose shape defeats the measurement are refused at start.

use std::time::Duration;

use tokio_postgres::Client;

use crate::support::drill::{Binary, Drill};
use crate::support::{connect, count, eventually, exec, start_lab};

/// The team's table as they made it years ago: no run_id, no seq.
const TEAM_TABLE: &str = "CREATE TABLE transactions (transaction_id bigserial PRIMARY KEY, \
     customer_id integer NOT NULL, merchant_id integer NOT NULL, amount numeric(12,2) NOT NULL, \
     status text NOT NULL, created_at timestamptz NOT NULL DEFAULT now()); \
     INSERT INTO transactions (customer_id, merchant_id, amount, status, created_at) \
     SELECT i, i % 97, (i * 83.69) % 1000, 'completed', now() - i * interval '40 minutes' \
     FROM generate_series(1, 1000) i";

/// The team's rows (ids 1..=1000, their columns only) and the table's columns.
async fn team_state(client: &Client) -> (i64, String, String) {
    let rows = client
        .query_one(
            "SELECT count(*), md5(string_agg(concat_ws('|', transaction_id, customer_id, \
               merchant_id, amount, status, created_at), ',' ORDER BY transaction_id)) \
             FROM transactions WHERE transaction_id <= 1000",
            &[],
        )
        .await
        .expect("team rows");
    let columns = client
        .query_one(
            "SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position) \
             FROM information_schema.columns WHERE table_name = 'transactions'",
            &[],
        )
        .await
        .expect("team columns");
    (rows.get(0), rows.get(1), columns.get(0))
}

/// The real binary with `args` plus a free listen address; (exit code, stdout, stderr).
async fn pgdrill(args: &[&str], limit: Duration) -> (Option<i32>, String, String) {
    let mut argv = vec!["--listen", "127.0.0.1:0"];
    argv.extend_from_slice(args);
    let (status, out, err) = Binary::spawn(&argv).wait(limit).await;
    (status.code(), out, err)
}

fn run_id(summary: &str) -> i64 {
    summary
        .split("(run ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no run id in the summary:\n{summary}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teams_table_is_untouched_unless_named_and_retention_deletes_only_pgdrills_rows() {
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    let client = connect(&dsn).await;
    exec(&client, TEAM_TABLE).await;
    let before = team_state(&client).await;
    println!("team table before: {} rows, {}", before.0, before.2);

    // 1. The default table: pgdrill's own, next to the team's.
    let (code, out, err) = pgdrill(
        &[
            "--dsn",
            &dsn,
            "--rate",
            "200",
            "--duration",
            "4s",
            "--retention",
            "10s",
            "--verify-window",
            "5s",
        ],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert_eq!(
        team_state(&client).await,
        before,
        "the team's table changed"
    );
    let ours = count(
        &client,
        "SELECT count(*) FROM pgdrill_writes WHERE run_id = $1",
        &[&run_id(&out)],
    )
    .await;
    assert!(ours > 0, "{out}");
    let marked = count(
        &client,
        "SELECT count(*) FROM pg_class WHERE relname = 'pgdrill_writes' \
         AND obj_description(oid, 'pg_class') LIKE 'pgdrill:%'",
        &[],
    )
    .await;
    assert_eq!(marked, 1, "pgdrill's table carries its mark");
    assert!(
        err.contains("changes and deletes no row that is not pgdrill's"),
        "said beforehand:\n{err}"
    );

    // 2. Named, without --alter-table: exit 2 with the statements, nothing changed.
    let (code, _, err) = pgdrill(
        &[
            "--dsn",
            &dsn,
            "--table",
            "transactions",
            "--retention",
            "10s",
            "--verify-window",
            "5s",
            "--duration",
            "60s",
        ],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(code, Some(2), "{err}");
    for statement in [
        "ALTER TABLE \"public\".\"transactions\" ADD COLUMN run_id bigint, ADD COLUMN seq bigint",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS \"transactions_pgdrill_rows\" ON \"public\".\"transactions\" \
         (transaction_id) WHERE run_id IS NOT NULL",
        "--alter-table",
    ] {
        assert!(
            err.contains(statement),
            "stderr lacks {statement:?}:\n{err}"
        );
    }
    assert_eq!(
        team_state(&client).await,
        before,
        "refused, yet the table changed"
    );

    // 3. Named with --alter-table: written; retention (6 s window) deletes pgdrill's rows
    //    older than the window and not one of the team's, all older than it.
    let (code, out, err) = pgdrill(
        &[
            "--dsn",
            &dsn,
            "--table",
            "transactions",
            "--alter-table",
            "--rate",
            "200",
            "--duration",
            "12s",
            "--retention",
            "6s",
            "--verify-window",
            "2s",
        ],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    let after = team_state(&client).await;
    assert_eq!(
        (after.0, &after.1),
        (before.0, &before.1),
        "the team's rows changed"
    );
    assert_eq!(after.2, format!("{}, run_id bigint, seq bigint", before.2));
    assert!(run_rows(&client, &out).await > 0, "{out}");
    let team_rows = count(
        &client,
        "SELECT count(*) FROM transactions WHERE run_id IS NULL",
        &[],
    )
    .await;
    assert_eq!(team_rows, 1000, "the team's rows are all there");
    let deleted: u64 = out
        .split("retention deleted ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no deletions in the summary:\n{out}"));
    assert!(deleted > 0, "{out}");
    assert!(
        err.contains("retention deleted pgdrill's rows"),
        "deletions logged:\n{err}"
    );
    println!(
        "team table after: {} rows, {}; retention deleted {deleted}",
        after.0, after.2
    );
    let marked = count(
        &client,
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'transactions'::regclass \
         AND attname = 'run_id' AND col_description(attrelid, attnum) LIKE 'pgdrill:%'",
        &[],
    )
    .await;
    assert_eq!(marked, 1, "the run_id pgdrill added carries its mark");

    // 4. A team table with a run_id and seq of its own: never written to, nor deleted from.
    exec(
        &client,
        "CREATE TABLE jobs (transaction_id bigserial PRIMARY KEY, customer_id int, \
         merchant_id int, amount numeric, status text, created_at timestamptz DEFAULT now(), \
         run_id bigint, seq bigint); \
         INSERT INTO jobs (run_id, created_at) SELECT 7, now() - interval '1 day' \
         FROM generate_series(1, 100)",
    )
    .await;
    let (code, _, err) = pgdrill(
        &[
            "--dsn",
            &dsn,
            "--table",
            "jobs",
            "--alter-table",
            "--retention",
            "10s",
            "--verify-window",
            "5s",
            "--duration",
            "60s",
        ],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("jobs has columns run_id and seq that pgdrill did not add"),
        "{err}"
    );
    assert!(
        err.contains("COMMENT ON COLUMN \"public\".\"jobs\".run_id IS 'pgdrill:"),
        "{err}"
    );
    let team = count(&client, "SELECT count(*) FROM jobs WHERE run_id = 7", &[]).await;
    assert_eq!(team, 100, "the team's rows with their own run_id");
    lab.shutdown().await;
}

/// Rows of the run whose summary is `out`, left in the team's table.
async fn run_rows(client: &Client, out: &str) -> i64 {
    count(
        client,
        "SELECT count(*) FROM transactions WHERE run_id = $1",
        &[&run_id(out)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_removes_exactly_pgdrills_rows_and_only_its_own_table() {
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    let client = connect(&dsn).await;
    let mut runs = Vec::new();
    for _ in 0..2 {
        let (code, out, err) = pgdrill(
            &["--dsn", &dsn, "--rate", "100", "--duration", "2s"],
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(code, Some(0), "{err}");
        runs.push(run_id(&out));
        if runs.len() == 1 {
            // The first run holds more rows than one cleanup batch (5,000), all below the
            // second's: rows added under its run_id before the second run, not a rate that a
            // busy machine may not reach (4,810 of 6,000).
            exec(
                &client,
                &format!(
                    "INSERT INTO pgdrill_writes (customer_id, merchant_id, amount, status, run_id, seq) \
                     SELECT 1, 1, 1.00, 'approved', {}, 1000000 + g FROM generate_series(1, 6000) g",
                    runs[0]
                ),
            )
            .await;
        }
    }
    let rows = |id: i64| {
        let client = &client;
        async move {
            count(
                client,
                "SELECT count(*) FROM pgdrill_writes WHERE run_id = $1",
                &[&id],
            )
            .await
        }
    };
    let (first, second) = (rows(runs[0]).await, rows(runs[1]).await);
    assert!(first > 5000 && second > 0, "{first} {second}");
    let cleanup = |extra: &[&str]| {
        let mut argv = vec!["cleanup", "--dsn", dsn.as_str()];
        argv.extend_from_slice(extra);
        let argv: Vec<String> = argv.into_iter().map(str::to_string).collect();
        async move {
            let args: Vec<&str> = argv.iter().map(String::as_str).collect();
            let (status, out, err) = Binary::spawn(&args).wait(Duration::from_secs(30)).await;
            (status.code(), out, err)
        }
    };
    let later = runs[1].to_string();
    let (code, out, err) = cleanup(&["--run-id", &later]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&format!("deleted {second} rows of run {later}")),
        "{out}"
    );
    assert_eq!((rows(runs[0]).await, rows(runs[1]).await), (first, 0));
    let (code, out, _) = cleanup(&["--all-runs"]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains(&format!("deleted {first} rows")), "{out}");
    assert_eq!(
        count(&client, "SELECT count(*) FROM pgdrill_writes", &[]).await,
        0
    );

    // A table pgdrill did not create: never dropped; without pgdrill's index, not scanned.
    exec(&client, TEAM_TABLE).await;
    let (code, out, err) = cleanup(&["--table", "transactions", "--all-runs"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("has no run_id column"), "{out}");
    exec(
        &client,
        "ALTER TABLE transactions ADD COLUMN run_id bigint, ADD COLUMN seq bigint",
    )
    .await;
    let (code, _, err) = cleanup(&["--table", "transactions", "--drop-table"]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not created by pgdrill"), "{err}");
    let (code, _, err) = cleanup(&["--table", "transactions", "--all-runs"]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("CREATE INDEX CONCURRENTLY IF NOT EXISTS"),
        "{err}"
    );
    assert!(err.contains("COMMENT ON COLUMN"), "{err}");
    assert_eq!(
        count(&client, "SELECT count(*) FROM transactions", &[]).await,
        1000
    );
    // Nothing to say which scope: a usage error.
    let (code, _, err) = cleanup(&[]).await;
    assert_eq!(code, Some(2), "{err}");

    // Another session reading the table: the DROP waits for its lock a few seconds, not for
    // good (every write would queue behind it), and says why nothing was dropped.
    let reader = connect(&dsn).await;
    exec(&reader, "BEGIN; LOCK pgdrill_writes IN ACCESS SHARE MODE").await;
    let (code, _, err) = cleanup(&["--drop-table"]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("in use by another session"), "{err}");
    exec(&reader, "ROLLBACK").await;
    let (code, out, _) = cleanup(&["--drop-table"]).await;
    assert_eq!(code, Some(0));
    assert!(
        out.contains("dropped pgdrill's table pgdrill_writes"),
        "{out}"
    );
    let left = count(
        &client,
        "SELECT count(*) FROM pg_class WHERE relname = 'pgdrill_writes'",
        &[],
    )
    .await;
    assert_eq!(left, 0);
    lab.shutdown().await;
}

/// Each table and the reason it is refused with, before any write (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_that_defeat_the_measurement_are_refused_at_start() {
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    let client = connect(&dsn).await;
    let ours = "(transaction_id bigserial PRIMARY KEY, customer_id int, merchant_id int, \
                amount numeric, status text, created_at timestamptz DEFAULT now(), \
                run_id bigint, seq bigint)";
    exec(
        &client,
        &format!(
            "CREATE UNLOGGED TABLE tx_unlogged {ours}; CREATE TABLE tx_base {ours}; \
             CREATE VIEW v_tx AS SELECT * FROM tx_base; \
             CREATE TABLE tx_raises {ours}; \
             CREATE FUNCTION no_way() RETURNS trigger LANGUAGE plpgsql AS \
               $$ BEGIN RAISE EXCEPTION 'inserts are audited elsewhere'; END $$; \
             CREATE TRIGGER no_way BEFORE INSERT ON tx_raises \
               FOR EACH ROW EXECUTE FUNCTION no_way(); \
             COMMENT ON COLUMN tx_raises.run_id IS 'pgdrill: rows'; \
             CREATE INDEX tx_raises_pgdrill_rows ON tx_raises (transaction_id) \
               WHERE run_id IS NOT NULL; \
             CREATE TABLE tx_skips {ours}; \
             CREATE FUNCTION skip() RETURNS trigger LANGUAGE plpgsql AS \
               $$ BEGIN RETURN NULL; END $$; \
             CREATE TRIGGER skip BEFORE INSERT ON tx_skips FOR EACH ROW EXECUTE FUNCTION skip(); \
             CREATE INDEX tx_skips_pgdrill_rows ON tx_skips (transaction_id) \
               WHERE run_id IS NOT NULL; \
             COMMENT ON COLUMN tx_skips.run_id IS 'pgdrill: rows'; \
             CREATE TABLE pgdrill_writes {ours}"
        ),
    )
    .await;
    for (args, expect) in [
        (vec!["--table", "tx_unlogged"], "is UNLOGGED"),
        (vec!["--table", "v_tx"], "is a view"),
        (
            vec!["--table", "tx_raises", "--allow-table-triggers"],
            "inserts are audited elsewhere (SQLSTATE P0001)",
        ),
        // A trigger that skips the row: each write would be acknowledged, and never written.
        (
            vec!["--table", "tx_skips", "--allow-table-triggers"],
            "returns no row",
        ),
        // The default name, taken by a table pgdrill did not create.
        (vec![], "exists that pgdrill did not create"),
        // SQL folds unquoted names: TX_Raises is tx_raises.
        (
            vec!["--table", "TX_Raises", "--allow-table-triggers"],
            "SQLSTATE P0001",
        ),
    ] {
        let mut argv = vec!["--dsn", dsn.as_str(), "--duration", "60s"];
        argv.extend_from_slice(&args);
        let (code, _, err) = pgdrill(&argv, Duration::from_secs(30)).await;
        let said = err.lines().find(|l| l.starts_with("error:")).unwrap_or("");
        println!("{args:?}: exit {code:?}: {said}");
        assert_eq!(code, Some(2), "{args:?}:\n{err}");
        assert!(said.contains(expect), "{args:?}: not {expect:?}:\n{err}");
        assert!(
            !said.contains("ADD GENERATED"),
            "{args:?}: a hint that cannot run:\n{err}"
        );
    }
    let rows = count(&client, "SELECT count(*) FROM tx_base", &[]).await;
    assert_eq!(rows, 0);
    lab.shutdown().await;
}

/// What a DELETE of pgdrill's would reach beyond its rows stops retention and cleanup
/// before any change: a plain inheritance child (its rows are the parent's to a DELETE), a
/// DO INSTEAD rule, a foreign key that cascades into another table. An UNLOGGED partition
/// and an index name already taken are refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_never_reach_other_tables_or_rows_through_the_table() {
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    let client = connect(&dsn).await;
    let cols = "transaction_id bigserial PRIMARY KEY, customer_id int, merchant_id int, \
                amount numeric, status text, created_at timestamptz DEFAULT now()";
    exec(
        &client,
        &format!(
            "CREATE TABLE tx_parent ({cols}); \
             CREATE TABLE tx_child (run_id bigint, note text) INHERITS (tx_parent); \
             INSERT INTO tx_child (customer_id, merchant_id, amount, status, run_id, created_at) \
               SELECT 1, 1, 1, 'x', 7, now() - interval '10 days' FROM generate_series(1, 30); \
             CREATE TABLE tx_part ({cols}) PARTITION BY RANGE (transaction_id); \
             CREATE TABLE tx_part_lo PARTITION OF tx_part FOR VALUES FROM (0) TO (1000); \
             CREATE UNLOGGED TABLE tx_part_hi PARTITION OF tx_part \
               FOR VALUES FROM (1000) TO (MAXVALUE); \
             CREATE TABLE tx_idx ({cols}); CREATE INDEX tx_idx_pgdrill_rows ON tx_idx (customer_id); \
             CREATE TABLE tx_fk ({cols}); CREATE TABLE tx_rule ({cols}); \
             CREATE TABLE audit (id int); INSERT INTO audit SELECT generate_series(1, 5); \
             CREATE TABLE tx_fpart (transaction_id bigserial, customer_id int, merchant_id int, \
               amount numeric, status text, created_at timestamptz DEFAULT now()) \
               PARTITION BY LIST (status)"
        ),
    )
    .await;
    // A foreign partition: its rows live on another server (never reached: refused first).
    let admin = lab
        .admin_dsn(lab.primary())
        .replace("dbname=postgres", "dbname=pgdrill");
    exec(
        &connect(&admin).await,
        "CREATE EXTENSION postgres_fdw; \
         CREATE SERVER elsewhere FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1'); \
         CREATE FOREIGN TABLE tx_fpart_done PARTITION OF tx_fpart FOR VALUES IN ('completed') \
           SERVER elsewhere; \
         ALTER FOREIGN TABLE tx_fpart_done OWNER TO pgdrill",
    )
    .await;
    let run = |table: &'static str, extra: &'static [&'static str]| {
        let dsn = dsn.clone();
        async move {
            let mut argv = vec!["--dsn", dsn.as_str(), "--table", table, "--alter-table"];
            argv.extend_from_slice(&["--rate", "20", "--duration", "2s"]);
            argv.extend_from_slice(extra);
            pgdrill(&argv, Duration::from_secs(60)).await
        }
    };
    let retention: &[&str] = &["--retention", "20s", "--verify-window", "5s"];
    for (table, extra, expect) in [
        ("tx_parent", &[][..], "inheritance children (tx_child)"),
        ("tx_parent", retention, "inheritance children (tx_child)"),
        ("tx_part", &[][..], "cannot use (tx_part_hi (UNLOGGED))"),
        ("tx_fpart", &[][..], "cannot use (tx_fpart_done (foreign))"),
        (
            "tx_idx",
            retention,
            "that name is taken in the table's schema by an index on tx_idx",
        ),
    ] {
        let (code, _, err) = run(table, extra).await;
        assert_eq!(code, Some(2), "{table} {extra:?}:\n{err}");
        assert!(err.contains(expect), "{table}: not {expect:?}:\n{err}");
    }
    // Nothing was changed: the children's rows, their columns, the users' index.
    let child = "SELECT count(*) FROM tx_child WHERE run_id = 7";
    assert_eq!(count(&client, child, &[]).await, 30);
    let added = "SELECT count(*) FROM pg_attribute WHERE attname = 'seq' \
                 AND attrelid IN ('tx_parent'::regclass, 'tx_child'::regclass, 'tx_idx'::regclass)";
    assert_eq!(count(&client, added, &[]).await, 0);

    // Made pgdrill's (columns, index) by two runs; then a cascading foreign key and a DO
    // INSTEAD rule.
    for table in ["tx_fk", "tx_rule"] {
        let (code, _, err) = run(table, retention).await;
        assert_eq!(code, Some(0), "{table}:\n{err}");
    }
    exec(
        &client,
        "CREATE TABLE settlements (tx bigint REFERENCES tx_fk ON DELETE CASCADE); \
         INSERT INTO settlements SELECT transaction_id FROM tx_fk; \
         CREATE RULE instead AS ON DELETE TO tx_rule DO INSTEAD \
           DELETE FROM audit WHERE id = OLD.transaction_id % 5 + 1; \
         ALTER TABLE tx_parent ADD COLUMN run_id bigint",
    )
    .await;
    let settled = count(&client, "SELECT count(*) FROM settlements", &[]).await;
    assert!(settled > 0);
    for (table, expect) in [
        (
            "tx_fk",
            "foreign key settlements_tx_fkey of settlements (ON DELETE CASCADE)",
        ),
        ("tx_rule", "rule instead"),
        ("tx_parent", "inheritance children (tx_child)"),
    ] {
        let argv = [
            "cleanup",
            "--dsn",
            dsn.as_str(),
            "--table",
            table,
            "--all-runs",
        ];
        let (status, out, err) = Binary::spawn(&argv).wait(Duration::from_secs(30)).await;
        assert_eq!(status.code(), Some(2), "{table}:\n{out}\n{err}");
        assert!(err.contains(expect), "{table}: not {expect:?}:\n{err}");
    }
    let (code, _, err) = run("tx_fk", retention).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("settlements_tx_fkey"), "{err}");
    let rows = count(&client, "SELECT count(*) FROM settlements", &[]).await;
    assert_eq!(rows, settled, "no settlement was deleted");
    assert_eq!(count(&client, "SELECT count(*) FROM audit", &[]).await, 5);
    assert_eq!(count(&client, child, &[]).await, 30);

    // A server that takes no writes is named as such, not as a missing privilege.
    let read_only = format!("{dsn} options='-c default_transaction_read_only=on'");
    let argv = [
        "--dsn",
        read_only.as_str(),
        "--table",
        "tx_new",
        "--duration",
        "60s",
    ];
    let (code, _, err) = pgdrill(&argv, Duration::from_secs(30)).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("the server takes no writes"), "{err}");
    assert!(!err.contains("grant CREATE"), "{err}");
    lab.shutdown().await;
}

/// pgdrill's own table is held to the same as the users': a foreign key that cascades into
/// it stops retention at start. And what appears during a run (a DELETE trigger here) holds
/// retention's deletes from the next sweep on, said in the log and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_looks_again_before_every_sweep_and_on_its_own_table_too() {
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    let client = connect(&dsn).await;
    let retention = ["--retention", "3s", "--verify-window", "1s", "--rate", "20"];
    let mut argv = vec!["--dsn", dsn.as_str(), "--duration", "1s"];
    argv.extend_from_slice(&retention);
    let (code, _, err) = pgdrill(&argv, Duration::from_secs(60)).await;
    assert_eq!(code, Some(0), "{err}");
    exec(
        &client,
        "CREATE TABLE settlements (tx bigint REFERENCES pgdrill_writes ON DELETE SET NULL); \
         INSERT INTO settlements SELECT transaction_id FROM pgdrill_writes",
    )
    .await;
    let (code, _, err) = pgdrill(&argv, Duration::from_secs(60)).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("settlements_tx_fkey of settlements (ON DELETE SET NULL)"),
        "{err}"
    );
    exec(&client, "DROP TABLE settlements").await;

    let mut args = vec!["--dsn", dsn.as_str(), "--duration", "60s"];
    args.extend_from_slice(&retention);
    let drill = Drill::start(&args).await;
    let deleted = "pgdrill_retention_rows_deleted_total";
    eventually(Duration::from_secs(30), "retention deletes", || async {
        drill.metric(deleted).await > 0.0
    })
    .await;
    exec(
        &client,
        "CREATE TABLE audit (n int); \
         CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN INSERT INTO audit VALUES (1); RETURN NULL; END $$; \
         CREATE TRIGGER noted AFTER DELETE ON pgdrill_writes FOR EACH STATEMENT \
           EXECUTE FUNCTION note()",
    )
    .await;
    let held = "pgdrill_retention_errors_total{class=\"other\"}";
    eventually(Duration::from_secs(30), "a sweep held", || async {
        drill.metric(held).await > 0.0
    })
    .await;
    // Sweeps run one after another: none is under way that looked before the trigger.
    let (fired, gone) = (
        count(&client, "SELECT count(*) FROM audit", &[]).await,
        drill.metric(deleted).await,
    );
    eventually(Duration::from_secs(30), "two more sweeps held", || async {
        drill.metric(held).await >= 3.0
    })
    .await;
    assert_eq!(
        count(&client, "SELECT count(*) FROM audit", &[]).await,
        fired
    );
    assert_eq!(drill.metric(deleted).await, gone);
    // Dropped and made again by someone else, holding their rows: not pgdrill's any more.
    exec(
        &client,
        "DROP TABLE pgdrill_writes; CREATE TABLE pgdrill_writes (transaction_id bigserial \
           PRIMARY KEY, customer_id int, merchant_id int, amount numeric, status text, \
           created_at timestamptz DEFAULT now(), run_id bigint, seq bigint); \
         INSERT INTO pgdrill_writes (customer_id, merchant_id, amount, status, run_id, \
           created_at) SELECT 1, 1, 1, 'theirs', 7, now() - interval '1 day' \
           FROM generate_series(1, 100)",
    )
    .await;
    let before = drill.metric(held).await;
    eventually(Duration::from_secs(30), "two sweeps held", || async {
        drill.metric(held).await >= before + 2.0
    })
    .await;
    let theirs = "SELECT count(*) FROM pgdrill_writes WHERE run_id = 7";
    assert_eq!(count(&client, theirs, &[]).await, 100);
    let summary = drill.stop().await;
    assert_eq!(summary.retention_rows_deleted as f64, gone);
    lab.shutdown().await;
}
