use super::*;

// The stated bound; the tests hold the timeline to it.
const MAX_BUCKETS: usize = TIERS[0].0 + TIERS[1].0 + TIERS[2].0;

/// The stated bound on the heap the timeline holds.
const MAX_BYTES: usize = MAX_BUCKETS * std::mem::size_of::<Bucket>()
    + MAX_EVENTS * (std::mem::size_of::<Event>() + 2 * MAX_TEXT);

fn text_bytes(e: &Event) -> usize {
    match &e.kind {
        EventKind::PrimaryChange { before, after } => before.capacity() + after.capacity(),
        EventKind::Restart { what } => what.capacity(),
        EventKind::FailoverTrigger { how } => how.capacity(),
        _ => 0,
    }
}

/// Heap bytes held now: bucket storage by capacity, events and their strings.
fn heap_bytes(t: &Timeline) -> usize {
    let b = std::mem::size_of::<Bucket>();
    t.tiers.iter().map(VecDeque::capacity).sum::<usize>() * b
        + t.events.list.capacity() * std::mem::size_of::<Event>()
        + t.events.list.iter().map(text_bytes).sum::<usize>()
        + t.classes.iter().map(String::capacity).sum::<usize>()
        + t.classes.capacity() * std::mem::size_of::<String>()
}

// On a 10-minute boundary, so the coarse buckets are whole.
const T0: u64 = 1_795_000_200;

fn classes() -> Vec<&'static str> {
    vec!["connection_closed", "read_only", "other"]
}

/// A plausible second `i` of a canary at 100 writes/s.
fn second(i: u64) -> Second {
    let mut s = Second::second(T0 + i);
    s.attempts = 100;
    s.successes = 100;
    s.p50 = 0.002;
    s.p99 = 0.004 + (i % 7) as f32 * 0.001;
    s.max = 0.010;
    s.pool_in_use = 4;
    s
}

#[test]
fn a_simulated_week_stays_within_the_stated_bound() {
    const WEEK: u64 = 604_800;
    let mut t = Timeline::new(&classes());
    for i in 0..WEEK {
        t.push(second(i));
        if i % 3600 == 0 {
            t.events.push(Event {
                at: (T0 + i) as f64,
                kind: EventKind::PrimaryChange {
                    before: "x".repeat(500),
                    after: "10.0.0.2:5432 timeline 3".into(),
                },
            });
        }
    }
    // 6 h of seconds, 24 h of minutes, the remaining 138 h in 10-minute buckets.
    let expected = TIERS[0].0 + TIERS[1].0 + ((WEEK as usize - 6 * 3600 - 24 * 3600) / 600);
    assert_eq!(t.iter().count(), expected);
    assert!(t.iter().count() <= MAX_BUCKETS);
    assert_eq!(t.dropped_buckets, 0);
    assert_eq!(t.events.len(), 168);
    let bytes = heap_bytes(&t);
    eprintln!(
        "week: {} buckets, {} bytes held, bound {} bytes, bucket {} bytes",
        t.iter().count(),
        bytes,
        MAX_BYTES,
        std::mem::size_of::<Bucket>()
    );
    assert!(bytes <= MAX_BYTES, "{bytes} > {MAX_BYTES}");
    let json = serde_json::to_vec(&t).unwrap_or_default();
    eprintln!("week as JSON: {} bytes", json.len());
    // Nothing counted was lost in the merging.
    let attempts: u64 = t.iter().map(|b| u64::from(b.attempts)).sum();
    assert_eq!(attempts, WEEK * 100);
    let (first, last) = t.span().unwrap_or_default();
    assert_eq!((first, last), (T0, T0 + WEEK));
}

/// Keeps the figures in the module doc true.
#[test]
#[cfg(target_pointer_width = "64")]
fn the_stated_bound_is_the_computed_one() {
    assert_eq!(std::mem::size_of::<Bucket>(), 112);
    assert_eq!(MAX_BUCKETS, 27_360);
    assert_eq!(MAX_BYTES, 3_448_320);
}

#[test]
fn the_bound_holds_when_the_oldest_tier_overflows() {
    // Ten-minute steps: every push lands in its own coarse bucket downstream.
    let mut t = Timeline::new(&classes());
    let n = MAX_BUCKETS + 5_000;
    for i in 0..n as u64 {
        t.push(second(i * 600));
    }
    assert_eq!(t.iter().count(), MAX_BUCKETS);
    assert_eq!(t.dropped_buckets, 5_000);
    assert!(heap_bytes(&t) <= MAX_BYTES);
    for _ in 0..MAX_EVENTS + 10 {
        t.events.push(Event {
            at: T0 as f64,
            kind: EventKind::Restart {
                what: "é".repeat(MAX_TEXT),
            },
        });
    }
    assert_eq!(t.events.len(), MAX_EVENTS);
    assert_eq!(t.events.dropped(), 10);
    assert!(
        heap_bytes(&t) <= MAX_BYTES,
        "{} > {MAX_BYTES}",
        heap_bytes(&t)
    );
}

