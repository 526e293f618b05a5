//! What the catalog says about the table pgdrill writes to, in one query: its kind, its
//! marks, its indexes, and what a DELETE or read-back on it would reach beyond its rows.

use tokio_postgres::Client;

use super::quote_literal;
use crate::db::table::{Table, OWNER_MARK};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Relation {
    /// `pg_class.relkind`: `r` table, `p` partitioned table, `v` view, …
    pub kind: String,
    /// `pg_class.relpersistence`: `p` logged, `u` unlogged, `t` temporary.
    pub persistence: String,
    /// Marked as pgdrill's own by its comment.
    pub ours: bool,
    /// Has the partial index of [`Table::index_sql`] (or one like it): reading back or
    /// deleting pgdrill's rows never reads the others.
    pub indexed: bool,
    /// Its `run_id` column carries [`OWNER_MARK`]: pgdrill added it, so the rows with it set
    /// are pgdrill's (a `run_id` the table had before could be the users' own).
    pub rows_marked: bool,
    /// It has a `run_id` column: without one, pgdrill never wrote a row to it.
    pub has_run_id: bool,
    /// Its plain inheritance children (not partitions), comma-separated: a DELETE or SELECT
    /// on the parent reaches their rows.
    pub children: String,
    /// Its partitions, at any depth, that are UNLOGGED or foreign, each with its kind.
    pub unsafe_partitions: String,
    /// What holds the name of pgdrill's index ([`Table::index_sql`]) in the table's schema,
    /// if not pgdrill's index on this table: `IF NOT EXISTS` would quietly build nothing.
    pub index_name_holder: String,
    /// The table's schema, quoted: what pgdrill tells the owner to run names it.
    pub schema: String,
    /// pgdrill's user is (a member of) its owner: it may ALTER it.
    pub owned: bool,
}

impl Relation {
    /// pgdrill's rows can be deleted without touching or scanning anyone else's.
    pub fn deletable(&self) -> bool {
        self.ours || (self.indexed && self.rows_marked)
    }

    /// Why no DELETE or read-back of pgdrill's may run on this table, whatever its rows.
    pub fn children_problem(&self, table: &Table) -> Option<String> {
        (!self.children.is_empty()).then(|| {
            format!(
                "{} has inheritance children ({}): a DELETE or SELECT on it reaches their \
                 rows, which are not pgdrill's. Detach them as their owner (ALTER TABLE … NO \
                 INHERIT {};) or point --table at a table without children (a partitioned \
                 table is fine)",
                table.name, self.children, table.quoted
            )
        })
    }

    /// Partitions whose rows pgdrill cannot vouch for.
    pub fn partitions_problem(&self, table: &Table) -> Option<String> {
        (!self.unsafe_partitions.is_empty()).then(|| {
            format!(
                "{} has partitions pgdrill cannot use ({}): an UNLOGGED one is emptied by a \
                 crash or failover (every row there would read as a lost write); a foreign \
                 one lives on another server, whose triggers and indexes pgdrill cannot see. \
                 Point --table at a table without them, or leave --table unset for pgdrill's own",
                table.name, self.unsafe_partitions
            )
        })
    }
}

pub(crate) async fn relation(
    client: &Client,
    table: &Table,
) -> Result<Option<Relation>, tokio_postgres::Error> {
    // A valid btree index led by transaction_id, on pgdrill's rows alone.
    let indexed = "SELECT 1 FROM pg_index i \
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
        JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam \
        WHERE i.indrelid = c.oid AND a.attname = 'transaction_id' AND i.indisvalid \
          AND am.amname = 'btree' \
          AND pg_get_expr(i.indpred, i.indrelid) = '(run_id IS NOT NULL)'";
    let sql = format!(
        "SELECT c.relkind::text, c.relpersistence::text, \
                (coalesce(obj_description(c.oid, 'pg_class'), '') LIKE {mark})::text, \
                EXISTS ({indexed})::text, \
                (coalesce(col_description(c.oid, (SELECT attnum FROM pg_attribute \
                   WHERE attrelid = c.oid AND attname = 'run_id' AND NOT attisdropped)), '') \
                 LIKE {mark})::text, \
                EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = c.oid \
                  AND attname = 'run_id' AND NOT attisdropped)::text, \
                (SELECT coalesce(string_agg(k.oid::regclass::text, ', ' ORDER BY k.oid), '') \
                 FROM pg_inherits i JOIN pg_class k ON k.oid = i.inhrelid \
                 WHERE i.inhparent = c.oid AND NOT k.relispartition), \
                (WITH RECURSIVE p(oid) AS (SELECT c.oid UNION ALL SELECT i.inhrelid \
                   FROM pg_inherits i JOIN p ON i.inhparent = p.oid) \
                 SELECT coalesce(string_agg(k.oid::regclass::text || CASE k.relkind \
                   WHEN 'f' THEN ' (foreign)' ELSE ' (UNLOGGED)' END, ', ' ORDER BY k.oid), '') \
                 FROM p JOIN pg_class k ON k.oid = p.oid \
                 WHERE k.relispartition AND (k.relpersistence = 'u' OR k.relkind = 'f')), \
                (SELECT coalesce(string_agg(CASE WHEN i.indexrelid IS NULL \
                   THEN 'the relation ' || ic.oid::regclass::text \
                   ELSE 'an index on ' || i.indrelid::regclass::text END, ', '), '') \
                 FROM pg_class ic LEFT JOIN pg_index i ON i.indexrelid = ic.oid \
                 WHERE ic.relname = {index} AND ic.relnamespace = c.relnamespace \
                   AND NOT coalesce(i.indrelid = c.oid AND i.indkey[0] = (SELECT attnum \
                     FROM pg_attribute WHERE attrelid = c.oid AND attname = 'transaction_id') \
                     AND pg_get_expr(i.indpred, i.indrelid) = '(run_id IS NOT NULL)', false)), \
                (SELECT quote_ident(nspname) FROM pg_namespace WHERE oid = c.relnamespace), \
                pg_has_role(c.relowner, 'USAGE')::text \
         FROM pg_class c WHERE c.oid = to_regclass({name})",
        mark = quote_literal(&format!("{OWNER_MARK}%")),
        name = quote_literal(&table.quoted),
        index = quote_literal(&table.index_relname()),
    );
    let rows = crate::db::text_rows(client, &sql).await?;
    Ok(rows.first().map(|r| {
        let text = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
        Relation {
            kind: text(0),
            persistence: text(1),
            ours: text(2) == "true",
            indexed: text(3) == "true",
            rows_marked: text(4) == "true",
            has_run_id: text(5) == "true",
            children: text(6),
            unsafe_partitions: text(7),
            index_name_holder: text(8),
            schema: text(9),
            owned: text(10) == "true",
        }
    }))
}
