//! Never silent, never stuck: the users' own tables, a metrics port under abuse, restarts
//! that are not failovers, and configuration that libpq would reject.

use std::time::Duration;

use pgdrill_lab::Lab;

use crate::support::drill::Binary;

mod connections;
mod hazards;
mod process;
mod readback;
mod tables;
mod unchanged;

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

/// pgdrill with `--alter-table` on `table`: its exit, stdout and stderr.
pub(super) async fn alter_table(
    dsn: &str,
    table: &str,
    more: &[&str],
    env: &[(&str, &str)],
) -> (std::process::ExitStatus, String, String) {
    let mut args = vec![
        "--dsn",
        dsn,
        "--table",
        table,
        "--alter-table",
        "--connect-timeout",
        "1s",
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(more);
    Binary::spawn_with(env, &args)
        .wait(Duration::from_secs(40))
        .await
}