#[test]
fn a_one_second_outage_survives_coarsening() {
    let mut t = Timeline::new(&classes());
    let outage_at = 3_000;
    for i in 0..(40 * 3600) {
        let mut s = second(i);
        if i == outage_at {
            s.state = State::Outage;
            s.successes = 0;
            s.errors[0] = 100;
            s.p99 = 2.5;
            s.max = 2.9;
        }
        t.push(s);
    }
    let b = t
        .iter()
        .find(|b| b.at <= T0 + outage_at && T0 + outage_at < b.end())
        .copied()
        .unwrap_or_default();
    assert_eq!(
        b.span, 600,
        "the outage second is in a 10-minute bucket by now"
    );
    assert_eq!(b.state, State::Outage);
    assert_eq!(b.errors[0], 100);
    assert_eq!(b.p99, 2.5);
    assert_eq!(b.max, 2.9);
    assert_eq!(b.successes, 599 * 100);
    assert_eq!(b.attempts, 600 * 100);
}

#[test]
fn merging_follows_the_stated_rules() {
    let mut a = Second::second(T0);
    a.successes = 300;
    a.attempts = 301;
    a.errors[2] = 1;
    a.p50 = 0.001;
    a.p99 = 0.010;
    a.max = 0.020;
    a.pool_in_use = 3;
    a.state = State::Degraded;
    let mut b = Second::second(T0 + 1);
    b.successes = 100;
    b.attempts = 100;
    b.p50 = 0.005;
    b.p99 = 0.008;
    b.max = 0.030;
    b.pool_in_use = 7;
    b.state = State::Healthy;
    a.merge(&b);
    assert_eq!((a.at, a.span), (T0, 2));
    assert_eq!((a.attempts, a.successes, a.errors[2]), (401, 400, 1));
    assert!((a.p50 - 0.002).abs() < 1e-6, "{}", a.p50);
    assert_eq!((a.p99, a.max, a.pool_in_use), (0.010, 0.030, 7));
    assert_eq!(a.state, State::Degraded);
    // A second without completions does not drag the latency down.
    let mut c = Second::second(T0 + 2);
    c.state = State::Outage;
    a.merge(&c);
    assert!((a.p50 - 0.002).abs() < 1e-6);
    assert_eq!(a.state, State::Outage);
    assert_eq!(a.span, 3);
}

#[test]
fn a_repeated_second_merges_instead_of_reordering() {
    let mut t = Timeline::new(&classes());
    t.push(second(0));
    t.push(second(1));
    t.push(second(1));
    t.push(second(0));
    assert_eq!(t.iter().count(), 2);
    let last = t.iter().last().copied().unwrap_or_default();
    assert_eq!((last.at, last.span, last.attempts), (T0 + 1, 1, 300));
}

#[test]
fn recent_returns_the_recent_buckets_and_their_events() {
    let mut t = Timeline::new(&classes());
    for i in 0..1000 {
        t.push(second(i));
    }
    let w = t.recent(Duration::from_secs(900));
    assert_eq!(w.iter().count(), 900);
    assert_eq!(w.iter().next().map(|b| b.at), Some(T0 + 100));
    t.events.push(Event {
        at: (T0 + 50) as f64,
        kind: EventKind::OutageStart { outage: 1 },
    });
    t.events.push(Event {
        at: (T0 + 500) as f64,
        kind: EventKind::OutageEnd {
            outage: 1,
            unavailable_seconds: Some(450.0),
        },
    });
    let r = t.recent(Duration::from_secs(900));
    assert_eq!(r.iter().count(), 900);
    assert_eq!(r.events.len(), 1);
}

#[test]
fn json_round_trips_through_serde() {
    let mut t = Timeline::new(&classes());
    for i in 0..(TIERS[0].0 as u64 + 180) {
        let mut s = second(i);
        if i % 1000 == 0 {
            s.errors[1] = 3;
        }
        t.push(s);
    }
    t.events.push(Event {
        at: T0 as f64 + 12.345,
        kind: EventKind::Verification {
            outage: Some(1),
            checked: 1200,
            lost: 0,
            rpo_seconds: 0.0,
            at_least: false,
            unknown_committed: 1,
            unknown_not_committed: 2,
        },
    });
    let json = serde_json::to_string(&t).unwrap_or_default();
    assert!(
        json.contains("\"kind\":\"verification\""),
        "{}",
        &json[..200.min(json.len())]
    );
    let back: Timeline = match serde_json::from_str(&json) {
        Ok(b) => b,
        Err(err) => panic!("{err}"),
    };
    assert_eq!(back.iter().count(), t.iter().count());
    assert!(back.iter().eq(t.iter()));
    assert_eq!(
        back.events.iter().collect::<Vec<_>>(),
        t.events.iter().collect::<Vec<_>>()
    );
    assert_eq!(back.classes(), t.classes());
    let bad = r#"{"classes":[],"buckets":[{"at":1,"errors":[[99,1]]}]}"#;
    assert!(serde_json::from_str::<Timeline>(bad).is_err());
}

#[test]
fn a_narrow_oldest_bucket_reads_back_in_order() {
    // A run that began 30 s before a 10-minute boundary, past the two finer tiers: its first
    // bucket is 30 s wide but the oldest of the coarsest tier.
    let mut t = Timeline::new(&classes());
    for i in 0..(TIERS[0].0 + TIERS[1].0 * 60 + 1200) as u64 {
        t.push(second(i + 570));
    }
    let first = t.iter().next().copied().unwrap_or_default();
    assert_eq!((first.at, first.span), (T0 + 570, 30));
    let json = serde_json::to_string(&t).unwrap_or_default();
    let back: Timeline = serde_json::from_str(&json).unwrap_or_else(|err| panic!("{err}"));
    assert!(back.iter().eq(t.iter()));
    assert_eq!(back.span(), t.span());
    let starts: Vec<u64> = back.iter().map(|b| b.at).collect();
    assert!(starts.windows(2).all(|w| w[0] < w[1]));
}
