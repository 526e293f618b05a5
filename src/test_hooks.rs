//! Fault injection for tests: each hook is obeyed only when its `PGDRILL_TEST_*` environment
//! variable is set, and an active hook is logged at WARN when the run starts. Nothing else reads
//! these variables, and a build without the `lab` feature (the container image) obeys none of them.

use std::sync::OnceLock;

/// `PGDRILL_TEST_PANIC_LANE=N`: every lane panics when it takes its N-th write (counted
/// per lane, from its start or restart), to test supervision.
const PANIC_LANE: &str = "PGDRILL_TEST_PANIC_LANE";

fn panic_lane_after() -> Option<u64> {
    if !cfg!(feature = "lab") {
        return None;
    }
    static AFTER: OnceLock<Option<u64>> = OnceLock::new();
    *AFTER.get_or_init(|| std::env::var(PANIC_LANE).ok().and_then(|v| v.parse().ok()))
}

/// `PGDRILL_TEST_BUILD_WITHOUT_STATEMENT_TIMEOUT=1`: `--alter-table`'s index build runs
/// without its server-side `statement_timeout`, as through a transaction-mode pooler that
/// sent the `SET` to another server connection, so that only pgdrill's cancel can end it.
const BUILD_WITHOUT_STATEMENT_TIMEOUT: &str = "PGDRILL_TEST_BUILD_WITHOUT_STATEMENT_TIMEOUT";

pub(crate) fn build_without_statement_timeout() -> bool {
    cfg!(feature = "lab") && std::env::var(BUILD_WITHOUT_STATEMENT_TIMEOUT).is_ok_and(|v| v == "1")
}

/// Logs every active hook; called once at start.
pub(crate) fn announce() {
    if build_without_statement_timeout() {
        tracing::warn!(
            hook = BUILD_WITHOUT_STATEMENT_TIMEOUT,
            "test hook active: index builds run without statement_timeout"
        );
    }
    if let Some(n) = panic_lane_after() {
        tracing::warn!(
            hook = PANIC_LANE,
            after = n,
            "test hook active: lanes will panic"
        );
    }
}

/// Called by a lane with the number of writes it has taken so far.
pub(crate) fn lane_took(taken: u64) {
    if panic_lane_after() == Some(taken) {
        panic!("{PANIC_LANE}: injected panic after {taken} writes");
    }
}
