//! One integration-test binary, one module per feature; each drives real servers that
//! `support` starts.
mod browser;
mod cli;
mod credentials;
mod docs;
mod e2e;
mod failover;
mod hardening;
mod lab;
mod load;
mod manifests;
mod metrics;
mod outage;
mod pgbouncer;
mod pipeline;
mod proxy;
mod report;
mod retention;
mod rules;
mod support;
mod tls;
