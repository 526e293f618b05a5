//! Write availability: the state machine and its detector, the monitor that drives it and
//! turns transitions into metrics, and the outage records of the drill report.
//!
//! Depends on `rpo` (verification after an outage), `db` (identity) and `telemetry`.

pub(crate) mod machine;
pub(crate) mod monitor;
pub(crate) mod outages;
