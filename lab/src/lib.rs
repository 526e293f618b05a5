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

pub mod proxy;
pub mod sys;

use std::fmt;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::process::Command;
use tokio::time::Instant;
use tokio_postgres::{Client, NoTls};

mod hang;
pub use hang::{
    enter_private_hosts, private_hosts_available, FreezeReport, HostsFile, ADDR_A, ADDR_B,
};

/// How long to wait for initdb / pg_basebackup (both copy files; slow disks are slow).
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound for a server to accept connections, stop, or become writable.
const STATE_TIMEOUT: Duration = Duration::from_secs(60);
/// Readiness poll period: short, because the failover stamps are only as precise as this.
const POLL: Duration = Duration::from_millis(5);
/// Per-attempt connect timeout while polling.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Superuser created by initdb; used only over the lab's private Unix sockets.
const ADMIN_USER: &str = "postgres";
/// Role and database the DSNs hand out.
const APP_USER: &str = "pgdrill";
const APP_DB: &str = "pgdrill";

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
    /// failover can move only the address (a DNS switch, see [`HostsFile`]). Default: both
    /// on 127.0.0.1, each on its own port.
    pub separate_addresses: bool,
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
    fn idx(self) -> usize {
        match self {
            Node::A => 0,
            Node::B => 1,
        }
    }
    fn name(self) -> &'static str {
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
    fn signal(self) -> libc::c_int {
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

/// Lab failures, each carrying what was being done.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// No usable PostgreSQL server binaries.
    #[error(
        "no PostgreSQL server binaries found ({0}); set PGDRILL_PG_BINDIR or LabOptions::bin_dir"
    )]
    NoBinaries(String),
    /// Running as root and no unprivileged user exists to run PostgreSQL as.
    #[error(
        "running as root, and neither user `postgres` nor `nobody` exists to run PostgreSQL as"
    )]
    NoUnprivilegedUser,
    /// A filesystem or process-spawn operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// An external command exited unsuccessfully.
    #[error("`{command}` failed ({status}); output tail:\n{output_tail}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// The end of its stderr and stdout.
        output_tail: String,
    },
    /// Something did not happen in time.
    #[error("timed out after {after:?} waiting for {what}{}", fmt_tail(.log_tail))]
    Timeout {
        /// What we waited for.
        what: String,
        /// How long we waited.
        after: Duration,
        /// The end of the relevant server log, if any.
        log_tail: String,
    },
    /// A SQL statement failed.
    #[error("{what}: {source}")]
    Sql {
        /// What was being done.
        what: String,
        /// The error (kept whole so `code()` still works).
        #[source]
        source: tokio_postgres::Error,
    },
    /// The operation does not fit the lab's current state (e.g. no standby to promote).
    #[error("{0}")]
    State(String),
}

fn fmt_tail(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; server log tail:\n{tail}")
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

fn sql_err(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Sql { what, source }
}

/// Mutable view of who is what; behind a mutex so the lab can be shared (`Arc<Lab>`) by a
/// drill and the code that triggers failovers.
#[derive(Debug, Clone, Copy)]
struct Roles {
    primary: Node,
    standby: Option<Node>,
    /// Which nodes have a data directory (B exists only with a standby).
    exists: [bool; 2],
}

/// A running lab. See the module docs.
pub struct Lab {
    base: PathBuf,
    remove_base_on_drop: bool,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
    ports: [u16; 2],
    addrs: [std::net::IpAddr; 2],
    password: Option<String>,
    mode: Option<ReplicationMode>,
    roles: Mutex<Roles>,
    /// Serializes lifecycle operations (failover, stop, start) so they cannot interleave.
    op: tokio::sync::Mutex<()>,
}

impl fmt::Debug for Lab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lab")
            .field("base", &self.base)
            .field("ports", &self.ports)
            .field("roles", &self.roles())
            .finish_non_exhaustive()
    }
}

