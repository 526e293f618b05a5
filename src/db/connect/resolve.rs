//! Host names to endpoints, looked up again for every connection (a DNS switch-over is
//! followed), each with its own single-address config.

use super::*;

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
            None => {
                self.lookup(name.as_deref().unwrap_or_default(), entry.port)
                    .await?
            }
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

    /// The addresses `name` resolves to now, each once.
    pub(super) async fn lookup(&self, name: &str, port: u16) -> Result<Vec<IpAddr>, String> {
        // getaddrinfo reads /etc/hosts and asks DNS again on every call. Waiting for a
        // turn counts against the timeout; the turn is held until getaddrinfo returns.
        let (lookups, target) = (self.lookups.clone(), (name.to_string(), port));
        let lookup = async move {
            let turn = lookups.acquire_owned().await;
            let found = tokio::task::spawn_blocking(move || {
                let _turn = turn;
                std::net::ToSocketAddrs::to_socket_addrs(&target)
            });
            found
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        };
        match tokio::time::timeout(self.timeout, lookup).await {
            Ok(Ok(found)) => Ok(found.fold(Vec::new(), |mut addrs, a| {
                if !addrs.contains(&a.ip()) {
                    addrs.push(a.ip());
                }
                addrs
            })),
            Ok(Err(err)) => Err(format!("could not resolve {name}: {err}")),
            Err(_) => Err(format!(
                "could not resolve {name}: no answer within {}",
                humantime::format_duration(self.timeout)
            )),
        }
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
