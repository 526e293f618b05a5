use super::endpoint::backoff;
use super::*;
use rand::SeedableRng;

fn connector(dsn: &str) -> Arc<Connector> {
    let pg: Config = dsn.parse().expect("dsn");
    let tls = crate::db::tls::TlsSettings::new(
        crate::db::tls::SslMode::Disable,
        crate::db::tls::RootCert::Default,
    )
    .expect("tls");
    Connector::new(
        &pg,
        tls.connector.clone(),
        Metrics::new(&[]),
        Duration::from_secs(5),
    )
}

#[tokio::test]
async fn hostaddr_and_names_become_one_endpoint_per_address() {
    let c = connector("host=db.example,localhost hostaddr=127.0.0.5,127.0.0.1 port=5433");
    let first = c.resolve(&c.entries[0]).await.expect("resolve");
    assert_eq!(first.len(), 1);
    assert_eq!(
        first[0].0,
        Endpoint::Tcp("127.0.0.5:5433".parse().expect("addr"))
    );
    // The name stays for TLS; the address is what is dialled.
    let hosts = first[0].1.get_hosts();
    assert!(
        matches!(hosts, [Host::Tcp(h)] if h == "db.example"),
        "{hosts:?}"
    );
    assert_eq!(
        first[0].1.get_hostaddrs(),
        &["127.0.0.5".parse::<IpAddr>().expect("ip")]
    );
    // A name without hostaddr is looked up now, every time: each address its own endpoint.
    let c = connector("host=localhost port=5433 connect_timeout=3");
    let named = c.resolve(&c.entries[0]).await.expect("resolve localhost");
    assert!(!named.is_empty());
    assert!(named.iter().all(
        |(e, cfg)| matches!(e, Endpoint::Tcp(a) if a.ip().is_loopback() && a.port() == 5433)
            && cfg.get_connect_timeout() == Some(&Duration::from_secs(3))
    ));
}

#[test]
fn backoff_grows_to_a_fraction_of_a_second_and_is_jittered() {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let first = backoff(1, ErrorClass::ConnectRefused, &mut rng);
    assert!(
        first >= BACKOFF.base / 2 && first <= BACKOFF.base,
        "{first:?}"
    );
    let many: Vec<Duration> = (0..50)
        .map(|_| backoff(30, ErrorClass::ConnectRefused, &mut rng))
        .collect();
    assert!(many
        .iter()
        .all(|d| *d >= BACKOFF.cap / 2 && *d <= BACKOFF.cap));
    let distinct: std::collections::BTreeSet<_> = many.iter().collect();
    assert!(distinct.len() > 10, "jittered: {distinct:?}");
    // A standby being promoted is checked often.
    assert!(backoff(30, ErrorClass::ReadOnly, &mut rng) <= BACKOFF_ANSWERING.cap);
}

#[test]
fn a_check_abandons_the_connections_to_its_server_only() {
    use crate::db::identity::tests::id;
    let mut state = EndpointState::new(Instant::now());
    let old = Arc::new(id(5001, 1));
    let to_old = state.token_for(&old).token;
    // A probe that read less is no other server: it shares the token.
    let partial = Arc::new(Identity {
        timeline: None,
        postmaster_start: None,
        ..id(5001, 1)
    });
    let to_old_too = state.token_for(&partial).token;
    // The endpoint (a proxy) now leads to another server.
    let new = Arc::new(Identity {
        postmaster_start: Some("t1".into()),
        ..id(5002, 2)
    });
    let to_new = state.token_for(&new).token;
    // A check made for an old connection finds no answer.
    state.abandon(&to_old);
    assert!(to_old.is_cancelled() && to_old_too.is_cancelled());
    assert!(
        !to_new.is_cancelled(),
        "the new server's connections keep writing"
    );
    assert!(!state.token_for(&new).token.is_cancelled());
    // Once the new server's own check finds no answer, later connections start afresh.
    state.abandon(&to_new);
    assert!(to_new.is_cancelled());
    assert!(!state.token_for(&new).token.is_cancelled());
}

#[test]
fn an_unanswered_check_abandons_the_current_server_too() {
    use crate::db::identity::tests::id;
    let mut state = EndpointState::new(Instant::now());
    let to_old = state.token_for(&Arc::new(id(5001, 1))).token;
    let new = Arc::new(Identity {
        postmaster_start: Some("t1".into()),
        ..id(5002, 2)
    });
    let to_new = state.token_for(&new).token;
    // A check for an old connection: not even a new connection is answered.
    let current = state.silent.token.clone();
    state.declare_silent(&to_old, &current);
    assert!(to_old.is_cancelled());
    assert!(
        to_new.is_cancelled(),
        "the endpoint answers no one: its current server's connections are abandoned too"
    );
    assert!(state.declared_silent);
    assert!(
        !state.token_for(&new).token.is_cancelled(),
        "later connections start afresh"
    );
    // A server reached while a check was under way answered: its connections are spared.
    let to_old = state.token_for(&Arc::new(id(5001, 1))).token;
    let current = state.silent.token.clone();
    let to_newer = state
        .token_for(&Arc::new(Identity {
            postmaster_start: Some("t2".into()),
            ..id(5003, 3)
        }))
        .token;
    state.declare_silent(&to_old, &current);
    assert!(to_old.is_cancelled() && !to_newer.is_cancelled());
}

