//! The table pgdrill writes to and every statement it sends there: the INSERT our users run
//! and its parameters, the CREATE TABLE, the verification query and the retention DELETE.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::Rng;
use regex::Regex;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, SimpleQueryMessage, Statement};

use crate::error::ConfigError;

/// The table pgdrill writes to when `--table` is not given: its own, by a name no team uses.
pub const DEFAULT_TABLE: &str = "pgdrill_writes";

/// How pgdrill marks a table as its own (`COMMENT ON TABLE`): only such a table is created,
/// dropped or written without `--table`.
pub const OWNER_MARK: &str = "pgdrill:";

/// A table name as SQL reads it: unquoted identifiers fold to lower case, quoted ones keep
/// theirs. `name` is the canonical spelling for messages, `quoted` the one sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    pub quoted: String,
}

impl Table {
    pub fn parse(name: &str) -> Result<Table, ConfigError> {
        let invalid = |reason: &str| ConfigError::new("--table", name, reason);
        let parts = split_identifiers(name).ok_or_else(|| {
            invalid(
                "expected table or schema.table: letters, digits and _ (folded to lower case \
                 as SQL does), or a \"Quoted\" name to keep its case (no ' or \\); at most 63 \
                 bytes each",
            )
        })?;
        if parts.len() > 2 {
            return Err(invalid("expected table or schema.table, not more parts"));
        }
        let quote = |p: &String| format!("\"{p}\"");
        let quoted = parts.iter().map(quote).collect::<Vec<_>>().join(".");
        let re = Regex::new(r"\A[a-z_][a-z0-9_]*\z").expect("a valid pattern");
        let show = |p: &String| if re.is_match(p) { p.clone() } else { quote(p) };
        let name = parts.iter().map(show).collect::<Vec<_>>().join(".");
        Ok(Table { name, quoted })
    }

    /// The table's own name as sent, without its schema. A quoted part may hold a dot, but
    /// never a quote: only `"."` parts them.
    pub(crate) fn own_quoted(&self) -> &str {
        self.quoted
            .rfind("\".\"")
            .map_or(&self.quoted, |i| &self.quoted[i + 2..])
    }

    /// Marks `run_id`, added by pgdrill to a table it shares: rows with it set are its own.
    pub(crate) fn mark_rows_sql(&self) -> String {
        format!(
            "COMMENT ON COLUMN {}.run_id IS '{OWNER_MARK} set on the rows pgdrill wrote, one \
             run per value; remove them with pgdrill cleanup'",
            self.quoted
        )
    }

    pub fn is_default(&self) -> bool {
        self.name == DEFAULT_TABLE
    }

    /// pgdrill's own table: `run_id` and `seq` on every row, marked with [`OWNER_MARK`].
    /// One transaction, so no other session ever sees it unmarked.
    pub fn create_sql(&self) -> String {
        format!(
            "BEGIN; CREATE TABLE {t} (\
               transaction_id bigserial PRIMARY KEY, \
               customer_id integer NOT NULL, \
               merchant_id integer NOT NULL, \
               amount numeric(12,2) NOT NULL, \
               status text NOT NULL, \
               created_at timestamptz NOT NULL DEFAULT now(), \
               run_id bigint NOT NULL, \
               seq bigint NOT NULL); \
             COMMENT ON TABLE {t} IS '{OWNER_MARK} rows written by pgdrill failover drills and \
             write canaries, one run per run_id; remove with pgdrill cleanup'; COMMIT",
            t = self.quoted
        )
    }

    /// The index that finds pgdrill's rows in a table it shares with other rows, so that
    /// retention and cleanup never scan the others. CONCURRENTLY: the users' writes go on.
    pub fn index_sql(&self) -> String {
        format!(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS \"{}\" ON {} (transaction_id) \
             WHERE run_id IS NOT NULL",
            self.index_relname(),
            self.quoted
        )
    }

