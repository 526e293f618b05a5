//! A real PgBouncer (the Debian package) in transaction mode in front of a lab node, run as
//! the lab's server user (PgBouncer refuses root), stopped by PID when dropped.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use pgdrill_lab::sys::{send_signal, Signal};
use pgdrill_lab::Lab;
use tokio::process::{Child, Command};

use crate::support::{free_port, try_connect};

pub struct Bouncer {
    pub port: u16,
    /// `ignore_startup_parameters`.
    ignore: &'static str,
    /// `pool_mode`: `transaction` unless started with [`Bouncer::start_in`].
    mode: &'static str,
    dir: tempfile::TempDir,
    run_as: Option<(u32, u32)>,
    child: Option<Child>,
}

impl Bouncer {
    /// Starts PgBouncer on a free port, forwarding database `pgdrill` to `backend_port`;
    /// it ignores the startup parameters `extra_float_digits` and `options`.
    pub async fn start(lab: &Lab, backend_port: u16) -> Bouncer {
        Bouncer::start_ignoring(lab, backend_port, "extra_float_digits,options").await
    }

    /// [`Bouncer::start`] with `ignore_startup_parameters = ignore` (other startup
    /// parameters are refused, 08P01).
    pub async fn start_ignoring(lab: &Lab, backend_port: u16, ignore: &'static str) -> Bouncer {
        Bouncer::start_with(lab, backend_port, ignore, "transaction").await
    }

    /// [`Bouncer::start`] with `pool_mode = mode`.
    pub async fn start_in(lab: &Lab, backend_port: u16, mode: &'static str) -> Bouncer {
        Bouncer::start_with(lab, backend_port, "extra_float_digits,options", mode).await
    }

    async fn start_with(lab: &Lab, port: u16, ignore: &'static str, mode: &'static str) -> Bouncer {
        let backend_port = port;
        let dir = tempfile::tempdir().expect("temp dir");
        let run_as = lab.server_user();
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown bouncer dir");
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod bouncer dir");
        std::fs::write(dir.path().join("userlist.txt"), "\"pgdrill\" \"\"\n").expect("userlist");
        let mut bouncer = Bouncer {
            port: free_port(),
            ignore,
            mode,
            dir,
            run_as,
            child: None,
        };
        bouncer.write_ini(backend_port);
        bouncer.spawn().await;
        bouncer
    }

    pub fn dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=pgdrill dbname=pgdrill sslmode=disable",
            self.port
        )
    }

    fn ini(&self) -> PathBuf {
        self.dir.path().join("pgbouncer.ini")
    }

    fn write_ini(&self, backend_port: u16) {
        let d = self.dir.path().display();
        let ini = format!(
            "[databases]\n\
             pgdrill = host=127.0.0.1 port={backend_port} dbname=pgdrill\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {d}/userlist.txt\n\
             pool_mode = {mode}\n\
             max_client_conn = 500\n\
             default_pool_size = 20\n\
             server_reset_query =\n\
             server_connect_timeout = 2\n\
             server_login_retry = 0\n\
             ignore_startup_parameters = {ignore}\n\
             logfile = {d}/pgbouncer.log\n\
             pidfile = {d}/pgbouncer.pid\n",
            port = self.port,
            ignore = self.ignore,
            mode = self.mode
        );
        std::fs::write(self.ini(), ini).expect("write pgbouncer.ini");
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new("pgbouncer");
        cmd.arg(self.ini())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        self.child = Some(cmd.spawn().expect("spawn pgbouncer"));
        let dsn = self.dsn();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        // Listening is enough: the backend may be down on purpose.
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "pgbouncer did not listen; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = try_connect(&dsn).await;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }

    /// Stops PgBouncer at once (SIGTERM: immediate shutdown), dropping every client.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = send_signal(pid, Signal::Term);
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
    }

    /// Stop, then start again on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }

    /// Point PgBouncer at another backend: rewrite the ini and SIGHUP (= RELOAD). PgBouncer
    /// then closes server connections whose database settings changed and logs in to the
    /// new backend for the next transactions; clients stay connected.
    pub fn retarget(&self, backend_port: u16) {
        self.write_ini(backend_port);
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            let _ = send_signal(pid, Signal::Hup);
        }
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}
