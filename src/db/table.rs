//! The table pgdrill writes to and every statement it sends there: the INSERT our users run
//! and its parameters, the CREATE TABLE, the verification query and the retention DELETE.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::Rng;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};

use crate::error::ConfigError;

/// A table name checked to be plain identifiers, kept both raw and quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    pub quoted: String,
}

impl Table {
    pub fn parse(name: &str) -> Result<Table, ConfigError> {
        let parts: Vec<&str> = name.split('.').collect();
        let valid = |p: &str| {
            let mut chars = p.chars();
            matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
                && p.len() <= 63
        };
        if parts.len() > 2 || !parts.iter().all(|p| valid(p)) {
            return Err(ConfigError::new(
                "--table",
                name,
                "expected an identifier or schema.identifier of letters, digits and _ (at most 63 each)",
            ));
        }
        let quoted = parts
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(".");
        Ok(Table {
            name: name.to_string(),
            quoted,
        })
    }

    /// `CREATE TABLE IF NOT EXISTS`; safe to run from many replicas at once.
    pub fn create_sql(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (\
               transaction_id bigserial PRIMARY KEY, \
               customer_id integer NOT NULL, \
               merchant_id integer NOT NULL, \
               amount numeric(12,2) NOT NULL, \
               status text NOT NULL, \
               created_at timestamptz NOT NULL DEFAULT now(), \
               run_id bigint, \
               seq bigint)",
            self.quoted
        )
    }

    /// The INSERT with parameters `$1..$5` ([`PARAM_TYPES`]). The id comes back as bigint
    /// whatever integer type the users' table has (serial).
    fn insert_sql(&self) -> String {
        format!(
            "INSERT INTO {} (customer_id, merchant_id, amount, status, run_id, seq) \
             VALUES ($1, $2, $3, 'completed', $4, $5) RETURNING transaction_id::bigint",
            self.quoted
        )
    }

    /// The same INSERT with the values inlined, for the simple query protocol.
    fn insert_literal_sql(&self, row: Row, run_id: i64) -> String {
        format!(
            "INSERT INTO {} (customer_id, merchant_id, amount, status, run_id, seq) \
             VALUES ({}, {}, {:.2}, 'completed', {}, {}) RETURNING transaction_id::bigint",
            self.quoted, row.customer_id, row.merchant_id, row.amount, run_id, row.seq
        )
    }

    /// Rows of run `$2` with `transaction_id >= $1`, as `seq` values (verification).
    pub(crate) fn verify_sql(&self) -> String {
        format!(
            "SELECT seq FROM {} WHERE transaction_id >= $1 AND run_id = $2",
            self.quoted
        )
    }

    /// Which of the unknown-outcome writes `$3` (an int8[] of `seq`) of run `$2` exist,
    /// looking only at ids from `$1` up (the primary key bounds the scan).
    pub(crate) fn resolve_unknown_sql(&self) -> String {
        format!(
            "SELECT seq FROM {} WHERE transaction_id >= $1 AND run_id = $2 AND seq = ANY($3)",
            self.quoted
        )
    }

    /// One retention batch: the oldest `batch_size` rows by primary key, deleted if older
    /// than `window`. Sent with the simple query protocol (our own numbers inlined), so it
    /// keeps no server-side state and works through PgBouncer in transaction mode.
    pub(crate) fn retention_delete_sql(&self, batch_size: u32, window: Duration) -> String {
        format!(
            "WITH batch AS (SELECT transaction_id FROM {t} ORDER BY transaction_id LIMIT {limit}) \
             DELETE FROM {t} AS d USING batch \
             WHERE d.transaction_id = batch.transaction_id \
               AND d.created_at < now() - make_interval(secs => {secs:.3})",
            t = self.quoted,
            limit = batch_size,
            secs = window.as_secs_f64(),
        )
    }
}

/// How the INSERT travels: the statement shape is the same, the protocol differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryMode {
    /// Named statement prepared once per connection: one round trip, least server CPU.
    Prepared,
    /// Unnamed statement each time (parse+bind+execute in one round trip): no server-side
    /// state, safe behind PgBouncer in transaction mode.
    Unnamed,
    /// Simple query protocol with literal values: works everywhere, parses every time.
    Simple,
}

/// Parameter types for `$1..$5`; `amount` is sent as float8 and assigned to numeric.
const PARAM_TYPES: &[Type] = &[Type::INT4, Type::INT4, Type::FLOAT8, Type::INT8, Type::INT8];