/// An endpoint whose connections reached `servers` in turn (their watches), and a check
/// begun a second later: when, and the endpoint's watch then. A second passes after it.
async fn a_check_begun_after(
    servers: &[&Arc<Identity>],
) -> (EndpointState, Vec<Watch>, Instant, Watch) {
    let mut state = EndpointState::new(Instant::now());
    let watches = servers.iter().map(|s| state.token_for(s)).collect();
    tokio::time::advance(Duration::from_secs(1)).await;
    let (since, current) = (Instant::now(), state.silent.clone());
    tokio::time::advance(Duration::from_secs(1)).await;
    (state, watches, since, current)
}

#[tokio::test(start_paused = true)]
async fn a_server_reached_during_a_check_is_not_declared_silent() {
    use crate::db::identity::tests::id;
    let old = Arc::new(id(5001, 1));
    let new = Arc::new(Identity {
        postmaster_start: Some("t1".into()),
        ..id(5002, 2)
    });
    // The server the check was for answered a fresh connection meanwhile: slow.
    let (mut state, watches, since, current) = a_check_begun_after(&[&old]).await;
    state.token_for(&old);
    let slow = state.unanswered_check(&watches[0], since, &current);
    assert_eq!(slow, Unanswered::Slow);
    assert!(!watches[0].token.is_cancelled() && !state.declared_silent);
    assert!(state.answered_at.is_some(), "no new check for a while");
    // Nothing reached it: silent.
    tokio::time::advance(Duration::from_secs(1)).await;
    let (since, current) = (Instant::now(), state.silent.clone());
    let silent = state.unanswered_check(&watches[0], since, &current);
    assert_eq!(silent, Unanswered::Silent);
    assert!(watches[0].token.is_cancelled() && state.declared_silent);

    // The endpoint (a proxy) led to another server before the check, which a fresh
    // connection reached: the old server's connections are left, the new one's kept.
    // Also when it leads back to the old server (A, B, then A again).
    for servers in [vec![&old, &new], vec![&old, &new, &old]] {
        let (mut state, watches, since, current) = a_check_begun_after(&servers).await;
        let (to_old, to_now) = (&watches[0], &watches[watches.len() - 1]);
        state.token_for(servers[servers.len() - 1]);
        let left = state.unanswered_check(to_old, since, &current);
        assert_eq!(left, Unanswered::LeftBehind);
        assert!(to_old.token.is_cancelled() && !to_now.token.is_cancelled());
        assert!(!state.declared_silent && state.failures == 0 && state.answered_at.is_some());
    }

    // An endpoint's state let go (idle) and made again: connections made before are
    // older than any of its tokens.
    let (_, before, _, _) = a_check_begun_after(&[&old]).await;
    let (mut state, _, since, current) = a_check_begun_after(&[&old]).await;
    state.token_for(&old);
    let left = state.unanswered_check(&before[0], since, &current);
    assert_eq!(left, Unanswered::LeftBehind);
    assert!(before[0].token.is_cancelled());

    // A server first reached after the check began is no answer from the one it was for.
    let (mut state, watches, since, current) = a_check_begun_after(&[&old]).await;
    let to_new = state.token_for(&new);
    let silent = state.unanswered_check(&watches[0], since, &current);
    assert_eq!(silent, Unanswered::Silent);
    assert!(watches[0].token.is_cancelled() && !to_new.token.is_cancelled());
    // Abandoned, the endpoint's next server is unknown until reached.
    let (mut state, watches, since, current) = a_check_begun_after(&[&old]).await;
    state.token_for(&old);
    state.abandon(&watches[0].token);
    let silent = state.unanswered_check(&watches[0], since, &current);
    assert_eq!(silent, Unanswered::Silent);
}

/// Only a name the DSN does not pin is looked up again while a check waits.
#[tokio::test]
async fn a_name_is_looked_up_again_unless_an_address_stands_for_it() {
    for (dsn, looked_up) in [
        ("host=localhost port=5", true),
        ("host=localhost hostaddr=127.0.0.1 port=5", false),
        ("host=127.0.0.1 port=5", false),
    ] {
        let c = connector(dsn);
        let (_, config) = c.resolve(&c.entries[0]).await.expect("resolve").remove(0);
        assert_eq!(c.name_of(&config).is_some(), looked_up, "{dsn}");
    }
}

