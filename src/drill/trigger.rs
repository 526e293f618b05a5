//! The failover triggers as they run, one after another on their schedule until it is done or the
//! run stops: each a command ([`command`]) or an in-process action, bounded in time and recorded.

use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

pub use crate::drill::command::TriggerOutcome;
use crate::drill::command::{self, Tail};
use crate::drill::plan::{InProcessTrigger, TriggerAction, TriggerConfig};
use crate::secrets::scrub;

/// One trigger as the summary and the report show it; times on the outage records' clock.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TriggerRun {
    /// 1-based, in schedule order.
    pub index: usize,
    pub planned_unix: f64,
    pub started_unix: f64,
    pub ended_unix: f64,
    pub duration_seconds: f64,
    pub outcome: TriggerOutcome,
    /// The last [`command::TAIL_BYTES`] of each stream, scrubbed.
    pub stdout_tail: String,
    pub stderr_tail: String,
    /// Output was dropped from the front of a tail to keep it bounded.
    pub output_truncated: bool,
}

/// Runs the trigger once, due at `planned`, from `started` (the instant every output shows),
/// at most `timeout` long; `unix` maps the tokio clock onto the run's wall clock. A command
/// that cannot start, fails or hangs is an outcome, not an error. The end is when it exited
/// (or was killed), not when its output was read.
pub async fn run(
    action: &TriggerAction,
    index: usize,
    (planned, started): (Instant, Instant),
    timeout: Duration,
    unix: impl Fn(Instant) -> f64,
    stop: &CancellationToken,
) -> Option<TriggerRun> {
    tracing::info!(
        event = "trigger_started",
        trigger = index,
        command = %action.display(),
        late_seconds = format!("{:.3}", (started - planned).as_secs_f64()),
        "running the failover trigger"
    );
    let tails: [Arc<Mutex<Tail>>; 2] = Default::default();
    let (outcome, ended) = match action {
        TriggerAction::Command(c) => command::execute(c, index, timeout, stop, &tails).await,
        TriggerAction::InProcess(t) => stop.run_until_cancelled(ask(t, timeout, &tails)).await,
    }?;
    let times = (planned, started, ended);
    Some(record(index, times, outcome, &tails, unix))
}

/// The record of a trigger that ended at `ended`, with the tails of its output; logged.
fn record(
    index: usize,
    (planned, started, ended): (Instant, Instant, Instant),
    outcome: TriggerOutcome,
    [stdout, stderr]: &[Arc<Mutex<Tail>>; 2],
    unix: impl Fn(Instant) -> f64,
) -> TriggerRun {
    let (stdout_tail, out_cut) = stdout.lock().take();
    let (stderr_tail, err_cut) = stderr.lock().take();
    let run = TriggerRun {
        index,
        planned_unix: unix(planned),
        started_unix: unix(started),
        ended_unix: unix(ended),
        duration_seconds: (ended - started).as_secs_f64(),
        outcome,
        stdout_tail,
        stderr_tail,
        output_truncated: out_cut || err_cut,
    };
    match run.outcome.problem() {
        None => tracing::info!(
            event = "trigger_ended",
            trigger = index,
            outcome = run.outcome.label(),
            seconds = format!("{:.3}", run.duration_seconds),
            "failover trigger exited with status 0 (pgdrill judges the failover by the writes)"
        ),
        Some(problem) => tracing::error!(
            event = "trigger_ended",
            trigger = index,
            outcome = run.outcome.label(),
            seconds = format!("{:.3}", run.duration_seconds),
            "failover trigger {problem}; this drill is invalid"
        ),
    }
    run
}

