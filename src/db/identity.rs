//! Which server are we writing to? Probed on every new connection, as an
//! ordinary user: each fact degrades to unknown where it is not permitted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_postgres::Client;

use crate::clock::{unix_now, WallClock};
use crate::error::{classify, ErrorClass};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::timeline::{EventKind, Recorder};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Identity {
    pub server_addr: Option<String>,
    pub server_port: Option<u16>,
    pub in_recovery: Option<bool>,
    pub system_identifier: Option<String>,
    pub timeline: Option<i64>,
    /// `pg_postmaster_start_time()` as text: changes on every restart.
    pub postmaster_start: Option<String>,
    /// When the server last reset its statistics, as text: a crash of any server process (an
    /// OOM kill) restarts the others and resets them all under the same postmaster. The earlier of
    /// two views' resets, so that an administrator resetting one of them is not read as a crash
    /// (a superuser's reset of every view, PostgreSQL 17's `pg_stat_reset_shared()`, is).
    pub stats_reset: Option<String>,
    /// A primary that takes no writes (`default_transaction_read_only`, as a managed service
    /// sets when its storage is full): refused like a standby. Not a fact of which server.
    #[serde(skip)]
    pub read_only: Option<bool>,
    /// What an acknowledgement waited for, as this session saw it: whether a write lost in a
    /// failover broke a promise (`on` with a synchronous standby) or was allowed to be lost.
    pub synchronous_commit: Option<String>,
    pub synchronous_standby_names: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Same,
    /// The same cluster on the same timeline came back with a new postmaster, or with its
    /// statistics reset by a crash: a restart (crash, `pg_ctl restart`, maintenance), not a
    /// failover.
    Restart,
    NewPrimary,
}

/// Both known, and not the same.
fn differ<T: PartialEq>(a: &Option<T>, b: &Option<T>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a != b)
}

/// A value for a log line: as it is, or `-` when unknown (never `Some(…)`).
pub fn shown<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

impl Identity {
    /// The same server process on the same timeline, not restarted by a crash since: its start
    /// time (to the microsecond) and cluster tell it wherever it is reached from (`localhost` is
    /// `::1` and `127.0.0.1`); the address stands in only where the start time is not readable.
    pub(crate) fn same_primary(&self, other: &Identity) -> bool {
        let same_process = match (&self.postmaster_start, &other.postmaster_start) {
            (Some(a), Some(b)) => a == b,
            (None, None) => {
                self.server_addr == other.server_addr && self.server_port == other.server_port
            }
            _ => false,
        };
        let other_cluster = differ(&self.system_identifier, &other.system_identifier);
        same_process
            && !differ(&self.stats_reset, &other.stats_reset)
            && !other_cluster
            && self.timeline == other.timeline
    }

    /// This probe read less than `other` (a query of it failed): it cannot tell a change from it.
    pub(crate) fn lacks_what(&self, other: &Identity) -> bool {
        (other.server_addr.is_some() && self.server_addr.is_none())
            || (other.server_port.is_some() && self.server_port.is_none())
            || (other.postmaster_start.is_some() && self.postmaster_start.is_none())
            || (other.stats_reset.is_some() && self.stats_reset.is_none())
            || (other.timeline.is_some() && self.timeline.is_none())
    }

    /// This probe read another server process than `before` did, by the facts both read (either may
    /// have read less: a query of it failed): the start time, else the address and timeline. Not
    /// the statistics reset: a crash ends every connection anyway, and a superuser's reset of
    /// every view reads the same while the connections live on.
    pub(crate) fn is_another_process(&self, before: &Identity) -> bool {
        match (&self.postmaster_start, &before.postmaster_start) {
            (Some(a), Some(b)) => a != b,
            _ => {
                differ(&self.server_addr, &before.server_addr)
                    || differ(&self.server_port, &before.server_port)
                    || differ(&self.timeline, &before.timeline)
            }
        }
    }

    /// Same system identifier and timeline; where the identifier is not readable (a
    /// restricted user), the same address stands in for it.
    fn same_cluster_and_timeline(&self, other: &Identity) -> bool {
        let same_cluster = match (&self.system_identifier, &other.system_identifier) {
            (Some(a), Some(b)) => a == b,
            (None, None) => self.endpoint().is_some() && self.endpoint() == other.endpoint(),
            _ => false,
        };
        same_cluster && self.timeline.is_some() && self.timeline == other.timeline
    }

