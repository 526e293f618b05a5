//! User-space TCP proxy that injects delay and faults (the kernel's netem is not available
//! everywhere we run).
//!
//! Each direction of each connection is a delay line: every chunk read is stamped with its
//! arrival time and written at `arrival + delay`, in order, with many chunks in flight, so a
//! delay adds latency without capping throughput. Memory is bounded: at most [`MAX_IN_FLIGHT`]
//! chunks of at most [`CHUNK`] bytes per direction; when full, we stop reading and TCP flow
//! control pushes back on the sender.
//!
//! Timing: tokio's timer ticks in milliseconds, so a non-zero delay lands between `delay` and
//! `delay + ~1 ms` per direction. At zero delay the timer is bypassed entirely.
//!
//! Faults: [`Proxy::blackhole`] (hold all bytes, both ways), [`Proxy::drop_connections`],
//! [`Proxy::refuse`] (new connections are reset at once), and [`Proxy::set_upstream`] (new
//! connections go elsewhere, e.g. to a promoted standby).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

/// Largest chunk read at once. PostgreSQL protocol messages for small transactions are far
/// smaller; bulk transfers still move 16 KiB per write.
pub const CHUNK: usize = 16 * 1024;
/// Chunks held per direction before we stop reading (bounds memory to CHUNK * this).
pub const MAX_IN_FLIGHT: usize = 64;

/// How to run a proxy.
#[derive(Debug, Clone, Copy)]
pub struct ProxyOptions {
    /// Address to listen on (`127.0.0.1:0` picks a free port; see [`Proxy::local_addr`]).
    pub listen: SocketAddr,
    /// Where to forward new connections.
    pub upstream: SocketAddr,
    /// One-way delay applied in each direction: round trips grow by twice this.
    pub delay: Duration,
}

/// Counters since the proxy started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted (including refused ones).
    pub accepted: u64,
    /// Connections closed at once because [`Proxy::refuse`] was on.
    pub refused: u64,
    /// Connections whose upstream connect failed.
    pub upstream_errors: u64,
    /// Proxied connections open now.
    pub open: u64,
    /// Bytes written to upstreams.
    pub bytes_to_upstream: u64,
    /// Bytes written to clients.
    pub bytes_to_client: u64,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    upstream_errors: AtomicU64,
    open: AtomicU64,
    bytes_to_upstream: AtomicU64,
    bytes_to_client: AtomicU64,
}

struct Shared {
    upstream: Mutex<SocketAddr>,
    /// Nanoseconds; read once per chunk, so an atomic rather than a lock.
    delay_ns: AtomicU64,
    refuse: AtomicBool,
    /// A watch so that held connections can wait for the blackhole to lift.
    blackhole: watch::Sender<bool>,
    conns: Mutex<HashMap<u64, AbortHandle>>,
    next_id: AtomicU64,
    counters: Counters,
}

impl Shared {
    fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_ns.load(Ordering::Relaxed))
    }

    fn blackholed(&self) -> bool {
        *self.blackhole.borrow()
    }

    async fn wait_while_blackholed(&self) {
        if self.blackholed() {
            let mut rx = self.blackhole.subscribe();
            // Err only if the sender is gone, i.e. the proxy is shutting down.
            let _ = rx.wait_for(|on| !*on).await;
        }
    }

    fn stats(&self) -> ProxyStats {
        let c = &self.counters;
        ProxyStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            upstream_errors: c.upstream_errors.load(Ordering::Relaxed),
            open: c.open.load(Ordering::Relaxed),
            bytes_to_upstream: c.bytes_to_upstream.load(Ordering::Relaxed),
            bytes_to_client: c.bytes_to_client.load(Ordering::Relaxed),
        }
    }

    /// Abort every connection task; their sockets close (FIN) as the tasks drop.
    fn abort_all(&self) {
        // Take the map first, so the tasks' own deregistration never contends with us.
        let conns = std::mem::take(&mut *self.conns.lock().unwrap_or_else(|e| e.into_inner()));
        for handle in conns.into_values() {
            handle.abort();
        }
    }
}

/// A running proxy. Dropping it (or [`Proxy::shutdown`]) stops accepting and closes every
/// proxied connection.
pub struct Proxy {
    shared: Arc<Shared>,
    local: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("local", &self.local)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Bind and start accepting (on the current tokio runtime).
    pub async fn start(opts: ProxyOptions) -> io::Result<Proxy> {
        let listener = TcpListener::bind(opts.listen).await?;
        let local = listener.local_addr()?;
        let (blackhole, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            upstream: Mutex::new(opts.upstream),
            delay_ns: AtomicU64::new(duration_ns(opts.delay)),
            refuse: AtomicBool::new(false),
            blackhole,
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            counters: Counters::default(),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Proxy {
            shared,
            local,
            accept: Some(accept),
        })
    }

    /// The address clients should connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Send new connections to `addr`; open connections keep their upstream.
    pub fn set_upstream(&self, addr: SocketAddr) {
        *self
            .shared
            .upstream
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = addr;
    }

    /// Change the one-way delay; applies to chunks read from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ns
            .store(duration_ns(delay), Ordering::Relaxed);
    }

    /// While on, no byte is forwarded either way: connections stay open and data is held
    /// (up to the in-flight bound, then TCP pushes back). New connections are accepted but not
    /// connected upstream until it lifts. Turning it off releases everything held, in order.
    pub fn blackhole(&self, on: bool) {
        self.shared.blackhole.send_replace(on);
    }

    /// Close every open proxied connection (both sides). New connections are unaffected.
    pub fn drop_connections(&self) {
        self.shared.abort_all();
    }

    /// While on, new connections are reset as soon as they are accepted.
    pub fn refuse(&self, on: bool) {
        self.shared.refuse.store(on, Ordering::Relaxed);
    }

    /// Counters since start.
    pub fn stats(&self) -> ProxyStats {
        self.shared.stats()
    }

    /// Stop accepting, close all connections, and wait until the listener is closed.
    pub async fn shutdown(mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = accept.await; // Err(cancelled) is the expected outcome
        }
        self.shared.abort_all();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        self.shared.abort_all();
    }
}

