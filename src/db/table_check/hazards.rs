//! What writing to a table pgdrill did not create would do to its owners' application, said before
//! the first write: ids taken from their sequence, unique slots their rows need, a column of theirs
//! that happens to be called `seq` or `run_id`, and what `--retention` could not delete.

use tokio_postgres::Client;

use super::{quote_literal, Column, IdsNeeded, TableError, TablePolicy, OUR_COLUMNS, USER_COLUMNS};
use crate::db::table::{Table, OWNER_MARK};

/// A sequence that cannot last a canary this long is refused; one short of a year is warned of.
const CANARY_MUST_LAST_DAYS: u64 = 1;
const CANARY_WARNED_DAYS: u64 = 365;

/// Columns named like pgdrill's that are the owners': pgdrill adds `run_id` and `seq` together
/// and marks `run_id` with its comment, so a `run_id` without the mark (`marked`), or a lone
/// `seq`, is not pgdrill's. pgdrill would write its run ids and counter into them, and its rows
/// would then be stranded among the owners' (`pgdrill cleanup` deletes only from a `run_id` it
/// added). Refused before any change, and before any advice on their types: they are not
/// pgdrill's to alter.
pub(super) fn owners_columns(table: &Table, columns: &[Column], marked: bool) -> Option<String> {
    let name = &table.name;
    let has = |name: &str| columns.iter().any(|c| c.name == name);
    let (run_id, seq) = (OUR_COLUMNS[0], OUR_COLUMNS[1]);
    let also = "Point --table at another table, or leave --table unset for pgdrill's own";
    match (has(run_id), has(seq)) {
        (true, true) if !marked => Some(format!(
            "{name} has columns {run_id} and {seq} that pgdrill did not add ({run_id} has no \
             '{OWNER_MARK}' comment): they are not pgdrill's, and pgdrill would write its run ids \
             and counter into them, among your rows. {also}. (Only if they were added for \
             pgdrill and every row with {run_id} set is pgdrill's, say so as the table's owner: \
             {};)",
            table.mark_rows_sql()
        )),
        (true, false) if !marked => Some(lone(name, run_id, seq, also)),
        (false, true) => Some(lone(name, seq, run_id, also)),
        _ => None,
    }
}

fn lone(table: &str, present: &str, absent: &str, also: &str) -> String {
    format!(
        "{table} has a column {present} but no {absent}: pgdrill adds both together, so that \
         {present} is not pgdrill's, and pgdrill would write its own values into it. {also}"
    )
}

/// Everything else, from the catalog: unique indexes pgdrill's values alone decide, the id
/// sequence's headroom, and the DELETE privilege `--retention` needs.
pub(super) async fn hazards(
    client: &Client,
    table: &Table,
    columns: &[Column],
    policy: TablePolicy,
) -> Result<(), TableError> {
    if let Some(index) = unique_over_our_values(client, &table.quoted).await? {
        return Err(TableError::Unusable(format!(
            "{} has a unique index {index} on columns pgdrill fills with its own values \
             (customer_id 1-10000, merchant_id 1-1000, amount, status, seq): pgdrill's rows \
             would take values your rows need, and your INSERTs would fail. Point --table at \
             another table, or leave --table unset for pgdrill's own",
            table.name
        )));
    }
    if policy.deletes && !may_delete(client, &table.quoted).await? {
        return Err(TableError::Unusable(format!(
            "--retention deletes pgdrill's rows from {}, and pgdrill's user may not DELETE \
             there; as the table's owner: GRANT DELETE ON {} TO <pgdrill's user>; (or run \
             without --retention)",
            table.name, table.quoted
        )));
    }
    if let Some(id) = columns.iter().find(|c| c.name == "transaction_id") {
        ids_left(client, table, id, policy.ids_needed).await?;
    }
    Ok(())
}