    /// Two addresses of one family that differ, not both loopback: a block-level HA failover (RDS
    /// Multi-AZ, Cloud SQL) keeps the cluster and its timeline and moves them to another machine. A
    /// restart reached at its IPv6 address after its IPv4 one (a dual-stack name) is one machine.
    fn on_another_machine(&self, other: &Identity) -> bool {
        let ip = |a: &Option<String>| a.as_deref()?.parse::<std::net::IpAddr>().ok();
        let (Some(a), Some(b)) = (ip(&self.server_addr), ip(&other.server_addr)) else {
            return false;
        };
        a != b && a.is_ipv4() == b.is_ipv4() && !(a.is_loopback() && b.is_loopback())
    }

    /// How the report names what an outage left behind.
    pub fn change_word(before: &Identity, after: &Identity) -> &'static str {
        match after.change_from(before) {
            Change::Same => "same primary",
            Change::Restart => "same primary, restarted in place",
            Change::NewPrimary => "new primary",
        }
    }

    fn change_from(&self, old: &Identity) -> Change {
        if old.same_primary(self) {
            Change::Same
        } else if old.same_cluster_and_timeline(self) && !old.on_another_machine(self) {
            Change::Restart
        } else {
            Change::NewPrimary
        }
    }

    /// `addr:port timeline N`.
    pub(crate) fn short(&self) -> String {
        let endpoint = self.endpoint().unwrap_or_else(|| "?".to_string());
        let timeline = self.timeline.map(|t| format!(" timeline {t}"));
        endpoint + &timeline.unwrap_or_default()
    }

    /// `synchronous_commit=on synchronous_standby_names='…'`, as far as read.
    pub fn durability(&self) -> Option<String> {
        let commit = self
            .synchronous_commit
            .as_ref()
            .map(|c| format!("synchronous_commit={c}"));
        let names = self.synchronous_standby_names.as_ref();
        let names = names.map(|n| format!("synchronous_standby_names='{n}'"));
        let both: Vec<String> = commit.into_iter().chain(names).collect();
        (!both.is_empty()).then(|| both.join(" "))
    }

    pub fn endpoint(&self) -> Option<String> {
        let (addr, port) = (self.server_addr.as_ref()?, self.server_port?);
        Some(format!("{addr}:{port}"))
    }
}

/// A time as UTC text in a fixed format: a session's TimeZone or DateStyle (a role's setting,
/// PGTZ) would otherwise read as a restart.
macro_rules! utc {
    ($time:literal) => {
        concat!(
            "to_char(",
            $time,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US\"+00\"')"
        )
    };
}

/// The earlier of two views' statistics resets (see [`Identity::stats_reset`]), as `utc!` text.
macro_rules! stats_reset {
    () => {
        utc!(
            "least((SELECT stats_reset FROM pg_stat_bgwriter), \
             (SELECT stats_reset FROM pg_stat_archiver))"
        )
    };
}

/// Every fact in one statement: one round trip, and through a transaction pooler one server
/// (separate statements may each reach another). Only a primary has a WAL position: hence CASE.
const PROBE_ALL: &str = concat!(
    "SELECT pg_is_in_recovery()::text, host(inet_server_addr()), \
     inet_server_port()::text, (SELECT system_identifier::text FROM pg_control_system()), ",
    utc!("pg_postmaster_start_time()"),
    ", CASE WHEN pg_is_in_recovery() THEN NULL \
     ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END, \
     current_setting('transaction_read_only'), current_setting('synchronous_commit'), \
     current_setting('synchronous_standby_names'), ",
    stats_reset!(),
);

/// The same facts one at a time, when the statement above is refused (a function revoked
/// from the user), so that one refused function costs only its own fact.
const PROBES: &[&str] = &[
    "SELECT pg_is_in_recovery()::text",
    "SELECT host(inet_server_addr()), inet_server_port()::text",
    "SELECT system_identifier::text FROM pg_control_system()",
    concat!("SELECT ", utc!("pg_postmaster_start_time()")),
    "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)",
    "SELECT current_setting('transaction_read_only')",
    "SELECT current_setting('synchronous_commit'), current_setting('synchronous_standby_names')",
    concat!("SELECT ", stats_reset!()),
];