#[tokio::test]
async fn a_connection_whose_endpoint_was_let_go_is_still_checked() {
    use crate::db::identity::tests::id;
    let c = connector("host=127.0.0.1 port=1 user=u");
    let (endpoint, config) = c.resolve(&c.entries[0]).await.expect("resolve").remove(0);
    let mut state = EndpointState::new(Instant::now());
    let silence = Silence {
        watch: state.token_for(&Arc::new(id(1, 1))),
        endpoint: endpoint.clone(),
        config: Arc::new(config),
        connector: c.clone(),
        server: Arc::new(id(1, 1)),
    };
    assert!(c.endpoints.lock().is_empty(), "its state was let go");
    silence.suspect();
    // The check runs: refused at once on a closed port, no server answered.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !silence.is_silent() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(silence.is_silent());
    let state = c.endpoints.lock().get(&endpoint).map(|s| s.answered_at);
    assert_eq!(state, Some(None), "known again, and no answer recorded");
}

#[tokio::test(start_paused = true)]
async fn a_slow_attempt_does_not_hold_back_the_next() {
    let now = Instant::now();
    let mut s = EndpointState::new(now);
    assert!(s.eligible(now, 4));
    // A fast failure backs off.
    s.failed(ErrorClass::ConnectRefused, "x", now);
    assert!(!s.eligible(now, 4), "backing off");
    assert!(s.eligible(now + BACKOFF.cap, 4));
    // A slow one (the whole timeout) is followed at once.
    let mut slow = EndpointState::new(now);
    tokio::time::advance(Duration::from_secs(2)).await;
    slow.failed(ErrorClass::ConnectTimeout, "x", now);
    let later = Instant::now();
    assert!(slow.eligible(later, 4));
    // While one attempt is pending on a failing endpoint, another starts every STAGGER,
    // up to the bound.
    slow.pending = 1;
    slow.last_start = Some(later);
    assert!(!slow.eligible(later, 4), "spaced");
    assert!(slow.eligible(later + STAGGER, 4));
    assert!(!slow.may_join(later, 4));
    assert!(slow.may_join(later + STAGGER, 4));
    slow.pending = 4;
    assert!(!slow.may_join(later + STAGGER, 4), "bounded");
    slow.pending = 1;
    slow.declared_silent = true;
    assert!(
        slow.may_join(later + STAGGER, 4) && slow.eligible(later + STAGGER, 4),
        "a silent address (maybe a proxy) still races"
    );
    slow.pending = SILENT_MAX_PENDING;
    assert!(
        !slow.may_join(later + STAGGER, 32) && !slow.eligible(later + STAGGER, 32),
        "but a silent server gets only a few at once"
    );
    // Backing off after a fast failure: no joining either.
    s.pending = 0;
    assert!(!s.may_join(now, 4));
}

#[tokio::test(start_paused = true)]
async fn a_growing_endpoint_map_forgets_what_is_healthy_or_no_longer_tried() {
    let c = connector("host=127.0.0.1 port=1");
    let at = |n: usize| {
        Endpoint::Tcp(SocketAddr::from((
            [10, 0, (n / 250) as u8, (n % 250) as u8],
            5432,
        )))
    };
    let long_ago = Instant::now();
    tokio::time::advance(FORGOTTEN_AFTER + Duration::from_secs(1)).await;
    let now = Instant::now();
    {
        let mut map = c.endpoints.lock();
        for n in 0..MAX_ENDPOINTS {
            let mut state = EndpointState::new(now);
            // A third healthy, a third failing and tried just now, a third failing and
            // last tried long ago (an old pod's address); each keeps a long server message.
            if n % 3 > 0 {
                state.failed(ErrorClass::ConnectRefused, &"x".repeat(10_000), now);
                state.last_start = Some(if n % 3 == 1 { now } else { long_ago });
            }
            map.insert(at(n), state);
        }
        assert!(map
            .values()
            .all(|s| s.last_error.as_ref().is_none_or(|(_, m)| m.len() <= 500)));
    }
    let claim = c.claim(&at(MAX_ENDPOINTS), Some(&mut None));
    assert!(claim.is_some());
    let map = c.endpoints.lock();
    let failing_recently = (0..MAX_ENDPOINTS).filter(|n| n % 3 == 1).count();
    assert_eq!(map.len(), failing_recently + 1, "the rest forgotten");
    assert!(map.contains_key(&at(1)) && !map.contains_key(&at(0)) && !map.contains_key(&at(2)));
    drop(map);
    // All failing, all tried recently: the one tried longest ago makes room.
    {
        let mut map = c.endpoints.lock();
        map.clear();
        for n in 0..MAX_ENDPOINTS {
            let mut state = EndpointState::new(now);
            state.failed(ErrorClass::ConnectRefused, "refused", now);
            state.last_start = Some(now + Duration::from_millis(n as u64 + 1));
            map.insert(at(n), state);
        }
    }
    assert!(c.claim(&at(MAX_ENDPOINTS), Some(&mut None)).is_some());
    let map = c.endpoints.lock();
    assert_eq!(map.len(), MAX_ENDPOINTS, "a hard bound");
    assert!(!map.contains_key(&at(0)) && map.contains_key(&at(1)));
}