/// One row's values. `run_id` + `seq` let verification find the row again after a
/// failover, even when the new primary reuses `transaction_id` values.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    pub customer_id: i32,
    pub merchant_id: i32,
    pub amount: f64,
    pub seq: i64,
}

impl Row {
    pub fn random(rng: &mut SmallRng, seq: u64) -> Row {
        Row {
            customer_id: rng.random_range(1..=10_000),
            merchant_id: rng.random_range(1..=1_000),
            amount: f64::from(rng.random_range(100..=50_000u32)) / 100.0,
            seq: seq as i64,
        }
    }
}

#[derive(Debug)]
pub struct Workload {
    pub table: Table,
    pub run_id: i64,
    pub mode: QueryMode,
    insert_sql: String,
}

impl Workload {
    pub fn new(table: Table, run_id: i64, mode: QueryMode) -> Workload {
        let insert_sql = table.insert_sql();
        Workload {
            table,
            run_id,
            mode,
            insert_sql,
        }
    }

    pub async fn create_table(&self, client: &Client) -> Result<(), tokio_postgres::Error> {
        match client.batch_execute(&self.table.create_sql()).await {
            Ok(()) => Ok(()),
            // Two replicas racing on CREATE TABLE IF NOT EXISTS can collide in the catalog.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Per-connection preparation; only the prepared mode keeps server-side state.
    pub async fn prepare(
        &self,
        client: &Client,
    ) -> Result<Option<Statement>, tokio_postgres::Error> {
        match self.mode {
            QueryMode::Prepared => Ok(Some(
                client.prepare_typed(&self.insert_sql, PARAM_TYPES).await?,
            )),
            QueryMode::Unnamed | QueryMode::Simple => Ok(None),
        }
    }

    /// Runs one INSERT and returns the acknowledged `transaction_id`.
    pub async fn insert(
        &self,
        client: &Client,
        prepared: Option<&Statement>,
        row: Row,
    ) -> Result<i64, tokio_postgres::Error> {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
            &row.customer_id,
            &row.merchant_id,
            &row.amount,
            &self.run_id,
            &row.seq,
        ];
        match (self.mode, prepared) {
            (QueryMode::Prepared, Some(statement)) => {
                client.query_one(statement, &params).await?.try_get(0)
            }
            (QueryMode::Simple, _) => {
                let sql = self.table.insert_literal_sql(row, self.run_id);
                let messages = client.simple_query(&sql).await?;
                Ok(messages
                    .iter()
                    .find_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => {
                            r.get(0).and_then(|v| v.parse().ok())
                        }
                        _ => None,
                    })
                    .unwrap_or(0))
            }
            _ => {
                let typed: Vec<_> = params
                    .iter()
                    .zip(PARAM_TYPES)
                    .map(|(p, t)| (*p, t.clone()))
                    .collect();
                let rows = client.query_typed(&self.insert_sql, &typed).await?;
                rows.first().map_or(Ok(0), |r| r.try_get(0))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn rows_stay_in_their_ranges() {
        let mut rng = SmallRng::seed_from_u64(7);
        for seq in 0..1000 {
            let row = Row::random(&mut rng, seq);
            assert!((1..=10_000).contains(&row.customer_id));
            assert!((1..=1_000).contains(&row.merchant_id));
            assert!((1.0..=500.0).contains(&row.amount));
            assert_eq!(row.seq, seq as i64);
        }
    }

    #[test]
    fn statement_has_the_users_shape() {
        let w = Workload::new(Table::parse("public.t").unwrap(), 1, QueryMode::Prepared);
        assert!(w
            .insert_sql
            .starts_with("INSERT INTO \"public\".\"t\" (customer_id, merchant_id, amount, status"));
        assert!(w.insert_sql.ends_with("RETURNING transaction_id::bigint"));
        assert!(w
            .table
            .create_sql()
            .contains("transaction_id bigserial PRIMARY KEY"));
    }

    #[test]
    fn retention_delete_is_bounded_by_the_primary_key() {
        let table = Table::parse("public.t").unwrap();
        let sql = table.retention_delete_sql(5000, Duration::from_millis(10_500));
        assert!(sql.contains("ORDER BY transaction_id LIMIT 5000"), "{sql}");
        assert!(sql.contains("make_interval(secs => 10.500)"), "{sql}");
        assert!(sql.contains("DELETE FROM \"public\".\"t\""), "{sql}");
    }
}