/// The server's identity, or an error when the server or a pooler in front failed the probe
/// (PgBouncer's 08P01 with no server behind, a closed connection), not a fact about the server.
pub async fn probe(client: &Client) -> Result<Identity, tokio_postgres::Error> {
    match super::text_rows(client, PROBE_ALL).await {
        Ok(rows) if !rows.is_empty() => Ok(identity_of(|n| rows[0].get(n).cloned().flatten())),
        Err(e) if !matches!(classify(&e), ErrorClass::Rejected | ErrorClass::Other) => Err(e),
        // A function refused to this user: each fact on its own.
        _ => Ok(probe_each(client).await),
    }
}

/// The facts of [`PROBE_ALL`]'s columns, by index.
fn identity_of(col: impl Fn(usize) -> Option<String>) -> Identity {
    Identity {
        in_recovery: col(0).map(|v| v == "true"),
        server_addr: col(1),
        server_port: col(2).and_then(|p| p.parse().ok()),
        system_identifier: col(3),
        postmaster_start: col(4),
        timeline: col(5).and_then(|hex| i64::from_str_radix(&hex, 16).ok()),
        read_only: col(6).map(|v| v == "on"),
        synchronous_commit: col(7),
        synchronous_standby_names: col(8),
        stats_reset: col(9),
    }
}

async fn probe_each(client: &Client) -> Identity {
    let mut columns: [Option<String>; 10] = Default::default();
    // Where each probe's columns go in PROBE_ALL's order.
    let first_column = [0, 1, 3, 4, 5, 6, 7, 9];
    for (i, sql) in PROBES.iter().enumerate() {
        if i == 4 && columns[0].as_deref() != Some("false") {
            continue;
        }
        let rows = super::text_rows(client, sql).await;
        let Ok([row, ..]) = rows.as_deref() else {
            continue;
        };
        // Only the columns this probe asked for, however many the server sent.
        let end = first_column.get(i + 1).copied().unwrap_or(columns.len());
        for (slot, value) in columns[first_column[i]..end].iter_mut().zip(row) {
            slot.clone_from(value);
        }
    }
    identity_of(|n| columns[n].clone())
}

/// First acknowledged writes kept, one per primary change; a canary that fails over every
/// minute for a week stays within it.
pub const MAX_FIRST_WRITES: usize = 100_000;

/// The primary we currently write to, and a signal when it changes.
pub struct IdentityTracker {
    current: Mutex<Option<Identity>>,
    hosts: Vec<String>,
    metrics: Arc<Metrics>,
    changes: watch::Sender<u64>,
    /// Primary changes and restarts seen, read on every acknowledged write.
    generation: AtomicU64,
    /// The generation whose first acknowledged write is recorded.
    acked: AtomicU64,
    /// When each new primary (or restarted one) acknowledged its first write, as unix seconds dated
    /// then (a later step of the wall clock moves no such date); the drills time failovers by it.
    first_writes: Mutex<Vec<f64>>,
    clock: WallClock,
    /// The first primary seen, for the report's "before".
    first: OnceLock<Identity>,
    timeline: OnceLock<Arc<Recorder>>,
}

impl IdentityTracker {
    pub fn new(hosts: Vec<String>, metrics: Arc<Metrics>, clock: WallClock) -> IdentityTracker {
        IdentityTracker {
            clock,
            current: Mutex::new(None),
            hosts,
            metrics,
            changes: watch::channel(0).0,
            generation: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            first_writes: Mutex::new(Vec::new()),
            first: OnceLock::new(),
            timeline: OnceLock::new(),
        }
    }

    /// A write was acknowledged at `at`. The first one after a primary change (or restart)
    /// was, as far as clients can tell, the new primary's first: the change is observed on a
    /// new connection before it takes a write, and the old primary's connections have failed
    /// by then (a demoted, stopped or frozen server acknowledges nothing).
    pub fn acknowledged(&self, at: Instant) {
        let generation = self.generation.load(Ordering::Relaxed);
        if generation > self.acked.load(Ordering::Relaxed)
            && self.acked.fetch_max(generation, Ordering::Relaxed) < generation
        {
            let mut writes = self.first_writes.lock();
            if writes.len() < MAX_FIRST_WRITES {
                writes.push(self.clock.unix(at));
            }
        }
    }

