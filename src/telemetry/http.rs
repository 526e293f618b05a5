//! `/metrics`, `/healthz` and a small `/` page, served until shutdown; over TLS and behind
//! basic auth when `--web.config.file` says so.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::retry::{Backoff, Throttle};
use crate::telemetry::health::Health;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::webconfig::WebConfig;
use prometheus::TEXT_FORMAT;

/// What the endpoints serve (the live `/` page, drawn by the caller and never holding a
/// password; what `/healthz` checks; `--web.config.file`), and within which limits.
pub struct Site {
    pub metrics: Arc<Metrics>,
    /// Run on a blocking thread: drawing a stale page must not hold up the load's runtime.
    pub render: Arc<dyn Fn() -> String + Send + Sync>,
    pub health: Arc<Health>,
    pub web: Option<Arc<WebConfig>>,
    pub limits: Limits,
}

type Reply = Response<Full<Bytes>>;

fn response(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    let content_type = HeaderValue::from_static(content_type);
    resp.headers_mut().insert(CONTENT_TYPE, content_type);
    resp
}

/// Basic auth if configured; `/healthz` stays open for probes (it says only whether the load runs).
async fn handle(req: Request<Incoming>, site: &Site) -> Reply {
    let path = req.uri().path();
    if let Some(web) = site.web.as_deref().filter(|_| path != "/healthz") {
        let header = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
        if !web.authorized(header).await {
            let mut resp = response(StatusCode::UNAUTHORIZED, "text/plain", "unauthorized\n");
            resp.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"pgdrill\""),
            );
            return resp;
        }
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return response(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
    }
    match path {
        "/" => {
            let render = site.render.clone();
            match tokio::task::spawn_blocking(move || render()).await {
                Ok(page) => response(StatusCode::OK, "text/html; charset=utf-8", page),
                Err(_) => response(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "no page\n"),
            }
        }
        "/metrics" => response(StatusCode::OK, TEXT_FORMAT, site.metrics.encode()),
        "/healthz" => match site.health.check() {
            Ok(()) => response(StatusCode::OK, "text/plain", "ok\n"),
            Err(why) => response(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("unhealthy: {why}\n"),
            ),
        },
        _ => response(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// Most HTTP connections served at once; Prometheus and a browser need a handful.
const MAX_CONNECTIONS: usize = 64;
/// Descriptors kept for all but HTTP and the pool: stdio, the runtime's epoll/eventfd/signal pipes,
/// the listener, verification and bootstrap connections, `--password-command` pipes, log files.
const RESERVED_FDS: u64 = 32;
/// A client has this long to send a request's headers, including the next request on a
/// kept-alive connection (hyper runs the same timer while idle), so idle connections end.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer, whatever the client does (a slow reader of the response).
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(60);
/// A connection asked to finish (age, shutdown) gets this long to do so.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Request buffers stay small: we only ever read a GET's headers (hyper's minimum is 8 KiB).
const MAX_BUF_SIZE: usize = 16 * 1024;
/// Accept errors (EMFILE, ENFILE, ENOBUFS) back off, so a full descriptor table is not a busy loop.
const ACCEPT_BACKOFF: Backoff = Backoff::new(Duration::from_millis(5), Duration::from_secs(1));
/// Repeated warnings (accept errors, refused connections) are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// What the HTTP side may use, so that its clients can never take the file descriptors or
/// the memory the database side needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

impl Limits {
    /// [`MAX_CONNECTIONS`], fewer where `RLIMIT_NOFILE` leaves too little room next to a
    /// pool of `pool_size`.
    pub fn for_pool(pool_size: u32) -> Limits {
        // The soft `RLIMIT_NOFILE`, if there is one.
        let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        let max_connections = connection_cap(nofile, pool_size);
        if max_connections < MAX_CONNECTIONS {
            tracing::info!(
                nofile = %nofile.map_or_else(|| "-".to_string(), |n| n.to_string()),
                pool_size,
                max_connections,
                "HTTP connections capped to leave file descriptors for the database pool"
            );
        }
        Limits {
            max_connections,
            header_read_timeout: HEADER_READ_TIMEOUT,
        }
    }
}

/// Connections beyond the pool's size can be open for a moment (a lane connecting while the
/// pool fills), hence twice the pool; at least one connection so `/metrics` still answers.
fn connection_cap(nofile: Option<u64>, pool_size: u32) -> usize {
    nofile.map_or(MAX_CONNECTIONS, |nofile| {
        let left = nofile.saturating_sub(RESERVED_FDS + 2 * u64::from(pool_size));
        (left as usize).clamp(1, MAX_CONNECTIONS)
    })
}

/// A served connection's place: whether it is handling a request, and how to make it leave at once.
#[derive(Default)]
struct Place {
    busy: AtomicBool,
    leave: CancellationToken,
}

/// With every place taken, the oldest connection not handling a request leaves for a new
/// one, so idle clients (a flood of them, reopened as they are closed) cannot shut out a
/// scrape or a probe; `None` when every connection is handling a request.
fn make_room(places: &mut VecDeque<Weak<Place>>) -> Option<()> {
    places.retain(|p| p.strong_count() > 0);
    let mut taken = places.iter().filter_map(Weak::upgrade);
    let idle = taken.find(|p| !p.busy.load(Ordering::Relaxed))?;
    idle.leave.cancel();
    Some(())
}

/// Serves on a listener bound before load starts (so a bad `--listen` fails fast) until `stop`.
pub async fn serve(listener: TcpListener, site: Arc<Site>, stop: CancellationToken) {
    let limits = site.limits;
    let tls = site
        .web
        .as_ref()
        .and_then(|w| w.tls.clone())
        .map(tokio_rustls::TlsAcceptor::from);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut places: VecDeque<Weak<Place>> = VecDeque::new();
    let mut failures = 0;
    let (mut accept_errors, mut refusals) = (Throttle::new(LOG_EVERY), Throttle::new(LOG_EVERY));
    loop {
        let stream = match stop.run_until_cancelled(listener.accept()).await {
            None => return,
            Some(Ok((stream, _))) => {
                failures = 0;
                stream
            }
            Some(Err(err)) => {
                failures += 1;
                let backoff = ACCEPT_BACKOFF.delay(failures);
                // EMFILE and friends leave the connection queued: retrying at once spins.
                if let Some(repeats) = accept_errors.hit(Instant::now()) {
                    tracing::warn!(%err, repeats, retry_in = %humantime::format_duration(backoff), "accepting an HTTP connection failed");
                }
                let Some(()) = stop.run_until_cancelled(tokio::time::sleep(backoff)).await else {
                    return;
                };
                continue;
            }
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                let room = make_room(&mut places);
                let freed = tokio::time::timeout(CLOSE_GRACE, permits.clone().acquire_owned());
                if let Some(repeats) = refusals.hit(Instant::now()) {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        repeats,
                        "too many HTTP connections: the oldest idle one is closed for a new \
                         one, or the new one when every connection is serving a request"
                    );
                }
                // No idle one to close: the new connection is closed at once.
                let Some(()) = room else { continue };
                freed.await.ok().and_then(Result::ok)
            }
        };
        // Without a permit, closed at once: a queue of waiting connections would hold descriptors.
        let Some(permit) = permit else { continue };
        let place = Arc::new(Place::default());
        places.push_back(Arc::downgrade(&place));
        if places.len() > 2 * limits.max_connections {
            places.retain(|p| p.strong_count() > 0);
        }
        let (site, stop, tls) = (site.clone(), stop.clone(), tls.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let leave = place.leave.clone();
            let serve = async move {
                let Some(acceptor) = tls else {
                    return serve_connection(stream, site, stop, place).await;
                };
                // The handshake gets as long as a request's headers would.
                match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
                    .await
                {
                    Ok(Ok(tls_stream)) => serve_connection(tls_stream, site, stop, place).await,
                    Ok(Err(err)) => tracing::debug!(%err, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            };
            // Made to leave (see `make_room`): dropped, which closes it.
            tokio::select! {
                () = serve => {}
                () = leave.cancelled() => {}
            }
        });
    }
}

async fn serve_connection<S>(stream: S, site: Arc<Site>, stop: CancellationToken, place: Arc<Place>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header_read_timeout = site.limits.header_read_timeout;
    let service = service_fn(move |req| {
        let (site, place) = (site.clone(), place.clone());
        async move {
            place.busy.store(true, Ordering::Relaxed);
            let response = handle(req, &site).await;
            place.busy.store(false, Ordering::Relaxed);
            Ok::<_, Infallible>(response)
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(MAX_BUF_SIZE)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(err) = res {
                tracing::debug!(%err, "HTTP connection ended with an error");
            }
            return;
        }
        _ = tokio::time::sleep(MAX_CONNECTION_AGE) => {}
        _ = stop.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::webconfig::WebConfig;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    #[test]
    fn the_cap_leaves_descriptors_for_the_pool() {
        assert_eq!(connection_cap(None, 32), MAX_CONNECTIONS);
        assert_eq!(connection_cap(Some(1024), 32), MAX_CONNECTIONS);
        // ulimit -n 128 with a pool of 32: 128 - 32 - 64 = 32.
        assert_eq!(connection_cap(Some(128), 32), 32);
        assert_eq!(connection_cap(Some(64), 32), 1);
    }

    /// Whether the server closed `stream` within `limit` (EOF or reset).
    async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(limit, stream.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    /// A server on a free loopback port with `web` and `limits`, load running.
    async fn server(
        web: Option<WebConfig>,
        limits: Limits,
    ) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let health = Arc::new(Health::default());
        health.load_running(true);
        let site = Arc::new(Site {
            metrics: Metrics::new(&[]),
            render: Arc::new(String::new),
            health,
            web: web.map(Arc::new),
            limits,
        });
        let stop = CancellationToken::new();
        (
            addr,
            stop.clone(),
            tokio::spawn(serve(listener, site, stop)),
        )
    }

    /// `GET /healthz` on a connection of its own: the whole answer, within 2 s.
    async fn healthz(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").await.unwrap();
        let mut body = String::new();
        let read = tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut body));
        read.await.unwrap().unwrap();
        body
    }

    #[tokio::test]
    async fn a_new_connection_takes_the_oldest_idle_ones_place_and_idle_ones_are_closed() {
        let limits = Limits {
            max_connections: 2,
            header_read_timeout: Duration::from_millis(300),
        };
        let (addr, stop, server) = server(None, limits).await;

        let mut idle = Vec::new();
        for _ in 0..2 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // Let the server take both before the third arrives: it is served, in the place of
        // the oldest idle one.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let body = healthz(addr).await;
        assert!(body.starts_with("HTTP/1.0 200"), "{body}");
        assert!(closed_within(&mut idle[0], Duration::from_millis(100)).await);
        // A half-sent request is an idle connection too.
        idle[1]
            .write_all(b"GET /metrics HTTP/1.1\r\n")
            .await
            .unwrap();
        for stream in &mut idle {
            assert!(closed_within(stream, Duration::from_secs(2)).await);
        }

        let body = healthz(addr).await;
        assert!(
            body.starts_with("HTTP/1.0 200") && body.ends_with("ok\n"),
            "{body}"
        );

        // A kept-alive connection that goes quiet after a response is closed as well.
        let mut kept = TcpStream::connect(addr).await.unwrap();
        kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut seen = Vec::new();
        while !seen.ends_with(b"ok\n") {
            let mut buf = [0u8; 256];
            let n = tokio::time::timeout(Duration::from_secs(2), kept.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed before the response");
            seen.extend_from_slice(&buf[..n]);
        }
        assert!(closed_within(&mut kept, Duration::from_secs(2)).await);

        stop.cancel();
        server.await.unwrap();
    }

    /// Clients sending wrong passwords wait for bcrypt as serving connections: only a few
    /// may, so that `/healthz` (and a scrape with cached credentials) still gets a place.
    #[tokio::test]
    async fn a_flood_of_wrong_passwords_leaves_room_for_a_probe() {
        let dir = tempfile::tempdir().unwrap();
        let web = dir.path().join("web.yml");
        let hash = bcrypt::hash("s3cret", 11).unwrap();
        std::fs::write(&web, format!("basic_auth_users:\n  prom: '{hash}'\n")).unwrap();
        let limits = Limits {
            max_connections: 8,
            header_read_timeout: Duration::from_secs(5),
        };
        let (addr, stop, server) = server(Some(WebConfig::load(&web).unwrap()), limits).await;
        let mut wrong = Vec::new();
        for n in 0..8 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let request = format!(
                "GET /metrics HTTP/1.0\r\nAuthorization: Basic {}\r\n\r\n",
                base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    format!("prom:wrong-{n}")
                )
            );
            s.write_all(request.as_bytes()).await.unwrap();
            wrong.push(s);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let body = healthz(addr).await;
        assert!(
            body.starts_with("HTTP/1.0 "),
            "the probe was shut out: {body:?}"
        );
        for mut s in wrong {
            let mut answer = String::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(30), s.read_to_string(&mut answer)).await;
            assert!(answer.starts_with("HTTP/1.0 401"), "{answer:?}");
        }
        stop.cancel();
        server.await.unwrap();
    }
}
