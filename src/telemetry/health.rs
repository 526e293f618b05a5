//! What `/healthz` says: healthy while the load loop (the scheduler, every lane) runs. A database
//! outage is not unhealthy (measuring it is the point); a dead lane, ended loop or crash is.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[derive(Default)]
pub struct Health {
    load_running: AtomicBool,
    lanes_down: AtomicUsize,
    /// A crash that ends the run; sticky.
    failure: Mutex<Option<String>>,
}

impl Health {
    pub fn load_running(&self, running: bool) {
        self.load_running.store(running, Ordering::Relaxed);
    }

    pub fn lane_down(&self) {
        self.lanes_down.fetch_add(1, Ordering::Relaxed);
    }

    pub fn lane_up(&self) {
        self.lanes_down.fetch_sub(1, Ordering::Relaxed);
    }

    /// Part of the run failed for good; `/healthz` says why (scrubbed: a panic may quote anything).
    pub fn failed(&self, why: &str) {
        self.failure
            .lock()
            .get_or_insert_with(|| crate::secrets::scrub(why));
    }

    /// `Err(why)` when unhealthy.
    pub fn check(&self) -> Result<(), String> {
        if let Some(why) = self.failure.lock().clone() {
            return Err(why);
        }
        let down = self.lanes_down.load(Ordering::Relaxed);
        if down > 0 {
            return Err(format!("{down} lane(s) restarting after a panic"));
        }
        if !self.load_running.load(Ordering::Relaxed) {
            return Err("the load loop is not running".to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_only_while_every_part_of_the_load_runs() {
        let h = Health::default();
        assert!(h.check().is_err(), "not before the load starts");
        h.load_running(true);
        assert_eq!(h.check(), Ok(()));
        h.lane_down();
        assert!(h.check().unwrap_err().contains("lane"));
        h.lane_up();
        assert_eq!(h.check(), Ok(()));
        h.failed("monitor task panicked");
        h.failed("later");
        assert_eq!(h.check().unwrap_err(), "monitor task panicked");
    }

    #[test]
    fn a_failure_is_told_without_its_secrets() {
        let h = Health::default();
        h.failed("panicked connecting to host=db password=health-8e1f");
        assert_eq!(
            h.check().unwrap_err(),
            "panicked connecting to host=db password=REDACTED"
        );
    }
}
