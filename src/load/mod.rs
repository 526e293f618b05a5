//! The hot path: the open-loop scheduler and the lanes that run the INSERTs.
//!
//! Depends on `db`, `failover` (the detector), `rpo` (the ledger) and `telemetry`; never on
//! `report`.

pub(crate) mod lanes;
pub(crate) mod outcomes;
pub(crate) mod scheduler;
