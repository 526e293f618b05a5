//! One integration-test binary; each module drives real servers.
mod core;
mod drill;
mod lab;
mod pipeline;
mod rules;
mod support;
