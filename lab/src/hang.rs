//! Failures that hang instead of refusing, the way real HA services fail: a primary whose
//! zone or VM vanished (packets dropped, nothing refused) and a failover that moves a DNS
//! name to the standby's address (Azure Flexible Server, RDS, Cloud SQL).
//!
//! - [`Lab::freeze`] stops every process of a server (SIGSTOP to the postmaster, then to its
//!   children). The kernel still completes TCP handshakes into the listen backlog, but no
//!   startup packet is answered and open connections stay ESTABLISHED with no reply, until
//!   [`Lab::thaw`] (SIGCONT) or [`Lab::kill_frozen`] (SIGKILL: the kernel resets them).
//! - [`HostsFile`] is a private `/etc/hosts` for a process that called
//!   [`enter_private_hosts`]: the lab rewrites it in place (same inode, which is what a bind
//!   mount keeps seeing) to move a name from one node to the other.

use std::ffi::CString;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::io_err;
use crate::host::read_postmaster_pid;
use crate::{FailoverReport, Lab, LabError, Node, Stamp};

/// Node A's address with [`super::LabOptions::separate_addresses`].
pub const ADDR_A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// Node B's address with [`super::LabOptions::separate_addresses`].
pub const ADDR_B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

/// Direct children of `pid`, from `/proc/<pid>/task/*/children`.
fn children(pid: libc::pid_t) -> Vec<libc::pid_t> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<libc::pid_t>().ok())
                    .filter(|p| *p > 1),
            );
        }
    }
    out
}

fn signal(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill(2) on a pid of a server this lab started (or one of its children).
    unsafe { libc::kill(pid, sig) };
}

/// SIGCONT to a postmaster and its children: harmless if they run, needed before a frozen
/// server can act on a stop signal.
pub(super) fn resume(pid: libc::pid_t) {
    for child in children(pid) {
        signal(child, libc::SIGCONT);
    }
    signal(pid, libc::SIGCONT);
}

/// Whether the process is gone or a zombie (nobody may reap a postmaster we did not spawn).
fn gone(pid: libc::pid_t) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X"),
    }
}

/// When a node was frozen.
#[derive(Debug, Clone, Copy)]
pub struct FreezeReport {
    pub node: Node,
    /// SIGSTOP is about to be sent to the postmaster.
    pub freeze_begun: Stamp,
    /// Every process of the server is stopped.
    pub frozen: Stamp,
    /// How many processes were stopped (postmaster included).
    pub processes: usize,
}

impl Lab {
    /// Freeze every process of a node: the postmaster first (so it forks no more), then its
    /// children. Clients see a server that accepts TCP and never answers.
    pub async fn freeze(&self, n: Node) -> Result<FreezeReport, LabError> {
        let _op = self.op.lock().await;
        self.freeze_node(n)
    }

    fn freeze_node(&self, n: Node) -> Result<FreezeReport, LabError> {
        let pid = read_postmaster_pid(&self.data_dir(n).join("postmaster.pid"))
            .ok_or_else(|| LabError::State(format!("freeze: node {n} is not running")))?;
        let freeze_begun = Stamp::now();
        signal(pid, libc::SIGSTOP);
        let kids = children(pid);
        for child in &kids {
            signal(*child, libc::SIGSTOP);
        }
        Ok(FreezeReport {
            node: n,
            freeze_begun,
            frozen: Stamp::now(),
            processes: kids.len() + 1,
        })
    }

    /// Let a frozen node run again (SIGCONT): it answers everything that waited.
    pub async fn thaw(&self, n: Node) -> Result<Stamp, LabError> {
        let _op = self.op.lock().await;
        let pid = read_postmaster_pid(&self.data_dir(n).join("postmaster.pid"))
            .ok_or_else(|| LabError::State(format!("thaw: node {n} is not running")))?;
        let at = Stamp::now();
        resume(pid);
        Ok(at)
    }

    /// SIGKILL every process of a (frozen) node, as when a vanished VM is finally fenced:
    /// the kernel resets its connections at once. Waits until the processes are gone, then
    /// removes what the postmaster would have (pid file, System V shared memory).
    pub async fn kill_frozen(&self, n: Node) -> Result<Stamp, LabError> {
        let _op = self.op.lock().await;
        let pid_file = self.data_dir(n).join("postmaster.pid");
        let pid = read_postmaster_pid(&pid_file)
            .ok_or_else(|| LabError::State(format!("kill: node {n} is not running")))?;
        let mut all = children(pid);
        all.push(pid);
        let at = Stamp::now();
        for p in &all {
            signal(*p, libc::SIGKILL);
        }
        let what = format!("node {n}'s processes to die");
        self.poll(n, &what, || async { Ok(all.iter().all(|p| gone(*p))) })
            .await?;
        // Line 7 of the pid file: "<shmem key> <shmem id>".
        let shm_id = std::fs::read_to_string(&pid_file).ok().and_then(|t| {
            t.lines()
                .nth(6)?
                .split_whitespace()
                .nth(1)?
                .parse::<libc::c_int>()
                .ok()
        });
        if let Some(id) = shm_id {
            // SAFETY: IPC_RMID on the segment our own (now dead) server created; no buffer.
            unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
        }
        std::fs::remove_file(&pid_file)
            .map_err(io_err(format!("removing {}", pid_file.display())))?;
        Ok(at)
    }

