//! Tables whose owners' application pgdrill's writes would harm are refused before the first
//! write (exit 2), naming what: ids it would use up, unique values their rows need, a column
//! of theirs named like pgdrill's, foreign keys, and what `--retention` may not delete.

use pgdrill_lab::StopMode;

use crate::support::{connect, exec, start_lab};

use super::{admin_app_dsn, alter_table};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_whose_application_pgdrill_would_harm_are_refused_at_start() {
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    let client = connect(&dsn).await;
    let columns = "customer_id int, merchant_id int, amount numeric, status text, \
                   created_at timestamptz DEFAULT now()";
    client
        .batch_execute(&format!(
            "CREATE TABLE tx_small_ids (transaction_id smallserial PRIMARY KEY, {columns}); \
             CREATE TABLE tx_nearly_full (transaction_id serial PRIMARY KEY, {columns}); \
             SELECT setval('tx_nearly_full_transaction_id_seq', 2147480000); \
             CREATE TABLE tx_their_seq (transaction_id bigserial PRIMARY KEY, {columns}, \
               seq bigint); \
             CREATE TABLE tx_unique (transaction_id bigserial PRIMARY KEY, {columns}, \
               UNIQUE (customer_id, merchant_id)); \
             CREATE TABLE tx_soft (transaction_id bigserial PRIMARY KEY, {columns}); \
             CREATE UNIQUE INDEX tx_soft_live ON tx_soft (customer_id) INCLUDE (amount) \
               WHERE created_at IS NOT NULL; \
             CREATE TABLE tx_refunds (transaction_id bigserial PRIMARY KEY, {columns}, \
               refund_of bigint REFERENCES tx_refunds ON DELETE CASCADE); \
             CREATE TABLE customers (id int PRIMARY KEY); \
             INSERT INTO customers SELECT generate_series(1, 10000); \
             CREATE TABLE tx_fk (transaction_id bigserial PRIMARY KEY, \
               customer_id int REFERENCES customers (id) ON DELETE CASCADE, merchant_id int, \
               amount numeric, status text)"
        ))
        .await
        .expect("create the users' tables");
    let run = ["--rate", "1000", "--duration", "60s"];
    for (table, expect) in [
        ("tx_small_ids", "this run would take about 60000"),
        ("tx_nearly_full", "which has 3647 left before its maximum"),
        ("tx_their_seq", "has a column seq but no run_id"),
        (
            "tx_unique",
            "has a unique index tx_unique_customer_id_merchant_id_key",
        ),
        // Partial and with an INCLUDE column, as a soft-delete index: pgdrill's rows are in it.
        ("tx_soft", "has a unique index tx_soft_live"),
        (
            "tx_fk",
            "foreign key tx_fk_customer_id_fkey to customers (a DELETE there deletes \
             pgdrill's rows: read as lost writes)",
        ),
    ] {
        let (status, _out, err) = alter_table(&dsn, table, &run, &[]).await;
        assert_eq!(status.code(), Some(2), "{table}: exit 2, stderr:\n{err}");
        assert!(
            err.contains(expect),
            "{table}: stderr lacks {expect:?}:\n{err}"
        );
    }
    // Nothing was changed on the way to the refusal.
    let added = "SELECT count(*) FROM information_schema.columns WHERE column_name = 'run_id'";
    let added: i64 = client.query_one(added, &[]).await.expect("columns").get(0);
    assert_eq!(added, 0, "a column added to a refused table");

    // A foreign key pgdrill's rows leave NULL references nothing: written to.
    let (status, _out, err) = alter_table(&dsn, "tx_refunds", &["--duration", "2s"], &[]).await;
    assert!(status.success(), "{err}");
    // A sequence with room: the run goes on, told what it takes of it.
    let room = ["--rate", "100", "--duration", "3s"];
    client
        .batch_execute(
            "ALTER SEQUENCE tx_nearly_full_transaction_id_seq RESTART WITH 1900000000; \
             SELECT nextval('tx_nearly_full_transaction_id_seq')",
        )
        .await
        .expect("restart the sequence");
    let (status, _out, err) = alter_table(&dsn, "tx_nearly_full", &room, &[]).await;
    assert!(status.success(), "{err}");
    assert!(
        err.contains("which has 247483647 left before its maximum; this run takes about 300"),
        "{err}"
    );

    // --retention without the DELETE privilege: said at start, not as failing sweeps.
    let admin = connect(&admin_app_dsn(&lab)).await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE tx_no_delete (transaction_id bigserial PRIMARY KEY, {columns}); \
             GRANT SELECT, INSERT ON tx_no_delete TO {app}; \
             GRANT USAGE ON SEQUENCE tx_no_delete_transaction_id_seq TO {app}",
            app = "pgdrill"
        ))
        .await
        .expect("create the admin's table");
    let retention = ["--rate", "100", "--duration", "10s", "--retention", "1h"];
    let (status, _out, err) = alter_table(&dsn, "tx_no_delete", &retention, &[]).await;
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("GRANT DELETE ON"), "{err}");

    // An identity id, and only INSERT and SELECT on the table: its sequence may not be read,
    // so how many ids are left is unknown, said, and the run goes on.
    admin
        .batch_execute(&format!(
            "CREATE TABLE tx_identity (transaction_id bigint GENERATED BY DEFAULT AS IDENTITY \
               PRIMARY KEY, {columns}, run_id bigint, seq bigint); \
             CREATE INDEX tx_identity_pgdrill_rows ON tx_identity (transaction_id) \
               WHERE run_id IS NOT NULL; \
             COMMENT ON COLUMN tx_identity.run_id IS 'pgdrill: rows'; \
             GRANT SELECT, INSERT ON tx_identity TO pgdrill"
        ))
        .await
        .expect("create the admin's identity table");
    let (status, _out, err) = alter_table(&dsn, "tx_identity", &room, &[]).await;
    assert!(status.success(), "{err}");
    assert!(err.contains("which pgdrill's user may not read"), "{err}");
    lab.shutdown().await;
}

