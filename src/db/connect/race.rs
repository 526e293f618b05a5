//! A connect's race of attempts, the claims that count them per endpoint, and the spare
//! connections left by attempts that outlived their race.

use super::*;

impl Connector {
    /// Attempts on `candidates`, from `first` (claimed): while they are pending, another starts
    /// every [`STAGGER`] (from [`SUSPECT_AFTER`] on, at once if `first` is failing) on the next
    /// candidate that may take one, cycling (behind a proxy the same address again), for one
    /// connect timeout. The first to connect wins.
    pub(super) async fn race(
        self: &Arc<Self>,
        candidates: &[(Endpoint, Config)],
        first: usize,
        claim: Claim,
        manager: &Manager,
    ) -> Result<Conn, ConnectError> {
        // Once a server has answered, more attempts would only wait on its setup (a lock on
        // the table, a slow link's table check), each holding a connection slot: none joins,
        // and while the table is being checked those pending go as they answer (`Ok(None)`).
        let answered = Arc::new(AtomicBool::new(false));
        // Each attempt owns what it needs, so that it can outlive the race (see below).
        let one = |i: usize, mut claim: Claim| {
            let (endpoint, config) = candidates[i].clone();
            let (this, manager, answered) = (self.clone(), manager.clone(), answered.clone());
            async move {
                let began = claim.started;
                let attempt = this.attempt(&endpoint, &config, &manager, &answered).await;
                let attempt = attempt.inspect_err(|err| claim.failed(err.class, &err.message));
                let result = attempt.map(|made| {
                    made.map(|(client, insert, driver, server)| {
                        let server = Arc::new(server);
                        Conn {
                            client,
                            insert,
                            broken: false,
                            retired: false,
                            created: Instant::now(),
                            silence: Silence {
                                watch: claim.succeeded(&server),
                                endpoint,
                                config: Arc::new(this.with_option(&config)),
                                connector: this.clone(),
                                server,
                            },
                            driver,
                            gave_up: 0,
                            generation: manager.identity.generation(),
                        }
                    })
                });
                (i, began, result)
            }
        };
        let started = Instant::now();
        let hurry =
            (self.endpoints.lock().get(&candidates[first].0)).is_some_and(|s| s.failures > 0);
        let mut newest = first;
        let mut live = vec![(first, claim.started)];
        let mut failed = None;
        let mut pending = futures_util::stream::FuturesUnordered::new();
        pending.push(one(first, claim));
        loop {
            let mut spare = std::pin::pin!(self.spare_added.notified());
            spare.as_mut().enable();
            if let Some(conn) = self.take_spare() {
                return Ok(conn);
            }
            let now = Instant::now();
            let joining = now < started + self.timeout && !answered.load(Ordering::Relaxed);
            // Jittered, not to phase-lock with other clients in a proxy's round robin.
            let stagger = STAGGER.mul_f64(rand::Rng::random_range(&mut rand::rng(), 0.5..1.5));
            let not_before = if hurry { now } else { started + SUSPECT_AFTER };
            let next_join = (now + stagger).max(not_before);
            tokio::select! {
                Some((i, began, result)) = futures_util::StreamExt::next(&mut pending) => {
                    live.retain(|attempt| *attempt != (i, began));
                    match result {
                        Ok(Some(conn)) => {
                            // The losers go now (their sockets close with them)...
                            drop(pending);
                            self.abandoned(candidates, &live, i, manager);
                            return Ok(conn);
                        }
                        // Past the join window the first failure ends the race, so the next
                        // starts at once. The others run on: a proxy may hold them for its next
                        // server (closing them put HAProxy's first write 0.2-0.4 s behind).
                        Err(err) if live.is_empty() || Instant::now() >= started + self.timeout => {
                            self.let_finish(pending);
                            return Err(err);
                        }
                        Err(err) => failed = Some(err),
                        // Another attempt answered first: nothing to count. Once that one
                        // failed too and none is left, the race is over.
                        Ok(None) if live.is_empty() => {
                            let why = "no attempt connected";
                            let failed = failed.take();
                            return Err(failed.unwrap_or_else(|| ConnectError::new(ErrorClass::ConnectTimeout, why)));
                        }
                        Ok(None) => {}
                    }
                },
                () = &mut spare => {}
                _ = tokio::time::sleep_until(next_join), if joining => {
                    let n = candidates.len();
                    if let Some((i, claim)) = (1..=n)
                        .map(|k| (newest + k) % n)
                        .find_map(|i| self.claim(&candidates[i].0, None).map(|c| (i, c)))
                    {
                        newest = i;
                        live.push((i, claim.started));
                        pending.push(one(i, claim));
                    }
                }
            }
        }
    }

    /// ...and another endpoint with an attempt unanswered for [`STAGGER`] or more failed by
    /// timeout: not tried again before that attempt's timeout would have ended.
    fn abandoned(
        &self,
        candidates: &[(Endpoint, Config)],
        live: &[(usize, Instant)],
        won: usize,
        manager: &Manager,
    ) {
        let now = Instant::now();
        let winner = &candidates[won].0;
        for (i, began) in live {
            let endpoint = &candidates[*i].0;
            let waited = now.saturating_duration_since(*began);
            if endpoint == winner || waited < STAGGER {
                continue;
            }
            let message = format!(
                "{endpoint}: no answer within {:.3}s while {winner} answered; trying it again \
                 after the connect timeout",
                waited.as_secs_f64()
            );
            let err = manager.failed(ErrorClass::ConnectTimeout, message, None);
            if let Some(state) = self.endpoints.lock().get_mut(endpoint) {
                state.failed(err.class, &err.message, *began);
                state.retry_at = state.retry_at.max(*began + self.timeout);
            }
        }
    }

