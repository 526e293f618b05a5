//! User-space TCP proxy that injects delay and faults.
