//! The 1 Hz timeline sampler: once a second, what happened in the second just ended, read
//! from what the lanes already keep and pushed into the run's timeline.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::ErrorClass;
use crate::load::outcomes::TallySnapshot;
use crate::report::Sources;
use crate::telemetry::timeline::{Second, MAX_CLASSES};

// Every error class must have a slot in a timeline bucket.
const _: () = assert!(ErrorClass::ALL.len() <= MAX_CLASSES);

/// The timeline's class names, indexed like `ErrorClass::index`.
pub(crate) fn class_names() -> [&'static str; ErrorClass::ALL.len()] {
    ErrorClass::ALL.map(ErrorClass::as_str)
}

/// Samples on whole wall-clock seconds until `stop`, then the part-second at the end as a
/// second of its own (merged into the last whole one, it drew a rate above the target).
pub(crate) async fn run(sources: Arc<Sources>, stop: CancellationToken) {
    let clock = sources.outages.clock();
    let mut last = sources.outcomes.tally();
    // Discard what the per-second slot gathered before the first tick's second began.
    let _ = sources.outcomes.latency.merged(|s| &mut s.second, true);
    let now = Instant::now();
    let first = now + Duration::from_secs_f64(1.0 - clock.unix(now).fract());
    let mut ticker = tokio::time::interval_at(first, Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pushed = None;
    loop {
        // A whole second due with the stop is sampled as a whole second first.
        let stopping = tokio::select! {
            biased;
            _ = ticker.tick() => false,
            _ = stop.cancelled() => true,
        };
        let at = label(clock.unix(Instant::now()), stopping, pushed);
        last = sample(&sources, at, last);
        pushed = Some(at);
        if stopping {
            return;
        }
        sources.redraw().await;
    }
}

/// The second a sample taken at `unix` covers: the one just ended, or at the end
/// (`last_part`) the one in progress, after every second `pushed` (a late tick's).
fn label(unix: f64, last_part: bool, pushed: Option<u64>) -> u64 {
    match last_part {
        true => (unix.floor() as u64).max(pushed.map_or(0, |p| p + 1)),
        false => (unix.round() as u64).saturating_sub(1),
    }
}

/// Pushes what happened since `last` as second `label`; returns the tally read.
fn sample(s: &Sources, label: u64, last: TallySnapshot) -> TallySnapshot {
    let now = s.outcomes.tally();
    let mut second = Second::second(label);
    let sat = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    second.attempts = sat(now.transactions.saturating_sub(last.transactions));
    second.successes = sat(now.successes().saturating_sub(last.successes()));
    second.skipped = sat(now.skipped.saturating_sub(last.skipped));
    for i in ErrorClass::ALL.map(ErrorClass::index) {
        second.errors[i] = sat(now.errors[i].saturating_sub(last.errors[i]));
    }
    let h = s.outcomes.latency.merged(|s| &mut s.second, true);
    if !h.is_empty() {
        let secs = |us: u64| (us as f64 / 1e6) as f32;
        second.p50 = secs(h.value_at_quantile(0.5));
        second.p99 = secs(h.value_at_quantile(0.99));
        second.max = secs(h.max());
    }
    second.pool_in_use = s.pool.stats().in_use;
    let states = s.outages.take_states();
    second.state = states.into_iter().max().unwrap_or_default();
    s.timeline.lock().push(second);
    now
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::outcomes::{Failure, Job};
    use crate::telemetry::timeline::{Recorder, State, Timeline};

    #[tokio::test(start_paused = true)]
    async fn a_sample_is_the_second_just_ended() {
        let sources = Sources::for_tests(Arc::new(Recorder::new(Timeline::new(&class_names()))));
        let (outcomes, outages, timeline) =
            (&sources.outcomes, &sources.outages, &sources.timeline);
        let clock = outages.clock();
        let lane = outcomes.lane();
        let t0 = tokio::time::Instant::now();
        // Before the sampler's first read: not this second's.
        lane.started();
        lane.succeeded(
            Job {
                seq: 0,
                intended: t0,
            },
            t0,
            t0,
            1,
        );
        let first = outcomes.tally();
        let _ = sources.outcomes.latency.merged(|s| &mut s.second, true);
        for seq in 1..=3 {
            lane.started();
            let done = t0 + Duration::from_millis(2 * seq);
            lane.succeeded(Job { seq, intended: t0 }, t0, done, seq as i64);
        }
        lane.started();
        let refused = Failure {
            class: ErrorClass::ConnectRefused,
            unknown: false,
            message: String::new(),
            sqlstate: None,
        };
        lane.failed(
            Job {
                seq: 4,
                intended: t0,
            },
            t0,
            &refused,
        );
        outcomes.skipped();
        // A short outage that was over before the sample still marks the second.
        outages.state_changed(State::Healthy, State::Outage, t0);
        outages.state_changed(State::Outage, State::Recovering, t0);
        tokio::time::advance(Duration::from_millis(1000)).await;
        let second = || label(clock.unix(tokio::time::Instant::now()), false, None);
        sample(&sources, second(), first);
        let t: Timeline = timeline.lock().clone();
        let s = t.iter().last().copied().unwrap_or_default();
        assert_eq!((s.attempts, s.successes, s.skipped), (4, 3, 1));
        assert_eq!(s.errors[ErrorClass::ConnectRefused.index()], 1);
        assert_eq!(s.errors_total(), 1);
        assert_eq!(s.state, State::Outage);
        assert!((0.0059..0.0062).contains(&s.max), "max {}", s.max);
        assert!((0.0039..0.0042).contains(&s.p50), "p50 {}", s.p50);
        assert_eq!(t.classes().len(), ErrorClass::ALL.len());
        // The next second has nothing new, and the state is the current one.
        tokio::time::advance(Duration::from_millis(1000)).await;
        let tally = sample(&sources, second(), outcomes.tally());
        let s = timeline
            .lock()
            .clone()
            .iter()
            .last()
            .copied()
            .unwrap_or_default();
        assert_eq!(s.state, State::Recovering);
        assert!(!s.has_latency());
        // The part-second at the end is a second of its own, not added to the last whole one.
        let whole = timeline.lock().clone().iter().count();
        tokio::time::advance(Duration::from_millis(200)).await;
        lane.started();
        let at = tokio::time::Instant::now();
        lane.succeeded(
            Job {
                seq: 5,
                intended: at,
            },
            at,
            at,
            5,
        );
        let pushed = timeline.lock().clone().iter().last().map(|s| s.at);
        let part = label(clock.unix(tokio::time::Instant::now()), true, pushed);
        sample(&sources, part, tally);
        let t: Timeline = timeline.lock().clone();
        assert_eq!(t.iter().count(), whole + 1);
        let s = t.iter().last().copied().unwrap_or_default();
        assert_eq!((s.attempts, s.successes), (1, 1));
    }

    #[test]
    fn the_part_second_at_the_end_follows_every_second_pushed() {
        // Ticks on whole seconds label the second that just ended.
        assert_eq!(label(1000.0004, false, None), 999);
        assert_eq!(label(1000.9, false, None), 1000);
        // The end, 0.2 s into second 1000: its own second.
        assert_eq!(label(1000.2, true, Some(999)), 1000);
        // After a tick 0.6 s late had labelled second 1000 already: the next one.
        assert_eq!(label(1000.7, true, Some(1000)), 1001);
    }

    #[test]
    fn every_class_maps() {
        let names = class_names();
        for c in ErrorClass::ALL {
            assert_eq!(names[c.index()], c.as_str());
        }
    }
}
