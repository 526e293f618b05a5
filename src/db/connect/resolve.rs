//! Host names to endpoints, looked up again for every connection (a DNS switch-over is
//! followed), each with its own single-address config.

use super::*;
use futures_util::future::{BoxFuture, FutureExt, Shared};

/// getaddrinfo calls at once, each on a blocking thread no timeout stops: with DNS
/// black-holed, reconnects would start threads faster than lookups give up (10–30 s).
pub(super) const MAX_LOOKUPS: usize = 4;

type Answer = Result<Vec<IpAddr>, String>;
/// A lookup on its way, which every connect asking for its name awaits, and when it began.
type OnTheWay = (Shared<BoxFuture<'static, Answer>>, Instant);

/// Lookups of the DSN's host names: at most [`MAX_LOOKUPS`] at once, one per name at a time.
pub(super) struct Lookups {
    pub(super) turns: Arc<tokio::sync::Semaphore>,
    on_the_way: Mutex<HashMap<String, OnTheWay>>,
    #[cfg(test)]
    pub(super) started: std::sync::atomic::AtomicUsize,
}

impl Default for Lookups {
    fn default() -> Self {
        Self {
            turns: Arc::new(tokio::sync::Semaphore::new(MAX_LOOKUPS)),
            on_the_way: Mutex::default(),
            #[cfg(test)]
            started: Default::default(),
        }
    }
}

impl Lookups {
    /// A lookup of `name` within `timeout` (waiting for a turn included; the turn is held until
    /// getaddrinfo returns). getaddrinfo reads /etc/hosts and asks DNS again on every call.
    fn start(&self, name: &str, timeout: Duration) -> BoxFuture<'static, Answer> {
        #[cfg(test)]
        self.started.fetch_add(1, Ordering::Relaxed);
        let turns = self.turns.clone();
        // The port is the endpoint's, not the lookup's.
        let (name, target) = (name.to_string(), (name.to_string(), 0));
        let lookup = async move {
            let turn = turns.acquire_owned().await;
            let found = tokio::task::spawn_blocking(move || {
                let _turn = turn;
                std::net::ToSocketAddrs::to_socket_addrs(&target)
            });
            found.await.map_err(std::io::Error::other)?
        };
        async move {
            match tokio::time::timeout(timeout, lookup).await {
                Ok(Ok(found)) => Ok(found.fold(Vec::new(), |mut addrs, a| {
                    if !addrs.contains(&a.ip()) {
                        addrs.push(a.ip());
                    }
                    addrs
                })),
                Ok(Err(err)) => Err(format!("could not resolve {name}: {err}")),
                Err(_) => Err(format!(
                    "could not resolve {name}: no answer within {}",
                    humantime::format_duration(timeout)
                )),
            }
        }
        .boxed()
    }
}

impl Connector {
    /// The endpoints of one DSN entry with a single-address config each: `host` stays
    /// the name (TLS verification and SNI), `hostaddr` is the address to connect to.
    pub(super) async fn resolve(
        &self,
        entry: &HostEntry,
    ) -> Result<Vec<(Endpoint, Config)>, String> {
        let mut base = self.base.clone();
        base.port(entry.port);
        let name = match &entry.host {
            Some(Host::Unix(dir)) => {
                // libpq ignores sslmode on a socket, where the server never offers TLS.
                base.host_path(dir)
                    .ssl_mode(tokio_postgres::config::SslMode::Disable);
                return Ok(vec![(Endpoint::Unix(dir.clone(), entry.port), base)]);
            }
            Some(Host::Tcp(name)) => Some(name.clone()),
            None => None,
        };
        let given = entry.hostaddr.or_else(|| name.as_deref()?.parse().ok());
        let mut addrs: Vec<IpAddr> = match given {
            Some(addr) => vec![addr],
            None => self.lookup(name.as_deref().unwrap_or_default()).await?,
        };
        self.balance(&mut addrs);
        let endpoints = addrs.into_iter().map(|ip| {
            let mut config = base.clone();
            config.host(name.clone().unwrap_or_else(|| ip.to_string()));
            config.hostaddr(ip);
            (Endpoint::Tcp(SocketAddr::new(ip, entry.port)), config)
        });
        Ok(endpoints.collect())
    }

    /// The addresses `name` resolves to now, each once. Connects that ask while a lookup of
    /// the same name is on its way share its answer: after an outage every lane reconnects
    /// at once, and a slow resolver would otherwise answer them [`MAX_LOOKUPS`] at a time.
    pub(super) async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        let answer = {
            let mut on_the_way = self.lookups.on_the_way.lock();
            match on_the_way.get(name) {
                // Not one already answered, nor one older than the timeout (its waiters all
                // gave up, and its answer, whenever it came, would be stale): the next connect
                // asks again, and follows a DNS switch.
                Some((answer, began))
                    if answer.peek().is_none() && began.elapsed() < self.timeout =>
                {
                    answer.clone()
                }
                _ => {
                    let answer = self.lookups.start(name, self.timeout).shared();
                    on_the_way.insert(name.to_string(), (answer.clone(), Instant::now()));
                    answer
                }
            }
        };
        answer.await
    }

    /// The name an endpoint was resolved from (none for an address, or one pinned by the
    /// DSN's `hostaddr`), to look up again.
    pub(super) fn name_of(&self, config: &Config) -> Option<(String, u16)> {
        let Some(Host::Tcp(name)) = config.get_hosts().first() else {
            return None;
        };
        let port = *config.get_ports().first()?;
        let addr = config.get_hostaddrs().first().copied();
        let same = || {
            (self.entries.iter())
                .filter(|e| e.port == port && matches!(&e.host, Some(Host::Tcp(h)) if h == name))
        };
        // The name listed twice, once with this address pinned: that is the one connected.
        let pinned = same().any(|e| e.hostaddr.is_some() && e.hostaddr == addr);
        let looked_up = same().any(|e| e.hostaddr.is_none());
        (looked_up && !pinned && name.parse::<IpAddr>().is_err()).then(|| (name.clone(), port))
    }
}