    /// How the owner of a partitioned table builds [`Table::index_sql`]'s index, which CONCURRENTLY
    /// cannot build there: at once, or the parent's alone and then each partition's, concurrently,
    /// attached to it (valid once every partition's is). `schema` is the table's, quoted.
    pub(crate) fn partitioned_index_sql(&self, schema: &str) -> String {
        let (index, t) = (self.index_relname(), &self.quoted);
        let on = "(transaction_id) WHERE run_id IS NOT NULL";
        format!(
            "either CREATE INDEX \"{index}\" ON {t} {on}; (writes to the table wait while it \
             builds) or, with writes going on, CREATE INDEX \"{index}\" ON ONLY {t} {on}; \
             then per partition CREATE INDEX CONCURRENTLY <index> ON <partition> {on}; \
             ALTER INDEX {schema}.\"{index}\" ATTACH PARTITION <index>; (a sub-partitioned \
             one likewise, ON ONLY first)"
        )
    }

    /// `"s"."t"` → `t_pgdrill_rows` (an index lives in its table's schema), within 63 bytes,
    /// unquoted as `pg_class.relname` holds it.
    pub(crate) fn index_relname(&self) -> String {
        let table = self.own_quoted().trim_matches('"');
        let base = &table[..table.floor_char_boundary(63 - "_pgdrill_rows".len())];
        format!("{base}_pgdrill_rows")
    }

    /// Removes what a failed [`Table::index_sql`] leaves behind (an invalid index), in the
    /// table's `schema` (quoted): by the search path it could be another schema's index.
    pub(crate) fn index_drop_sql(&self, schema: &str) -> String {
        let index = self.index_relname();
        format!("DROP INDEX CONCURRENTLY IF EXISTS {schema}.\"{index}\"")
    }

    /// The INSERT of `values`: parameters `$1..$5` ([`PARAM_TYPES`]), or inlined for the simple
    /// protocol. The id comes back as bigint whatever integer type the users' table has (serial).
    fn insert_sql(&self, values: impl std::fmt::Display) -> String {
        format!(
            "INSERT INTO {} (customer_id, merchant_id, amount, status, run_id, seq) \
             VALUES ({values}) RETURNING transaction_id::bigint",
            self.quoted
        )
    }

    /// The simple protocol's [`Table::insert_sql`] without pgdrill's columns, which a table it did
    /// not create may not have yet: tried before `--alter-table` adds them.
    pub(crate) fn users_insert_sql(&self, row: Row) -> String {
        format!(
            "INSERT INTO {} (customer_id, merchant_id, amount, status) \
             VALUES ({}, {}, {:.2}, 'completed')",
            self.quoted, row.customer_id, row.merchant_id, row.amount
        )
    }

    /// The table as a read-back or a DELETE names it: with `ONLY`, so that an inheritance
    /// child added since the table was checked (its rows are not pgdrill's) is never scanned
    /// or changed; a partitioned table as it is, its rows being in its partitions.
    fn own_rows(&self, partitioned: bool) -> String {
        match partitioned {
            true => self.quoted.clone(),
            false => format!("ONLY {}", self.quoted),
        }
    }

    /// `seq` of the rows of run `$2` from id `$1` up (an index led by `transaction_id` bounds
    /// the scan): those of the unknown-outcome writes `$3` (an int8[] of `seq`) if `asked`,
    /// else those below `seq` `$3`.
    pub(crate) fn seqs_sql(&self, partitioned: bool, asked: bool) -> String {
        let which = if asked { "= ANY($3)" } else { "< $3" };
        format!(
            "SELECT seq FROM {} WHERE transaction_id >= $1 AND run_id = $2 AND seq {which}",
            self.own_rows(partitioned)
        )
    }

