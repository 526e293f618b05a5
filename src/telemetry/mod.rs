//! What pgdrill tells the outside: every metric definition, the HTTP endpoint that serves
//! them, and logging setup.
//!
//! Depends only on `error`.

pub(crate) mod errors;
pub(crate) mod health;
pub(crate) mod http;
pub(crate) mod latency;
pub(crate) mod logging;
pub(crate) mod metrics;
// The per-second history; wired to a 1 Hz sampler with the report (issue 13).
#[allow(dead_code)]
pub(crate) mod timeline;
pub(crate) mod webconfig;
