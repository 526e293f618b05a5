//! Never silent, never stuck: the users' own tables, a metrics port under abuse, restarts
//! that are not failovers, and configuration that libpq would reject.

use pgdrill_lab::Lab;

mod connections;
mod process;
mod tables;

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
