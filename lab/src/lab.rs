//! The running lab: who is primary, the DSNs it hands out, and the public operations
//! (failover, switchover, stop, start); the server plumbing is in `server.rs`.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::error::{io_err, sql_err, LabError};
use crate::hang;
use crate::host::{
    find_bin_dir, free_port, make_temp_dir, quote_conn_value, read_postmaster_pid,
    unprivileged_user,
};
use crate::model::{FailoverReport, LabOptions, Node, ReplicationMode, StopMode};

/// How long to wait for initdb / pg_basebackup (both copy files; slow disks are slow).
pub(crate) const SETUP_TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound for a server to accept connections, stop, or become writable.
pub(crate) const STATE_TIMEOUT: Duration = Duration::from_secs(60);
/// Readiness poll period: short, because the failover stamps are only as precise as this.
pub(crate) const POLL: Duration = Duration::from_millis(5);
/// Per-attempt connect timeout while polling.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Superuser created by initdb; used only over the lab's private Unix sockets.
pub(crate) const ADMIN_USER: &str = "postgres";
/// Role and database the DSNs hand out.
pub(crate) const APP_USER: &str = "pgdrill";
pub(crate) const APP_DB: &str = "pgdrill";

/// Mutable view of who is what; behind a mutex so the lab can be shared (`Arc<Lab>`) by a
/// drill and the code that triggers failovers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Roles {
    pub(crate) primary: Node,
    pub(crate) standby: Option<Node>,
    /// Which nodes have a data directory (B exists only with a standby).
    pub(crate) exists: [bool; 2],
}

/// A running lab. See the module docs.
pub struct Lab {
    pub(crate) base: PathBuf,
    pub(crate) remove_base_on_drop: bool,
    pub(crate) bin: PathBuf,
    pub(crate) run_as: Option<(u32, u32)>,
    pub(crate) ports: [u16; 2],
    pub(crate) addrs: [std::net::IpAddr; 2],
    pub(crate) password: Option<String>,
    pub(crate) mode: Option<ReplicationMode>,
    pub(crate) initdb_once: bool,
    pub(crate) roles: Mutex<Roles>,
    /// Serializes lifecycle operations (failover, stop, start) so they cannot interleave.
    pub(crate) op: tokio::sync::Mutex<()>,
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
            initdb_once: opts.initdb_once,
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
        self.fail_over(StopMode::Immediate, Duration::ZERO).await
    }

    /// [`Lab::force_failover`] with the standby promoted `promote_after` the crash (an HA
    /// service's detection time): an outage of at least that long, however fast promotion is
    /// (on tmpfs the whole failover can take 30 ms, under pgdrill's outage threshold).
    pub async fn force_failover_after(
        &self,
        promote_after: Duration,
    ) -> Result<FailoverReport, LabError> {
        self.fail_over(StopMode::Immediate, promote_after).await
    }

    /// Planned switchover: `fast` stop of the primary (which hands all its WAL to the standby
    /// before exiting), then promote the standby. Loses no committed write.
    pub async fn switchover(&self) -> Result<FailoverReport, LabError> {
        self.fail_over(StopMode::Fast, Duration::ZERO).await
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

    pub(crate) fn roles(&self) -> Roles {
        *self.roles.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn data_dir(&self, n: Node) -> PathBuf {
        self.base.join(n.name())
    }

    /// Where a node puts its Unix socket: the base directory, except for B when both nodes
    /// share a port (separate addresses), whose socket file would clash with A's.
    pub(crate) fn socket_dir(&self, n: Node) -> PathBuf {
        if n == Node::B && self.ports[0] == self.ports[1] {
            self.base.join("b-sock")
        } else {
            self.base.clone()
        }
    }

    pub(crate) fn app_dsn(&self, hosts: &str) -> String {
        let mut dsn = format!("{hosts} user={APP_USER} dbname={APP_DB}");
        if let Some(pw) = &self.password {
            dsn.push_str(" password=");
            dsn.push_str(&quote_conn_value(pw));
        }
        dsn
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