    /// Attempts that outlived their race run on; the first to connect is kept as a spare.
    fn let_finish<F>(self: &Arc<Self>, mut attempts: futures_util::stream::FuturesUnordered<F>)
    where
        F: std::future::Future<Output = (usize, Instant, Result<Option<Conn>, ConnectError>)>
            + Send
            + 'static,
    {
        if attempts.is_empty() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            while let Some((_, _, result)) = futures_util::StreamExt::next(&mut attempts).await {
                if let Ok(Some(conn)) = result {
                    let mut spares = this.spares.lock();
                    if spares.len() < MAX_SPARES && !this.closed.load(Ordering::Relaxed) {
                        spares.push(conn);
                    }
                    drop(spares);
                    this.spare_added.notify_waiters();
                    return;
                }
            }
        });
    }

    /// Claims an attempt on `endpoint`: a connect's first (saying why not into `skipped`),
    /// or without `skipped` one more beside those pending.
    pub(super) fn claim(
        self: &Arc<Self>,
        endpoint: &Endpoint,
        skipped: Option<&mut Option<ConnectError>>,
    ) -> Option<Claim> {
        let now = Instant::now();
        let mut map = self.endpoints.lock();
        if skipped.is_some() && map.len() >= MAX_ENDPOINTS && !map.contains_key(endpoint) {
            map.retain(|_, s| {
                let tried = s.last_start.map(|t| now.saturating_duration_since(t));
                s.pending > 0
                    || s.check_running
                    || (s.failures > 0 && tried.is_some_and(|t| t < FORGOTTEN_AFTER))
            });
            let idle = |s: &EndpointState| s.pending == 0 && !s.check_running;
            let oldest = (map.iter().filter(|(_, s)| idle(s)))
                .min_by_key(|(_, s)| s.last_start)
                .map(|(e, _)| e.clone());
            if let Some(oldest) = oldest.filter(|_| map.len() >= MAX_ENDPOINTS) {
                map.remove(&oldest);
            }
        }
        let state = map
            .entry(endpoint.clone())
            .or_insert_with(|| EndpointState::new(now));
        let may = match skipped {
            Some(_) => state.eligible(now, self.max_pending),
            None => state.may_join(now, self.max_pending),
        };
        if !may {
            if let Some(skipped) = skipped.filter(|s| s.is_none()) {
                let (class, message) = state
                    .last_error
                    .clone()
                    .unwrap_or((ErrorClass::ConnectRefused, "failing".to_string()));
                let failures = state.failures;
                let last = crate::error::without_endpoint(&message);
                let message = format!(
                    "{endpoint}: backing off after {failures} failed attempts; last: {last}"
                );
                *skipped = Some(ConnectError::new(class, message));
            }
            return None;
        }
        state.pending += 1;
        state.last_start = Some(now);
        Some(Claim {
            connector: self.clone(),
            endpoint: endpoint.clone(),
            started: now,
            done: false,
        })
    }

    /// A spare connection still good: not silent, not closed, made within the timeout.
    pub(super) fn take_spare(&self) -> Option<Conn> {
        let mut spares = self.spares.lock();
        std::iter::from_fn(|| spares.pop()).find(|conn| {
            !conn.silence.is_silent()
                && !conn.client.is_closed()
                && conn.created.elapsed() < self.timeout
        })
    }
}

/// An attempt on one endpoint; dropped unfinished, it frees the endpoint for the next.
pub(super) struct Claim {
    connector: Arc<Connector>,
    endpoint: Endpoint,
    started: Instant,
    done: bool,
}

impl Claim {
    /// Marks the endpoint healthy; returns the token its connection to `server` watches.
    fn succeeded(&mut self, server: &Arc<Identity>) -> Watch {
        let endpoint = self.endpoint.clone();
        self.end(|state| {
            if state.failures > 0 {
                tracing::info!(server = %endpoint, failures = state.failures, "server answers again");
            }
            state.failures = 0;
            state.last_error = None;
            state.declared_silent = false;
            state.token_for(server)
        })
    }

    fn failed(&mut self, class: ErrorClass, message: &str) {
        let started = self.started;
        self.end(|state| state.failed(class, message, started));
    }

    /// The attempt is over: `outcome` updates the endpoint's state, then waiting connects
    /// are told. (The state is there: `claim` forgets no endpoint with attempts pending.)
    fn end<T>(&mut self, outcome: impl FnOnce(&mut EndpointState) -> T) -> T {
        self.done = true;
        let mut map = self.connector.endpoints.lock();
        let state = map
            .entry(self.endpoint.clone())
            .or_insert_with(|| EndpointState::new(Instant::now()));
        state.pending = state.pending.saturating_sub(1);
        let out = outcome(state);
        drop(map);
        self.connector.changed.notify_waiters();
        out
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.done {
            self.end(|_| ());
        }
    }
}
