//! What the machine provides: server binaries, an unprivileged user, free ports, temporary
//! directories; and small text helpers for logs and connection strings.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::process::Command;

use crate::error::{io_err, LabError};

/// The postmaster's pid from its pid file (first line), if the file exists and parses.
pub(crate) fn read_postmaster_pid(pid_file: &Path) -> Option<libc::pid_t> {
    let text = std::fs::read_to_string(pid_file).ok()?;
    let pid: libc::pid_t = text.lines().next()?.trim().parse().ok()?;
    // Never signal 0 / negative pids: those address process groups.
    (pid > 1).then_some(pid)
}

/// Resolve the server binary directory (see [`crate::LabOptions::bin_dir`]); the Patroni test cluster
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
pub(crate) fn make_temp_dir() -> Result<PathBuf, LabError> {
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
pub(crate) fn free_port(addrs: &[std::net::IpAddr]) -> Result<u16, LabError> {
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

/// `free_port` on 127.0.0.1, for servers other harnesses start (the Patroni test cluster),
/// which restart on the same port while clients reconnect.
pub fn free_server_port() -> Result<u16, LabError> {
    free_port(&[std::net::Ipv4Addr::LOCALHOST.into()])
}

pub(crate) fn append(path: &Path, text: &str) -> Result<(), LabError> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io_err(format!("opening {}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(io_err(format!("writing {}", path.display())))
}

pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub(crate) fn tail_file(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| tail(&String::from_utf8_lossy(&b), 20))
        .unwrap_or_default()
}

/// Quote a value for a libpq key=value connection string.
pub(crate) fn quote_conn_value(v: &str) -> String {
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
pub(crate) fn quote_sql_literal(v: &str) -> String {
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
