//! One integration-test binary; each module drives real servers.
mod bouncer;
mod core;
mod credentials;
mod drill;
mod e2e;
mod failover;
mod hang;
mod lab;
mod pgbouncer;
mod pipeline;
mod retention;
mod rules;
mod support;
mod tls;