    /// One retention batch from the start of pgdrill's rows: every run's oldest `batch_size` by
    /// primary key, deleted if `expiry` says so. Values inlined: no server-side state (PgBouncer).
    pub(crate) fn retention_delete_sql(
        &self,
        partitioned: bool,
        batch_size: u32,
        expiry: &Expiry,
    ) -> String {
        let (run_id, others) = (expiry.run_id, expiry.others.as_secs_f64());
        let expired = format!(
            "((d.run_id = {run_id} AND {}) OR (d.run_id <> {run_id} \
             AND d.created_at < now() - make_interval(secs => {others:.3})))",
            expiry.own_expired()
        );
        self.delete_batch_sql(partitioned, batch_size, "run_id IS NOT NULL", "", &expired)
    }

    /// One retention batch of this run's rows alone, from id `from` on, up to the first one not yet
    /// expired (of its next `batch_size`): a sweep from the start of pgdrill's rows ends at other
    /// runs' rows that are not, and this run's may be behind them. Returns the ids deleted: all of
    /// this run's rows below the highest are gone, the next batch starts above it.
    pub(crate) fn own_retention_delete_sql(
        &self,
        partitioned: bool,
        batch_size: u32,
        expiry: &Expiry,
        from: i64,
    ) -> String {
        let (t, run_id) = (self.own_rows(partitioned), expiry.run_id);
        let rows = format!("run_id = {run_id}");
        let mine = format!("{rows} AND transaction_id >= {from}");
        // The first that is not expired, among the next batch only: a scan that stops there
        // (or at the batch's end), not at the end of the table.
        let first_kept = format!(
            "(SELECT transaction_id FROM (SELECT transaction_id, created_at FROM {t} \
               WHERE {mine} ORDER BY transaction_id LIMIT {batch_size}) AS b \
             WHERE created_at >= now() - make_interval(secs => {:.3}) \
             ORDER BY transaction_id LIMIT 1)",
            expiry.window.as_secs_f64()
        );
        let end = expiry.floor.unwrap_or(i64::MAX);
        let within = format!(
            " AND transaction_id >= {from} AND transaction_id < LEAST({first_kept}, {end})"
        );
        let expired = expiry.own_expired();
        let sql = self.delete_batch_sql(partitioned, batch_size, &rows, &within, &expired);
        sql + " RETURNING d.transaction_id"
    }

    /// One cleanup batch: pgdrill's rows of run `run_id`, or of every run.
    pub(crate) fn cleanup_delete_sql(
        &self,
        partitioned: bool,
        batch_size: u32,
        run_id: Option<i64>,
    ) -> String {
        let rows = run_id.map_or_else(|| "run_id IS NOT NULL".into(), |i| format!("run_id = {i}"));
        self.delete_batch_sql(partitioned, batch_size, &rows, "", "true")
    }

    /// Every DELETE pgdrill sends: a batch of `rows` (its own: `run_id` is set; `within`, empty or
    /// with a leading space, narrows it), in id order through the primary key (its own table) or
    /// the partial index ([`Table::index_sql`]) on a shared one, deleted where `condition` holds.
    ///
    /// The batch is an array, not a join: statistics gathered before pgdrill's rows existed say
    /// `run_id` is all NULL, and the planner then joins a batch it thinks is one row in a nested
    /// loop that reads the whole batch again for each row (seconds per batch, past
    /// `statement_timeout`); `= ANY(ARRAY(…))` runs it once and looks its ids up.
    fn delete_batch_sql(
        &self,
        partitioned: bool,
        batch_size: u32,
        rows: &str,
        within: &str,
        condition: &str,
    ) -> String {
        format!(
            "DELETE FROM {t} AS d WHERE d.transaction_id = ANY(ARRAY(\
               SELECT transaction_id FROM {t} WHERE {rows}{within} \
               ORDER BY transaction_id LIMIT {batch_size})) \
             AND d.{rows} AND {condition}",
            t = self.own_rows(partitioned),
        )
    }
}

/// Which of pgdrill's rows retention deletes: this run's (`run_id`) older than `window` and
/// below `floor` (what its verification may still read back), other runs' older than
/// `others` (another pgdrill's verification may still read those back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expiry {
    pub run_id: i64,
    pub window: Duration,
    pub floor: Option<i64>,
    pub others: Duration,
}

