//! A child process started as the leader of its own process group, so that what it starts in
//! turn (a shell's commands, `az`'s Python) goes with it.

use rustix::process::{kill_process_group, Pid, Signal};

/// Kills the child's process group when dropped, unless taken.
pub struct GroupGuard(pub Option<Pid>);

impl GroupGuard {
    /// The group of `child`, spawned with `process_group(0)`.
    pub fn of(child: &tokio::process::Child) -> GroupGuard {
        let pid = |id: u32| Pid::from_raw(i32::try_from(id).ok()?);
        GroupGuard(child.id().and_then(pid))
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
