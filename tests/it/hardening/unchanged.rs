//! What `--alter-table` could not finish is refused before it changes the users' table: the
//! table is left as it was, not half altered.

use std::time::Duration;

use crate::support::drill::Binary;
use crate::support::{connect, count, exec, start_lab};

use super::{alter_table, users_table_sql};

/// pgdrill's columns on `table`, added or not.
const OUR_COLUMNS: &str = "SELECT count(*) FROM pg_attribute WHERE attrelid = $1::text::regclass \
     AND attname IN ('run_id', 'seq') AND NOT attisdropped";

/// A CHECK refuses the highest amount the load draws: the trial of the users' columns alone
/// names it (exit 2) before pgdrill adds its columns and their comment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_the_table_refuses_is_named_before_any_change() {
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    let owner = connect(&dsn).await;
    let create = users_table_sql("capped", "bigserial");
    exec(
        &owner,
        &format!("{create}; ALTER TABLE capped ADD CONSTRAINT capped_amount CHECK (amount <= 100)"),
    )
    .await;
    let (status, _, err) = alter_table(&dsn, "capped", &["--duration", "60s"], &[]).await;
    assert_eq!(status.code(), Some(2), "stderr:\n{err}");
    assert_eq!(count(&owner, OUR_COLUMNS, &[&"capped"]).await, 0, "{err}");
    assert!(err.contains("check constraint \"capped_amount\""), "{err}");
    assert!(err.contains("pgdrill changed nothing"), "{err}");
    lab.shutdown().await;
}

/// A partitioned table that needs pgdrill's index: `CREATE INDEX CONCURRENTLY` cannot build
/// one there, so `--alter-table` refuses (exit 2) before adding its columns, naming what
/// works. Its owner runs that (the index without blocking writes: the parent's alone, then
/// each partition's, concurrently, attached), and the next run writes and keeps its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_table_gets_the_statements_that_build_its_index() {
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    let owner = connect(&dsn).await;
    exec(
        &owner,
        "CREATE TABLE parted (transaction_id bigserial, customer_id int, merchant_id int, \
           amount numeric, status text, created_at timestamptz DEFAULT now()) \
           PARTITION BY RANGE (transaction_id); \
         CREATE TABLE parted_a PARTITION OF parted FOR VALUES FROM (MINVALUE) TO (1000); \
         CREATE TABLE parted_b PARTITION OF parted FOR VALUES FROM (1000) TO (MAXVALUE)",
    )
    .await;
    let retention = ["--retention", "1h", "--duration", "60s"];
    let (status, _, err) = alter_table(&dsn, "parted", &retention, &[]).await;
    assert_eq!(status.code(), Some(2), "stderr:\n{err}");
    assert_eq!(count(&owner, OUR_COLUMNS, &[&"parted"]).await, 0, "{err}");
    let on = "(transaction_id) WHERE run_id IS NOT NULL;";
    for said in [
        "is partitioned".to_string(),
        "ALTER TABLE \"public\".\"parted\" ADD COLUMN run_id bigint, ADD COLUMN seq bigint; \
         COMMENT ON COLUMN \"public\".\"parted\".run_id IS 'pgdrill:"
            .to_string(),
        format!("CREATE INDEX \"parted_pgdrill_rows\" ON ONLY \"public\".\"parted\" {on}"),
        format!("CREATE INDEX CONCURRENTLY <index> ON <partition> {on}"),
        "ALTER INDEX public.\"parted_pgdrill_rows\" ATTACH PARTITION <index>;".to_string(),
    ] {
        assert!(err.contains(&said), "not {said:?}:\n{err}");
    }
    assert!(
        !err.contains("CREATE INDEX CONCURRENTLY IF NOT EXISTS"),
        "{err}"
    );

    // What it says, run by the owner, one statement at a time (CONCURRENTLY runs in none).
    exec(
        &owner,
        "ALTER TABLE parted ADD COLUMN run_id bigint, ADD COLUMN seq bigint; \
         COMMENT ON COLUMN parted.run_id IS 'pgdrill: rows pgdrill wrote'",
    )
    .await;
    // `pgdrill cleanup` says the same, not the CONCURRENTLY that cannot run.
    let cleanup = ["cleanup", "--dsn", &dsn, "--table", "parted", "--all-runs"];
    let (status, _, err) = Binary::spawn(&cleanup).wait(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(2), "stderr:\n{err}");
    assert!(err.contains("ON ONLY \"parted\""), "{err}");
    assert!(!err.contains("CONCURRENTLY IF NOT EXISTS"), "{err}");
    exec(
        &owner,
        &format!("CREATE INDEX parted_pgdrill_rows ON ONLY parted {on}"),
    )
    .await;
    for partition in ["parted_a", "parted_b"] {
        let index = format!("{partition}_pgdrill_rows");
        exec(
            &owner,
            &format!("CREATE INDEX CONCURRENTLY {index} ON {partition} {on}"),
        )
        .await;
        exec(
            &owner,
            &format!("ALTER INDEX public.parted_pgdrill_rows ATTACH PARTITION {index}"),
        )
        .await;
    }
    let written = ["--retention", "1h", "--rate", "20", "--duration", "2s"];
    let (status, _, err) = alter_table(&dsn, "parted", &written, &[]).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{err}");
    assert!(
        !err.contains("--alter-table: chang"),
        "nothing to change:\n{err}"
    );
    let rows = "SELECT count(*) FROM parted WHERE run_id IS NOT NULL";
    assert!(count(&owner, rows, &[]).await > 0);
    lab.shutdown().await;
}

/// A publication of every table (a CDC setup's): pgdrill's writes, to its own table too, would
/// reach the subscribers (a native one without the table stops replicating everything). It
/// exits 2 naming the publication before a row is written, unless --allow-table-triggers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_table_is_refused_before_a_row_is_written_unless_allowed() {
    let lab = start_lab(None).await;
    let dsn = lab.dsn(lab.primary());
    let admin = connect(&super::admin_app_dsn(&lab)).await;
    exec(&admin, "CREATE PUBLICATION everything FOR ALL TABLES").await;
    let run = |more: &'static [&'static str]| {
        let mut args = vec!["--dsn", &dsn, "--listen", "127.0.0.1:0", "--duration"];
        args.extend_from_slice(more);
        Binary::spawn(&args).wait(Duration::from_secs(60))
    };
    let (status, _, err) = run(&["60s"]).await;
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("publication everything"), "{err}");
    let rows = "SELECT count(*) FROM pgdrill_writes";
    assert_eq!(count(&admin, rows, &[]).await, 0, "{err}");
    let (status, _, err) = run(&["2s", "--allow-table-triggers"]).await;
    assert!(status.success(), "{err}");
    assert!(
        err.contains("publication everything"),
        "said at start: {err}"
    );
    assert!(count(&admin, rows, &[]).await > 0, "{err}");
    lab.shutdown().await;
}
