//! One integration-test binary, one module per feature; each drives real servers that
//! `support` starts.
mod browser;
mod canaries;
mod cli;
mod credentials;
mod docs;
mod drills;
mod e2e;
mod failover;
mod hang;
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
mod slo;
mod support;
mod tls;
mod webconfig;
