//! One integration-test binary; each module drives real servers.
mod lab;
mod rules;
mod support;