impl Expiry {
    /// Whether a row of this run has expired.
    fn own_expired(&self) -> String {
        let secs = self.window.as_secs_f64();
        let below = self.floor.map(|f| format!(" AND d.transaction_id < {f}"));
        format!(
            "d.created_at < now() - make_interval(secs => {secs:.3}){}",
            below.unwrap_or_default()
        )
    }
}

/// `a.b`, `"A b".c`: the identifiers, unquoted ones folded to lower case; `None` if not
/// a valid name. No backslash in a quoted one: it could end the literal that names the table
/// on a server with standard_conforming_strings off.
fn split_identifiers(name: &str) -> Option<Vec<String>> {
    const PART: &str = r#"(?:"[^"\\'\x00]+"|[A-Za-z_][A-Za-z0-9_]*)"#;
    let whole = Regex::new(&format!(r"\A{PART}(?:\.{PART})*\z")).expect("a valid pattern");
    if !whole.is_match(name) {
        return None;
    }
    let part = Regex::new(PART).expect("a valid pattern");
    let parts: Vec<String> = part
        .find_iter(name)
        .map(|m| match m.as_str().strip_prefix('"') {
            Some(quoted) => quoted.trim_end_matches('"').to_string(),
            None => m.as_str().to_ascii_lowercase(),
        })
        .collect();
    parts.iter().all(|p| p.len() <= 63).then_some(parts)
}

/// How the INSERT travels: the statement shape is the same, the protocol differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryMode {
    /// Named statement prepared once per connection: one round trip, least server CPU.
    Prepared,
    /// Unnamed statement each time (parse+bind+execute in one round trip): no server-side
    /// state, safe behind PgBouncer in transaction mode.
    Unnamed,
    /// Simple query protocol with literal values: works everywhere, parses every time.
    Simple,
}

/// The INSERT's parameters and their types; `amount` is sent as float8 and assigned to numeric.
const PARAMS: &str = "$1, $2, $3, 'completed', $4, $5";
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
    const CUSTOMERS: i32 = 10_000;
    const MERCHANTS: i32 = 1_000;
    const CENTS: (u32, u32) = (100, 50_000);
    /// What [`Row::random`] draws, as messages and the docs say it.
    pub const RANGES: &str = "customer_id 1-10000, merchant_id 1-1000, amount 1.00-500.00";

    pub fn random(rng: &mut SmallRng, seq: u64) -> Row {
        Row {
            customer_id: rng.random_range(1..=Row::CUSTOMERS),
            merchant_id: rng.random_range(1..=Row::MERCHANTS),
            amount: f64::from(rng.random_range(Row::CENTS.0..=Row::CENTS.1)) / 100.0,
            seq: seq as i64,
        }
    }

    /// The lowest and the highest row [`Row::random`] draws: a users' table that takes
    /// both takes the load (a foreign key to 500 customers, a check on the amount, refuse
    /// the highest or the lowest, found before any write counts).
    pub fn extremes() -> [Row; 2] {
        let lowest = (1, 1, Row::CENTS.0, -1);
        let highest = (Row::CUSTOMERS, Row::MERCHANTS, Row::CENTS.1, -2);
        [lowest, highest].map(|(customer_id, merchant_id, cents, seq)| Row {
            customer_id,
            merchant_id,
            amount: f64::from(cents) / 100.0,
            seq,
        })
    }
}

#[derive(Debug)]
pub struct Workload {
    /// As given (`--table`): what the check looks up.
    pub table: Table,
    pub run_id: i64,
    pub mode: QueryMode,
    /// The table the check found, named by its schema, with its INSERT and whether it is
    /// partitioned ([`Table::own_rows`]): every statement after the check names it so, and a
    /// table of the same name that a session's `search_path` finds first (made later, or a
    /// pooler's other client's `SET`) is never written.
    pinned: std::sync::OnceLock<(Table, String, bool)>,
    /// The id the trial INSERT drew: every row of this run has a later one, so reading
    /// back never starts below it (on a shared table, from the start of the users' rows);
    /// unset before the trial INSERT.
    pub(crate) id_floor: std::sync::OnceLock<i64>,
}

