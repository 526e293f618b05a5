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
pub(crate) mod timeline;
pub(crate) mod webconfig;
