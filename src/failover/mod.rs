//! Write availability: the state machine and its detector, the monitor that drives it and
//! turns transitions into metrics and outage records.
//!
//! Depends on `rpo` (verification after an outage), `db` (identity) and `telemetry`.

pub(crate) mod machine;
pub(crate) mod monitor;
