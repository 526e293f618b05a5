//! The table pgdrill writes to: its own (created, marked with a comment), or one it did not create,
//! used only when named with `--table` and changed only with `--alter-table`. Checked once, at the
//! first connection to a writable server; what no retry can fix stops the run (exit 2) with a
//! message that says what to change, instead of failing every write. Simple query protocol, values
//! read as text: works through PgBouncer, cannot panic on a type.

use std::sync::atomic::Ordering;

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::db::table::{Table, Workload, OWNER_MARK};

mod alter;
mod effects;
mod hazards;
mod trial;
use trial::{fails_the_same_again, trial_insert, Trial};
mod relation;
pub(crate) use alter::index_alone;
pub use alter::{Cancel, Change};
use effects::fired_by;
pub(crate) use effects::{guarded_delete, LOCK_WAIT};
pub(crate) use relation::{relation, Relation};

/// The columns pgdrill fills from the users' statement; the table must have them.
const USER_COLUMNS: &[&str] = &["customer_id", "merchant_id", "amount", "status"];
/// The columns pgdrill adds to find its rows again after a failover.
const OUR_COLUMNS: &[&str] = &["run_id", "seq"];
/// Types `transaction_id` may have: read back as `bigint`, compared with `bigint`.
const ID_TYPES: &[&str] = &["int2", "int4", "int8"];

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The table cannot take our INSERT and retrying will not change that: the run stops
    /// (exit 2) with this message, which names what to change.
    #[error("{0}")]
    Unusable(String),
    /// The check itself failed (connection lost, timeout): the next connection checks again.
    #[error("checking the table: {}", crate::db::error_text(.0))]
    Query(#[from] tokio_postgres::Error),
}

/// One column as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    name: String,
    /// `format_type()`, e.g. `numeric(12,2)`, for messages.
    declared: String,
    /// `pg_type.typname` of the base type, e.g. `int4`.
    base: String,
    not_null: bool,
    /// A default, an identity or a generated expression (stored as a default, so this also
    /// works before PostgreSQL 12's `attgenerated`) fills it when we do not.
    filled: bool,
}

/// What pgdrill may do to the table, from the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TablePolicy {
    /// Create pgdrill's own table when it is missing (off with `--no-create-table`).
    pub create: bool,
    /// `--alter-table`: add pgdrill's columns and index to a table it did not create.
    pub alter: bool,
    /// `--allow-table-triggers`: write to a table it did not create that fires triggers or rules.
    pub triggers: bool,
    /// The table was named with `--table`; a table pgdrill did not create is used only then.
    pub named: bool,
    /// Retention deletes pgdrill's rows: on a shared table they must be found by index.
    pub deletes: bool,
    /// The ids the run will take from a shared table's sequence; `None` at an unlimited rate.
    pub ids_needed: Option<IdsNeeded>,
}

/// How many ids a run takes: in all (`--rate` × `--duration`), or a day (a canary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdsNeeded {
    Run(u64),
    PerDay(u64),
}

impl TablePolicy {
    /// What pgdrill will do to the table, said before it connects.
    pub fn describe(&self) -> String {
        let mut said = match (self.named, self.create) {
            (false, true) => "pgdrill's own table, created if missing".to_string(),
            (false, false) => "pgdrill's own table, which must exist (--no-create-table)".into(),
            (true, true) => "created as pgdrill's own if missing".into(),
            (true, false) => "must exist (--no-create-table)".into(),
        };
        if self.named {
            said.push_str(if self.alter {
                "; a table pgdrill did not create gets the run_id and seq columns, \
                 a comment on run_id marking its rows, and the index it lacks \
                 (--alter-table)"
            } else {
                "; a table pgdrill did not create is only written"
            });
            if self.triggers {
                said.push_str(if self.deletes {
                    ", firing its triggers, rules and cascading foreign keys, its \
                     foreign keys holding the rows they reference (--allow-table-triggers)"
                } else {
                    ", firing its triggers and rules, its foreign keys holding the rows \
                     they reference (--allow-table-triggers)"
                });
            }
        }
        said
    }
}

