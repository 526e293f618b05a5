//! Lost writes (RPO): the ledger of acknowledged writes and its verification against the
//! primary after an outage or a primary change.
//!
//! Depends on `db` and `telemetry`.

pub(crate) mod ledger;
pub(crate) mod verify;