#[tokio::test]
async fn a_connection_to_another_server_behind_the_same_address_watches_its_own_token() {
    let mut state = EndpointState::new(Instant::now());
    let server = |started: &str| {
        Arc::new(Identity {
            postmaster_start: Some(started.into()),
            ..Identity::default()
        })
    };
    let (old, new) = (server("08:00"), server("09:00"));
    let first = state.token_for(&old).token;
    let second = state.token_for(&old).token;
    // A proxy moved its backend: the new server's connections are not the old ones'.
    let moved = state.token_for(&new).token;
    first.cancel();
    assert!(
        second.is_cancelled(),
        "the old server's connections go together"
    );
    assert!(
        !moved.is_cancelled(),
        "the new server's connection is spared"
    );
    assert!(!state.token_for(&new).token.is_cancelled());
}

#[test]
fn a_name_that_does_not_resolve_is_the_wrong_target_only_when_no_host_does() {
    use super::manager::unresolved_is_wrong_target as wrong;
    let gone = "could not resolve db2: failed to lookup address information: Name or service \
                not known";
    assert!(wrong(gone, false));
    // libpq goes on to the next host; a lookup that failed for now may heal.
    assert!(!wrong(gone, true));
    let for_now = "could not resolve db1: failed to lookup address information: Temporary \
                   failure in name resolution";
    assert!(!wrong(for_now, false));
    assert!(!wrong("could not resolve db1: no answer within 2s", false));
}

#[tokio::test(start_paused = true)]
async fn a_moved_name_s_old_address_does_not_cut_the_wait_for_the_new_one() {
    let c = connector("host=127.0.0.1 port=1 user=u");
    let current = c.resolve(&c.entries[0]).await.expect("resolve");
    let now = Instant::now();
    let failing = |retry_at| EndpointState {
        failures: 3,
        retry_at,
        ..EndpointState::new(now)
    };
    let old = Endpoint::Tcp("127.0.0.2:1".parse().expect("addr"));
    c.endpoints.lock().insert(old, failing(now));
    let later = now + Duration::from_millis(80);
    c.endpoints
        .lock()
        .insert(current[0].0.clone(), failing(later));
    tokio::time::advance(Duration::from_millis(10)).await;
    assert_eq!(c.next_retry(&current), Some(later));
}

#[tokio::test]
async fn connects_asking_for_one_name_at_once_share_one_lookup() {
    let c = connector("host=localhost port=5433");
    // Every turn taken, so the lookup waits for one while all twenty ask: an answer from
    // /etc/hosts can be in before the second asks, which then rightly asks again.
    let turns = c.lookups.turns.clone();
    let held = turns
        .acquire_many_owned(super::resolve::MAX_LOOKUPS as u32)
        .await;
    let asks = futures_util::future::join_all((0..20).map(|_| c.lookup("localhost")));
    tokio::pin!(asks);
    assert!(futures_util::FutureExt::now_or_never(asks.as_mut()).is_none());
    drop(held);
    let answers = asks.await;
    assert!(
        answers
            .iter()
            .all(|a| a.as_ref().is_ok_and(|a| !a.is_empty())),
        "{answers:?}"
    );
    assert_eq!(c.lookups.started.load(Ordering::Relaxed), 1);
    // Answered, it is not reused: the next connect asks again (a DNS switch is followed).
    c.lookup("localhost").await.expect("resolve localhost");
    assert_eq!(c.lookups.started.load(Ordering::Relaxed), 2);
}

#[tokio::test(start_paused = true)]
async fn a_lookup_its_waiters_gave_up_on_is_not_joined_once_it_is_stale() {
    let c = connector("host=localhost port=5433 connect_timeout=2");
    // Its only waiter gone before it was answered: never polled again, never answered.
    drop(futures_util::FutureExt::now_or_never(c.lookup("localhost")));
    assert_eq!(c.lookups.started.load(Ordering::Relaxed), 1);
    tokio::time::advance(Duration::from_secs(3)).await;
    c.lookup("localhost").await.expect("a fresh lookup");
    assert_eq!(c.lookups.started.load(Ordering::Relaxed), 2);
}
