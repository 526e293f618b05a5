//! Table names, the SQL pgdrill sends, and pinning to a schema.
use super::*;

#[test]
fn a_pinned_table_is_named_by_its_schema_and_keeps_its_index_name() {
    let w = Workload::new(Table::parse("Tx").unwrap(), 1, QueryMode::Prepared);
    assert_eq!(w.target().quoted, "\"tx\"");
    w.pin("public", false);
    assert_eq!(w.target().quoted, "\"public\".\"tx\"");
    assert_eq!(w.target().index_relname(), w.table.index_relname());
    assert!(w
        .insert_sql()
        .starts_with("INSERT INTO \"public\".\"tx\" ("));
    // Once: a later check does not move it.
    w.pin("other", false);
    assert_eq!(w.target().quoted, "\"public\".\"tx\"");
    let w = Workload::new(
        Table::parse("\"MySchema\".t").unwrap(),
        1,
        QueryMode::Simple,
    );
    w.pin("\"MySchema\"", false);
    assert_eq!(w.target().quoted, "\"MySchema\".\"t\"");
}

#[test]
fn the_ranges_said_are_the_ranges_drawn() {
    let [lowest, highest] = Row::extremes();
    let said = format!(
        "customer_id {}-{}, merchant_id {}-{}, amount {:.2}-{:.2}",
        lowest.customer_id,
        highest.customer_id,
        lowest.merchant_id,
        highest.merchant_id,
        lowest.amount,
        highest.amount
    );
    assert_eq!(Row::RANGES, said);
}
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
        .insert_sql()
        .starts_with("INSERT INTO \"public\".\"t\" (customer_id, merchant_id, amount, status"));
    assert!(w.insert_sql().ends_with("RETURNING transaction_id::bigint"));
    let create = w.table.create_sql();
    assert!(create.contains("transaction_id bigserial PRIMARY KEY"));
    assert!(create.contains("run_id bigint NOT NULL"), "{create}");
    assert!(create.contains("COMMENT ON TABLE \"public\".\"t\" IS 'pgdrill:"));
}

