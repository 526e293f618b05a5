//! A server that stopped answering: the check that decides it, and how connections learn it.

use super::*;

/// How a connection learns that its server stopped answering.
#[derive(Clone)]
pub struct Silence {
    pub(super) watch: Watch,
    pub(crate) endpoint: Endpoint,
    /// The config this connection was made with (password included), for the check.
    pub(super) config: Arc<Config>,
    pub(super) connector: Arc<Connector>,
    /// The server this connection reached, as probed when it was made.
    pub(crate) server: Arc<Identity>,
}

impl Silence {
    pub fn is_silent(&self) -> bool {
        self.watch.token.is_cancelled()
    }

    /// Cancels what `client` runs, `writes` times one after the other, once `driver` (its socket)
    /// is closed. A backend a write was given up on may wait on while its server answers (a commit
    /// held for a synchronous standby: statement_timeout does not bound it), holding a connection
    /// slot; freed, it runs the next write already in its buffer (the close reaches it only after)
    /// and waits again: one cancel per write sent frees it, and then it finds its client gone.
    pub(crate) fn cancel_after_close(&self, client: &Client, driver: AbortHandle, writes: usize) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (token, tls) = (client.cancel_token(), &self.connector.tls);
        let cancels: Vec<_> = (0..writes)
            .map(|_| cancel::cancel(token.clone(), &self.endpoint, &self.config, tls))
            .collect();
        let sent = async move {
            while !driver.is_finished() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            for cancel in cancels {
                let _ = cancel.await;
            }
        };
        let tasks = &self.connector.cancels;
        tasks.spawn_on(tokio::time::timeout(STAGGER * 10, sent), &runtime);
    }

    /// Cancelled when the server is declared silent, or by its holder.
    pub fn child(&self) -> CancellationToken {
        self.watch.token.child_token()
    }

    /// Writes have waited [`SUSPECT_AFTER`] unanswered: check the server with a fresh
    /// connection (one at a time, none within that time after it answered). Unanswered within
    /// the connect timeout (or refused, unreachable, closed at once), it is declared silent
    /// unless a fresh connection reached the endpoint meanwhile; answered by another server,
    /// or the host name leading elsewhere meanwhile, the connections before are abandoned.
    pub fn suspect(&self) {
        let now = Instant::now();
        let current = {
            let mut map = self.connector.endpoints.lock();
            // An endpoint let go (one of many, idle a while) is known again.
            let state = map
                .entry(self.endpoint.clone())
                .or_insert_with(|| EndpointState::new(now));
            let recently = state
                .answered_at
                .is_some_and(|t| now.saturating_duration_since(t) < SUSPECT_AFTER);
            if state.check_running || recently || self.watch.token.is_cancelled() {
                return;
            }
            state.check_running = true;
            state.silent.clone()
        };
        tokio::spawn(self.clone().check(current, now));
    }

    /// Ends once the connection's host name no longer leads to its address (a managed service's DNS
    /// failover), looked up every [`SUSPECT_AFTER`] while the check waits: a fresh client would go
    /// to the new address at once. Never for an address or a name pinned by `hostaddr`.
    async fn name_moved(&self) -> String {
        let (Endpoint::Tcp(addr), Some((name, _))) =
            (&self.endpoint, self.connector.name_of(&self.config))
        else {
            return std::future::pending().await;
        };
        loop {
            // Only while the check's own connection is unanswered: a live server answers it
            // at once, and a DNS service may answer with a part of the name's addresses.
            tokio::time::sleep(SUSPECT_AFTER).await;
            let found = self.connector.lookup(&name).await;
            if found.is_ok_and(|f| !f.is_empty() && !f.contains(&addr.ip())) {
                return name;
            }
        }
    }

    /// `current`: the token of the server the endpoint led to when the check began.
    async fn check(self, current: Watch, started: Instant) {
        let connector = &self.connector;
        connector.metrics.connection_attempts.inc();
        let mut config = (*self.config).clone();
        // Any server that answers at all is alive; read-write is not the question here.
        config.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::Any);
        let probe = tokio::time::timeout(connector.timeout, async {
            let (client, connection) = config.connect(connector.tls.clone()).await?;
            // No answer: the socket closes now rather than wait on the silent server.
            let driver = AbortOnDrop::new(tokio::spawn(connection).abort_handle());
            client.simple_query("").await?;
            Ok::<_, tokio_postgres::Error>((client, driver))
        });
        let answered = tokio::select! {
            answered = probe => answered,
            name = self.name_moved() => {
                if let Some(state) = connector.endpoints.lock().get_mut(&self.endpoint) {
                    tracing::warn!(
                        server = %self.endpoint,
                        name,
                        "the name now leads elsewhere (a DNS failover); abandoning the \
                         unanswered connections to its old address (no_response)"
                    );
                    state.check_running = false;
                    state.declare_silent(&self.watch.token, &current.token);
                }
                return;
            }
        };
        // A probe slower than the timeout says nothing either way. `unanswered`: how no
        // server answered, if none did.
        let (unanswered, server) = match answered {
            Ok(Ok((client, driver))) => {
                let probe = crate::db::identity::probe(&client);
                // A probe failed by a pooler with no server behind it (08P01) still answered.
                let server = tokio::time::timeout(connector.timeout, probe).await.ok();
                let server = server.map(|probed| probed.unwrap_or_default());
                // Dropping the client then ends the session politely (Terminate).
                driver.detach();
                (None, server)
            }
            // Only the server speaking answers: a refusal, an unreachable host or a connection
            // closed at once (a proxy with no backend) says nothing of the one the unanswered
            // connections reach, however fast it comes.
            Ok(Err(err)) => {
                let class = crate::error::classify(&err);
                (class.is_unreached().then_some(class), None)
            }
            Err(_) => (Some(ErrorClass::ConnectTimeout), None),
        };
        let now = Instant::now();
        let mut map = connector.endpoints.lock();
        let Some(state) = map.get_mut(&self.endpoint) else {
            return;
        };
        state.check_running = false;
        match (unanswered, server) {
            (None, Some(server)) if server.is_another_process(&self.server) => {
                tracing::warn!(
                    server = %self.endpoint,
                    was = %self.server.short(),
                    now = %server.short(),
                    "a new connection reaches another server; abandoning the unanswered \
                     connections to the one before (no_response)"
                );
                state.answered_at = Some(now);
                state.abandon(&self.watch.token);
            }
            // It answered (even with an error of its own): it is slow, not silent.
            (None, _) => state.answered_at = Some(now),
            (Some(class), _) => {
                match state.unanswered_check(&self.watch, started, &current) {
                    Unanswered::Silent => {}
                    Unanswered::Slow => return,
                    Unanswered::LeftBehind => {
                        tracing::warn!(
                            server = %self.endpoint,
                            was = %self.server.short(),
                            "a new connection answers; abandoning older unanswered connections \
                             (no_response)"
                        );
                        return;
                    }
                }
                connector.metrics.connection_errors.inc(class);
                let how = match class {
                    ErrorClass::ConnectTimeout => format!(
                        "not answered within {}",
                        humantime::format_duration(connector.timeout)
                    ),
                    class => format!("failed at once ({class})"),
                };
                let message = format!(
                    "{}: writes unanswered for {SUSPECT_AFTER:?} and a new connection {how}",
                    self.endpoint
                );
                tracing::warn!(
                    server = %self.endpoint,
                    "server stopped answering; abandoning its connections (no_response)"
                );
                state.failed(class, &message, started);
            }
        }
    }
}
