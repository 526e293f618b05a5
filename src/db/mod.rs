//! Talking to PostgreSQL: connecting per host the libpq way and setting connections up
//! (`connect/`), TLS and credentials, the bb8 pool, the server identity probe, the table with
//! every SQL statement pgdrill sends, and retention.
//!
//! Depends on `telemetry` (it counts connections and errors) and `error`; nothing above.

pub mod cleanup;
pub(crate) mod clock;
pub(crate) mod connect;
pub(crate) mod credentials;
pub(crate) mod identity;
pub(crate) mod pool;
pub(crate) mod retention;
pub(crate) mod table;
pub(crate) mod table_check;
pub(crate) mod tls;