/// Asks the owner of the in-process lab to fail over and waits, at most `timeout`, for
/// its answer, kept like a command's output.
async fn ask(
    trigger: &InProcessTrigger,
    timeout: Duration,
    [stdout_tail, stderr_tail]: &[Arc<Mutex<Tail>>; 2],
) -> (TriggerOutcome, Instant) {
    let Some(answer) = trigger.request().await else {
        let reason = format!("{}: nobody runs the lab any more", trigger.name);
        return (TriggerOutcome::CannotStart { reason }, Instant::now());
    };
    let keep = |tail: &Mutex<Tail>, text: &str| {
        let mut t = tail.lock();
        text.lines().for_each(|l| t.push_line(&scrub(l)));
    };
    let outcome = match tokio::time::timeout(timeout, answer).await {
        Ok(Ok(Ok(text))) => {
            keep(stdout_tail, &text);
            TriggerOutcome::Ok
        }
        Ok(Ok(Err(reason))) => {
            keep(stderr_tail, &reason);
            TriggerOutcome::Failed {
                reason: scrub(&reason),
            }
        }
        Ok(Err(_)) => TriggerOutcome::Failed {
            reason: format!("{}: the lab dropped the request", trigger.name),
        },
        Err(_) => TriggerOutcome::TimedOut {
            after_seconds: timeout.as_secs_f64(),
        },
    };
    (outcome, Instant::now())
}

/// What the daemon hears while the triggers run (metrics, baseline snapshots).
#[derive(Debug)]
pub enum TriggerEvent {
    /// The baseline window before trigger `index` (1-based) begins, late when the previous
    /// trigger ran into it: snapshot the counters.
    BaselineStarts { index: usize, at: Instant },
    /// Trigger `index` is about to start, at `at`: snapshot the counters again.
    Starting { index: usize, at: Instant },
    /// Trigger `index` ended: its record, handed over.
    Ended(TriggerRun),
}