    /// The failover a vanished primary gets: freeze it, wait `promote_after` (the HA
    /// service's detection time), promote the standby and wait until it commits a write.
    /// If `hosts` is given, its name moves to the new primary's address right after the
    /// promotion request (the DNS switch). The old primary stays frozen; the report's
    /// `stop_begun` / `stopped` are the freeze.
    pub async fn frozen_failover(
        &self,
        promote_after: Duration,
        hosts: Option<&HostsFile>,
    ) -> Result<FailoverReport, LabError> {
        let _op = self.op.lock().await;
        let roles = self.roles();
        let old = roles.primary;
        let new = roles
            .standby
            .ok_or_else(|| LabError::State("failover: there is no standby".into()))?;
        let client = self.admin(new).await?;
        let freeze = self.freeze_node(old)?;
        tokio::time::sleep(promote_after).await;
        let switch = async {
            if let Some(hosts) = hosts {
                hosts
                    .point_to(self.addr(new))
                    .map_err(io_err(format!("rewriting {}", hosts.path().display())))?;
            }
            Ok::<(), LabError>(())
        };
        let (promoted, switched) = tokio::join!(self.promote(new, &client), switch);
        let (promote_requested, writable) = promoted?;
        switched?;
        Ok(FailoverReport {
            old_primary: old,
            new_primary: new,
            stop_begun: freeze.freeze_begun,
            stopped: freeze.frozen,
            promote_requested,
            writable,
        })
    }

    /// A DSN naming one host, `name`, on the nodes' shared port (with
    /// [`super::LabOptions::separate_addresses`]), `target_session_attrs=read-write`.
    pub fn named_dsn(&self, name: &str) -> String {
        self.app_dsn(&format!(
            "host={name} port={} target_session_attrs=read-write",
            self.port(Node::A)
        ))
    }
}

/// A hosts file mapping one name to one node, rewritten in place to move the name.
#[derive(Debug)]
pub struct HostsFile {
    path: PathBuf,
    name: String,
}

impl HostsFile {
    /// Writes `path` with localhost and `name` → `addr`.
    pub fn create(path: &Path, name: &str, addr: IpAddr) -> io::Result<HostsFile> {
        let file = HostsFile {
            path: path.to_path_buf(),
            name: name.to_string(),
        };
        std::fs::write(path, file.content(addr))?;
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Same length for every IPv4 address, so an in-place rewrite is one write of the
    /// whole file and a reader never sees it half-empty.
    fn content(&self, addr: IpAddr) -> String {
        format!(
            "127.0.0.1       localhost\n::1             localhost\n{:<15} {}\n",
            addr.to_string(),
            self.name
        )
    }

    /// Moves the name to `addr`: overwrites the file in place (same inode). Returns when.
    pub fn point_to(&self, addr: IpAddr) -> io::Result<Stamp> {
        let content = self.content(addr);
        let mut f = std::fs::OpenOptions::new().write(true).open(&self.path)?;
        let at = Stamp::now();
        f.write_all(content.as_bytes())?;
        f.set_len(content.len() as u64)?;
        Ok(at)
    }
}

/// Whether [`enter_private_hosts`] can work here: it needs root (CAP_SYS_ADMIN).
pub fn private_hosts_available() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Gives this process its own mount namespace in which `file` is `/etc/hosts`, so that a
/// [`HostsFile`] moves names for it alone. Needs root (CAP_SYS_ADMIN), and must be called
/// while the process has a single thread (before any runtime starts): `unshare(CLONE_NEWNS)`
/// fails in a multi-threaded process. Mounts are made private first, so nothing done here
/// propagates to the rest of the machine.
pub fn enter_private_hosts(file: &Path) -> io::Result<()> {
    let source = CString::new(file.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in the hosts file path"))?;
    let check = |rc: libc::c_int, what: &str| {
        if rc == 0 {
            Ok(())
        } else {
            let err = io::Error::last_os_error();
            Err(io::Error::new(err.kind(), format!("{what}: {err}")))
        }
    };
    // SAFETY: plain syscalls with NUL-terminated strings that outlive the calls.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS), "unshare(CLONE_NEWNS)")?;
        check(
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ),
            "making / private",
        )?;
        check(
            libc::mount(
                source.as_ptr(),
                c"/etc/hosts".as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ),
            "bind-mounting the hosts file on /etc/hosts",
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file_moves_a_name_in_place() {
        let dir = crate::host::make_temp_dir().expect("temp dir");
        let path = dir.join("hosts");
        let hosts = HostsFile::create(&path, "db.lab", ADDR_A).expect("create");
        let inode =
            |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).expect("stat"));
        let before = inode(&path);
        let len = std::fs::metadata(&path).expect("stat").len();
        hosts.point_to(ADDR_B).expect("rewrite");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("127.0.0.3       db.lab\n"), "{text}");
        assert!(!text.contains("127.0.0.2"), "{text}");
        assert_eq!(inode(&path), before, "same inode");
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), len);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn processes_that_do_not_exist_are_gone() {
        assert!(gone(i32::MAX));
        assert!(!gone(std::process::id() as libc::pid_t));
    }
}
