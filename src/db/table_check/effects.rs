//! What pgdrill's INSERTs and DELETEs would set off on a table: triggers, rules, and foreign
//! keys whose `ON DELETE` action changes other tables' rows. Any of them may change data
//! that is not pgdrill's, so a run (unless `--allow-table-triggers`) and `cleanup` refuse,
//! and retention looks again before every sweep: they may be added at any time.

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::{quote_literal, relation};
use crate::db::table::Table;
use crate::db::Deleted;

/// How long a guarded batch waits for its lock behind another session's (`lock_timeout`),
/// and how long its transaction may sit idle between its statements on the server.
pub(crate) const LOCK_WAIT: &str = "5s";
const IDLE_IN_BATCH: &str = "10s";

/// One batch of pgdrill's DELETE (`sql`, given whether it is partitioned), in a transaction that
/// locks the table first: adding a trigger, a rule or a foreign key takes a lock that conflicts
/// with ROW EXCLUSIVE (the DELETE's own), so none slips in between the look ([`delete_hazard`]) and
/// the DELETE. `Err(why)`: held, nothing deleted. Retention and `pgdrill cleanup` delete only so.
pub(crate) async fn guarded_delete(
    client: &Client,
    table: &Table,
    sql: impl Fn(bool) -> String,
    fired_allowed: bool,
) -> Result<Result<Deleted, String>, tokio_postgres::Error> {
    // Bounded on the server's side too: the lock is not waited for long behind another
    // session's, and a client that vanishes mid-batch does not leave it held.
    let lock = format!(
        "BEGIN; SET LOCAL lock_timeout = '{LOCK_WAIT}'; \
         SET LOCAL idle_in_transaction_session_timeout = '{IDLE_IN_BATCH}'; \
         LOCK TABLE {} IN ROW EXCLUSIVE MODE",
        table.quoted
    );
    let result = match client.batch_execute(&lock).await {
        Ok(()) => match delete_hazard(client, table, fired_allowed).await {
            Ok(Err(hazard)) => Ok(Err(hazard)),
            Ok(Ok(partitioned)) => crate::db::delete(client, &sql(partitioned)).await.map(Ok),
            Err(err) => Err(err),
        },
        Err(err) if err.code() == Some(&SqlState::UNDEFINED_TABLE) => {
            Ok(Err(format!("table {} does not exist", table.name)))
        }
        Err(err) => Err(err),
    };
    let end = match result {
        Ok(Ok(_)) => "COMMIT",
        _ => "ROLLBACK",
    };
    // The batch's own error first, else the COMMIT's or ROLLBACK's.
    let ended = client.batch_execute(end).await;
    result.and_then(|r| ended.map(|()| r))
}

/// Why pgdrill's DELETE may not run on `table` now: rows of other tables it would reach
/// (inheritance children, foreign partitions) or, unless `fired_allowed`, triggers, rules and
/// foreign keys it would set off. `Ok(partitioned)` when it may.
async fn delete_hazard(
    client: &Client,
    table: &Table,
    fired_allowed: bool,
) -> Result<Result<bool, String>, tokio_postgres::Error> {
    let Some(relation) = relation(client, table).await? else {
        return Ok(Err(format!("table {} does not exist", table.name)));
    };
    let problem = relation
        .children_problem(table)
        .or_else(|| relation.partitions_problem(table));
    if let Some(problem) = problem {
        return Ok(Err(problem));
    }
    // Dropped and made again by someone else, or its mark or index removed: not pgdrill's
    // rows any more, or not found without a scan.
    if !relation.deletable() {
        return Ok(Err(format!(
            "{} is no longer marked as pgdrill's (its comment, or the run_id mark and the \
             index on pgdrill's rows, are gone)",
            table.name
        )));
    }
    let fired = match fired_allowed {
        true => Vec::new(),
        false => fired_by(client, &table.quoted, false, true).await?,
    };
    if fired.is_empty() {
        return Ok(Ok(relation.kind == "p"));
    }
    Ok(Err(format!(
        "deleting from {} would fire {}, which may change data that is not pgdrill's",
        table.name,
        fired.join(", ")
    )))
}

