//! A real HA orchestrator on loopback: one etcd (v3 API), two Patroni 3.0 members each running
//! PostgreSQL 15, and HAProxy with the standard Patroni template, all on free 127.0.0.1 ports in
//! one temporary directory (Debian packages `patroni`, `etcd-server`, `haproxy`; `scripts/deps
//! test` installs them).
//!
//! Timing: `ttl 10, loop_wait 2, retry_timeout 4` (Patroni requires `loop_wait + 2 ×
//! retry_timeout ≤ ttl`), so a leader that dies or hangs loses its key about 10 s later and the
//! replica promotes. A 2-member cluster is ready in 4–9 s (the replica is cloned with
//! `pg_basebackup --checkpoint=fast`; the default spread checkpoint takes ~20 s).
//!
//! `PGDRILL_KEEP_PATRONI=1` keeps the directory (configs, logs, data) after the processes end.
//!
//! Processes: etcd and Patroni run as the lab's unprivileged OS user when we are root
//! ([`pgdrill_lab::unprivileged_user`]: PostgreSQL refuses root), HAProxy as we are. Every
//! process started here, and every process they start, has its working directory inside the
//! temporary directory; teardown stops exactly those, by PID.

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use pgdrill_lab::sys::{send_signal, Signal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Patroni's scope (cluster name) and etcd namespace.
const SCOPE: &str = "pgdrill";
/// Bound on the cluster becoming ready, and on a failover completing.
const READY_LIMIT: Duration = Duration::from_secs(60);

/// One Patroni member: its PostgreSQL and REST API ports, config, data directory, process.
struct Member {
    name: String,
    pg_port: u16,
    api_port: u16,
    config: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    patroni: Option<Child>,
}

/// See the module docs. Dropping it stops everything it started and removes its directory.
pub struct PatroniCluster {
    dir: tempfile::TempDir,
    etcd_port: u16,
    haproxy_port: u16,
    members: Vec<Member>,
    etcd: Option<Child>,
    haproxy: Option<Child>,
}

impl PatroniCluster {
    /// Starts etcd, HAProxy and two members; returns once member 0 is leader with role and
    /// database `pgdrill`, member 1 streams from it, and HAProxy routes to the leader.
    pub async fn start() -> PatroniCluster {
        let began = Instant::now();
        let run_as = pgdrill_lab::unprivileged_user().expect("an unprivileged OS user");
        let bin_dir = pgdrill_lab::find_bin_dir(None)
            .await
            .expect("PostgreSQL server binaries");
        let dir = tempfile::Builder::new()
            .prefix("pgdrill-patroni-")
            .tempdir()
            .expect("temp dir");
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown temp dir");
        }
        let base = dir.path().canonicalize().expect("canonical temp dir");
        let mut ports = Vec::new();
        while ports.len() < 7 {
            let p = pgdrill_lab::free_server_port().expect("a free port");
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let members = (0..2)
            .map(|i| Member {
                name: format!("n{i}"),
                pg_port: ports[2 + 2 * i],
                api_port: ports[3 + 2 * i],
                config: base.join(format!("n{i}.yml")),
                data_dir: base.join(format!("n{i}")),
                log: base.join(format!("n{i}.log")),
                patroni: None,
            })
            .collect();
        let mut cluster = PatroniCluster {
            dir,
            etcd_port: ports[0],
            haproxy_port: ports[6],
            members,
            etcd: None,
            haproxy: None,
        };
        // From here on, a panic drops `cluster`, which stops whatever was started.
        let peer = format!("http://127.0.0.1:{}", ports[1]);
        let client = format!("http://127.0.0.1:{}", cluster.etcd_port);
        let etcd_dir = base.join("etcd");
        let mut etcd = cluster.command("etcd", run_as);
        etcd.arg("--name=e0")
            .arg(format!("--data-dir={}", etcd_dir.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=e0={peer}"))
            .arg("--enable-v2=false");
        cluster.etcd = Some(cluster.spawn(etcd, "etcd.log"));
        let etcd_addr = cluster.etcd_addr();
        super::eventually(READY_LIMIT, "etcd listening", || async {
            TcpStream::connect(etcd_addr).await.is_ok()
        })
        .await;

        for i in 0..2 {
            let yml = cluster.patroni_config(i, &bin_dir);
            std::fs::write(&cluster.members[i].config, yml).expect("writing patroni config");
            let mut patroni = cluster.command("patroni", run_as);
            patroni.arg(&cluster.members[i].config);
            let log = cluster.members[i].log.clone();
            cluster.members[i].patroni = Some(cluster.spawn(patroni, &log));
        }
        std::fs::write(base.join("haproxy.cfg"), cluster.haproxy_config()).expect("haproxy.cfg");
        let mut haproxy = cluster.command("haproxy", None);
        haproxy.args(["-db", "-f"]).arg(base.join("haproxy.cfg"));
        cluster.haproxy = Some(cluster.spawn(haproxy, "haproxy.log"));

        let leader = cluster.wait_for_leader(None).await;
        let admin = super::connect(&cluster.superuser_dsn(leader)).await;
        // One statement each: CREATE DATABASE refuses to run in a multi-statement query.
        for sql in [
            "CREATE ROLE pgdrill LOGIN",
            "GRANT pg_monitor TO pgdrill",
            "CREATE DATABASE pgdrill OWNER pgdrill",
        ] {
            super::exec(&admin, sql).await;
        }
        cluster.wait_for_replica().await;
        cluster.wait_for_haproxy(leader).await;
        println!(
            "patroni cluster ready in {:.1}s: leader n{leader}, {}",
            began.elapsed().as_secs_f64(),
            cluster.dir.path().display()
        );
        cluster
    }

    /// Through HAProxy: one address; the server behind it changes.
    pub fn haproxy_dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=pgdrill dbname=pgdrill",
            self.haproxy_port
        )
    }

    /// Both members with `target_session_attrs=read-write`.
    pub fn multi_host_dsn(&self) -> String {
        format!(
            "host=127.0.0.1,127.0.0.1 port={},{} user=pgdrill dbname=pgdrill \
             target_session_attrs=read-write",
            self.members[0].pg_port, self.members[1].pg_port
        )
    }

    /// One member, as role `pgdrill` (to read the rows a run left on the new leader).
    pub fn member_dsn(&self, i: usize) -> String {
        format!(
            "host=127.0.0.1 port={} user=pgdrill dbname=pgdrill",
            self.members[i].pg_port
        )
    }

    /// The member holding the leader key in etcd (what Patroni itself believes), if any.
    pub async fn leader(&self) -> Option<usize> {
        let key =
            base64::engine::general_purpose::STANDARD.encode(format!("/service/{SCOPE}/leader"));
        let body = format!("{{\"key\":\"{key}\"}}");
        let (status, text) = http(self.etcd_addr(), "POST", "/v3/kv/range", &body)
            .await
            .ok()?;
        if status != 200 {
            return None;
        }
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        let value = json["kvs"][0]["value"].as_str()?;
        let name = base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()?;
        let name = String::from_utf8(name).ok()?;
        self.members.iter().position(|m| m.name == name)
    }

    /// Planned switchover with patronictl 3.0 (`switchover CLUSTER --force`, no candidate:
    /// Patroni picks the replica); returns once patronictl reports success and the new leader
    /// accepts writes. Returns (old, new) leader.
    pub async fn switchover(&self) -> (usize, usize) {
        let old = self.leader().await.expect("a leader before the switchover");
        let out = tokio::time::timeout(
            READY_LIMIT,
            tokio::process::Command::new("patronictl")
                .arg("-c")
                .arg(&self.members[old].config)
                .args(["switchover", SCOPE, "--force"])
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("patronictl switchover within 60 s")
        .expect("running patronictl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("Successfully switched over"),
            "patronictl switchover: {}\n{text}",
            out.status
        );
        (old, self.wait_for_leader(Some(old)).await)
    }

    /// Patroni's scope (the CLUSTER argument of patronictl) and a member's config file
    /// (`patronictl -c`; any member's works: patronictl asks etcd and the leader's REST API).
    pub fn patronictl_target(&self) -> (&'static str, &Path) {
        (SCOPE, &self.members[0].config)
    }

    /// A crashed leader machine: freeze the postmaster (so it starts nothing new), SIGKILL the
    /// member's Patroni, then SIGKILL every process whose working directory is the data
    /// directory (postmaster and backends; orphaned backends would block a restart). The leader
    /// key expires after `ttl` and the replica promotes. Returns the old leader.
    pub async fn kill_leader(&mut self) -> usize {
        let old = self.leader().await.expect("a leader to kill");
        let member = &mut self.members[old];
        if let Some(pm) = postmaster_pid(&member.data_dir) {
            let _ = send_signal(pm, Signal::Stop);
        }
        if let Some(mut patroni) = member.patroni.take() {
            let _ = patroni.kill();
            let _ = patroni.wait();
        }
        for pid in pids_in(&member.data_dir, false) {
            let _ = send_signal(pid, Signal::Kill);
        }
        println!("killed leader n{old} (Patroni and PostgreSQL)");
        old
    }

    /// A hung leader: SIGSTOP its postmaster, then every other PostgreSQL process. Connections
    /// hang (the kernel still accepts into the backlog) and are never refused. Its Patroni is
    /// left running, but its HA loop blocks on its own query to the frozen server, so it stops
    /// renewing the leader key: after `ttl` the replica promotes, and HAProxy's check of the
    /// frozen member's REST API (which also asks PostgreSQL) times out. Returns the old leader.
    pub async fn freeze_leader(&self) -> usize {
        let old = self.leader().await.expect("a leader to freeze");
        let data_dir = &self.members[old].data_dir;
        if let Some(pm) = postmaster_pid(data_dir) {
            let _ = send_signal(pm, Signal::Stop);
        }
        for pid in pids_in(data_dir, false) {
            let _ = send_signal(pid, Signal::Stop);
        }
        println!("froze leader n{old} (PostgreSQL)");
        old
    }

    /// Waits until a member other than `not` holds the leader key and its REST API says it is
    /// a writable primary (`GET /primary` 200); returns it.
    pub async fn wait_for_leader(&self, not: Option<usize>) -> usize {
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            if let Some(l) = self.leader().await.filter(|l| Some(*l) != not) {
                if let Ok((200, _)) = http(self.api_addr(l), "GET", "/primary", "").await {
                    return l;
                }
            }
            if Instant::now() > deadline {
                panic!("no new leader within {READY_LIMIT:?}\n{}", self.log_tails());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the other member streams from the leader as a replica (after startup or a
    /// switchover). By its `application_name` (Patroni sets the member name): while a replica
    /// is being created, `pg_basebackup -X stream` also shows as a streaming walsender.
    pub async fn wait_for_replica(&self) {
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            let leader = self.wait_for_leader(None).await;
            let replica = &self.members[1 - leader].name;
            if let Ok(c) = super::try_connect(&self.superuser_dsn(leader)).await {
                let sql = "SELECT count(*) FROM pg_stat_replication \
                           WHERE state = 'streaming' AND application_name = $1";
                if let Ok(Ok(row)) =
                    tokio::time::timeout(Duration::from_secs(2), c.query_one(sql, &[replica])).await
                {
                    if row.get::<_, i64>(0) > 0 {
                        return;
                    }
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "no streaming replica within {READY_LIMIT:?}\n{}",
                    self.log_tails()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The tail of every log (etcd, members, HAProxy), for failure messages.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for name in ["etcd.log", "n0.log", "n1.log", "haproxy.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {name}\n"));
            out.push_str(&lines[lines.len().saturating_sub(15)..].join("\n"));
            out.push('\n');
        }
        out
    }

    // ---- internals ----

    fn etcd_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.etcd_port))
    }

    fn api_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.members[i].api_port))
    }

    fn superuser_dsn(&self, i: usize) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.members[i].pg_port
        )
    }

    /// A command with a clean environment, run in the temporary directory (which is how
    /// teardown finds everything it started), as `run_as` when given.
    fn command(&self, program: &str, run_as: Option<(u32, u32)>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LC_ALL", "C.UTF-8")
            .env("HOME", self.dir.path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        if let Some((uid, gid)) = run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn spawn(&self, mut cmd: Command, log: impl AsRef<Path>) -> Child {
        let log = self.dir.path().join(log);
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        cmd.stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e} (run scripts/deps test)"))
    }

    fn patroni_config(&self, i: usize, bin_dir: &Path) -> String {
        let m = &self.members[i];
        let base = self.dir.path().display();
        format!(
            r#"scope: {SCOPE}
name: {name}
restapi:
  listen: 127.0.0.1:{api}
  connect_address: 127.0.0.1:{api}
etcd3:
  hosts: 127.0.0.1:{etcd}
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 2
    retry_timeout: 4
    postgresql:
      use_pg_rewind: true
      parameters:
        max_connections: 200
        wal_level: replica
        wal_log_hints: 'on'
        max_wal_senders: 5
        max_replication_slots: 5
        wal_keep_size: 256MB
  initdb:
  - encoding: UTF8
  - locale: C
  - no-sync
  pg_hba:
  - local all all trust
  - local replication all trust
  - host all all 127.0.0.0/8 trust
  - host replication all 127.0.0.0/8 trust
postgresql:
  listen: 127.0.0.1:{pg}
  connect_address: 127.0.0.1:{pg}
  data_dir: {data}
  bin_dir: {bin}
  pgpass: {base}/{name}.pgpass
  basebackup:
  - checkpoint: fast
  authentication:
    superuser: {{username: postgres}}
    replication: {{username: postgres}}
    rewind: {{username: postgres}}
  parameters:
    unix_socket_directories: {base}
    shared_buffers: 32MB
    fsync: 'on'
    synchronous_commit: 'on'
    # As in the pair lab: the lab's standby, not the service, would add PostgreSQL's 5 s
    # default retry sleep between its primary stopping and its promotion taking effect.
    wal_retrieve_retry_interval: 100ms
    # As in the pair lab: shared memory segments in the data directory, not left in
    # /dev/shm by a crashed member.
    dynamic_shared_memory_type: mmap
watchdog:
  mode: 'off'
"#,
            name = m.name,
            api = m.api_port,
            etcd = self.etcd_port,
            pg = m.pg_port,
            data = m.data_dir.display(),
            bin = bin_dir.display(),
        )
    }

    /// Patroni's haproxy.cfg template with the checks the issue names.
    fn haproxy_config(&self) -> String {
        let mut cfg = format!(
            "global\n    maxconn 1000\n    log stdout format iso local0 info\n\
             defaults\n    log global\n    mode tcp\n    option tcplog\n    option log-health-checks\n    retries 2\n\
             \x20   timeout client 30m\n    timeout connect 4s\n    timeout server 30m\n\
             \x20   timeout check 5s\n\
             listen primary\n    bind 127.0.0.1:{}\n    option httpchk OPTIONS /primary\n\
             \x20   http-check expect status 200\n\
             \x20   default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions\n",
            self.haproxy_port
        );
        for m in &self.members {
            cfg.push_str(&format!(
                "    server {} 127.0.0.1:{} maxconn 100 check port {}\n",
                m.name, m.pg_port, m.api_port
            ));
        }
        cfg
    }

    /// Waits until five connections in a row through HAProxy reach the leader, writable.
    async fn wait_for_haproxy(&self, leader: usize) {
        let dsn = format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.haproxy_port
        );
        let want = i32::from(self.members[leader].pg_port);
        let mut in_a_row = 0;
        let deadline = Instant::now() + READY_LIMIT;
        while in_a_row < 5 {
            let ok = match super::try_connect(&dsn).await {
                Ok(c) => c
                    .query_one("SELECT inet_server_port(), pg_is_in_recovery()", &[])
                    .await
                    .is_ok_and(|r| r.get::<_, i32>(0) == want && !r.get::<_, bool>(1)),
                Err(_) => false,
            };
            in_a_row = if ok { in_a_row + 1 } else { 0 };
            if Instant::now() > deadline {
                panic!("HAProxy never routed to the leader\n{}", self.log_tails());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for PatroniCluster {
    /// SIGKILL both Patronis (so nothing restarts PostgreSQL), then every process left whose
    /// working directory is inside the temporary directory (frozen ones included: SIGKILL ends
    /// a stopped process), then HAProxy and etcd; reap our children; the directory goes last.
    fn drop(&mut self) {
        if std::thread::panicking() {
            // To a file, so that the failure message stays the last thing the test printed
            // (CI shows the tail of the output).
            let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
                "patroni-{}.log",
                self.dir
                    .path()
                    .file_name()
                    .map_or_else(|| "cluster".into(), |n| n.to_string_lossy())
            ));
            match std::fs::write(&path, self.log_tails()) {
                Ok(()) => println!("patroni cluster logs: {}", path.display()),
                Err(_) => println!("patroni cluster logs:\n{}", self.log_tails()),
            }
        }
        for m in &mut self.members {
            if let Some(mut p) = m.patroni.take() {
                let _ = p.kill();
                let _ = p.wait();
            }
        }
        let base = self.dir.path().canonicalize();
        let base = base.as_deref().unwrap_or(self.dir.path());
        for _ in 0..3 {
            let pids = pids_in(base, true);
            if pids.is_empty() {
                break;
            }
            for pid in &pids {
                let _ = send_signal(*pid, Signal::Stop);
            }
            for pid in &pids {
                let _ = send_signal(*pid, Signal::Kill);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for child in [self.haproxy.take(), self.etcd.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::env::var_os("PGDRILL_KEEP_PATRONI").is_some() {
            self.dir.disable_cleanup(true);
            println!("kept {}", self.dir.path().display());
        }
    }
}

/// The postmaster's PID from `postmaster.pid`, if present.
fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok().filter(|p| *p > 1)
}

/// Live processes whose working directory is `dir` (or, with `under`, inside it). Zombies
/// have no working directory and are skipped.
fn pids_in(dir: &Path, under: bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd"))
                .is_ok_and(|cwd| cwd == dir || (under && cwd.starts_with(dir)))
        })
        .collect()
}

/// A bare HTTP/1.0 request (Patroni's REST API, etcd's JSON gateway), bounded by 1 s: a frozen
/// member's API hangs.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let fut = async {
        let mut stream = TcpStream::connect(addr).await?;
        let req = format!(
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(req.as_bytes()).await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(1), fut).await?
}
