use super::*;

fn machine(rate: f64) -> (Machine, Events, Instant) {
    let t0 = Instant::now();
    let m = Machine::new(
        Thresholds {
            outage: Duration::from_millis(200),
            stall: Duration::from_secs(1),
            target_rate: Some(rate),
        },
        t0,
    );
    (m, Events::default(), t0)
}

/// Drives `ms` milliseconds at 1,000/s with the given outcome per write.
fn run(
    m: &mut Machine,
    ev: &mut Events,
    from: Instant,
    ms: u64,
    outcome: impl Fn(u64) -> Option<ErrorClass>,
) -> Vec<Transition> {
    let mut out = Vec::new();
    for i in 0..ms {
        let t = from + Duration::from_millis(i);
        let _news = match outcome(i) {
            None => ev.success(t, t),
            Some(c) => ev.failure(t, c),
        };
        if i % 10 == 9 {
            out.extend(m.tick(t, ev, 4));
        }
    }
    out
}

/// A machine at 1,000/s after a second of writes that all succeeded.
fn after_a_healthy_second() -> (Machine, Events, Instant) {
    let (mut m, mut ev, t0) = machine(1000.0);
    run(&mut m, &mut ev, t0, 1000, |_| None);
    (m, ev, t0)
}

#[tokio::test(start_paused = true)]
async fn a_healthy_machine_looks_only_when_something_can_change() {
    let (mut m, mut ev, t0) = machine(1000.0);
    let now = t0 + Duration::from_millis(500);
    ev.success(now, now);
    m.tick(now, &mut ev, 0);
    // Nothing in flight: the idle look only.
    assert_eq!(m.next_look(now, &ev, 0), now + IDLE_LOOK);
    // Writes in flight: when they would become a stall (the stall threshold is 1 s).
    let later = now + Duration::from_millis(300);
    assert_eq!(m.next_look(later, &ev, 3), now + Duration::from_secs(1));
    // A failure is news (the monitor is woken), and from then on it looks every tick.
    assert!(ev.failure(later, ErrorClass::ConnectRefused));
    assert!(!ev.failure(later, ErrorClass::ConnectRefused));
    assert_eq!(m.next_look(later, &ev, 3), later + TICK);
    // A single failure between two rare looks still makes it degraded.
    let after = later + Duration::from_millis(1);
    ev.success(after, after);
    let look = now + IDLE_LOOK;
    m.tick(look, &mut ev, 0);
    assert_eq!(m.state(), FailoverState::Degraded);
    assert_eq!(m.next_look(look, &ev, 0), look + TICK);
}

#[tokio::test(start_paused = true)]
async fn a_straggler_sent_before_the_first_failure_does_not_end_the_outage() {
    let (mut m, mut ev, t0) = after_a_healthy_second();
    let fail = t0 + Duration::from_millis(1000);
    ev.failure(fail, ErrorClass::AdminShutdown);
    let detected = fail + Duration::from_millis(250);
    m.tick(detected, &mut ev, 4);
    assert_eq!(m.state(), FailoverState::Outage);
    // A commit sent before the shutdown began, answered during it: not the end.
    let straggler = detected + Duration::from_millis(5);
    assert!(!ev.success(fail - Duration::from_millis(2), straggler));
    m.tick(straggler + TICK, &mut ev, 4);
    assert_eq!(m.state(), FailoverState::Outage);
    // A write sent after the first failure and acknowledged: the outage ends, dated then.
    let back = straggler + Duration::from_secs(3);
    assert!(ev.success(back - Duration::from_millis(1), back));
    let out = m.tick(back + TICK, &mut ev, 4);
    assert!(
        out.iter()
            .any(|t| matches!(t, Transition::OutageEnded { start, end, .. }
        if *start == fail && *end == back)),
        "{out:?}"
    );
}