/// A unique index whose key columns (not its INCLUDE ones) are all ones pgdrill writes
/// values of its own into; a partial one too, unless its predicate names `run_id` (which may
/// leave pgdrill's rows out; a soft-delete `WHERE deleted_at IS NULL` does not).
async fn unique_over_our_values(
    client: &Client,
    table: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    let ours: Vec<String> = (USER_COLUMNS.iter().chain(&OUR_COLUMNS[1..]))
        .map(|c| quote_literal(c))
        .collect();
    let sql = format!(
        "SELECT quote_ident(c.relname) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE i.indrelid = to_regclass({table}) AND i.indisunique AND i.indexprs IS NULL \
           AND (i.indpred IS NULL \
             OR pg_get_expr(i.indpred, i.indrelid) NOT LIKE '%run_id%') \
           AND NOT EXISTS (SELECT 1 FROM unnest(i.indkey) WITH ORDINALITY k(attnum, n) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE k.n <= i.indnkeyatts AND a.attname NOT IN ({ours})) \
         ORDER BY 1 LIMIT 1",
        table = quote_literal(table),
        ours = ours.join(", ")
    );
    crate::db::first_value(client, &sql).await
}

async fn may_delete(client: &Client, table: &str) -> Result<bool, tokio_postgres::Error> {
    let sql = format!(
        "SELECT has_table_privilege(to_regclass({}), 'DELETE')::text",
        quote_literal(table)
    );
    crate::db::is_true(client, &sql).await
}

/// Whether every id drawn after one is higher: a sequence known, with no cache (one of more
/// than 1 hands each session its own block, so a session with an older block draws lower
/// ids later, and a floor at the first trial's id would leave its rows unread, as lost).
pub(super) async fn ids_in_order(
    client: &Client,
    table: &str,
) -> Result<bool, tokio_postgres::Error> {
    let sql = format!(
        "SELECT (s.seqcache = 1 AND s.seqincrement > 0)::text FROM pg_sequence s \
         WHERE s.seqrelid = pg_get_serial_sequence({}, 'transaction_id')::regclass",
        quote_literal(table)
    );
    crate::db::is_true(client, &sql).await
}

