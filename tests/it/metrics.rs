//! `tests/fixtures/metric_names.txt` against a live scrape, both ways: every name in it is
//! exported, and every `pgdrill_*` family exported is in it (or in [`NOT_CHARTED`], with a
//! reason), so a new metric cannot ship undocumented. No database: every family is
//! pre-created, so the scrape of a run whose DSN points at a closed port has them all.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::rules::known_metric_names;
use crate::support::drill::{try_http_get, Drill};
use crate::support::eventually;

/// Exported families that no dashboard or rule shows (the fixture lists only those that
/// some dashboard or rule reads, which `rules::dashboards::every_exported_metric_is_used_somewhere`
/// checks); each is documented in docs/metrics.md.
/// Families with no series until the first connection (their labels come from the server),
/// so absent from a scrape of a run that never connects; documented, not charted.
pub(crate) const AFTER_FIRST_CONNECTION: &[&str] = &[
    // Which server was written to, by its own account; a table panel would only repeat
    // the summary's identities.
    "pgdrill_primary_server",
];

pub(crate) const NOT_CHARTED: &[&str] = &[
    // The process collector's own; standard names, documented with the rest.
    "process_threads",
    "process_virtual_memory_bytes",
    // Instantaneous and noisy; the latency histograms show the same pressure.
    "pgdrill_transactions_in_flight",
    // Only at a shutdown that ran out of grace; the summary says it too.
    "pgdrill_transactions_abandoned_total",
    // Memory of the acknowledged-write ledger, for capacity checks by hand.
    "pgdrill_ledger_bytes",
    // Only with --password-file/--password-command; auth errors page through
    // pgdrill_connection_errors_total{class="auth"}.
    "pgdrill_password_refreshes_total",
    "pgdrill_password_errors_total",
    // Restarts of the same server (not failovers); no panel shows it yet.
    "pgdrill_server_restarts_total",
    // Drills as code (docs/drills.md): the verdict is the exit status and the summary; no
    // dashboard or rule reads these yet (the rules read pgdrill_rto_objective_seconds
    // beside pgdrill_outages_over_rto_objective_total). pgdrill_drill_verdict is read:
    // the canary SLO leaves drill processes out by it.
    "pgdrill_failover_trigger_timestamp_seconds",
    "pgdrill_failover_trigger_end_timestamp_seconds",
    "pgdrill_failover_triggers_total",
    "pgdrill_failover_first_failed_write_seconds",
    "pgdrill_failover_new_primary_write_seconds",
    "pgdrill_rpo_objective_lost_writes",
];

/// Metric family names (from `# TYPE name kind`) of a text exposition.
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn families_are_read_from_type_lines() {
    let text = "# HELP a_total x\n# TYPE a_total counter\na_total 1\n\
                # TYPE h_seconds histogram\nh_seconds_bucket{le=\"1\"} 0\n";
    let want: BTreeSet<String> = ["a_total", "h_seconds"].map(String::from).into();
    assert_eq!(families(text), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fixture_and_a_live_scrape_list_the_same_families() {
    // Nothing listens on port 1: pgdrill keeps retrying and serves /metrics meanwhile.
    let dsn = "host=127.0.0.1 port=1 user=pgdrill";
    let drill = Drill::start(&["--dsn", dsn, "--rate", "10"]).await;
    eventually(Duration::from_secs(10), "/metrics up", || async {
        try_http_get(drill.addr, "/metrics").await.is_ok()
    })
    .await;
    let exported = families(&drill.scrape().await);
    drill.stop().await;

    let fixture = known_metric_names();
    let not_charted: BTreeSet<String> = NOT_CHARTED.iter().map(|s| s.to_string()).collect();
    let missing: Vec<_> = fixture.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "in tests/fixtures/metric_names.txt, not exported: {missing:?}"
    );
    let undocumented: Vec<_> = exported
        .iter()
        .filter(|f| f.starts_with("pgdrill_"))
        .filter(|f| !fixture.contains(*f) && !not_charted.contains(*f))
        .filter(|f| !AFTER_FIRST_CONNECTION.contains(&f.as_str()))
        .collect();
    assert!(
        undocumented.is_empty(),
        "exported but neither in tests/fixtures/metric_names.txt nor in NOT_CHARTED: \
         {undocumented:?}"
    );
    let stale: Vec<_> = not_charted.difference(&exported).collect();
    assert!(
        stale.is_empty(),
        "NOT_CHARTED names not exported: {stale:?}"
    );
    let both: Vec<_> = not_charted.intersection(&fixture).collect();
    assert!(
        both.is_empty(),
        "charted after all, drop from NOT_CHARTED: {both:?}"
    );
}
