//! Runs the triggers on their schedule, one after the other, until the schedule is done or
//! the run stops. The load never waits for this task.

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::drill::TriggerConfig;
use crate::drill::timing::baseline_span;
use crate::drill::trigger::{self, TriggerRun};

/// What the daemon hears while the triggers run (metrics, baseline snapshots).
#[derive(Debug)]
pub enum TriggerEvent<'a> {
    /// The baseline window before trigger `index` (1-based) begins: snapshot the counters.
    /// Late when the previous trigger ran into this window (then the baseline is short).
    BaselineStarts {
        index: usize,
        at: Instant,
    },
    /// Trigger `index` is about to start, at `at`: snapshot the counters again.
    Starting {
        index: usize,
        at: Instant,
    },
    Ended(&'a TriggerRun),
}

/// Runs every planned trigger, the next one once its time has come and the previous one has
/// ended (a late start is recorded, never skipped). On `stop`, a trigger that is running is
/// killed with its process group and not recorded, and no further trigger starts.
pub async fn run_schedule(
    config: &TriggerConfig,
    load_start: Instant,
    unix: impl Fn(Instant) -> f64 + Copy,
    stop: &CancellationToken,
    mut on_event: impl FnMut(TriggerEvent<'_>),
) -> Vec<TriggerRun> {
    let mut runs = Vec::new();
    for (i, planned) in config.schedule.instants(load_start).into_iter().enumerate() {
        let index = i + 1;
        let baseline_from = planned
            .checked_sub(baseline_span(&config.schedule, i))
            .unwrap_or(planned);
        tokio::select! {
            _ = tokio::time::sleep_until(baseline_from) => {}
            _ = stop.cancelled() => break,
        }
        on_event(TriggerEvent::BaselineStarts {
            index,
            at: Instant::now(),
        });
        tokio::select! {
            _ = tokio::time::sleep_until(planned) => {}
            _ = stop.cancelled() => break,
        }
        on_event(TriggerEvent::Starting {
            index,
            at: Instant::now(),
        });
        let run = tokio::select! {
            run = trigger::run(&config.action, index, planned, config.timeout, unix) => run,
            _ = stop.cancelled() => {
                tracing::warn!(trigger = index, "run stopped while the failover trigger ran; killed it");
                break;
            }
        };
        on_event(TriggerEvent::Ended(&run));
        runs.push(run);
    }
    runs
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::drill::Schedule;
    use crate::config::trigger::{TriggerAction, TriggerCommand};
    use crate::drill::trigger::TriggerOutcome;

    fn unix(at: Instant) -> f64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        now - Instant::now().saturating_duration_since(at).as_secs_f64()
    }

    fn config(raw: &str, after_ms: u64, every_ms: u64, count: u32) -> TriggerConfig {
        TriggerConfig {
            action: TriggerAction::Command(TriggerCommand::parse(raw, false).unwrap()),
            schedule: Schedule {
                after: Duration::from_millis(after_ms),
                every: Some(Duration::from_millis(every_ms)),
                count,
            },
            timeout: Duration::from_secs(10),
        }
    }

    #[tokio::test]
    async fn triggers_run_on_schedule_and_a_slow_one_delays_the_next() {
        // The second trigger is due 100 ms after the first, which runs for 300 ms.
        let c = config("sleep 0.3", 50, 100, 3);
        let start = Instant::now();
        let mut events = Vec::new();
        let mut baselines = Vec::new();
        let runs = run_schedule(&c, start, unix, &CancellationToken::new(), |e| {
            events.push(match e {
                TriggerEvent::BaselineStarts { index, at } => {
                    baselines.push(unix(at));
                    format!("baseline {index}")
                }
                TriggerEvent::Starting { index, .. } => format!("start {index}"),
                TriggerEvent::Ended(r) => format!("end {} {}", r.index, r.outcome.label()),
            })
        })
        .await;
        assert_eq!(
            events,
            [
                "baseline 1",
                "start 1",
                "end 1 ok",
                "baseline 2",
                "start 2",
                "end 2 ok",
                "baseline 3",
                "start 3",
                "end 3 ok"
            ]
        );
        // The first baseline would leave out the first second of load, which is all of these
        // 50 ms, so it begins at the trigger; the later ones were due inside the previous
        // trigger's run, so they begin when it ended.
        assert!(
            (baselines[0] - unix(start) - 0.05).abs() < 0.02,
            "{baselines:?}"
        );
        assert_eq!(runs.len(), 3);
        let t0 = unix(start);
        for (i, r) in runs.iter().enumerate() {
            let planned = 0.05 + 0.1 * i as f64;
            assert!((r.planned_unix - t0 - planned).abs() < 0.01, "{r:?}");
            assert!(r.started_unix >= r.planned_unix, "{r:?}");
            assert!(r.duration_seconds >= 0.3, "{r:?}");
        }
        // Late, never overlapping: each starts after the previous one ended.
        assert!(runs[1].started_unix >= runs[0].ended_unix);
        assert!(runs[2].started_unix >= runs[1].ended_unix);
        assert!(runs[1].started_unix - runs[1].planned_unix > 0.2);
        assert!(baselines[1] >= runs[0].ended_unix && baselines[1] <= runs[1].started_unix);
        assert!(baselines[2] >= runs[1].ended_unix && baselines[2] <= runs[2].started_unix);
    }

    #[tokio::test]
    async fn stopping_ends_the_schedule() {
        let c = config("sleep 5", 20, 100, 3);
        let stop = CancellationToken::new();
        let stopper = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                stop.cancel();
            })
        };
        let began = std::time::Instant::now();
        let mut started = 0;
        let runs = run_schedule(&c, Instant::now(), unix, &stop, |e| {
            if matches!(e, TriggerEvent::Starting { .. }) {
                started += 1;
            }
        })
        .await;
        stopper.await.unwrap();
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "{:?}",
            began.elapsed()
        );
        assert_eq!(started, 1);
        assert!(runs.is_empty(), "{runs:?}");

        // A failing trigger does not stop the schedule.
        let c = config("false", 10, 50, 2);
        let runs = run_schedule(&c, Instant::now(), unix, &CancellationToken::new(), |_| {}).await;
        assert_eq!(runs.len(), 2);
        assert!(runs.iter().all(|r| matches!(
            r.outcome,
            TriggerOutcome::ExitedNonZero { code: Some(1), .. }
        )));
    }
}