/// Every pgdrill write takes an id from the owners' sequence, for good: a run that would use up
/// what is left is refused, a canary that would within a year warned of; what is left is said.
async fn ids_left(
    client: &Client,
    table: &Table,
    id: &Column,
    needed: Option<IdsNeeded>,
) -> Result<(), TableError> {
    // An id the default takes from elsewhere (another table's sequence, a function) is not known
    // here: nothing said. pg_sequence_last_value needs SELECT or USAGE on the sequence, which an
    // identity column's INSERT does not: without it, the headroom is unknown (said), not an error.
    // NULL is also a sequence not drawn from yet (is_called false): it starts at seqstart then.
    let sql = format!(
        "SELECT s.seqrelid::regclass::text, s.seqmax::text, s.seqincrement::text, \
                CASE WHEN has_sequence_privilege(s.seqrelid, 'SELECT, USAGE') \
                  THEN coalesce(pg_sequence_last_value(s.seqrelid), s.seqstart - s.seqincrement) \
                END::text \
         FROM pg_sequence s \
         WHERE s.seqrelid = pg_get_serial_sequence({}, 'transaction_id')::regclass",
        quote_literal(&table.quoted)
    );
    let rows = crate::db::text_rows(client, &sql).await?;
    let Some(row) = rows.first() else {
        return Ok(());
    };
    let text = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let number = |i: usize| text(i).parse::<i64>().ok();
    let sequence = text(0);
    let (Some(max), Some(increment)) = (number(1), number(2)) else {
        return Ok(());
    };
    let Some(last) = number(3) else {
        tracing::warn!(
            table = %table.name,
            "{}.transaction_id takes its ids from {sequence}, which pgdrill's user may not read: \
             how many are left is unknown (GRANT SELECT ON SEQUENCE {sequence} TO <pgdrill's \
             user>; lets pgdrill say it)",
            table.name
        );
        return Ok(());
    };
    if increment <= 0 {
        return Ok(());
    }
    // The column's type may hold fewer ids than the sequence would give.
    let max = match id.base.as_str() {
        "int2" => max.min(i64::from(i16::MAX)),
        "int4" => max.min(i64::from(i32::MAX)),
        _ => max,
    };
    let left = u64::try_from(max.saturating_sub(last) / increment).unwrap_or(0);
    let (ok, said) = verdict(left, needed);
    let message = format!(
        "{}.transaction_id takes its ids from {sequence}, which has {left} left before its \
         maximum; {said}",
        table.name
    );
    match ok {
        Verdict::Refused => return Err(TableError::Unusable(message)),
        Verdict::Warned => tracing::warn!(table = %table.name, "{message}"),
        Verdict::Enough => tracing::info!(table = %table.name, "{message}"),
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Enough,
    Warned,
    Refused,
}

/// A run may take at most this share of the ids left: the owners' rows need the rest.
const RUN_SHARE: u64 = 2;
/// At an unlimited rate (nothing to multiply), fewer ids left than this are refused.
const UNLIMITED_NEEDS: u64 = 1_000_000;

/// What `left` ids are for a run that needs `needed` (per day for a canary, see
/// [`TablePolicy::ids_needed`]), and how to say it.
fn verdict(left: u64, needed: Option<IdsNeeded>) -> (Verdict, String) {
    let none_left = "every INSERT into the table, yours included, fails once they are used up";
    match needed {
        Some(IdsNeeded::Run(n)) if left / RUN_SHARE < n => (
            Verdict::Refused,
            format!(
                "this run would take about {n} (--rate × --duration), more than half of them, \
                 and {none_left}"
            ),
        ),
        Some(IdsNeeded::Run(n)) => (Verdict::Enough, format!("this run takes about {n}")),
        Some(IdsNeeded::PerDay(n)) if left < n.saturating_mul(CANARY_MUST_LAST_DAYS) => (
            Verdict::Refused,
            format!("this canary would take {n} a day (--rate), and {none_left}"),
        ),
        Some(IdsNeeded::PerDay(n)) if left < n.saturating_mul(CANARY_WARNED_DAYS) => (
            Verdict::Warned,
            format!(
                "this canary takes {n} a day (--rate): they run out in {} days, and {none_left}",
                left / n.max(1)
            ),
        ),
        Some(IdsNeeded::PerDay(n)) => (Verdict::Enough, format!("this canary takes {n} a day")),
        None if left < UNLIMITED_NEEDS => (
            Verdict::Refused,
            format!("an unlimited --rate takes them by the thousand a second, and {none_left}"),
        ),
        None => (Verdict::Enough, "pgdrill takes one per write".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_a_run_would_use_up_are_refused_and_a_canarys_year_warned() {
        let run = |n| Some(IdsNeeded::Run(n));
        let day = |n| Some(IdsNeeded::PerDay(n));
        assert_eq!(verdict(1_000, run(4_800_000)).0, Verdict::Refused);
        // More than half of what is left: the owners' rows need the rest.
        assert_eq!(verdict(5_000_000, run(4_800_000)).0, Verdict::Refused);
        assert_eq!(verdict(10_000_000, run(4_800_000)).0, Verdict::Enough);
        // A canary at 100/s on an int4 sequence at 1.9 billion: four weeks left.
        let (v, said) = verdict(247_483_647, day(8_640_000));
        assert_eq!(v, Verdict::Warned);
        assert!(said.contains("run out in 28 days"), "{said}");
        assert_eq!(verdict(8_000_000, day(8_640_000)).0, Verdict::Refused);
        assert_eq!(verdict(u64::MAX / 2, day(8_640_000)).0, Verdict::Enough);
        assert_eq!(verdict(32_766, None).0, Verdict::Refused);
        assert_eq!(verdict(2_000_000_000, None).0, Verdict::Enough);
    }

    #[test]
    fn the_owners_seq_or_run_id_is_never_taken_for_pgdrills() {
        let column = |name: &str| Column {
            name: name.into(),
            declared: "bigint".into(),
            base: "int8".into(),
            not_null: false,
            filled: false,
        };
        let t = Table::parse("t").expect("a name");
        let lone = owners_columns(&t, &[column("seq")], false).expect("refused");
        assert!(lone.contains("a column seq but no run_id"), "{lone}");
        assert!(owners_columns(&t, &[column("seq")], true).is_some());
        assert!(owners_columns(&t, &[column("run_id")], false).is_some());
        // Marked as pgdrill's: its seq is added with --alter-table.
        assert!(owners_columns(&t, &[column("run_id")], true).is_none());
        // Both, unmarked: the owners' own, whatever their type.
        let both = [column("run_id"), column("seq")];
        let theirs = owners_columns(&t, &both, false).expect("refused");
        assert!(
            theirs.starts_with("t has columns run_id and seq that pgdrill did not add"),
            "{theirs}"
        );
        assert!(!theirs.contains("ALTER"), "{theirs}");
        assert!(owners_columns(&t, &both, true).is_none());
        assert!(owners_columns(&t, &[column("status")], false).is_none());
    }
}