/// A fast shutdown: the failures come first, then the commits it lets finish, then
/// nothing (a switchover behind HAProxy held the next writes 0.6 s without a failure).
#[tokio::test(start_paused = true)]
async fn a_straggler_answered_before_the_outage_is_seen_does_not_clear_its_failure() {
    let (mut m, mut ev, t0) = after_a_healthy_second();
    let fail = t0 + Duration::from_millis(1000);
    ev.failure(fail, ErrorClass::AdminShutdown);
    let straggler = fail + Duration::from_millis(10);
    assert!(!ev.success(fail - Duration::from_millis(1), straggler));
    m.tick(straggler + Duration::from_millis(100), &mut ev, 4);
    assert_eq!(
        m.state(),
        FailoverState::Degraded,
        "silence counts from the straggler"
    );
    let out = m.tick(straggler + Duration::from_millis(200), &mut ev, 4);
    assert!(
        out.contains(&Transition::OutageStarted { start: straggler }),
        "{out:?}"
    );
    // Another commit from before the failure, answered in the outage: not its end.
    let late = straggler + Duration::from_millis(250);
    assert!(!ev.success(fail - Duration::from_millis(3), late));
    m.tick(late + TICK, &mut ev, 4);
    assert_eq!(m.state(), FailoverState::Outage);

    // The same, reported in the other order: the failure still counts.
    let (mut m, mut ev, _) = after_a_healthy_second();
    ev.success(fail - Duration::from_millis(1), straggler);
    ev.failure(fail, ErrorClass::AdminShutdown);
    let out = m.tick(straggler + Duration::from_millis(200), &mut ev, 4);
    assert!(
        out.contains(&Transition::OutageStarted { start: straggler }),
        "{out:?}"
    );

    // A failure among the last writes, the load stopping before its silence is an outage:
    // the silence after the load's end is no one's.
    let (mut m, mut ev, t0) = after_a_healthy_second();
    ev.failure(
        t0 + Duration::from_micros(999_500),
        ErrorClass::AdminShutdown,
    );
    m.load_stopped(t0 + Duration::from_secs(1));
    let out = m.tick(t0 + Duration::from_secs(2), &mut ev, 0);
    let started = |t: &Transition| matches!(t, Transition::OutageStarted { .. });
    assert!(!out.iter().any(started), "{out:?}");

    // Once the load has stopped, nothing comes after the last writes: no outage.
    let (mut m, mut ev, _) = after_a_healthy_second();
    m.load_stopped(fail);
    ev.failure(fail - Duration::from_millis(1), ErrorClass::AdminShutdown);
    ev.success(fail - Duration::from_millis(2), straggler);
    m.tick(straggler + Duration::from_secs(2), &mut ev, 0);
    assert_ne!(m.state(), FailoverState::Outage);

    // On a slow link (300 ms round trips, above the threshold) a write refused at once is
    // no outage: the writes sent before it are answered until those sent after it are.
    let (mut m, mut ev, t0) = machine(1000.0);
    let rtt = Duration::from_millis(300);
    let mut out = Vec::new();
    for i in 0..2000 {
        let now = t0 + Duration::from_millis(i);
        if i == 1000 {
            ev.failure(now, ErrorClass::ConnectionClosed);
        }
        // The write sent a round trip ago is answered now (the refused one never is).
        if i >= 300 && i != 1300 {
            ev.success(now - rtt, now);
        }
        if i % 10 == 9 {
            out.extend(m.tick(now, &mut ev, 300));
        }
    }
    let started = |t: &Transition| matches!(t, Transition::OutageStarted { .. });
    assert!(!out.iter().any(started), "{out:?}");
    assert!(out.contains(&Transition::State {
        from: FailoverState::Healthy,
        to: FailoverState::Degraded
    }));
}

#[tokio::test(start_paused = true)]
async fn failover_walks_healthy_outage_recovering_healthy() {
    let (mut m, mut ev, t0) = machine(1000.0);
    run(&mut m, &mut ev, t0, 3000, |_| None);
    assert_eq!(m.state(), FailoverState::Healthy);

    let t1 = t0 + Duration::from_millis(3000);
    let out = run(&mut m, &mut ev, t1, 300, |_| {
        Some(ErrorClass::ConnectRefused)
    });
    assert_eq!(m.state(), FailoverState::Outage);
    assert!(
        out.contains(&Transition::OutageStarted { start: t1 }),
        "{out:?}"
    );

    let t2 = t1 + Duration::from_millis(300);
    let out = run(&mut m, &mut ev, t2, 1000, |_| None);
    let ended = out.iter().find_map(|t| match t {
        Transition::OutageEnded {
            start,
            end,
            classes,
        } => Some((*start, *end, classes.clone())),
        _ => None,
    });
    assert_eq!(ended, Some((t1, t2, vec![ErrorClass::ConnectRefused])));
    assert_eq!(m.state(), FailoverState::Recovering);

    let t3 = t2 + Duration::from_millis(1000);
    let out = run(&mut m, &mut ev, t3, 6000, |_| None);
    assert_eq!(m.state(), FailoverState::Healthy);
    assert!(out.iter().any(|t| matches!(t, Transition::FullRate { .. })));
}

