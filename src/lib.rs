//! pgdrill: PostgreSQL failover drills and write canaries.
pub mod lab;
pub mod proxy;
