//! A child process started as the leader of its own process group, so that what it starts in
//! turn (a shell's commands, `az`'s Python) goes with it.

use rustix::process::{kill_process_group, test_kill_process, test_kill_process_group};
use rustix::process::{Pid, Signal};
use std::process::Stdio;
use tokio::process::{Child, Command};

/// Starts `program` with `args` as the leader of its own group, stdin closed, stdout and
/// stderr piped; killed with its group if dropped before it was reaped.
pub fn spawn(program: &str, args: &[String]) -> std::io::Result<(Child, GroupGuard)> {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let pid = |id: u32| Pid::from_raw(i32::try_from(id).ok()?);
    let group = GroupGuard(child.id().and_then(pid));
    Ok((child, group))
}

/// Whether the group `pgid`, whose leader was reaped, still has processes of its own: a
/// process with the leader's id is not ours (the id was free again, the group empty, and
/// reused), so only a group without it is.
pub fn left_running(pgid: Pid) -> bool {
    test_kill_process_group(pgid).is_ok() && test_kill_process(pgid).is_err()
}

/// Kills the child's process group when dropped (before the child was reaped), unless taken.
pub struct GroupGuard(pub Option<Pid>);

impl GroupGuard {
    /// After the leader was reaped: ends what it left running in its group, if the group
    /// is still its own ([`left_running`]).
    pub fn end_reaped(mut self) {
        if let Some(pgid) = self.0.take().filter(|g| left_running(*g)) {
            let _ = kill_process_group(pgid, Signal::KILL);
        }
    }

    pub fn signal(&self, signal: Signal) {
        if let Some(pgid) = self.0 {
            // Already gone is fine: the group may have exited on its own.
            let _ = kill_process_group(pgid, signal);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::KILL);
    }
}