/// Makes sure the table exists (pgdrill's own created if missing and allowed) and takes the INSERT.
pub async fn ensure(
    client: &Client,
    workload: &Workload,
    policy: TablePolicy,
    change: Change<'_>,
) -> Result<(), TableError> {
    let table = &workload.table;
    // A schema pgdrill's user may not use: to_regclass itself refuses (42501).
    let looked_up = relation(client, table).await.map_err(|e| match e.code() {
        Some(&SqlState::INSUFFICIENT_PRIVILEGE) => TableError::Unusable(format!(
            "pgdrill's user may not look up table {}: {} (USAGE on its schema: GRANT \
                 USAGE ON SCHEMA … TO <pgdrill's user>;)",
            table.name,
            crate::db::db_message(&e).unwrap_or_default()
        )),
        _ => TableError::Query(e),
    });
    let relation = match looked_up? {
        Some(relation) => relation,
        None if policy.create => create(client, table).await?,
        None => {
            return Err(TableError::Unusable(format!(
                "table {} does not exist and --no-create-table is set; create it with: {};",
                table.name,
                table.create_sql()
            )))
        }
    };
    if let Some(problem) = relation_problem(table, &relation, policy) {
        return Err(TableError::Unusable(problem));
    }
    // Named by its schema from here on, the rest of the check included (see `Workload::pinned`):
    // what is checked must be what is written.
    workload.pin(&relation.schema, relation.kind == "p");
    let table = workload.target();
    let fired = fired_by(client, &table.quoted, true, policy.deletes).await?;
    effects::warn_of_change_capture(client, table).await;
    if !fired.is_empty() && !policy.triggers {
        return Err(TableError::Unusable(format!(
            "table {} has {} that pgdrill's writes would fire; they may change, send or hold \
             data beyond pgdrill's rows (another table, an outbox, a subscriber, a referenced \
             row). pgdrill writes to such a table only with --allow-table-triggers{}",
            table.name,
            fired.join(", "),
            match relation.ours {
                true => "",
                false => " (or leave --table unset for pgdrill's own table)",
            }
        )));
    }
    if !fired.is_empty() {
        // Allowed, but said: the flag may have been given for one audit trigger, and the
        // list can hold more (a rule, retention's deletes cascading into another table).
        tracing::warn!(table = %table.name, fired = %fired.join(", "), "--allow-table-triggers: pgdrill's writes will fire these; they may change data that is not pgdrill's");
    }
    if !relation.ours {
        prepare_shared(client, workload, &relation, policy, change).await?;
        // A partitioned table's own statistics are never gathered by autovacuum; its
        // partitions' are, and they are what the read-back is planned by.
        if relation.kind != "p" {
            effects::warn_of_missing_statistics(client, table).await;
        }
    }
    trial_insert(client, workload, Trial::Full).await?;
    tracing::info!(
        table = %table.name,
        schema = %relation.schema,
        owner = if relation.ours { "pgdrill" } else { "not pgdrill (named with --table)" },
        run_id = workload.run_id,
        "{}",
        match fired.is_empty() {
            true => "table ready: pgdrill inserts rows with run_id set and changes no other row",
            false => "table ready: pgdrill inserts rows with run_id set; what they fire \
                      (--allow-table-triggers, above) may change others",
        }
    );
    Ok(())
}