/// Run a proxy until `shutdown` completes (for the `pgdrill proxy` subcommand).
///
/// Prefer a current-thread runtime for this: each chunk is one read and one write, and on a
/// 2-core box the multi-thread scheduler's cross-thread wakeups cost more than they give
/// (measured ~20 vs ~27 µs of proxy CPU per small INSERT transaction under pgbench -c 32).
pub async fn run_cli(opts: ProxyOptions, shutdown: impl Future<Output = ()>) -> io::Result<()> {
    let proxy = Proxy::start(opts).await?;
    tracing::info!(
        listen = %proxy.local_addr(),
        upstream = %opts.upstream,
        delay = ?opts.delay,
        "proxy listening"
    );
    shutdown.await;
    let stats = proxy.stats();
    proxy.shutdown().await;
    tracing::info!(?stats, "proxy stopped");
    Ok(())
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; the listener stays usable.
                tracing::warn!(error = %e, "proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
        if shared.refuse.load(Ordering::Relaxed) {
            shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            // Zero linger: close with RST, as a refusing host would.
            let _ = client.set_zero_linger();
            drop(client);
            continue;
        }
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let task_shared = shared.clone();
        // Register under the lock before the task can finish, so it can always deregister.
        let mut conns = shared.conns.lock().unwrap_or_else(|e| e.into_inner());
        let handle = tokio::spawn(async move {
            let _guard = ConnGuard {
                id,
                shared: task_shared.clone(),
            };
            if let Err(e) = proxy_conn(client, &task_shared).await {
                tracing::debug!(%peer, error = %e, "proxy: connection ended");
            }
        });
        conns.insert(id, handle.abort_handle());
    }
}

/// Keeps `open` and the registry right however the task ends (finished or aborted).
struct ConnGuard {
    id: u64,
    shared: Arc<Shared>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.shared
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

struct OpenGuard<'a>(&'a AtomicU64);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn proxy_conn(mut client: TcpStream, shared: &Shared) -> io::Result<()> {
    // Not forwarded while blackholed: not even the upstream connect.
    shared.wait_while_blackholed().await;
    let upstream_addr = *shared.upstream.lock().unwrap_or_else(|e| e.into_inner());
    let mut upstream = match TcpStream::connect(upstream_addr).await {
        Ok(s) => s,
        Err(e) => {
            shared
                .counters
                .upstream_errors
                .fetch_add(1, Ordering::Relaxed);
            let _ = client.set_zero_linger();
            return Err(e);
        }
    };
    // Small request/response messages must not wait for Nagle.
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    shared.counters.open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(&shared.counters.open);

    let (cr, cw) = client.split();
    let (ur, uw) = upstream.split();
    let up = pump(cr, uw, shared, &shared.counters.bytes_to_upstream);
    let down = pump(ur, cw, shared, &shared.counters.bytes_to_client);
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    // A clean EOF half-closes one direction and lets the other finish; an error ends both.
    while !(up_done && down_done) {
        tokio::select! {
            r = &mut up, if !up_done => { r?; up_done = true; }
            r = &mut down, if !down_done => { r?; down_done = true; }
        }
    }
    Ok(())
}

/// One direction: read chunks, stamp them, write each at arrival + delay, in order.
async fn pump<R, W>(mut r: R, mut w: W, shared: &Shared, bytes: &AtomicU64) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // (due, buffer, length). Buffers are recycled through `free`, so steady state allocates
    // nothing; each is CHUNK bytes, zeroed once.
    let mut queue: VecDeque<(Instant, Vec<u8>, usize)> = VecDeque::with_capacity(MAX_IN_FLIGHT);
    let mut free: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let mut eof = false;
    let timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(timer);
    let mut timer_armed_for: Option<Instant> = None;

    loop {
        if let Some(&(due, _, _)) = queue.front() {
            if timer_armed_for != Some(due) {
                timer.as_mut().reset(due);
                timer_armed_for = Some(due);
            }
        } else if eof {
            // Everything read has been written: pass the EOF on.
            w.shutdown().await?;
            return Ok(());
        }
        let can_read = !eof && queue.len() < MAX_IN_FLIGHT;
        tokio::select! {
            // Writes first: they are due, and they free room.
            biased;
            _ = &mut timer, if !queue.is_empty() => {
                let Some((_, chunk, n)) = queue.pop_front() else { continue };
                shared.wait_while_blackholed().await;
                w.write_all(&chunk[..n]).await?;
                bytes.fetch_add(n as u64, Ordering::Relaxed);
                free.push(chunk);
            }
            res = r.read(&mut buf), if can_read => {
                let n = res?;
                if n == 0 {
                    eof = true;
                    continue;
                }
                let delay = shared.delay();
                if delay.is_zero() && queue.is_empty() && !shared.blackholed() {
                    // Nothing to wait for: write through without touching the timer.
                    w.write_all(&buf[..n]).await?;
                    bytes.fetch_add(n as u64, Ordering::Relaxed);
                } else {
                    let next = free.pop().unwrap_or_else(|| vec![0u8; CHUNK]);
                    let chunk = std::mem::replace(&mut buf, next);
                    queue.push_back((Instant::now() + delay, chunk, n));
                }
            }
        }
    }
}
