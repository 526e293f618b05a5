//! The progress line: what happened since the last one, every `--progress-interval`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::ErrorClass;
use crate::load::outcomes::TallySnapshot;
use crate::report::Sources;

/// Logs a line every `every` until `stop`, and one for the rest: they add up to the summary.
pub(crate) async fn run(sources: Arc<Sources>, every: Duration, stop: CancellationToken) {
    let mut last = TallySnapshot::default();
    let mut last_sqlstates = std::collections::BTreeMap::new();
    let mut last_at = Instant::now();
    let mut ticker = tokio::time::interval_at(last_at + every, every);
    // After a stall, the next line a whole interval on: not one at once, covering nothing.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopped = tokio::select! {
            _ = ticker.tick() => false,
            _ = stop.cancelled() => true,
        };
        let now = sources.outcomes.tally();
        let line = Line::between(&last, &now);
        if stopped && (line.ok, line.failed, line.skipped) == (0, 0, 0) {
            return;
        }
        last = now;
        // What the line covers, measured: a tick the runtime delayed covers more than
        // `every`, the one after it less.
        let interval = std::mem::replace(&mut last_at, Instant::now()).elapsed();
        let sqlstates = sources.outcomes.metrics.errors.per_sqlstate();
        let before = |code| last_sqlstates.get(code).copied().unwrap_or(0);
        let by_sqlstate = deltas(sqlstates.iter().map(|(code, n)| (code, n - before(code))));
        last_sqlstates = sqlstates;
        let h = sources.outcomes.latency.merged(|s| &mut s.interval, true);
        // The last line may cover a moment (the drain's answers just after a tick): no rate
        // from that.
        let rate = match interval >= every / 10 {
            true => format!("{:.1}", line.ok as f64 / interval.as_secs_f64()),
            false => "-".to_string(),
        };
        tracing::info!(
            rate,
            ok = line.ok,
            failed = line.failed,
            skipped = line.skipped,
            errors = line.errors,
            sqlstates = by_sqlstate,
            p50_ms = quantile_ms(&h, 0.5),
            p99_ms = quantile_ms(&h, 0.99),
            state = sources.outages.state().as_str(),
            "progress"
        );
        if stopped {
            return;
        }
    }
}

/// The counts of one progress line.
#[derive(Debug, PartialEq, Eq)]
struct Line {
    ok: u64,
    failed: u64,
    skipped: u64,
    /// `class=n` for every class that failed in the interval.
    errors: String,
}

impl Line {
    fn between(before: &TallySnapshot, now: &TallySnapshot) -> Line {
        let failed = now.failed() - before.failed();
        let delta = |c: ErrorClass| now.errors[c.index()] - before.errors[c.index()];
        Line {
            ok: (now.transactions - before.transactions).saturating_sub(failed),
            failed,
            skipped: now.skipped - before.skipped,
            errors: deltas(ErrorClass::ALL.iter().map(|c| (c, delta(*c)))),
        }
    }
}

/// `name=delta` for each count that grew, space-separated.
fn deltas<K: std::fmt::Display>(each: impl Iterator<Item = (K, u64)>) -> String {
    let grown = each.filter(|(_, delta)| *delta > 0);
    let grown: Vec<String> = grown.map(|(k, delta)| format!("{k}={delta}")).collect();
    grown.join(" ")
}

/// A percentile of `h` (microseconds) in milliseconds; `-` for an interval with no write
/// acknowledged (an outage), not 0.
fn quantile_ms(h: &hdrhistogram::Histogram<u64>, q: f64) -> String {
    match h.is_empty() {
        true => "-".to_string(),
        false => format!("{:.2}", h.value_at_quantile(q) as f64 / 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_without_an_acknowledged_write_has_no_percentile() {
        let mut h = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
        assert_eq!(quantile_ms(&h, 0.99), "-");
        h.record(1_500).expect("record");
        assert_eq!(quantile_ms(&h, 0.99), "1.50");
    }

    #[test]
    fn a_line_counts_only_the_interval() {
        let mut before = TallySnapshot {
            transactions: 100,
            skipped: 3,
            ..Default::default()
        };
        before.errors[ErrorClass::ReadOnly.index()] = 5;
        let mut now = before;
        now.transactions = 160;
        now.skipped = 4;
        now.errors[ErrorClass::ReadOnly.index()] = 7;
        now.errors[ErrorClass::ConnectRefused.index()] = 1;
        assert_eq!(
            Line::between(&before, &now),
            Line {
                ok: 57,
                failed: 3,
                skipped: 1,
                errors: "connect_refused=1 read_only=2".to_string(),
            }
        );
    }
}