/// The enabled user triggers and rules on pgdrill's `inserts` and `deletes`, of the table or any
/// partition a row may be routed to, with deletes the foreign keys that cascade, set null or set
/// default into another table, and with inserts the table's own foreign keys and the publications
/// that send them to subscribers (a native subscriber without the table stops replicating
/// everything); plain inheritance children are refused before this.
pub(super) async fn fired_by(
    client: &Client,
    table: &str,
    inserts: bool,
    deletes: bool,
) -> Result<Vec<String>, tokio_postgres::Error> {
    // tgtype bits: 4 INSERT, 8 DELETE; rules' ev_type: '3' INSERT, '4' DELETE. Enabled: 'O' and 'A'
    // fire normally ('R' only as a replica, 'D' never). Internal triggers are foreign keys' own,
    // except PostgreSQL 11 and 12's copies of a parent's trigger on its partitions (no constraint).
    let bits = 4 * i32::from(inserts) + 8 * i32::from(deletes);
    let events = match (inserts, deletes) {
        (true, true) => "'3', '4'",
        (false, true) => "'4'",
        _ => "'3'",
    };
    // confdeltype: 'c' cascade, 'n' set null, 'd' set default change the referencing rows;
    // 'a' no action and 'r' restrict only make the DELETE fail.
    let foreign_keys = if deletes {
        "UNION SELECT 'foreign key ' || quote_ident(k.conname) || ' of ' || \
           k.conrelid::regclass::text || ' (ON DELETE ' || CASE k.confdeltype \
           WHEN 'c' THEN 'CASCADE' WHEN 'n' THEN 'SET NULL' ELSE 'SET DEFAULT' END || ')' \
         FROM pg_constraint k WHERE k.contype = 'f' \
           AND k.confrelid IN (SELECT oid FROM t) AND k.confdeltype IN ('c', 'n', 'd')"
    } else {
        ""
    };
    // The table's own foreign keys: pgdrill's rows would lock the rows they reference, hold back
    // their DELETE (an account's erasure), or be deleted or changed with them (lost writes). Only
    // those whose columns pgdrill's rows fill (values or defaults): a key it leaves NULL references
    // nothing. And publications: deleting pgdrill's rows once sent keeps subscribers in step.
    let on_insert = if inserts {
        "UNION SELECT 'foreign key ' || quote_ident(k.conname) || ' to ' || \
           k.confrelid::regclass::text || ' (' || CASE k.confdeltype \
           WHEN 'c' THEN 'a DELETE there deletes pgdrill''s rows: read as lost writes' \
           WHEN 'n' THEN 'a DELETE there changes pgdrill''s rows' \
           WHEN 'd' THEN 'a DELETE there changes pgdrill''s rows' \
           ELSE 'pgdrill''s rows hold back a DELETE there' END || ')' \
         FROM pg_constraint k WHERE k.contype = 'f' AND k.conrelid IN (SELECT oid FROM t) \
           AND k.conparentid = 0 \
           AND NOT EXISTS (SELECT 1 FROM unnest(k.conkey) c(attnum) \
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = c.attnum \
             WHERE NOT (a.attname IN ('customer_id', 'merchant_id', 'amount', 'status', \
               'seq', 'run_id') OR a.atthasdef OR a.attidentity <> '')) \
         UNION SELECT 'publication ' || quote_ident(p.pubname) || ' (sent to its \
           subscribers)' \
         FROM pg_publication p JOIN pg_publication_tables pt ON pt.pubname = p.pubname \
         JOIN pg_namespace n ON n.nspname = pt.schemaname \
         JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
         WHERE c.oid IN (SELECT oid FROM t) AND p.pubinsert"
    } else {
        ""
    };
    let sql = format!(
        "WITH RECURSIVE t(oid) AS (SELECT to_regclass({name}) UNION ALL \
           SELECT i.inhrelid FROM pg_inherits i JOIN t ON i.inhparent = t.oid \
           JOIN pg_class c ON c.oid = i.inhrelid WHERE c.relispartition) \
         SELECT 'trigger ' || quote_ident(g.tgname) || ' on ' || g.tgrelid::regclass::text \
         FROM pg_trigger g \
         WHERE g.tgrelid IN (SELECT oid FROM t) \
           AND (NOT g.tgisinternal OR g.tgconstraint = 0) \
           AND g.tgenabled IN ('O', 'A') AND (g.tgtype::int & {bits}) <> 0 \
         UNION \
         SELECT 'rule ' || quote_ident(r.rulename) FROM pg_rewrite r \
         WHERE r.ev_class = to_regclass({name}) AND r.ev_type IN ({events}) \
           AND r.ev_enabled IN ('O', 'A') \
         {foreign_keys} {on_insert} \
         ORDER BY 1",
        name = quote_literal(table)
    );
    let rows = crate::db::text_rows(client, &sql).await?;
    Ok(rows.into_iter().flatten().flatten().collect())
}

/// Logical replication slots of this database read by another plugin than pgoutput (whose
/// publications [`fired_by`] names): CDC tools (Debezium's decoderbufs, wal2json, AWS DMS's
/// test_decoding) that stream every table's changes unless their own configuration leaves tables
/// out, which pgdrill cannot see. Said, not refused; a slot list it may not read is passed over.
pub(super) async fn warn_of_change_capture(client: &Client, table: &Table) {
    let sql = "SELECT quote_ident(slot_name::text) || ' (' || plugin::text || ')' \
               FROM pg_replication_slots WHERE slot_type = 'logical' \
                 AND database = current_database() AND plugin <> 'pgoutput' ORDER BY 1";
    let Ok(rows) = crate::db::text_rows(client, sql).await else {
        return;
    };
    let slots: Vec<String> = rows.into_iter().flatten().flatten().collect();
    if !slots.is_empty() {
        tracing::warn!(
            table = %table.name,
            slots = %slots.join(", "),
            "logical replication slots stream this database's changes to change-capture tools \
             (unless their configuration leaves tables out, which pgdrill cannot see): make \
             sure they do not take pgdrill's rows to a warehouse or another system"
        );
    }
}

/// Until a shared table's `run_id` has planner statistics, PostgreSQL takes `run_id IS NOT
/// NULL` (the condition of pgdrill's index) to hold for nearly every row, and may read
/// pgdrill's rows back through the primary key or a scan, past the owners' rows: said, with
/// what ends it. A table pgdrill created holds only its rows.
pub(super) async fn warn_of_missing_statistics(client: &Client, table: &Table) {
    let sql = format!(
        "SELECT 'analyzed' FROM pg_stats s JOIN pg_class c ON c.relname = s.tablename \
           JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = s.schemaname \
         WHERE c.oid = {}::regclass AND s.attname = 'run_id'",
        quote_literal(&table.quoted)
    );
    let Ok(rows) = crate::db::text_rows(client, &sql).await else {
        return;
    };
    if rows.is_empty() {
        tracing::warn!(
            table = %table.name,
            "the table has no planner statistics for run_id yet: until it is analyzed, reading \
             pgdrill's rows back after a failover, retention and `pgdrill cleanup --run-id` may \
             read (never change) your rows with ids from the run's first one up. As the \
             table's owner, once pgdrill has written: ANALYZE {} (run_id);",
            table.quoted
        );
    }
}