/// Creates pgdrill's own table; another replica creating it at the same moment is fine.
async fn create(client: &Client, table: &Table) -> Result<Relation, TableError> {
    let created = client.batch_execute(&table.create_sql()).await;
    let made = created.is_ok();
    if let Err(err) = created {
        let _ = client.batch_execute("ROLLBACK").await;
        let raced = err
            .code()
            .is_some_and(|c| *c == SqlState::DUPLICATE_TABLE || *c == SqlState::UNIQUE_VIOLATION);
        if !raced {
            let read_only = err.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION);
            return Err(match super::db_message(&err) {
                Some(m) if read_only => TableError::Unusable(format!(
                    "cannot create pgdrill's table {}: {m}; the server takes no writes \
                     (a standby, or default_transaction_read_only is on for this role or \
                     database): point --dsn at the primary",
                    table.name
                )),
                Some(m) if err.code() == Some(&SqlState::INVALID_SCHEMA_NAME) => {
                    TableError::Unusable(format!(
                        "cannot create pgdrill's table {}: {m}; name a schema that exists in \
                         --table, or create it",
                        table.name
                    ))
                }
                Some(m) if fails_the_same_again(&err) => TableError::Unusable(format!(
                    "cannot create pgdrill's table {}: {m}; grant CREATE on the \
                     schema (docs/configuration.md#privileges) or create it as its owner: {};",
                    table.name,
                    table.create_sql()
                )),
                _ => TableError::Query(err),
            });
        }
    }
    let Some(found) = relation(client, table).await? else {
        let why = format!("table {} vanished right after it was created", table.name);
        return Err(TableError::Unusable(why));
    };
    if made {
        // Where a default search_path put it (managed services: often the DSN database's "public").
        tracing::info!(table = %table.name, schema = %found.schema, "created pgdrill's own table");
    }
    Ok(found)
}

/// Tables whose shape defeats the measurement, and tables that are not pgdrill's to use.
fn relation_problem(table: &Table, r: &Relation, policy: TablePolicy) -> Option<String> {
    let name = &table.name;
    let what = match r.kind.as_str() {
        "r" | "p" => None,
        "v" => Some("a view"),
        "m" => Some("a materialized view"),
        "f" => Some("a foreign table"),
        _ => Some("not a table"),
    };
    if let Some(what) = what {
        return Some(format!(
            "{name} is {what}; pgdrill needs a table whose rows it can read back after a \
             failover. Name a table with --table, or leave --table unset for pgdrill's own \
             table ({})",
            crate::db::table::DEFAULT_TABLE
        ));
    }
    if r.persistence == "u" {
        return Some(format!(
            "{name} is UNLOGGED: a crash or failover empties it, and pgdrill would report \
             every row as a lost write. Use a logged table (ALTER TABLE {} SET LOGGED; as \
             its owner: it rewrites the table, writing all of it to the WAL, under an ACCESS \
             EXCLUSIVE lock) or leave --table unset for pgdrill's own",
            table.quoted
        ));
    }
    let shape = r
        .partitions_problem(table)
        .or_else(|| r.children_problem(table));
    if shape.is_some() {
        return shape;
    }
    if r.persistence == "t" {
        return Some(format!(
            "{name} is a temporary table; pgdrill needs a table"
        ));
    }
    if !r.ours && !policy.named {
        return Some(format!(
            "a table {name} exists that pgdrill did not create (it has no '{OWNER_MARK}' \
             comment), under the name of pgdrill's own table; pgdrill writes to a table it did \
             not create only when it is named with --table. Give pgdrill another table with \
             --table (a new name: pgdrill creates it as its own)"
        ));
    }
    None
}

