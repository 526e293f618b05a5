//! Server plumbing of the lab: initdb and base backups, starting, stopping and promoting
//! servers, polling them, and running the PostgreSQL tools bounded.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::time::Instant;
use tokio_postgres::{Client, NoTls};

use crate::error::{io_err, sql_err, LabError};
use crate::hang;
use crate::host::{append, make_temp_dir, quote_sql_literal, read_postmaster_pid, tail, tail_file};
use crate::lab::{
    Lab, Roles, ADMIN_USER, APP_DB, APP_USER, CONNECT_TIMEOUT, POLL, SETUP_TIMEOUT, STATE_TIMEOUT,
};
use crate::model::{FailoverReport, Node, ReplicationMode, Stamp, StopMode};

/// The data directory of the process's one initdb, for the labs that copy it
/// ([`crate::LabOptions::initdb_once`]), with the server binaries that made it.
static INITDB: tokio::sync::OnceCell<(PathBuf, PathBuf)> = tokio::sync::OnceCell::const_new();

/// Removes [`INITDB`]'s directory when the process exits (an `atexit` handler: a static is
/// never dropped).
extern "C" fn remove_initdb() {
    if let Some((data, _)) = INITDB.get() {
        if let Some(dir) = data.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A directory removed when dropped unless kept: the template of an initdb that failed or
/// whose lab was dropped midway.
struct Unfinished(Option<PathBuf>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Lab {
    async fn initdb(&self, dir: &Path) -> Result<(), LabError> {
        let mut cmd = self.pg_command("initdb");
        cmd.arg("-D")
            .arg(dir)
            .args(["-U", ADMIN_USER, "-A", "trust", "-E", "UTF8", "--locale=C"])
            // Durability of the freshly created files is irrelevant for a throwaway lab; the
            // servers themselves still run with fsync=on.
            .arg("--no-sync");
        self.run(cmd, SETUP_TIMEOUT).await
    }

    /// `cp -a` of the process's one initdb, made on first use: 0.08 s where initdb takes
    /// 0.6 s of CPU, for test suites that start a hundred labs. Where the copy fails (the
    /// template removed under us), initdb as usual.
    async fn copy_initdb(&self, dir: &Path) -> Result<(), LabError> {
        static AT_EXIT: std::sync::Once = std::sync::Once::new();
        let (template, bin) = INITDB
            .get_or_try_init(|| async {
                let dir = make_temp_dir()?;
                let mut unfinished = Unfinished(Some(dir.clone()));
                if let Some((uid, gid)) = self.run_as {
                    std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                        .map_err(io_err(format!("chown {}", dir.display())))?;
                }
                let data = dir.join("data");
                self.initdb(&data).await?;
                unfinished.0 = None;
                Ok::<_, LabError>((data, self.bin.clone()))
            })
            .await?;
        // SAFETY: registers a plain function, once.
        AT_EXIT.call_once(|| unsafe {
            libc::atexit(remove_initdb);
        });
        if *bin != self.bin {
            return self.initdb(dir).await;
        }
        // As root, -a keeps the server user as the owner.
        let mut cp = Command::new("cp");
        cp.arg("-a")
            .arg(template)
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Err(e) = self.run(cp, SETUP_TIMEOUT).await {
            tracing::warn!(error = %e, "copying the template initdb failed; running initdb");
            let _ = std::fs::remove_dir_all(dir);
            return self.initdb(dir).await;
        }
        Ok(())
    }

    pub(crate) async fn init_primary(&self) -> Result<(), LabError> {
        let dir = self.data_dir(Node::A);
        if self.initdb_once {
            self.copy_initdb(&dir).await?;
        } else {
            self.initdb(&dir).await?;
        }
        self.roles.lock().unwrap_or_else(|e| e.into_inner()).exists[0] = true;

        // wal_retrieve_retry_interval: a standby whose primary just stopped can sleep this
        // long before it notices a promotion (seen once on CI: promote->writable 5.02 s at the
        // 5 s default), which would turn a planned switchover into a multi-second outage that
        // is the lab's, not the service's. dynamic_shared_memory_type: segments in the data
        // directory, which goes with the lab; the default (posix, in /dev/shm) leaves one
        // behind whenever a server is crashed or stopped immediately, as failovers do.
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
             wal_retrieve_retry_interval = '100ms'\n\
             dynamic_shared_memory_type = mmap\n\
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

    pub(crate) async fn init_standby(&self) -> Result<(), LabError> {
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
    pub(crate) async fn wait_streaming(&self, primary: Node, sync: bool) -> Result<(), LabError> {
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

    pub(crate) async fn fail_over(
        &self,
        mode: StopMode,
        promote_after: Duration,
    ) -> Result<FailoverReport, LabError> {
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
        tokio::time::sleep(promote_after).await;
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
    pub(crate) async fn promote(
        &self,
        new: Node,
        client: &Client,
    ) -> Result<(Stamp, Stamp), LabError> {
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
    pub(crate) async fn start_server(&self, n: Node) -> Result<(), LabError> {
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
    pub(crate) async fn stop_node(&self, n: Node, mode: StopMode) -> Result<(), LabError> {
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
    pub(crate) async fn poll<F, Fut>(
        &self,
        n: Node,
        what: &str,
        mut check: F,
    ) -> Result<(), LabError>
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

    pub(crate) async fn try_admin(&self, n: Node) -> Result<Client, tokio_postgres::Error> {
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

    pub(crate) async fn admin(&self, n: Node) -> Result<Client, LabError> {
        self.try_admin(n)
            .await
            .map_err(sql_err(format!("connecting to node {n} as superuser")))
    }

    pub(crate) fn pg_command(&self, program: &str) -> Command {
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
    pub(crate) async fn run(&self, mut cmd: Command, limit: Duration) -> Result<(), LabError> {
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