/// Runs every planned trigger once its time has come and the previous one has ended (late, never
/// skipped), if a write was acknowledged by then (`written`; else it is recorded as not started).
/// On `stop`, a running trigger is ended (SIGTERM, then SIGKILL), not recorded, and none follows.
pub async fn run_schedule(
    config: &TriggerConfig,
    load_start: Instant,
    unix: impl Fn(Instant) -> f64 + Copy,
    written: impl Fn() -> bool,
    stop: &CancellationToken,
    mut on_event: impl FnMut(TriggerEvent),
) {
    let wait = |t| stop.run_until_cancelled(sleep_until(t));
    for (i, planned) in config.schedule.instants(load_start).into_iter().enumerate() {
        let index = i + 1;
        let span = config.schedule.baseline_span(i);
        let baseline_from = planned.checked_sub(span).unwrap_or(planned);
        if wait(baseline_from).await.is_none() {
            break;
        }
        let at = Instant::now();
        on_event(TriggerEvent::BaselineStarts { index, at });
        if wait(planned).await.is_none() {
            break;
        }
        // One instant: the start the timeline, /metrics and the summary all show.
        let at = Instant::now();
        on_event(TriggerEvent::Starting { index, at });
        // Not run before any write was acknowledged: no failover it caused could be measured,
        // and against a wrong target it would fail a database over for nothing.
        if !written() {
            let reason = "no write was acknowledged yet: a failover now could not be measured";
            let outcome = TriggerOutcome::CannotStart {
                reason: reason.into(),
            };
            let run = record(index, (planned, at, at), outcome, &Default::default(), unix);
            on_event(TriggerEvent::Ended(run));
            continue;
        }
        let (action, timeout) = (&config.action, config.timeout);
        let Some(run) = run(action, index, (planned, at), timeout, unix, stop).await else {
            tracing::warn!(
                trigger = index,
                grace = ?command::KILL_GRACE,
                "run stopped while the failover trigger ran; ended it: SIGTERM, then SIGKILL \
                 past the grace"
            );
            break;
        };
        on_event(TriggerEvent::Ended(run));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::drill::plan::Schedule;
    use crate::drill::plan::TriggerCommand;

    pub(crate) fn unix_now(at: Instant) -> f64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        now - Instant::now().saturating_duration_since(at).as_secs_f64()
    }

    pub(crate) async fn run_raw(raw: &str, shell: bool, timeout: Duration) -> TriggerRun {
        let c = TriggerAction::Command(TriggerCommand::parse(raw, shell).unwrap());
        let now = Instant::now();
        let stop = CancellationToken::new();
        run(&c, 1, (now, now), timeout, unix_now, &stop)
            .await
            .expect("not stopped")
    }

    #[test]
    fn every_outcome_label_is_precreated_on_metrics() {
        use crate::telemetry::metrics::TRIGGER_OUTCOMES;
        let outcomes = [
            TriggerOutcome::Ok,
            TriggerOutcome::CannotStart {
                reason: String::new(),
            },
            TriggerOutcome::ExitedNonZero {
                code: Some(1),
                signal: None,
            },
            TriggerOutcome::TimedOut { after_seconds: 1.0 },
            TriggerOutcome::Failed {
                reason: String::new(),
            },
        ];
        let labels: Vec<_> = outcomes.iter().map(TriggerOutcome::label).collect();
        assert_eq!(labels, TRIGGER_OUTCOMES);
    }

    #[tokio::test]
    async fn an_in_process_trigger_is_timed_and_recorded_like_a_command() {
        let (trigger, mut requests) = InProcessTrigger::new("lab: forced failover");
        let action = TriggerAction::InProcess(trigger);
        crate::secrets::remember("hunter2");
        let answers = tokio::spawn(async move {
            let mut n = 0;
            while let Some(reply) = requests.recv().await {
                n += 1;
                let answer = match n {
                    1 => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok("promoted b\nwritable after 0.1 s".to_string())
                    }
                    2 => Err("no standby (password hunter2)".to_string()),
                    // Never answered: the runner's timeout decides.
                    _ => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        Ok(String::new())
                    }
                };
                let _ = reply.send(answer);
            }
        });
        let go = |timeout_ms| {
            let action = action.clone();
            async move {
                let now = Instant::now();
                run(
                    &action,
                    1,
                    (now, now),
                    Duration::from_millis(timeout_ms),
                    unix_now,
                    &CancellationToken::new(),
                )
                .await
                .expect("not stopped")
            }
        };
        let ok = go(5_000).await;
        assert_eq!(ok.outcome, TriggerOutcome::Ok);
        assert_eq!(ok.stdout_tail, "promoted b\nwritable after 0.1 s\n");
        assert!(ok.duration_seconds >= 0.1, "{ok:?}");
        let failed = go(5_000).await;
        assert_eq!(
            failed.outcome,
            TriggerOutcome::Failed {
                reason: "no standby (password REDACTED)".into()
            }
        );
        assert_eq!(failed.outcome.label(), "failed");
        let slow = go(200).await;
        assert_eq!(
            slow.outcome,
            TriggerOutcome::TimedOut { after_seconds: 0.2 }
        );
        answers.abort();
        let _ = answers.await;
        let gone = go(1_000).await;
        assert!(
            matches!(&gone.outcome, TriggerOutcome::CannotStart { reason } if reason.contains("nobody runs the lab")),
            "{gone:?}"
        );
    }

    #[tokio::test]
    async fn a_successful_trigger_records_times_and_scrubbed_output() {
        crate::secrets::remember("hunter2");
        let before = unix_now(Instant::now());
        let r = run_raw(
            "sh -c 'echo promoting; echo \"PGPASSWORD=x1 via hunter2\" >&2; sleep 0.2; echo done'",
            false,
            Duration::from_secs(10),
        )
        .await;
        let after = unix_now(Instant::now());
        assert_eq!(r.outcome, TriggerOutcome::Ok);
        assert_eq!(r.stdout_tail, "promoting\ndone\n");
        assert_eq!(r.stderr_tail, "PGPASSWORD=REDACTED via REDACTED\n");
        assert!(before <= r.started_unix && r.started_unix < r.ended_unix && r.ended_unix <= after);
        assert!(r.duration_seconds >= 0.2, "{}", r.duration_seconds);
        assert!(!r.output_truncated);
        // Dated at the start it is given (the one the timeline and /metrics show).
        let base = Instant::now();
        let unix = move |t: Instant| t.saturating_duration_since(base).as_secs_f64();
        let c = TriggerAction::Command(TriggerCommand::parse("true", false).unwrap());
        let started = Instant::now();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let stop = CancellationToken::new();
        let r = run(
            &c,
            1,
            (started, started),
            Duration::from_secs(10),
            unix,
            &stop,
        )
        .await;
        let r = r.expect("not stopped");
        assert_eq!(r.started_unix, unix(started));
    }

    #[tokio::test]
    async fn failures_are_outcomes_not_errors() {
        let r = run_raw(
            "sh -c 'echo nope >&2; exit 3'",
            false,
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(
            r.outcome,
            TriggerOutcome::ExitedNonZero {
                code: Some(3),
                signal: None
            }
        );
        assert_eq!(r.stderr_tail, "nope\n");
        assert_eq!(r.outcome.problem().unwrap(), "exited with status 3");

        let r = run_raw(
            "/no/such/failover-tool --force",
            false,
            Duration::from_secs(10),
        )
        .await;
        match &r.outcome {
            TriggerOutcome::CannotStart { reason } => {
                assert!(reason.contains("/no/such/failover-tool"), "{reason}")
            }
            other => panic!("{other:?}"),
        }

        let r = run_raw("kill -9 $$", true, Duration::from_secs(10)).await;
        assert_eq!(
            r.outcome,
            TriggerOutcome::ExitedNonZero {
                code: None,
                signal: Some(9)
            }
        );
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
        let mut runs = Vec::new();
        run_schedule(
            &c,
            start,
            unix_now,
            || true,
            &CancellationToken::new(),
            |e| {
                events.push(match e {
                    TriggerEvent::BaselineStarts { index, at } => {
                        baselines.push(unix_now(at));
                        format!("baseline {index}")
                    }
                    TriggerEvent::Starting { index, .. } => format!("start {index}"),
                    TriggerEvent::Ended(r) => {
                        let event = format!("end {} {}", r.index, r.outcome.label());
                        runs.push(r);
                        event
                    }
                })
            },
        )
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
            (baselines[0] - unix_now(start) - 0.05).abs() < 0.02,
            "{baselines:?}"
        );
        assert_eq!(runs.len(), 3);
        let t0 = unix_now(start);
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
        // A trigger that would outlast the test by far: stopping must not wait for it.
        let c = config("sleep 60", 20, 100, 3);
        let stop = CancellationToken::new();
        let stopper = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                stop.cancel();
            })
        };
        let began = std::time::Instant::now();
        let (mut started, mut runs) = (0, Vec::new());
        run_schedule(
            &c,
            Instant::now(),
            unix_now,
            || true,
            &stop,
            |e| match e {
                TriggerEvent::Starting { .. } => started += 1,
                TriggerEvent::Ended(r) => runs.push(r),
                TriggerEvent::BaselineStarts { .. } => {}
            },
        )
        .await;
        stopper.await.unwrap();
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "{:?}",
            began.elapsed()
        );
        assert_eq!(started, 1);
        assert!(runs.is_empty(), "{runs:?}");

        // A failing trigger does not stop the schedule.
        let c = config("false", 10, 50, 2);
        let mut runs = Vec::new();
        let mut ended = |e| {
            if let TriggerEvent::Ended(r) = e {
                runs.push(r);
            }
        };
        let never = CancellationToken::new();
        run_schedule(&c, Instant::now(), unix_now, || true, &never, &mut ended).await;
        assert_eq!(runs.len(), 2);
        assert!(runs.iter().all(|r| matches!(
            r.outcome,
            TriggerOutcome::ExitedNonZero { code: Some(1), .. }
        )));
    }

    #[tokio::test]
    async fn no_trigger_runs_before_a_write_was_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let fired = dir.path().join("fired");
        let c = config(&format!("touch {}", fired.display()), 10, 50, 2);
        let mut runs = Vec::new();
        let never = CancellationToken::new();
        run_schedule(
            &c,
            Instant::now(),
            unix_now,
            || false,
            &never,
            |e| {
                if let TriggerEvent::Ended(r) = e {
                    runs.push(r);
                }
            },
        )
        .await;
        assert!(!fired.exists(), "the trigger ran");
        assert_eq!(runs.len(), 2);
        assert!(runs.iter().all(|r| r.outcome.label() == "cannot_start"));
    }
}