impl Workload {
    pub fn new(table: Table, run_id: i64, mode: QueryMode) -> Workload {
        Workload {
            table,
            run_id,
            mode,
            pinned: std::sync::OnceLock::new(),
            id_floor: std::sync::OnceLock::new(),
        }
    }

    /// From now on names the table by `schema` (`quote_ident`'s), where the check found it.
    pub(crate) fn pin(&self, schema: &str, partitioned: bool) {
        let own = self.table.own_quoted();
        // Quoted like the parts `parse` gives ("s"."t"), which the index's name is read from.
        let schema = match schema.starts_with('"') {
            true => schema.to_string(),
            false => format!("\"{schema}\""),
        };
        let table = Table {
            name: self.table.name.clone(),
            quoted: format!("{schema}.{own}"),
        };
        let insert = table.insert_sql(PARAMS);
        let _ = self.pinned.get_or_init(|| (table, insert, partitioned));
    }

    /// The table as every statement names it: by its schema once checked.
    pub fn target(&self) -> &Table {
        self.pinned.get().map_or(&self.table, |(table, ..)| table)
    }

    fn insert_sql(&self) -> std::borrow::Cow<'_, str> {
        match self.pinned.get() {
            Some((_, insert, _)) => insert.into(),
            None => self.table.insert_sql(PARAMS).into(),
        }
    }

    /// Unchecked, the table is read as it always was: with any children it has (refused
    /// by the check), rather than a partitioned table's rows not at all.
    pub(crate) fn partitioned(&self) -> bool {
        self.pinned.get().is_none_or(|pinned| pinned.2)
    }

    /// Per-connection preparation; only the prepared mode keeps server-side state.
    pub async fn prepare(
        &self,
        client: &Client,
    ) -> Result<Option<Statement>, tokio_postgres::Error> {
        if self.mode != QueryMode::Prepared {
            return Ok(None);
        }
        client
            .prepare_typed(&self.insert_sql(), PARAM_TYPES)
            .await
            .map(Some)
    }

    /// Runs one INSERT and returns the acknowledged `transaction_id`; `None` when the server
    /// returned no row (a trigger or rule on the table suppressed it): no row was written.
    pub async fn insert(
        &self,
        client: &Client,
        prepared: Option<&Statement>,
        row: Row,
    ) -> Result<Option<i64>, tokio_postgres::Error> {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
            &row.customer_id,
            &row.merchant_id,
            &row.amount,
            &self.run_id,
            &row.seq,
        ];
        match (self.mode, prepared) {
            (QueryMode::Prepared, Some(statement)) => {
                let row = client.query_opt(statement, &params).await?;
                row.map(|r| r.try_get(0)).transpose()
            }
            (QueryMode::Simple, _) => {
                let sql = self.target().insert_sql(format_args!(
                    "{}, {}, {:.2}, 'completed', {}, {}",
                    row.customer_id, row.merchant_id, row.amount, self.run_id, row.seq
                ));
                let messages = client.simple_query(&sql).await?;
                let id = messages.iter().find_map(|m| match m {
                    SimpleQueryMessage::Row(r) => r.get(0)?.parse().ok(),
                    _ => None,
                });
                Ok(id)
            }
            _ => {
                let typed: Vec<_> = params
                    .iter()
                    .zip(PARAM_TYPES)
                    .map(|(p, t)| (*p, t.clone()))
                    .collect();
                let rows = client.query_typed(&self.insert_sql(), &typed).await?;
                rows.first().map(|r| r.try_get(0)).transpose()
            }
        }
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