/// A logical replication slot read by a CDC plugin (here test_decoding, as AWS DMS uses) may
/// stream pgdrill's rows to another system: said at start, with the slot named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_capture_slot_is_named_at_start() {
    let lab = start_lab(None).await;
    let node = lab.primary();
    let admin = connect(&admin_app_dsn(&lab)).await;
    exec(&admin, "ALTER SYSTEM SET wal_level = logical").await;
    drop(admin);
    lab.stop(node, StopMode::Fast).await.expect("stop");
    lab.start_node(node).await.expect("start");
    let admin = connect(&admin_app_dsn(&lab)).await;
    exec(
        &admin,
        "SELECT pg_create_logical_replication_slot('dms_slot', 'test_decoding')",
    )
    .await;
    let dsn = lab.dsn(node);
    let run = ["--rate", "10", "--duration", "2s"];
    let (status, _out, err) = alter_table(&dsn, "pgdrill_writes", &run, &[]).await;
    assert!(status.success(), "{err}");
    assert!(err.contains("dms_slot (test_decoding)"), "{err}");
    exec(&admin, "SELECT pg_drop_replication_slot('dms_slot')").await;
    lab.shutdown().await;
}

/// A primary read-only by setting (as Azure sets it when storage is full) whose table exists,
/// and a table in a schema pgdrill's user may not use: each said at once (exit 2), not after
/// --startup-timeout's retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_read_only_by_setting_is_refused_at_start_naming_the_setting() {
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    let run = ["--rate", "10", "--duration", "2s"];
    let (status, _out, err) = alter_table(&dsn, "pgdrill_writes", &run, &[]).await;
    assert!(status.success(), "the table created: {err}");
    let admin = connect(&admin_app_dsn(&lab)).await;
    // A schema pgdrill's user may not use: said as a setup to fix (exit 2), not a wrong target.
    exec(
        &admin,
        "CREATE SCHEMA private; CREATE TABLE private.tx (id int)",
    )
    .await;
    let (status, _out, err) = alter_table(&dsn, "private.tx", &run, &[]).await;
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("USAGE on its schema"), "{err}");
    exec(
        &admin,
        "ALTER ROLE pgdrill SET default_transaction_read_only = on",
    )
    .await;
    let started = std::time::Instant::now();
    let (status, _out, err) = alter_table(&dsn, "pgdrill_writes", &run, &[]).await;
    println!("exit {:?} after {:?}", status.code(), started.elapsed());
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("default_transaction_read_only"), "{err}");
    lab.shutdown().await;
}