impl Lab {
    /// initdb, start the primary, create role and database `pgdrill`; with a standby:
    /// `pg_basebackup -R -X stream -c fast`, start it, wait until it streams, and only then
    /// (for [`ReplicationMode::Sync`]) set `synchronous_standby_names = '*'` on the primary, so
    /// the setup itself never blocks and the standby never inherits the setting.
    pub async fn start(opts: LabOptions) -> Result<Lab, LabError> {
        let bin = find_bin_dir(opts.bin_dir.as_deref()).await?;
        let run_as = unprivileged_user()?;
        let (base, remove_base_on_drop) = match &opts.base_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(io_err(format!("creating {}", dir.display())))?;
                (dir.clone(), false)
            }
            None => (make_temp_dir()?, true),
        };
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&base, Some(uid), Some(gid))
                .map_err(io_err(format!("chown {}", base.display())))?;
        }
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(format!("chmod {}", base.display())))?;

        let addrs = if opts.separate_addresses {
            [hang::ADDR_A, hang::ADDR_B]
        } else {
            [std::net::Ipv4Addr::LOCALHOST.into(); 2]
        };
        let ports = if opts.separate_addresses {
            let port = free_port(&addrs)?;
            [port, port]
        } else {
            [free_port(&addrs[..1])?, free_port(&addrs[..1])?]
        };
        let lab = Lab {
            base,
            remove_base_on_drop,
            bin,
            run_as,
            ports,
            addrs,
            password: opts.password.clone(),
            mode: opts.standby,
            roles: Mutex::new(Roles {
                primary: Node::A,
                standby: None,
                exists: [false, false],
            }),
            op: tokio::sync::Mutex::new(()),
        };
        // From here on, `lab` going out of scope on error stops whatever was started.
        lab.init_primary().await?;
        if lab.mode.is_some() {
            lab.init_standby().await?;
        }
        Ok(lab)
    }

    /// The node that is primary now.
    pub fn primary(&self) -> Node {
        self.roles().primary
    }

    /// The node that is a (running, streaming) standby now, if any.
    pub fn standby(&self) -> Option<Node> {
        self.roles().standby
    }

    /// The node's loopback address (127.0.0.1 unless [`LabOptions::separate_addresses`]).
    pub fn addr(&self, n: Node) -> std::net::IpAddr {
        self.addrs[n.idx()]
    }

    /// The node's TCP port (fixed for the lab's life).
    pub fn port(&self, n: Node) -> u16 {
        self.ports[n.idx()]
    }

    /// Directory holding everything (data directories, logs, sockets).
    pub fn base_dir(&self) -> &Path {
        &self.base
    }

    /// The PostgreSQL binaries in use (e.g. to run `pgbench` or `psql` of the same version).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The node's server log file.
    pub fn log_path(&self, n: Node) -> PathBuf {
        self.base.join(format!("{}.log", n.name()))
    }

    /// libpq key=value DSN for role and database `pgdrill` on one node over TCP.
    pub fn dsn(&self, n: Node) -> String {
        self.app_dsn(&format!("host={} port={}", self.addr(n), self.port(n)))
    }

    /// Both nodes, A then B, with `target_session_attrs=read-write`: connects to whichever
    /// node is primary.
    pub fn multi_host_dsn(&self) -> String {
        self.app_dsn(&format!(
            "host={},{} port={},{} target_session_attrs=read-write",
            self.addr(Node::A),
            self.addr(Node::B),
            self.port(Node::A),
            self.port(Node::B)
        ))
    }

    /// Superuser DSN over the lab's private Unix socket (for checks like
    /// `pg_stat_replication`).
    pub fn admin_dsn(&self, n: Node) -> String {
        format!(
            "host={} port={} user={ADMIN_USER} dbname=postgres",
            quote_conn_value(&self.socket_dir(n).to_string_lossy()),
            self.port(n)
        )
    }

    /// Crash the primary (`immediate` stop: no checkpoint, no WAL hand-off), then promote the
    /// standby and wait until it commits a write. Afterwards the old primary is down and there
    /// is no standby; starting the old primary again would make a second primary.
    pub async fn force_failover(&self) -> Result<FailoverReport, LabError> {
        self.fail_over(StopMode::Immediate).await
    }

    /// Planned switchover: `fast` stop of the primary (which hands all its WAL to the standby
    /// before exiting), then promote the standby. Loses no committed write.
    pub async fn switchover(&self) -> Result<FailoverReport, LabError> {
        self.fail_over(StopMode::Fast).await
    }

    /// Make the standby stop receiving WAL (empty `primary_conninfo`, reloaded), and wait until
    /// its WAL receiver is gone. Writes acknowledged by an async primary after this are lost by
    /// a later failover. With a sync standby, commits on the primary block from now on.
    pub async fn detach_standby(&self) -> Result<(), LabError> {
        let _op = self.op.lock().await;
        let standby = self
            .standby()
            .ok_or_else(|| LabError::State("detach_standby: there is no standby".into()))?;
        let client = self.admin(standby).await?;
        client
            .batch_execute("ALTER SYSTEM SET primary_conninfo = ''")
            .await
            .map_err(sql_err("ALTER SYSTEM SET primary_conninfo on the standby"))?;
        client
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .map_err(sql_err("pg_reload_conf() on the standby"))?;
        let what = format!("node {standby}'s WAL receiver to stop");
        self.poll(standby, &what, || async {
            let row = client
                .query_one("SELECT count(*) FROM pg_stat_wal_receiver", &[])
                .await
                .map_err(sql_err("reading pg_stat_wal_receiver"))?;
            Ok(row.get::<_, i64>(0) == 0)
        })
        .await
    }

    /// Stop a node (by signalling the postmaster we started; waits for it to exit).
    /// Stopping the standby leaves the lab without one.
    pub async fn stop(&self, n: Node, mode: StopMode) -> Result<(), LabError> {
        let _op = self.op.lock().await;
        self.stop_node(n, mode).await?;
        let mut roles = self.roles.lock().unwrap_or_else(|e| e.into_inner());
        if roles.standby == Some(n) {
            roles.standby = None;
        }
        Ok(())
    }

    /// Start a stopped node again, in whatever role its data directory says (a standby keeps
    /// `standby.signal`; an old primary after a failover comes back as a second primary).
    pub async fn start_node(&self, n: Node) -> Result<(), LabError> {
        let _op = self.op.lock().await;
        if !self.roles().exists[n.idx()] {
            return Err(LabError::State(format!("node {n} was never created")));
        }
        self.start_server(n).await
    }

    /// Turn TLS on for a node: the PEM certificate and key are copied into its data
    /// directory (owned by the server's OS user, key mode 0600), then the server reloads.
    pub async fn enable_ssl(&self, n: Node, cert: &Path, key: &Path) -> Result<(), LabError> {
        let dir = self.data_dir(n);
        for (from, name, mode) in [(cert, "server.crt", 0o644), (key, "server.key", 0o600)] {
            let to = dir.join(name);
            std::fs::copy(from, &to).map_err(io_err(format!("copying {}", from.display())))?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))
                .map_err(io_err(format!("chmod {}", to.display())))?;
            if let Some((uid, gid)) = self.run_as {
                std::os::unix::fs::chown(&to, Some(uid), Some(gid))
                    .map_err(io_err(format!("chown {}", to.display())))?;
            }
        }
        let admin = self.admin(n).await?;
        for sql in [
            "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
            "ALTER SYSTEM SET ssl_key_file = 'server.key'",
            "ALTER SYSTEM SET ssl = on",
            "SELECT pg_reload_conf()",
        ] {
            admin.batch_execute(sql).await.map_err(sql_err(sql))?;
        }
        let what = format!("node {n} to enable ssl");
        self.poll(n, &what, || async {
            let row = admin
                .query_one("SELECT current_setting('ssl')", &[])
                .await
                .map_err(sql_err("reading ssl"))?;
            Ok(row.get::<_, String>(0) == "on")
        })
        .await
    }

    /// The (uid, gid) the servers run as when we are root; helpers that also refuse root
    /// (PgBouncer) can run as the same user.
    pub fn server_user(&self) -> Option<(u32, u32)> {
        self.run_as
    }

    /// Stop every node immediately and remove the temporary directory (if the lab made it).
    pub async fn shutdown(self) {
        for n in [Node::A, Node::B] {
            if self.roles().exists[n.idx()] {
                if let Err(e) = self.stop_node(n, StopMode::Immediate).await {
                    tracing::warn!(node = %n, error = %e, "lab: stopping node failed");
                }
            }
        }
        // Drop removes the directory; the servers are already down so it does not wait.
    }

    // ---- internals ----

    fn roles(&self) -> Roles {
        *self.roles.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn data_dir(&self, n: Node) -> PathBuf {
        self.base.join(n.name())
    }

    /// Where a node puts its Unix socket: the base directory, except for B when both nodes
    /// share a port (separate addresses), whose socket file would clash with A's.
    fn socket_dir(&self, n: Node) -> PathBuf {
        if n == Node::B && self.ports[0] == self.ports[1] {
            self.base.join("b-sock")
        } else {
            self.base.clone()
        }
    }

    fn app_dsn(&self, hosts: &str) -> String {
        let mut dsn = format!("{hosts} user={APP_USER} dbname={APP_DB}");
        if let Some(pw) = &self.password {
            dsn.push_str(" password=");
            dsn.push_str(&quote_conn_value(pw));
        }
        dsn
    }

    async fn init_primary(&self) -> Result<(), LabError> {
        let dir = self.data_dir(Node::A);
        let mut cmd = self.pg_command("initdb");
        cmd.arg("-D")
            .arg(&dir)
            .args(["-U", ADMIN_USER, "-A", "trust", "-E", "UTF8", "--locale=C"])
            // Durability of the freshly created files is irrelevant for a throwaway lab; the
            // servers themselves still run with fsync=on.
            .arg("--no-sync");
        self.run(cmd, SETUP_TIMEOUT).await?;
        self.roles.lock().unwrap_or_else(|e| e.into_inner()).exists[0] = true;

        let conf = format!(
            "\n# --- pgdrill lab ---\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{sock}'\n\
             max_connections = 200\n\
             shared_buffers = 32MB\n\
             fsync = on\n\
             synchronous_commit = on\n\
             wal_level = replica\n\
             max_wal_senders = 5\n\
             max_replication_slots = 5\n\
             wal_keep_size = 256MB\n\
             hot_standby = on\n\
             wal_log_hints = on\n\
             log_line_prefix = '%m [%p] %q%u@%d '\n\
             log_min_messages = info\n\
             password_encryption = scram-sha-256\n",
            sock = self.base.display()
        );
        append(&dir.join("postgresql.conf"), &conf)?;
        // The lab administers through its private socket directory (0700, so only the server
        // user and root reach it); TCP on loopback is for clients, password-checked if asked.
        let tcp_auth = if self.password.is_some() {
            "scram-sha-256"
        } else {
            "trust"
        };
        let hba = format!(
            "# pgdrill lab\n\
             local all all trust\n\
             local replication all trust\n\
             host all all 127.0.0.0/8 {tcp_auth}\n\
             host replication all 127.0.0.0/8 {tcp_auth}\n"
        );
        std::fs::write(dir.join("pg_hba.conf"), hba).map_err(io_err("writing pg_hba.conf"))?;

        self.start_server(Node::A).await?;
        let admin = self.admin(Node::A).await?;
        let password = match &self.password {
            Some(pw) => format!(" PASSWORD {}", quote_sql_literal(pw)),
            None => String::new(),
        };
        admin
            .batch_execute(&format!("CREATE ROLE {APP_USER} LOGIN{password}"))
            .await
            .map_err(sql_err("creating role pgdrill"))?;
        // Lets a drill read replication state (pg_stat_replication etc.) without superuser.
        admin
            .batch_execute(&format!("GRANT pg_monitor TO {APP_USER}"))
            .await
            .map_err(sql_err("granting pg_monitor to pgdrill"))?;
        admin
            .batch_execute(&format!("CREATE DATABASE {APP_DB} OWNER {APP_USER}"))
            .await
            .map_err(sql_err("creating database pgdrill"))?;
        Ok(())
    }

    async fn init_standby(&self) -> Result<(), LabError> {
        let dir = self.data_dir(Node::B);
        let mut cmd = self.pg_command("pg_basebackup");
        cmd.arg("-D")
            .arg(&dir)
            .arg("-h")
            .arg(&self.base)
            .arg("-p")
            .arg(self.port(Node::A).to_string())
            .args([
                "-U",
                ADMIN_USER,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ]);
        self.run(cmd, SETUP_TIMEOUT).await?;
        self.roles.lock().unwrap_or_else(|e| e.into_inner()).exists[1] = true;
        self.start_server(Node::B).await?;
        self.wait_streaming(Node::A, false).await?;
        self.roles.lock().unwrap_or_else(|e| e.into_inner()).standby = Some(Node::B);

        if self.mode == Some(ReplicationMode::Sync) {
            let admin = self.admin(Node::A).await?;
            // Separate statements: ALTER SYSTEM refuses to run inside a multi-statement query.
            admin
                .batch_execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
                .await
                .map_err(sql_err("setting synchronous_standby_names"))?;
            admin
                .batch_execute("SELECT pg_reload_conf()")
                .await
                .map_err(sql_err("pg_reload_conf() on the primary"))?;
            // The reload is asynchronous; sync_state shows when the walsender has taken it.
            self.wait_streaming(Node::A, true).await?;
        }
        Ok(())
    }

    /// Wait until `primary` has a streaming standby (and, if `sync`, a synchronous one).
    async fn wait_streaming(&self, primary: Node, sync: bool) -> Result<(), LabError> {
        let client = self.admin(primary).await?;
        let what = if sync {
            "the standby to become synchronous"
        } else {
            "the standby to stream"
        };
        self.poll(primary, what, || async {
            let row = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_replication \
                     WHERE state = 'streaming' AND (NOT $1 OR sync_state = 'sync')",
                    &[&sync],
                )
                .await
                .map_err(sql_err("reading pg_stat_replication"))?;
            Ok(row.get::<_, i64>(0) > 0)
        })
        .await
    }

    async fn fail_over(&self, mode: StopMode) -> Result<FailoverReport, LabError> {
        let _op = self.op.lock().await;
        let Roles {
            primary: old,
            standby,
            ..
        } = self.roles();
        let new = standby.ok_or_else(|| LabError::State("failover: there is no standby".into()))?;
        // Connect before the clock starts: the report measures the servers, not our connect.
        let client = self.admin(new).await?;

        let stop_begun = Stamp::now();
        self.stop_node(old, mode).await?;
        let stopped = Stamp::now();
        {
            let mut roles = self.roles.lock().unwrap_or_else(|e| e.into_inner());
            roles.standby = None;
        }

        let (promote_requested, writable) = self.promote(new, &client).await?;
        Ok(FailoverReport {
            old_primary: old,
            new_primary: new,
            stop_begun,
            stopped,
            promote_requested,
            writable,
        })
    }

    /// Promote `new` (a standby, `client` a superuser session on it) and wait until it
    /// commits a write; returns when promotion was requested and when the write committed.
    async fn promote(&self, new: Node, client: &Client) -> Result<(Stamp, Stamp), LabError> {
        // pg_promote(wait => false) and our own 5 ms poll: pg_ctl promote -w and
        // pg_promote(true) poll every 100 ms, which would blur the stamps.
        let promote_requested = Stamp::now();
        client
            .query_one("SELECT pg_promote(false)", &[])
            .await
            .map_err(sql_err(format!("pg_promote() on node {new}")))?;
        // A transaction id makes the commit write WAL (and wait for a sync standby if one were
        // configured), so success means a client write would succeed too. The session that
        // began in recovery becomes read-write with its next transaction.
        let what = format!("node {new} to accept a write after promotion");
        self.poll(new, &what, || async {
            match client.simple_query("SELECT txid_current()").await {
                Ok(_) => Ok(true),
                // 25006 read_only_sql_transaction / 55000 "cannot assign TransactionIds during
                // recovery": still a standby.
                Err(e) if e.as_db_error().is_some() => Ok(false),
                Err(e) => Err(sql_err(format!("probing node {new} for writes"))(e)),
            }
        })
        .await?;
        let writable = Stamp::now();
        let mut roles = self.roles.lock().unwrap_or_else(|e| e.into_inner());
        roles.primary = new;
        roles.standby = None;
        Ok((promote_requested, writable))
    }

    /// `pg_ctl start` without `-w` (it polls every 100 ms), then our own connect poll.
    async fn start_server(&self, n: Node) -> Result<(), LabError> {
        let sockets = self.socket_dir(n);
        if !sockets.exists() {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&sockets)
                .map_err(io_err(format!("creating {}", sockets.display())))?;
            if let Some((uid, gid)) = self.run_as {
                std::os::unix::fs::chown(&sockets, Some(uid), Some(gid))
                    .map_err(io_err(format!("chown {}", sockets.display())))?;
            }
        }
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir(n))
            .arg("-l")
            .arg(self.log_path(n))
            .arg("-o")
            .arg(format!(
                "-p {} -c listen_addresses={} -c unix_socket_directories='{}'",
                self.port(n),
                self.addr(n),
                self.socket_dir(n).display()
            ))
            .args(["-W", "start"]);
        self.run(cmd, SETUP_TIMEOUT).await?;
        let pid_file = self.data_dir(n).join("postmaster.pid");
        let started = Instant::now();
        let what = format!("node {n} to accept connections");
        self.poll(n, &what, || async {
            match self.try_admin(n).await {
                Ok(_) => Ok(true),
                Err(_) => {
                    // The postmaster writes its pid file first thing; if it is still missing
                    // after a while, the server died (bad config, port taken): fail fast.
                    if started.elapsed() > Duration::from_secs(3) && !pid_file.exists() {
                        return Err(LabError::Command {
                            command: format!("postgres (node {n})"),
                            status: "exited during startup".into(),
                            output_tail: tail_file(&self.log_path(n)),
                        });
                    }
                    Ok(false)
                }
            }
        })
        .await
    }

    /// Signal the postmaster (by the pid in its pid file, i.e. one we started) and wait for
    /// the pid file to disappear, which the postmaster does as its last act. We do not use
    /// `kill(pid, 0)`: the postmaster is not our child and may linger as a zombie in
    /// containers whose init does not reap.
    async fn stop_node(&self, n: Node, mode: StopMode) -> Result<(), LabError> {
        let pid_file = self.data_dir(n).join("postmaster.pid");
        let Some(pid) = read_postmaster_pid(&pid_file) else {
            return Ok(()); // not running
        };
        // SAFETY: kill(2) with a pid read from our own server's pid file; no memory involved.
        let rc = unsafe { libc::kill(pid, mode.signal()) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ESRCH) {
                // Crashed without cleaning up; nothing to stop.
                return Ok(());
            }
            return Err(io_err(format!("signalling node {n}'s postmaster {pid}"))(
                err,
            ));
        }
        // A frozen server handles the signal only once it runs again.
        hang::resume(pid);
        let what = format!("node {n} to stop ({mode:?})");
        self.poll(n, &what, || async { Ok(!pid_file.exists()) })
            .await
    }

    /// Poll `check` every [`POLL`] until it returns true, bounded by [`STATE_TIMEOUT`].
    async fn poll<F, Fut>(&self, n: Node, what: &str, mut check: F) -> Result<(), LabError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool, LabError>>,
    {
        let deadline = Instant::now() + STATE_TIMEOUT;
        loop {
            let attempt = tokio::time::timeout_at(deadline, check()).await;
            match attempt {
                Ok(Ok(true)) => return Ok(()),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => break,
            }
            if Instant::now() + POLL >= deadline {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        Err(LabError::Timeout {
            what: what.to_string(),
            after: STATE_TIMEOUT,
            log_tail: tail_file(&self.log_path(n)),
        })
    }

    async fn try_admin(&self, n: Node) -> Result<Client, tokio_postgres::Error> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host_path(self.socket_dir(n))
            .port(self.port(n))
            .user(ADMIN_USER)
            .dbname("postgres")
            .application_name("pgdrill-lab")
            .connect_timeout(CONNECT_TIMEOUT);
        let (client, conn) = cfg.connect(NoTls).await?;
        tokio::spawn(async move {
            // Errors surface on the client's next call; nothing to add here.
            let _ = conn.await;
        });
        Ok(client)
    }

    async fn admin(&self, n: Node) -> Result<Client, LabError> {
        self.try_admin(n)
            .await
            .map_err(sql_err(format!("connecting to node {n} as superuser")))
    }

    fn pg_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        // A clean environment: stray PGHOST/PGPORT/PGDATA etc. must not redirect the tools.
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LC_ALL", "C")
            .env("HOME", &self.base)
            .current_dir(&self.base)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Ok(tz) = std::env::var("TZ") {
            cmd.env("TZ", tz);
        }
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// Run a command to completion, bounded; failures carry the command line and output tail.
    /// (`pg_ctl start -l` sends the server's output to the log, so the pipes reach EOF.)
    async fn run(&self, mut cmd: Command, limit: Duration) -> Result<(), LabError> {
        let line = {
            let std = cmd.as_std();
            let mut s = std.get_program().to_string_lossy().into_owned();
            for a in std.get_args() {
                s.push(' ');
                s.push_str(&a.to_string_lossy());
            }
            s
        };
        let child = cmd.spawn().map_err(io_err(format!("spawning `{line}`")))?;
        let out = match tokio::time::timeout(limit, child.wait_with_output()).await {
            Ok(out) => out.map_err(io_err(format!("running `{line}`")))?,
            Err(_) => {
                return Err(LabError::Timeout {
                    what: format!("`{line}`"),
                    after: limit,
                    log_tail: String::new(),
                })
            }
        };
        if out.status.success() {
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        Err(LabError::Command {
            command: line,
            status: out.status.to_string(),
            output_tail: tail(&text, 20),
        })
    }
}

impl Drop for Lab {
    /// Best effort: SIGQUIT every postmaster still running, wait briefly for them to exit
    /// (blocking, bounded), then remove the temporary directory.
    fn drop(&mut self) {
        let mut pending = Vec::new();
        for n in [Node::A, Node::B] {
            let pid_file = self.data_dir(n).join("postmaster.pid");
            if let Some(pid) = read_postmaster_pid(&pid_file) {
                // SAFETY: kill(2) on the pid of a server this lab started.
                unsafe { libc::kill(pid, libc::SIGQUIT) };
                hang::resume(pid);
                pending.push(pid_file);
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pending.iter().any(|p| p.exists()) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.remove_base_on_drop {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }
}

/// The postmaster's pid from its pid file (first line), if the file exists and parses.
fn read_postmaster_pid(pid_file: &Path) -> Option<libc::pid_t> {
    let text = std::fs::read_to_string(pid_file).ok()?;
    let pid: libc::pid_t = text.lines().next()?.trim().parse().ok()?;
    // Never signal 0 / negative pids: those address process groups.
    (pid > 1).then_some(pid)
}

/// Resolve the server binary directory (see [`LabOptions::bin_dir`]); the Patroni test cluster
/// uses the same binaries.
pub async fn find_bin_dir(given: Option<&Path>) -> Result<PathBuf, LabError> {
    let has_initdb = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(d) = given {
        return if has_initdb(d) {
            Ok(d.to_path_buf())
        } else {
            Err(LabError::NoBinaries(format!(
                "no initdb/pg_ctl in {}",
                d.display()
            )))
        };
    }
    if let Some(d) = std::env::var_os("PGDRILL_PG_BINDIR") {
        let d = PathBuf::from(d);
        return if has_initdb(&d) {
            Ok(d)
        } else {
            Err(LabError::NoBinaries(format!(
                "PGDRILL_PG_BINDIR={} has no initdb/pg_ctl",
                d.display()
            )))
        };
    }
    let pg_config = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output();
    if let Ok(Ok(out)) = tokio::time::timeout(Duration::from_secs(10), pg_config).await {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_initdb(&d) {
            return Ok(d);
        }
    }
    // Debian layout: /usr/lib/postgresql/<major>/bin; take the highest major.
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            has_initdb(&bin).then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major);
    newest.map(|(_, bin)| bin).ok_or_else(|| {
        LabError::NoBinaries("not in PGDRILL_PG_BINDIR, pg_config, or /usr/lib/postgresql".into())
    })
}

/// `Some((uid, gid))` to run PostgreSQL as when we are root; `None` when we are not. The lab
/// runs its servers as this user; other harnesses that start PostgreSQL (the Patroni test
/// cluster) use the same one.
pub fn unprivileged_user() -> Result<Option<(u32, u32)>, LabError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    for name in [c"postgres", c"nobody"] {
        // SAFETY: getpwnam_r writes into the zeroed struct and buffer we own, and sets
        // `result` to point at our struct (or null); getpwnam would share a static buffer
        // with other threads.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 4096];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut pw,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == 0 && !result.is_null() && pw.pw_uid != 0 {
            return Ok(Some((pw.pw_uid, pw.pw_gid)));
        }
    }
    Err(LabError::NoUnprivilegedUser)
}

/// A fresh, unique directory under the system temp dir (mode 0700). Made by hand rather than
/// with `tempfile`, which is only a dev-dependency.
fn make_temp_dir() -> Result<PathBuf, LabError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let root = std::env::temp_dir();
    for _ in 0..100 {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = root.join(format!("pgdrill-lab-{}-{n}-{nanos:x}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(format!("creating {}", dir.display()))(e)),
        }
    }
    Err(LabError::State(
        "could not create a unique temporary directory".into(),
    ))
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picks; we release it for the
/// server to bind).
/// A free port *below* the kernel's ephemeral range: a server restarted on its port
/// (`start_node`) must not find it taken as the source port of some client's socket,
/// which happens with `bind(0)` ports under a reconnecting load.
fn free_port(addrs: &[std::net::IpAddr]) -> Result<u16, LabError> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (20_000u16, ephemeral_low.max(20_100));
    // Distinct per process and per call, so parallel labs do not probe the same port.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let start = std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(call.wrapping_mul(104_729));
    let span = u32::from(high - low);
    for i in 0..span {
        let port = low + ((start.wrapping_add(i.wrapping_mul(7919))) % span) as u16;
        if addrs
            .iter()
            .all(|a| std::net::TcpListener::bind((*a, port)).is_ok())
        {
            return Ok(port);
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err("picking a free port"))?;
    Ok(l.local_addr()
        .map_err(io_err("picking a free port"))?
        .port())
}

/// [`free_port`] on 127.0.0.1, for servers other harnesses start (the Patroni test cluster),
/// which restart on the same port while clients reconnect.
pub fn free_server_port() -> Result<u16, LabError> {
    free_port(&[std::net::Ipv4Addr::LOCALHOST.into()])
}

fn append(path: &Path, text: &str) -> Result<(), LabError> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io_err(format!("opening {}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(io_err(format!("writing {}", path.display())))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn tail_file(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| tail(&String::from_utf8_lossy(&b), 20))
        .unwrap_or_default()
}

/// Quote a value for a libpq key=value connection string.
fn quote_conn_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('\'');
    for c in v.chars() {
        if c == '\'' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('\'');
    s
}

/// Quote a SQL string literal (standard_conforming_strings is on by default).
fn quote_sql_literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_values_are_quoted() {
        assert_eq!(quote_conn_value(r"a'b\c"), r"'a\'b\\c'");
        assert_eq!(quote_sql_literal("it's"), "'it''s'");
    }

    #[test]
    fn pid_file_first_line_only() {
        let dir = make_temp_dir().expect("temp dir");
        let f = dir.join("postmaster.pid");
        std::fs::write(&f, "4242\n/data\n123\n").expect("write");
        assert_eq!(read_postmaster_pid(&f), Some(4242));
        std::fs::write(&f, "0\n").expect("write");
        assert_eq!(read_postmaster_pid(&f), None);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
