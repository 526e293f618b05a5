//! What `--alter-table` could not finish is refused before it changes the users' table: the
//! table is left as it was, not half altered.

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
