//! The lab's vocabulary: which server, which replication, how to stop, and when each step
//! of a failover happened.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// Replication mode of the standby.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationMode {
    /// `synchronous_standby_names = '*'` on the primary (set once the standby streams).
    Sync,
    /// Plain asynchronous streaming.
    Async,
}

/// What to start. `Default` is a single primary in a fresh temporary directory, trust auth.
#[derive(Debug, Clone, Default)]
pub struct LabOptions {
    /// Start a streaming standby too, in this mode.
    pub standby: Option<ReplicationMode>,
    /// Directory to hold everything. Default: a fresh temporary directory, removed on drop.
    /// A given directory is kept, and must be empty or absent. Keep it short: Unix socket paths
    /// are limited to ~100 bytes.
    pub base_dir: Option<PathBuf>,
    /// PostgreSQL server binaries. Default: `$PGDRILL_PG_BINDIR`, else `pg_config --bindir`,
    /// else the newest `/usr/lib/postgresql/*/bin`.
    pub bin_dir: Option<PathBuf>,
    /// If set, role `pgdrill` gets this password and TCP connections use scram-sha-256;
    /// otherwise TCP connections are trusted.
    pub password: Option<String>,
    /// Node A listens on 127.0.0.2 and node B on 127.0.0.3, both on the same port, so that a
    /// failover can move only the address (a DNS switch, see [`crate::HostsFile`]). Default: both
    /// on 127.0.0.1, each on its own port.
    pub separate_addresses: bool,
    /// Copy the data directory of one initdb per process (made by the first lab that asks,
    /// removed at exit) instead of running initdb for each lab: for test suites. The copies
    /// share one system identifier, as a primary and its standby do: pgdrill pointed at two
    /// such labs would take a move from one to the other for a restart of one cluster.
    pub initdb_once: bool,
}

/// One of the two servers. Roles swap on failover; a node keeps its port and directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    /// The server initdb created; the first primary.
    A,
    /// The server cloned with pg_basebackup; the first standby.
    B,
}

impl Node {
    pub(crate) fn idx(self) -> usize {
        match self {
            Node::A => 0,
            Node::B => 1,
        }
    }
    pub(crate) fn name(self) -> &'static str {
        match self {
            Node::A => "a",
            Node::B => "b",
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Node::A => "A",
            Node::B => "B",
        })
    }
}

/// PostgreSQL shutdown modes (`pg_ctl stop -m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Wait for clients to disconnect (SIGTERM).
    Smart,
    /// Disconnect clients, checkpoint, and hand all WAL to connected standbys (SIGINT).
    Fast,
    /// Crash-like: no checkpoint, no WAL hand-off (SIGQUIT).
    Immediate,
}

impl StopMode {
    pub(crate) fn signal(self) -> libc::c_int {
        match self {
            StopMode::Smart => libc::SIGTERM,
            StopMode::Fast => libc::SIGINT,
            StopMode::Immediate => libc::SIGQUIT,
        }
    }
}

/// A moment on both clocks: wall time for logs and other processes, monotonic for durations.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    /// Wall clock.
    pub wall: SystemTime,
    /// Monotonic clock (tokio's, so it agrees with the rest of pgdrill).
    pub mono: Instant,
}

impl Stamp {
    /// Now.
    pub fn now() -> Stamp {
        Stamp {
            wall: SystemTime::now(),
            mono: Instant::now(),
        }
    }
    /// Monotonic time from `earlier` to `self` (zero if `earlier` is later).
    pub fn since(&self, earlier: &Stamp) -> Duration {
        self.mono.saturating_duration_since(earlier.mono)
    }
}

/// When each step of a failover or switchover happened.
#[derive(Debug, Clone, Copy)]
pub struct FailoverReport {
    /// The node that was primary before.
    pub old_primary: Node,
    /// The node that is primary now.
    pub new_primary: Node,
    /// The stop signal is about to be sent to the old primary.
    pub stop_begun: Stamp,
    /// The old primary's postmaster has exited.
    pub stopped: Stamp,
    /// Promotion is about to be requested on the standby.
    pub promote_requested: Stamp,
    /// The new primary committed a transaction that wrote WAL.
    pub writable: Stamp,
}

impl FailoverReport {
    /// From the stop signal to the old postmaster's exit.
    pub fn stop_duration(&self) -> Duration {
        self.stopped.since(&self.stop_begun)
    }
    /// From the promote request to the first successful write.
    pub fn promote_to_writable(&self) -> Duration {
        self.writable.since(&self.promote_requested)
    }
    /// From the stop signal to the first successful write on the new primary.
    pub fn stop_to_writable(&self) -> Duration {
        self.writable.since(&self.stop_begun)
    }
}

impl fmt::Display for FailoverReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {}: stop {:?}, stopped->promote {:?}, promote->writable {:?}, total {:?}",
            self.old_primary,
            self.new_primary,
            self.stop_duration(),
            self.promote_requested.since(&self.stopped),
            self.promote_to_writable(),
            self.stop_to_writable()
        )
    }
}
