//! For people: the progress line and the end-of-run summary, human and JSON.
//!
//! Reads `load` (the tally), `failover` (outage records), `rpo` (totals) and `telemetry`
//! (latency recorders); the hot path never imports it.

pub(crate) mod progress;
pub(crate) mod summary;
