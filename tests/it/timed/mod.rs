//! Tests that time outages against ground truth (the rows' `created_at`, an independent
//! client, Prometheus' timeline) to 0.1–0.2 s. `scripts/test` runs them one at a time after
//! the rest: a neighbour on a 2-core machine (Chromium, promtool, another load) delays the
//! first commits after a failover and moves the figures they compare.
mod e2e;
mod failover;
mod hang;
mod patroni;
mod pgbouncer;
