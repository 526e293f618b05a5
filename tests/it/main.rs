//! One integration-test binary, one module per feature; each drives real servers that
//! `support` starts. The features whose tests time outages to a tenth of a second are
//! under `timed`, run one at a time (`scripts/test`).
mod browser;
mod canaries;
mod cli;
mod credentials;
mod docs;
mod drills;
mod fleet;
mod hardening;
mod lab;
mod layout;
mod load;
mod manifests;
mod metrics;
mod outage;
mod pgbouncer;
mod pipeline;
mod podmonitors;
mod proxy;
mod report;
mod retention;
mod rules;
mod safety;
mod slo;
mod support;
mod targets;
mod timed;
mod tls;
mod webconfig;