#[test]
fn names_fold_to_lower_case_unless_quoted() {
    let t = Table::parse("MySchema.Tx").unwrap();
    assert_eq!(
        (t.name.as_str(), t.quoted.as_str()),
        ("myschema.tx", "\"myschema\".\"tx\"")
    );
    let t = Table::parse("\"MySchema\".\"Tx\"").unwrap();
    assert_eq!(t.name, "\"MySchema\".\"Tx\"");
    assert_eq!(t.quoted, "\"MySchema\".\"Tx\"");
    let t = Table::parse("\"a.b\".C").unwrap();
    assert_eq!(t.name, "\"a.b\".c");
    assert_eq!(t.quoted, "\"a.b\".\"c\"");
    assert_eq!(t.own_quoted(), "\"c\"");
    // A dot inside the table's own name: pinned to a schema, it stays whole.
    let dotted = Table::parse("\"orders.v2\"").unwrap();
    assert_eq!(dotted.own_quoted(), "\"orders.v2\"");
    let w = Workload::new(dotted, 1, QueryMode::Simple);
    w.pin("public", false);
    assert_eq!(w.target().quoted, "\"public\".\"orders.v2\"");
    let t = Table::parse("\"my table\"").unwrap();
    assert_eq!(t.quoted, "\"my table\"");
    assert!(Table::parse(DEFAULT_TABLE).unwrap().is_default());
    for bad in [
        "x; drop table y",
        "a.b.c",
        "\"unclosed",
        "\"\"",
        "1abc",
        "a..b",
        "",
    ] {
        assert!(Table::parse(bad).is_err(), "{bad}");
    }
    let long = "x".repeat(64);
    assert!(Table::parse(&long).is_err());
    assert!(Table::parse(r#""a\'' ; DROP TABLE x; --""#).is_err());
}

#[test]
fn every_delete_is_bounded_to_pgdrills_rows() {
    let table = Table::parse("public.t").unwrap();
    let expiry = Expiry {
        run_id: 9,
        window: Duration::from_millis(10_500),
        floor: None,
        others: Duration::from_secs(86_400),
    };
    let sql = table.retention_delete_sql(false, 5000, &expiry);
    // The table alone: never an inheritance child added since the check. Never a join
    // with the batch: a stale plan loops over it once per row.
    assert_eq!(
        sql,
        "DELETE FROM ONLY \"public\".\"t\" AS d WHERE d.transaction_id = ANY(ARRAY(\
         SELECT transaction_id FROM ONLY \"public\".\"t\" WHERE run_id IS NOT NULL \
         ORDER BY transaction_id LIMIT 5000)) AND d.run_id IS NOT NULL \
         AND ((d.run_id = 9 AND d.created_at < now() - make_interval(secs => 10.500)) \
         OR (d.run_id <> 9 AND d.created_at < now() - make_interval(secs => 86400.000)))"
    );
    // What this run's verification may still read back is left.
    let floored = Expiry {
        floor: Some(77),
        ..expiry
    };
    let sql = table.retention_delete_sql(false, 5000, &floored);
    assert!(
        sql.contains(
            "(d.run_id = 9 AND d.created_at < now() - make_interval(secs => 10.500) \
             AND d.transaction_id < 77) OR (d.run_id <> 9 AND"
        ),
        "{sql}"
    );
    // This run's rows alone, from where the last batch ended up to its first row not
    // expired (of the next batch) or the floor; the ids come back.
    let own = table.own_retention_delete_sql(false, 100, &floored, 1234);
    assert_eq!(
        own,
        "DELETE FROM ONLY \"public\".\"t\" AS d WHERE d.transaction_id = ANY(ARRAY(\
         SELECT transaction_id FROM ONLY \"public\".\"t\" WHERE run_id = 9 \
         AND transaction_id >= 1234 AND transaction_id < LEAST(\
         (SELECT transaction_id FROM (SELECT transaction_id, created_at \
         FROM ONLY \"public\".\"t\" WHERE run_id = 9 AND transaction_id >= 1234 \
         ORDER BY transaction_id LIMIT 100) AS b \
         WHERE created_at >= now() - make_interval(secs => 10.500) \
         ORDER BY transaction_id LIMIT 1), 77) \
         ORDER BY transaction_id LIMIT 100)) AND d.run_id = 9 \
         AND d.created_at < now() - make_interval(secs => 10.500) \
         AND d.transaction_id < 77 RETURNING d.transaction_id"
    );
    let unfloored = table.own_retention_delete_sql(true, 100, &expiry, 1234);
    assert!(
        unfloored.contains("LIMIT 1), 9223372036854775807)") && !unfloored.contains("ONLY"),
        "{unfloored}"
    );
    let one = table.cleanup_delete_sql(false, 100, Some(42));
    assert!(
        one.contains("WHERE run_id = 42 ORDER BY transaction_id LIMIT 100")
            && one.contains("AND d.run_id = 42"),
        "{one}"
    );
    let all = table.cleanup_delete_sql(false, 100, None);
    assert!(all.contains("AND d.run_id IS NOT NULL"), "{all}");
    // A partitioned table's rows are in its partitions: named without ONLY.
    let parted = table.cleanup_delete_sql(true, 100, None);
    assert!(!parted.contains("ONLY") && parted.contains("DELETE FROM \"public\".\"t\" AS d"));
    assert!(table.seqs_sql(false, false).contains(
        "FROM ONLY \"public\".\"t\" WHERE transaction_id >= $1 AND run_id = $2 AND seq < $3"
    ));
    assert!(table.seqs_sql(true, true).contains(
        "FROM \"public\".\"t\" WHERE transaction_id >= $1 AND run_id = $2 AND seq = ANY($3)"
    ));
    assert_eq!(
        table.index_sql(),
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS \"t_pgdrill_rows\" ON \"public\".\"t\" \
         (transaction_id) WHERE run_id IS NOT NULL"
    );
    assert_eq!(
        table.index_drop_sql("\"public\""),
        "DROP INDEX CONCURRENTLY IF EXISTS \"public\".\"t_pgdrill_rows\""
    );
    let long = Table::parse(&"y".repeat(63)).unwrap();
    assert!(long.index_sql().len() < 63 * 2 + 100);
}
