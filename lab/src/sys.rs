//! Safe wrappers for the few process operations the tests and benchmarks need: signals to
//! child processes and CPU-time readings. With the lab's own process handling, this is all
//! of the project's libc FFI, kept out of the daemon.

use std::io;
use std::time::Duration;

/// The signals our tests send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Int,
    Term,
    Hup,
    /// Freeze (cannot be caught): the process keeps its sockets but answers nothing.
    Stop,
    /// Resume a frozen process.
    Cont,
    /// End at once (cannot be caught); the kernel resets its connections.
    Kill,
}

impl Signal {
    fn raw(self) -> libc::c_int {
        match self {
            Signal::Int => libc::SIGINT,
            Signal::Term => libc::SIGTERM,
            Signal::Hup => libc::SIGHUP,
            Signal::Stop => libc::SIGSTOP,
            Signal::Cont => libc::SIGCONT,
            Signal::Kill => libc::SIGKILL,
        }
    }
}

/// Sends `signal` to process `pid` (a child of ours, not yet reaped, or a process it started).
pub fn send_signal(pid: u32, signal: Signal) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, signal.raw()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// CPU time (user + system) of this process's waited-for children.
pub fn children_cpu() -> io::Result<Duration> {
    // SAFETY: getrusage fills the zeroed struct we pass; no other memory is touched.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `ru` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Ok(tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// The kernel's id of the calling thread.
pub fn current_thread_id() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// CPU time (user + system) of thread `tid` of this process, from /proc (clock-tick
/// resolution, typically 10 ms: fine over multi-second runs).
pub fn thread_cpu(tid: i32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 2..))
        .ok_or_else(|| io::Error::other("unexpected /proc stat format"))?;
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    if f.len() < 13 {
        return Err(io::Error::other("short /proc stat line"));
    }
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|h| *h > 0).unwrap_or(100);
    Ok(Duration::from_micros((f[11] + f[12]) * 1_000_000 / hz))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_threads_cpu_time_is_readable_and_grows() {
        let tid = current_thread_id();
        let before = thread_cpu(tid).expect("own thread's stat");
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        assert!(thread_cpu(tid).expect("stat again") >= before);
        children_cpu().expect("getrusage");
    }

    #[test]
    fn a_signalled_child_ends_by_that_signal() {
        use std::os::unix::process::ExitStatusExt;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        send_signal(child.id(), Signal::Term).expect("kill our own child");
        let status = child.wait().expect("reap");
        assert_eq!(status.signal(), Some(libc::SIGTERM));
    }
}
