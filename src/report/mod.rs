//! For people: the progress line and the end-of-run summary, human and JSON.
//!
//! Reads `load` (the tally), `failover` (outage records), `rpo` (totals) and `telemetry`
//! (latency recorders); the hot path never imports it.

// The HTML drill report and live page; wired with `--report` (issue 13).
#[allow(dead_code)]
pub(crate) mod html;
pub(crate) mod progress;
pub(crate) mod summary;