#[tokio::test(start_paused = true)]
async fn recovering_ends_after_the_limit_even_below_full_rate() {
    let (mut m, mut ev, t0) = machine(1000.0);
    run(&mut m, &mut ev, t0, 3000, |_| None);
    let t1 = t0 + Duration::from_millis(3000);
    run(&mut m, &mut ev, t1, 300, |_| {
        Some(ErrorClass::ConnectRefused)
    });
    assert_eq!(m.state(), FailoverState::Outage);
    // Back, at half the target rate (every other write fails) for a long while.
    let t2 = t1 + Duration::from_millis(300);
    let limit_ms = RECOVERY_LIMIT.as_millis() as u64;
    let out = run(&mut m, &mut ev, t2, limit_ms - 10, |i| {
        (i % 2 == 1).then_some(ErrorClass::StatementTimeout)
    });
    assert_eq!(m.state(), FailoverState::Recovering, "{out:?}");
    let out = run(
        &mut m,
        &mut ev,
        t2 + Duration::from_millis(limit_ms - 10),
        1000,
        |i| (i % 2 == 1).then_some(ErrorClass::StatementTimeout),
    );
    assert_eq!(m.state(), FailoverState::Degraded, "{out:?}");
    assert!(
        !out.iter().any(|t| matches!(t, Transition::FullRate { .. })),
        "full rate was never reached: {out:?}"
    );
    assert!(out.contains(&Transition::State {
        from: FailoverState::Recovering,
        to: FailoverState::Degraded
    }));
}

#[tokio::test(start_paused = true)]
async fn a_single_failure_is_degraded_not_an_outage() {
    let (mut m, mut ev, t0) = machine(1000.0);
    let out = run(&mut m, &mut ev, t0, 2000, |i| {
        (i == 1000).then_some(ErrorClass::StatementTimeout)
    });
    assert!(!out
        .iter()
        .any(|t| matches!(t, Transition::OutageStarted { .. })));
    assert!(out.contains(&Transition::State {
        from: FailoverState::Healthy,
        to: FailoverState::Degraded
    }));
    let t1 = t0 + Duration::from_millis(2000);
    run(&mut m, &mut ev, t1, 1100, |_| None);
    assert_eq!(m.state(), FailoverState::Healthy);
}

#[tokio::test(start_paused = true)]
async fn stalled_writes_without_errors_are_an_outage() {
    let (mut m, mut ev, t0) = after_a_healthy_second();
    let last = t0 + Duration::from_millis(999);
    m.tick(last + Duration::from_millis(500), &mut ev, 4);
    assert_ne!(
        m.state(),
        FailoverState::Outage,
        "a slow commit is not an outage"
    );
    let out = m.tick(last + Duration::from_millis(1000), &mut ev, 4);
    assert_eq!(m.state(), FailoverState::Outage);
    assert!(out.contains(&Transition::OutageStarted { start: last }));
    // Nothing in flight and nothing failing (rate paused): not an outage.
    let (mut m, mut ev, t0) = after_a_healthy_second();
    m.tick(t0 + Duration::from_secs(5), &mut ev, 0);
    assert_ne!(m.state(), FailoverState::Outage);
}

#[tokio::test(start_paused = true)]
async fn a_slow_first_connection_is_no_stall_but_writes_unanswered_after_it_are() {
    let (mut m, mut ev, t0) = machine(100.0);
    m.tick(t0 + Duration::from_secs(5), &mut ev, 4);
    assert_eq!(m.state(), FailoverState::Healthy);
    // The first connection is set up at 5 s; its writes are never answered.
    let ready = t0 + Duration::from_secs(5);
    ev.first_ready = Some(ready);
    assert_eq!(m.next_look(ready, &ev, 4), ready + Duration::from_secs(1));
    m.tick(ready + Duration::from_millis(900), &mut ev, 4);
    assert_eq!(m.state(), FailoverState::Healthy);
    let out = m.tick(ready + Duration::from_secs(1), &mut ev, 4);
    assert_eq!(m.state(), FailoverState::Outage);
    assert!(out.contains(&Transition::OutageStarted { start: ready }));
}

#[tokio::test(start_paused = true)]
async fn database_down_from_the_start_is_an_outage() {
    let (mut m, mut ev, t0) = machine(100.0);
    let out = run(&mut m, &mut ev, t0, 500, |_| {
        Some(ErrorClass::ConnectRefused)
    });
    assert_eq!(m.state(), FailoverState::Outage);
    assert!(out.contains(&Transition::OutageStarted { start: t0 }));
}