    /// The first acknowledged write (unix seconds) of each primary change whose primary took one.
    pub fn first_writes(&self) -> Vec<f64> {
        self.first_writes.lock().clone()
    }

    /// Primary changes and restarts in place become timeline events from now on.
    pub fn record_to(&self, timeline: Arc<Recorder>) {
        let _ = self.timeline.set(timeline);
    }

    pub fn first(&self) -> Option<Identity> {
        self.first.get().cloned()
    }

    /// Primary changes and restarts seen so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    pub fn current(&self) -> Option<Identity> {
        self.current.lock().clone()
    }

    /// Notified with the running count of primary changes and restarts: after either, acknowledged
    /// writes are worth checking (a crash with `synchronous_commit = off` loses some).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// A freshly connected writable server.
    pub fn observe(&self, id: &Identity) {
        let mut current = self.current.lock();
        let change = current.as_ref().map(|old| id.change_from(old));
        if change == Some(Change::Same) {
            return;
        }
        self.first.get_or_init(|| id.clone());
        let old = current.replace(id.clone());
        drop(current);
        self.metrics.server_timeline.set(id.timeline.unwrap_or(0));
        self.metrics
            .set_primary_host(self.matching_host(id).as_deref());
        self.metrics.set_primary_server([
            shown(id.endpoint()),
            shown(id.system_identifier.as_deref()),
            shown(id.timeline),
        ]);
        let event = match (change, old) {
            (Some(Change::Restart), old) => {
                let crash = old.is_some_and(|old| old.postmaster_start == id.postmaster_start);
                let how = match crash {
                    true => "after a crash of one of its processes",
                    false => "with a new postmaster",
                };
                // The evidence of a crash, said: a superuser's reset of every statistics view
                // reads the same.
                let seen = match crash {
                    true => "; its statistics were reset under the same postmaster",
                    false => "",
                };
                tracing::warn!(
                    event = "server_restarted",
                    server = %shown(id.endpoint()),
                    timeline = %shown(id.timeline),
                    started = %shown(id.postmaster_start.as_deref()),
                    stats_reset = %shown(id.stats_reset.as_deref()),
                    "the primary restarted {how} (same system, timeline and address{seen})"
                );
                self.metrics.server_restarts.inc();
                EventKind::Restart {
                    what: format!("primary {} restarted {how}", id.short()),
                }
            }
            (Some(Change::NewPrimary), Some(old)) => {
                tracing::warn!(
                    event = "primary_changed",
                    from = %shown(old.endpoint()),
                    to = %shown(id.endpoint()),
                    from_timeline = %shown(old.timeline),
                    to_timeline = %shown(id.timeline),
                    "the primary changed"
                );
                self.metrics.primary_changes.inc();
                EventKind::PrimaryChange {
                    before: old.short(),
                    after: id.short(),
                }
            }
            // The first primary seen is no change.
            _ => return,
        };
        if let Some(t) = self.timeline.get() {
            t.lock().event(unix_now(), event);
        }
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.changes.send_modify(|n| *n += 1);
    }

    /// The configured `host:port` this identity is, by exact address, the only host
    /// configured, or a port no other configured host uses.
    fn matching_host(&self, id: &Identity) -> Option<String> {
        if let Some(endpoint) = id.endpoint().filter(|e| self.hosts.contains(e)) {
            return Some(endpoint);
        }
        // One configured host (a proxy, a pooler, a DNS name): the writes went through it,
        // whatever address the server behind it reports.
        if let [only] = self.hosts.as_slice() {
            return Some(only.clone());
        }
        let port = format!(":{}", id.server_port?);
        let same_port: Vec<_> = self.hosts.iter().filter(|h| h.ends_with(&port)).collect();
        let [only] = same_port[..] else { return None };
        Some(only.clone())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A writable primary on 127.0.0.1:`port`, system 42, on `timeline`.
    pub(crate) fn id(port: u16, timeline: i64) -> Identity {
        Identity {
            server_addr: Some("127.0.0.1".into()),
            server_port: Some(port),
            in_recovery: Some(false),
            system_identifier: Some("42".into()),
            timeline: Some(timeline),
            postmaster_start: Some("t0".into()),
            stats_reset: Some("s0".into()),
            read_only: Some(false),
            ..Identity::default()
        }
    }

    #[test]
    fn a_probe_that_read_less_tells_no_change() {
        let full = Identity {
            postmaster_start: Some("08:00".into()),
            ..id(5432, 3)
        };
        let partial = Identity {
            timeline: None,
            ..full.clone()
        };
        assert!(partial.lacks_what(&full));
        assert!(!full.lacks_what(&partial));
        assert!(!full.lacks_what(&full));
        // Without its start time, the probe's other facts would be compared, and a
        // missing timeline would read as another server.
        let no_start = Identity {
            postmaster_start: None,
            ..partial.clone()
        };
        assert!(!no_start.is_another_process(&full));
        assert!(!partial.is_another_process(&full));
        assert!(!full.is_another_process(&full));
        // Either way round: a full probe is no other server than a partial one before it.
        assert!(!full.is_another_process(&no_start));
        assert!(!full.is_another_process(&partial));
        let moved = Identity {
            server_port: Some(6432),
            ..no_start.clone()
        };
        assert!(moved.is_another_process(&full));
        assert!(full.is_another_process(&moved));
        let restarted = Identity {
            postmaster_start: Some("09:00".into()),
            ..full.clone()
        };
        assert!(restarted.is_another_process(&full));
    }
    #[test]
    fn behind_a_proxy_the_one_host_is_primary_and_the_server_is_named() {
        let hosts = vec!["127.0.0.1:26500".to_string()];
        let metrics = Metrics::new(&hosts);
        let tracker = IdentityTracker::new(hosts, metrics.clone(), WallClock::now());
        tracker.observe(&id(5001, 1));
        let proxy = metrics
            .host_is_primary
            .with_label_values(&["127.0.0.1:26500"]);
        assert_eq!(proxy.get(), 1);
        tracker.observe(&id(5002, 2));
        let server = |p: &str, t: &str| {
            metrics
                .primary_server
                .with_label_values(&[p, "42", t])
                .get()
        };
        assert_eq!(
            (server("127.0.0.1:5001", "1"), server("127.0.0.1:5002", "2")),
            (0, 1)
        );
        assert_eq!(proxy.get(), 1, "still written through the proxy");
        for port in 6000..6020 {
            tracker.observe(&id(port, i64::from(port)));
        }
        let series = prometheus::core::Collector::collect(&metrics.primary_server)[0]
            .get_metric()
            .len();
        assert_eq!(series, 8, "bounded label values");
    }

    #[test]
    fn changes_are_counted_once_and_hosts_follow() {
        let hosts = vec!["127.0.0.1:5001".to_string(), "localhost:5002".to_string()];
        let metrics = Metrics::new(&hosts);
        let tracker = IdentityTracker::new(hosts, metrics.clone(), WallClock::now());
        let rx = tracker.subscribe();
        tracker.observe(&id(5001, 1));
        tracker.observe(&id(5001, 1));
        assert_eq!(metrics.primary_changes.get(), 0);
        let g = |h: &str| metrics.host_is_primary.with_label_values(&[h]).get();
        assert_eq!((g("127.0.0.1:5001"), g("localhost:5002")), (1, 0));
        tracker.observe(&id(5002, 2));
        assert_eq!(metrics.primary_changes.get(), 1);
        assert_eq!(metrics.server_timeline.get(), 2);
        assert_eq!((g("127.0.0.1:5001"), g("localhost:5002")), (0, 1));
        assert_eq!(*rx.borrow(), 1);
    }

    #[test]
    fn the_first_write_after_each_change_or_restart_is_recorded_once() {
        let clock = WallClock::now();
        let tracker = IdentityTracker::new(Vec::new(), Metrics::new(&[]), clock.clone());
        let t0 = Instant::now();
        let at = |ms: u64| t0 + std::time::Duration::from_millis(ms);
        let unix = |ms: u64| clock.unix(at(ms));
        tracker.observe(&id(5001, 1));
        tracker.acknowledged(at(1));
        assert!(
            tracker.first_writes().is_empty(),
            "the first primary is no change"
        );
        tracker.observe(&id(5002, 2));
        tracker.acknowledged(at(10));
        tracker.acknowledged(at(11));
        tracker.observe(&id(5002, 2));
        tracker.acknowledged(at(12));
        tracker.observe(&id(5001, 3));
        tracker.acknowledged(at(20));
        let mut restarted = id(5001, 3);
        restarted.postmaster_start = Some("t1".into());
        tracker.observe(&restarted);
        tracker.acknowledged(at(30));
        let dated = vec![unix(10), unix(20), unix(30)];
        assert_eq!(tracker.first_writes(), dated);
        // Dated when acknowledged: a later step of the wall clock moves none of them.
        assert_eq!(
            clock.follow_to(clock.unix(at(40)) - 2.0, at(40)),
            Some(-2.0)
        );
        assert_eq!(tracker.first_writes(), dated);
    }

    #[test]
    fn a_restart_is_not_a_primary_change() {
        let hosts = vec!["127.0.0.1:5001".to_string()];
        let metrics = Metrics::new(&hosts);
        let tracker = IdentityTracker::new(hosts, metrics.clone(), WallClock::now());
        let rx = tracker.subscribe();
        tracker.observe(&id(5001, 1));
        for n in 1..=3 {
            let mut restarted = id(5001, 1);
            restarted.postmaster_start = Some(format!("t{n}"));
            tracker.observe(&restarted);
            tracker.observe(&restarted);
        }
        assert_eq!(metrics.server_restarts.get(), 3);
        assert_eq!(metrics.primary_changes.get(), 0);
        assert_eq!(*rx.borrow(), 3, "a restart is worth verifying too");

        // A crash of one server process: the same postmaster, its statistics reset.
        let mut crashed = id(5001, 1);
        crashed.postmaster_start = Some("t3".into());
        crashed.stats_reset = Some("after the crash".into());
        tracker.observe(&crashed);
        assert_eq!(metrics.server_restarts.get(), 4);
        // Not another process to the connections' liveness check: a superuser's reset of every
        // statistics view reads the same, and a crash ends the connections anyway.
        let mut before = crashed.clone();
        before.stats_reset = Some("s0".into());
        assert!(!crashed.is_another_process(&before));
        let mut unread = crashed.clone();
        unread.stats_reset = None;
        assert_eq!(
            unread.change_from(&crashed),
            Change::Same,
            "unknown is no change"
        );

        // Another cluster on the same address and timeline (a rebuilt server) is a change.
        let mut other = id(5001, 1);
        other.system_identifier = Some("43".into());
        tracker.observe(&other);
        assert_eq!(metrics.primary_changes.get(), 1);
        // A new timeline is a promotion, whatever the system identifier says.
        let mut promoted = other.clone();
        promoted.timeline = Some(2);
        tracker.observe(&promoted);
        assert_eq!(metrics.primary_changes.get(), 2);

        // Without a readable system identifier the address stands in for it.
        let mut a = id(5001, 2);
        a.system_identifier = None;
        let mut b = a.clone();
        b.postmaster_start = Some("later".into());
        assert_eq!(b.change_from(&a), Change::Restart);
        b.server_port = Some(5002);
        assert_eq!(b.change_from(&a), Change::NewPrimary);

        // A block-level HA failover: the cluster and its timeline, on another machine.
        let mut moved = id(5001, 1);
        moved.postmaster_start = Some("t9".into());
        moved.server_addr = Some("10.0.0.7".into());
        assert_eq!(moved.change_from(&id(5001, 1)), Change::NewPrimary);
        let mut local = moved.clone();
        local.server_addr = Some("::1".into());
        assert_eq!(local.change_from(&id(5001, 1)), Change::Restart);
        // A dual-stack name: the same machine at its IPv6 address after its IPv4 one.
        let mut v4 = id(5001, 1);
        v4.server_addr = Some("10.0.0.5".into());
        moved.server_addr = Some("fd00::5".into());
        assert_eq!(moved.change_from(&v4), Change::Restart);

        // The same process reached through another of its addresses is the same primary.
        let mut v6 = id(5001, 1);
        v6.server_addr = Some("::1".into());
        assert_eq!(v6.change_from(&id(5001, 1)), Change::Same);
        a.postmaster_start = None;
        let mut b = a.clone();
        assert_eq!(b.change_from(&a), Change::Same);
        b.server_addr = Some("::1".into());
        assert_ne!(b.change_from(&a), Change::Same);
    }
}