/// A `run_id` and a `seq` the table already had, without pgdrill's mark on `run_id`, are the
/// owners' (here 2,000 rows of their run 42): pgdrill would write its run ids and counter into
/// them, and its rows would then be stranded there, `pgdrill cleanup` refusing a `run_id` it did
/// not add. Refused at start, with and without `--alter-table`, before any write or DDL; a
/// `run_id text` of theirs too, with no advice to change its type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owners_run_id_and_seq_are_never_written() {
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    let client = connect(&dsn).await;
    let table = |name: &str, run_id: &str| {
        format!(
            "CREATE TABLE {name} (transaction_id bigserial PRIMARY KEY, \
               customer_id int NOT NULL, merchant_id int NOT NULL, \
               amount numeric(12,2) NOT NULL, status text NOT NULL, \
               created_at timestamptz NOT NULL DEFAULT now(), run_id {run_id}, seq bigint); \
             INSERT INTO {name} (customer_id, merchant_id, amount, status, run_id, seq) \
             SELECT i, i % 97, i % 500, 'settled', 42, i FROM generate_series(1, 2000) i"
        )
    };
    exec(
        &client,
        &format!(
            "{}; {}",
            table("jobs_tx", "bigint"),
            table("jobs_text", "text")
        ),
    )
    .await;
    // The tables as the catalog has them (columns, indexes, comments) and their rows.
    let state = "SELECT (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, \
                   a.atttypmod) || coalesce(' ' || col_description(c.oid, a.attnum), ''), \
                   ', ' ORDER BY a.attnum) FROM pg_attribute a \
                   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) \
                 || ' | ' || (SELECT coalesce(string_agg(indexrelid::regclass::text, ', ' \
                   ORDER BY indexrelid), '') FROM pg_index WHERE indrelid = c.oid) \
                 || ' | ' || coalesce(obj_description(c.oid, 'pg_class'), '') \
                 || ' | ' || (SELECT count(*) FROM jobs_tx)::text \
                 || ' | ' || (SELECT count(*) FROM jobs_text)::text \
               FROM pg_class c WHERE c.relname = $1";
    let state = |name: &'static str| {
        let client = &client;
        async move {
            let row = client
                .query_one(state, &[&name])
                .await
                .expect("table state");
            row.get::<_, String>(0)
        }
    };
    let before = (state("jobs_tx").await, state("jobs_text").await);
    assert!(before.0.ends_with("| 2000 | 2000"), "{}", before.0);
    let run = ["--rate", "50", "--duration", "5s"];
    for (name, alter) in [
        ("jobs_tx", true),
        ("jobs_tx", false),
        ("jobs_text", true),
        ("jobs_text", false),
    ] {
        let (status, _out, err) = match alter {
            true => alter_table(&dsn, name, &run, &[]).await,
            false => {
                let mut args = vec!["--dsn", &dsn, "--table", name, "--listen", "127.0.0.1:0"];
                args.extend_from_slice(&run);
                crate::support::drill::Binary::spawn(&args)
                    .wait(std::time::Duration::from_secs(40))
                    .await
            }
        };
        let said = err.lines().find(|l| l.starts_with("error:")).unwrap_or("");
        println!(
            "{name}, --alter-table {alter}: exit {:?}: {said}",
            status.code()
        );
        assert_eq!(
            status.code(),
            Some(2),
            "{name} {alter}: exit 2, stderr:\n{err}"
        );
        let expect = format!("{name} has columns run_id and seq that pgdrill did not add");
        assert!(
            said.contains(&expect),
            "{name} {alter}: not {expect:?}:\n{err}"
        );
        assert!(said.contains("not pgdrill's"), "{name} {alter}:\n{err}");
        assert!(
            said.contains("--table at another table"),
            "{name} {alter}:\n{err}"
        );
        assert!(
            !err.contains("ALTER COLUMN"),
            "{name} {alter}: advice to alter theirs:\n{err}"
        );
        assert!(
            !err.contains("CREATE INDEX"),
            "{name} {alter}: an index offered:\n{err}"
        );
        assert!(!err.contains("table ready"), "{name} {alter}:\n{err}");
    }
    let after = (state("jobs_tx").await, state("jobs_text").await);
    assert_eq!(after, before, "a refused table changed");
    let theirs = "SELECT count(*) FROM jobs_tx WHERE run_id = 42 AND seq BETWEEN 1 AND 2000";
    let theirs: i64 = client.query_one(theirs, &[]).await.expect("rows").get(0);
    assert_eq!(theirs, 2000);
    lab.shutdown().await;
}
