//! pgdrill-lab: a local PostgreSQL HA lab and a fault-injecting TCP proxy, for `pgdrill demo`,
//! `pgdrill proxy`, the benchmarks and the integration tests. Not part of the daemon: it needs
//! `initdb` and friends, which a container image does not have, and it knows nothing of pgdrill.
//!
//! The lab: a primary and an optional streaming standby on 127.0.0.1, with forced failovers
//! and planned switchovers that report when each step happened.
//!
//! ```no_run
//! # async fn demo() -> Result<(), pgdrill_lab::LabError> {
//! use pgdrill_lab::{Lab, LabOptions, ReplicationMode};
//! let lab = Lab::start(LabOptions { standby: Some(ReplicationMode::Sync), ..Default::default() }).await?;
//! let dsn = lab.multi_host_dsn(); // follows the primary across failovers
//! let report = lab.force_failover().await?;
//! println!("writable {:?} after the stop began", report.stop_to_writable());
//! lab.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Servers run as an unprivileged OS user when we are root (PostgreSQL refuses root): `postgres`
//! if it exists, else `nobody`. Everything lives in one base directory: data directories `a/` and
//! `b/`, their logs `a.log` and `b.log`, and the Unix sockets the lab itself uses for
//! administration (superuser `postgres`, trust). Clients get `host=127.0.0.1` DSNs for role
//! `pgdrill` (member of `pg_monitor`), which owns database `pgdrill`.
//!
//! Servers are stopped when the [`Lab`] is dropped or shut down. A process killed with SIGKILL
//! cannot do that; its servers keep running until stopped with `pg_ctl -D <dir> stop`.

mod error;
mod hang;
mod host;
mod lab;
mod model;
pub mod proxy;
mod server;
pub mod sys;

pub use error::LabError;
pub use hang::{
    enter_private_hosts, private_hosts_available, FreezeReport, HostsFile, ADDR_A, ADDR_B,
};
pub use host::{find_bin_dir, free_server_port, unprivileged_user};
pub use lab::Lab;
pub use model::{FailoverReport, LabOptions, Node, ReplicationMode, Stamp, StopMode};