/// A table pgdrill did not create: its shape must take the INSERT, pgdrill's columns (and,
/// for retention, its index) must be there; added only with `--alter-table`.
async fn prepare_shared(
    client: &Client,
    workload: &Workload,
    relation: &Relation,
    policy: TablePolicy,
    change: Change<'_>,
) -> Result<(), TableError> {
    let table = workload.target();
    let columns = columns(client, &table.quoted).await?;
    // Whose run_id and seq are first: a type advice would be to alter the owners' column.
    let problem = hazards::owners_columns(table, &columns, relation.rows_marked)
        .or_else(|| shape_problem(&table.quoted, &columns));
    if let Some(problem) = problem {
        return Err(TableError::Unusable(problem));
    }
    hazards::hazards(client, table, &columns, policy).await?;
    let missing: Vec<&str> = OUR_COLUMNS
        .iter()
        .copied()
        .filter(|c| !columns.iter().any(|col| col.name == *c))
        .collect();
    let stamped = |c: &Column| c.filled && matches!(c.base.as_str(), "timestamptz" | "timestamp");
    if policy.deletes && !columns.iter().any(|c| c.name == "created_at" && stamped(c)) {
        return Err(TableError::Unusable(format!(
            "--retention deletes pgdrill's rows by their created_at, and {} has no \
             created_at timestamptz with a default; as the table's owner: ALTER TABLE {} \
             ADD COLUMN created_at timestamptz DEFAULT now(); (or run without --retention \
             and remove pgdrill's rows with pgdrill cleanup)",
            table.name, table.quoted
        )));
    }
    // A run_id present here is marked as pgdrill's (`owners_columns`): its rows may be deleted.
    let adds_run_id = missing.contains(&"run_id");
    let (mut statements, mut needs) = (Vec::new(), Vec::new());
    if !missing.is_empty() {
        let mut add = add_columns_sql(&table.quoted, &missing);
        if adds_run_id {
            add = format!("{add}; {}", table.mark_rows_sql());
        }
        statements.push(add);
        needs.push(format!(
            "column(s) {} to find its rows again after a failover",
            missing.join(", ")
        ));
    }
    // The primary key would do for finding pgdrill's rows, but it leads through the users'
    // rows written between them: read back after a failover, those would be read too.
    let index = (!relation.indexed).then_some(if policy.deletes {
        "an index on its rows, so that --retention never scans the others"
    } else {
        "an index on its rows, so that reading them back after a failover never reads the others"
    });
    if index.is_some() && !relation.index_name_holder.is_empty() {
        return Err(TableError::Unusable(format!(
            "pgdrill would build its index {} on {}, but that name is taken in the table's \
             schema by {}; nothing was changed. Rename that one, or leave --table unset for \
             pgdrill's own table",
            table.index_relname(),
            table.name,
            relation.index_name_holder
        )));
    }
    if let Some(need) = index.filter(|_| relation.kind == "p") {
        // Adding the columns first would leave them there for nothing.
        let columns = match statements.first() {
            Some(add) => format!("{add}; then "),
            None => String::new(),
        };
        return Err(TableError::Unusable(format!(
            "table {} is partitioned and lacks {need}; CREATE INDEX CONCURRENTLY cannot build \
             one there, so pgdrill changed nothing. As the table's owner: {columns}{}. Then \
             start pgdrill again",
            table.name,
            table.partitioned_index_sql(&relation.schema)
        )));
    }
    if let Some(need) = index {
        statements.push(table.index_sql());
        needs.push(need.into());
    }
    if statements.is_empty() {
        return Ok(());
    }
    let mut run = statements.join("; ") + ";";
    if index.is_some() {
        run.push_str(&index_alone(table, &relation.schema));
    }
    if policy.alter && !relation.owned {
        // Said before the trial INSERTs: they would take ids from the table's sequences.
        return Err(TableError::Unusable(format!(
            "--alter-table: pgdrill's user does not own table {} and cannot add what pgdrill \
             needs ({}); nothing was changed. Run as the table's owner: {run}",
            table.name,
            needs.join("; "),
        )));
    }
    // Refused whatever a trial would find: none is made (it would take the table's ids).
    if !policy.alter {
        return Err(TableError::Unusable(format!(
            "table {} was not created by pgdrill and lacks what pgdrill needs ({}); pgdrill \
             changes a table it did not create only with --alter-table. Run as the table's \
             owner: {run} (or leave --table unset for pgdrill's own table)",
            table.name,
            needs.join("; "),
        )));
    }
    // What adding pgdrill's columns cannot fix (a CHECK, a NOT NULL column, a privilege) is
    // said before any change, not after it, with the table left altered.
    trial_insert(client, workload, Trial::UsersColumns).await?;
    tracing::warn!(table = %table.name, statements = %statements.join("; "), "--alter-table: changing a table pgdrill did not create");
    change.started.store(true, Ordering::Relaxed);
    let alters = statements.len() - usize::from(index.is_some());
    for statement in &statements[..alters] {
        alter::alter(client, &table.name, statement, change.by).await?;
    }
    if index.is_some() {
        alter::build_index(client, table, &relation.schema, change).await?;
    }
    Ok(())
}

pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

async fn columns(client: &Client, table: &str) -> Result<Vec<Column>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), \
                coalesce(bt.typname, t.typname), a.attnotnull::text, \
                (a.atthasdef OR a.attidentity <> '')::text \
         FROM pg_attribute a \
         JOIN pg_type t ON t.oid = a.atttypid \
         LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype \
         WHERE a.attrelid = to_regclass({}) AND a.attnum > 0 AND NOT a.attisdropped \
         ORDER BY a.attnum",
        quote_literal(table)
    );
    let rows = super::text_rows(client, &sql).await?;
    let columns = rows.iter().map(|r| {
        let text = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
        Column {
            name: text(0),
            declared: text(1),
            base: text(2),
            not_null: text(3) == "true",
            filled: text(4) == "true",
        }
    });
    Ok(columns.collect())
}

/// What no `ADD COLUMN` can fix: the users' columns, the id, our columns' types, and
/// columns we would leave NULL that may not be.
fn shape_problem(table: &str, columns: &[Column]) -> Option<String> {
    let find = |name: &str| columns.iter().find(|c| c.name == name);
    let absent: Vec<&str> = std::iter::once("transaction_id")
        .chain(USER_COLUMNS.iter().copied())
        .filter(|c| find(c).is_none())
        .collect();
    if !absent.is_empty() {
        return Some(format!(
            "table {table} has no column(s) {}; pgdrill runs INSERT INTO {table} (customer_id, \
             merchant_id, amount, status, run_id, seq) … RETURNING transaction_id. Point \
             --table at a table of that shape, or leave --table unset for pgdrill's own",
            absent.join(", ")
        ));
    }
    if let Some(id) = find("transaction_id") {
        if !ID_TYPES.contains(&id.base.as_str()) {
            return Some(format!(
                "{table}.transaction_id is {}; pgdrill needs an integer id (smallint, integer \
                 or bigint, e.g. serial or bigserial): it finds its rows again by id range",
                id.declared
            ));
        }
        if !id.filled {
            return Some(format!(
                "{table}.transaction_id has no default; pgdrill does not choose ids. Give it \
                 one: ALTER TABLE {table} ALTER COLUMN transaction_id ADD GENERATED BY DEFAULT \
                 AS IDENTITY;"
            ));
        }
    }
    for ours in OUR_COLUMNS {
        if let Some(c) = find(ours).filter(|c| c.base != "int8") {
            return Some(format!(
                "{table}.{ours} is {}; pgdrill writes 64-bit values there. Run: ALTER \
                 TABLE {table} ALTER COLUMN {ours} TYPE bigint; (it rewrites the table under \
                 an ACCESS EXCLUSIVE lock)",
                c.declared
            ));
        }
    }
    let unfilled: Vec<&str> = columns
        .iter()
        .filter(|c| c.not_null && !c.filled)
        .map(|c| c.name.as_str())
        .filter(|n| *n != "transaction_id" && !USER_COLUMNS.contains(n) && !OUR_COLUMNS.contains(n))
        .collect();
    if !unfilled.is_empty() {
        return Some(format!(
            "table {table} has NOT NULL column(s) without a default that pgdrill does not \
             write: {}; give them defaults (ALTER TABLE {table} ALTER COLUMN … SET DEFAULT …) \
             or use another --table",
            unfilled.join(", ")
        ));
    }
    None
}

