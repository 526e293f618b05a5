//! One integration-test binary; each module drives real servers.
mod core;
mod drill;
mod e2e;
mod failover;
mod lab;
mod rules;
mod support;
