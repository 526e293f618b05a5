//! One owner for every background task of a run: each task belongs to a [`Stage`], and
//! the run stops the stages one at a time, in the order the wiring states.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The background parts of a run. Each has its own cancellation token, a child of the
/// supervisor's, so that one stage can be stopped while the later ones keep running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Lanes,
    Retention,
    Monitor,
    Sampler,
    Progress,
    Http,
}

const STAGES: usize = 6;

impl Stage {
    fn index(self) -> usize {
        self as usize
    }
}

pub(crate) struct Supervisor {
    tracker: TaskTracker,
    root: CancellationToken,
    tokens: [CancellationToken; STAGES],
    tasks: [Vec<JoinHandle<()>>; STAGES],
}

impl Supervisor {
    pub fn new() -> Supervisor {
        let root = CancellationToken::new();
        Supervisor {
            tracker: TaskTracker::new(),
            tokens: std::array::from_fn(|_| root.child_token()),
            root,
            tasks: Default::default(),
        }
    }

    /// The token `stage`'s tasks watch.
    pub fn token(&self, stage: Stage) -> CancellationToken {
        self.tokens[stage.index()].clone()
    }

    pub fn spawn(&mut self, stage: Stage, task: impl Future<Output = ()> + Send + 'static) {
        let handle = self.tracker.spawn(task);
        self.tasks[stage.index()].push(handle);
    }

    /// Waits up to `within` (unbounded if `None`) for `stage`'s tasks to end on their
    /// own, without cancelling; aborts what is left and returns how many were aborted.
    pub async fn drain(&mut self, stage: Stage, within: Option<Duration>) -> usize {
        let tasks = std::mem::take(&mut self.tasks[stage.index()]);
        let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
        let all = async {
            for task in tasks {
                let _ = task.await;
            }
        };
        match within {
            None => {
                all.await;
                0
            }
            Some(limit) => {
                if tokio::time::timeout(limit, all).await.is_ok() {
                    return 0;
                }
                let left = aborts.iter().filter(|a| !a.is_finished()).count();
                aborts.iter().for_each(|a| a.abort());
                left
            }
        }
    }

    /// Cancels `stage` and waits for its tasks (each bounds its own drain).
    pub async fn stop(&mut self, stage: Stage) {
        self.tokens[stage.index()].cancel();
        self.drain(stage, None).await;
    }

    /// Cancels whatever is left and waits until every task spawned here has ended.
    pub async fn finish(self) {
        self.root.cancel();
        for stage in self.tasks.into_iter().flatten() {
            stage.abort();
        }
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    #[tokio::test(start_paused = true)]
    async fn stages_stop_in_the_order_asked_and_leave_the_others_running() {
        let mut sup = Supervisor::new();
        let order = Arc::new(Mutex::new(Vec::new()));
        for stage in [Stage::Http, Stage::Monitor, Stage::Retention] {
            let token = sup.token(stage);
            let order = order.clone();
            sup.spawn(stage, async move {
                token.cancelled().await;
                order.lock().unwrap().push(stage);
            });
        }
        sup.stop(Stage::Retention).await;
        sup.stop(Stage::Monitor).await;
        assert_eq!(*order.lock().unwrap(), [Stage::Retention, Stage::Monitor]);
        assert!(!sup.token(Stage::Http).is_cancelled());
        sup.stop(Stage::Http).await;
        assert_eq!(order.lock().unwrap().len(), 3);
        sup.finish().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_past_its_limit_aborts_and_counts_the_stragglers() {
        let mut sup = Supervisor::new();
        let finished = Arc::new(AtomicUsize::new(0));
        for secs in [1, 5, 60, 120] {
            let finished = finished.clone();
            sup.spawn(Stage::Lanes, async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                finished.fetch_add(1, Ordering::Relaxed);
            });
        }
        let aborted = sup.drain(Stage::Lanes, Some(Duration::from_secs(10))).await;
        assert_eq!(aborted, 2);
        sup.finish().await;
        assert_eq!(finished.load(Ordering::Relaxed), 2);
    }
}