/// Plain `ADD COLUMN`, never `IF NOT EXISTS`: a `run_id` someone added since pgdrill looked
/// would be skipped, yet marked as pgdrill's by the `COMMENT` that follows, and retention
/// and cleanup would then delete its rows. Added since, it fails the change instead.
fn add_columns_sql(table: &str, missing: &[&str]) -> String {
    let adds: Vec<String> = missing
        .iter()
        .map(|c| format!("ADD COLUMN {c} bigint"))
        .collect();
    format!("ALTER TABLE {table} {}", adds.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_startup_line_says_what_the_flags_allow() {
        let policy = |named, create, alter, triggers| TablePolicy {
            create,
            alter,
            triggers,
            named,
            deletes: false,
            ids_needed: None,
        };
        let own = policy(false, false, false, false).describe();
        assert_eq!(
            own,
            "pgdrill's own table, which must exist (--no-create-table)"
        );
        let said = policy(true, true, true, true).describe();
        assert!(
            said.starts_with("created as pgdrill's own if missing"),
            "{said}"
        );
        assert!(said.contains("a comment on run_id"), "{said}");
        assert!(said.contains("(--alter-table)"), "{said}");
        assert!(
            said.ends_with(
                "firing its triggers and rules, its foreign keys holding the rows they \
                 reference (--allow-table-triggers)"
            ),
            "{said}"
        );
        let said = policy(true, false, false, false).describe();
        assert!(
            said.starts_with("must exist") && said.ends_with("is only written"),
            "{said}"
        );
    }

    fn col(name: &str, base: &str, not_null: bool, filled: bool) -> Column {
        Column {
            name: name.into(),
            declared: base.into(),
            base: base.into(),
            not_null,
            filled,
        }
    }

    fn users_table() -> Vec<Column> {
        vec![
            col("transaction_id", "int8", true, true),
            col("customer_id", "int4", false, false),
            col("merchant_id", "int4", false, false),
            col("amount", "numeric", false, false),
            col("status", "text", false, false),
            col("created_at", "timestamptz", false, true),
        ]
    }

    #[test]
    fn the_users_table_is_fine_as_it_is() {
        assert_eq!(shape_problem("t", &users_table()), None);
        let mut serial = users_table();
        serial[0] = col("transaction_id", "int4", true, true);
        assert_eq!(shape_problem("t", &serial), None);
    }

    #[test]
    fn what_cannot_be_added_is_named() {
        let mut t = users_table();
        t.retain(|c| c.name != "status" && c.name != "amount");
        let p = shape_problem("\"public\".\"t\"", &t).unwrap();
        assert!(p.contains("amount, status"), "{p}");

        let mut t = users_table();
        t[0] = col("transaction_id", "uuid", true, true);
        assert!(shape_problem("t", &t).unwrap().contains("integer id"));

        let mut t = users_table();
        t[0].filled = false;
        assert!(shape_problem("t", &t).unwrap().contains("IDENTITY"));

        let mut t = users_table();
        t.push(col("seq", "int4", false, false));
        let p = shape_problem("t", &t).unwrap();
        assert!(p.contains("ALTER COLUMN seq TYPE bigint"), "{p}");

        let mut t = users_table();
        t.push(col("region", "text", true, false));
        t.push(col("note", "text", true, true));
        let p = shape_problem("t", &t).unwrap();
        assert!(p.contains("region") && !p.contains("note"), "{p}");
    }

    #[test]
    fn the_statement_to_run_is_exact() {
        assert_eq!(
            add_columns_sql("\"public\".\"tx\"", &["run_id", "seq"]),
            "ALTER TABLE \"public\".\"tx\" ADD COLUMN run_id bigint, ADD COLUMN seq bigint"
        );
        assert_eq!(quote_literal("\"a'b\""), "'\"a''b\"'");
    }
}
