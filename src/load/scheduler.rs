//! Open-loop pacing on absolute deadlines: transaction `i` is due at `start + i / rate`,
//! whatever happened to the ones before it. Latency is measured from that instant, so a
//! stalled database shows up as latency (coordinated omission), as pgbench `-R` measures it.

use std::time::Duration;

use async_channel::{Sender, TrySendError};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::load::outcomes::{Job, Outcomes};

/// Deadline arithmetic, kept apart from I/O so it can be tested exactly.
#[derive(Debug, Clone)]
pub struct Pacer {
    start: Instant,
    nanos_per_tx: f64,
    issued: u64,
}

impl Pacer {
    pub fn new(start: Instant, rate: f64) -> Pacer {
        Pacer {
            start,
            nanos_per_tx: 1e9 / rate,
            issued: 0,
        }
    }

    pub fn intended(&self, i: u64) -> Instant {
        self.start + Duration::from_nanos((i as f64 * self.nanos_per_tx) as u64)
    }

    /// The next job if it is due at `now`.
    pub fn next_due(&mut self, now: Instant) -> Option<Job> {
        let intended = self.intended(self.issued);
        (intended <= now).then(|| {
            let job = Job {
                seq: self.issued,
                intended,
            };
            self.issued += 1;
            job
        })
    }

    pub fn next_deadline(&self) -> Instant {
        self.intended(self.issued)
    }
}

/// Feeds due jobs into the bounded backlog until `stop` or for `duration`. A full backlog
/// (every connection busy, the queue long) counts the job as skipped, not queued without bound.
pub async fn run(
    rate: Option<f64>,
    jobs: Sender<Job>,
    outcomes: &Outcomes,
    stop: &CancellationToken,
    duration: Option<Duration>,
) {
    let start = Instant::now();
    let until = duration.map(|d| start + d);
    let Some(rate) = rate else {
        return run_unlimited(jobs, stop, until).await;
    };
    let mut pacer = Pacer::new(start, rate);
    let mut timer = DeadlineTimer::new();
    loop {
        let now = Instant::now();
        while let Some(job) = pacer.next_due(now) {
            if until.is_some_and(|u| job.intended >= u) {
                return;
            }
            match jobs.try_send(job) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => outcomes.skipped(),
                Err(TrySendError::Closed(_)) => return,
            }
        }
        if until.is_some_and(|u| now >= u) {
            return;
        }
        let next = until
            .map_or(pacer.next_deadline(), |u| pacer.next_deadline().min(u))
            .max(now + MIN_NAP);
        let Some(()) = stop.run_until_cancelled(timer.sleep_until(next)).await else {
            return;
        };
    }
}

/// The shortest sleep between releases: a wake per transaction costs client CPU (a round of
/// the event loop); 250 µs keeps the schedule lag p99 near pgbench's with less CPU (measured at
/// 8,000/s in `bench/run`: 500 µs halves the lag advantage, 125 µs doubles the CPU).
const MIN_NAP: Duration = Duration::from_micros(250);

/// Sleeps to a deadline with the kernel's precision: tokio's timer wheel ticks in whole
/// milliseconds (transactions up to 1 ms late); a timerfd wakes this same thread within
/// microseconds, with no second thread to hand jobs across.
struct DeadlineTimer {
    #[cfg(target_os = "linux")]
    fd: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
}

impl DeadlineTimer {
    fn new() -> DeadlineTimer {
        DeadlineTimer {
            #[cfg(target_os = "linux")]
            fd: timerfd().ok(),
        }
    }

    async fn sleep_until(&mut self, deadline: Instant) {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.fd {
            if timerfd_wait(fd, deadline).await.is_ok() {
                return;
            }
        }
        sleep_until(deadline).await;
    }
}

#[cfg(target_os = "linux")]
fn timerfd() -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    use rustix::time::{TimerfdClockId, TimerfdFlags};
    let fd = rustix::time::timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
    )?;
    // SAFETY: the AsyncFd owns the OwnedFd, which keeps the same open descriptor until
    // dropped with it (tokio's I/O-safety contract).
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| std::io::Error::other(e.to_string()))
}

#[cfg(target_os = "linux")]
async fn timerfd_wait(
    fd: &tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
    deadline: Instant,
) -> std::io::Result<()> {
    use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec};
    // A zero it_value would disarm the timer: a past deadline fires after 1 ns.
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_nanos(1));
    let spec = Itimerspec {
        it_interval: Timespec::default(),
        it_value: Timespec::try_from(wait).map_err(std::io::Error::other)?,
    };
    rustix::time::timerfd_settime(fd.get_ref(), TimerfdTimerFlags::empty(), &spec)?;
    loop {
        let mut guard = fd.readable().await?;
        // timerfd(2): a read returns the expiration count as 8 bytes.
        let mut expirations = [0u8; 8];
        match rustix::io::read(fd.get_ref(), &mut expirations) {
            Ok(8) => {
                // Consumed: not readable until the next expiry, so the next wait does not
                // begin with a read that can only fail.
                guard.clear_ready();
                return Ok(());
            }
            Ok(_) => return Err(std::io::Error::other("short read from timerfd")),
            Err(rustix::io::Errno::AGAIN) => guard.clear_ready(),
            Err(err) => return Err(err.into()),
        }
    }
}

/// `--rate 0`: as fast as the lanes take jobs; the bounded channel is the throttle.
async fn run_unlimited(jobs: Sender<Job>, stop: &CancellationToken, until: Option<Instant>) {
    let deadline = async {
        match until {
            Some(u) => sleep_until(u).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut seq = 0;
    loop {
        let now = Instant::now();
        if stop.is_cancelled() || until.is_some_and(|u| now >= u) {
            return;
        }
        let job = Job { seq, intended: now };
        // Fast path while the backlog has room: no futures to build and drop per job.
        match jobs.try_send(job) {
            Ok(()) => {
                // A backlog that never fills must not starve the lanes on this worker.
                if seq % 64 == 63 {
                    tokio::task::yield_now().await;
                }
            }
            Err(TrySendError::Closed(_)) => return,
            Err(TrySendError::Full(job)) => {
                tokio::select! {
                    sent = jobs.send(job) => if sent.is_err() { return },
                    _ = stop.cancelled() => return,
                    _ = &mut deadline => return,
                }
            }
        }
        seq += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use parking_lot::Mutex;

    use crate::db::identity::IdentityTracker;
    use crate::failover::machine::Detector;
    use crate::rpo::ledger::Ledger;
    use crate::telemetry::latency::LatencyBook;
    use crate::telemetry::metrics::Metrics;

    fn outcomes() -> Outcomes {
        let metrics = Metrics::new(&[]);
        Outcomes {
            metrics: metrics.clone(),
            detector: Arc::new(Detector::default()),
            ledger: Arc::new(Mutex::new(Ledger::new(Duration::from_secs(1)))),
            latency: LatencyBook::new(1),
            identity: Arc::new(IdentityTracker::new(
                Vec::new(),
                metrics,
                crate::clock::WallClock::now(),
            )),
            tally: Default::default(),
            fatal: Arc::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_are_absolute_and_do_not_drift() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(t0, 3.0);
        // Three per second: 0, 333.33 ms, 666.67 ms, 1 s exactly, ...
        assert_eq!(pacer.intended(3), t0 + Duration::from_secs(1));
        assert_eq!(pacer.intended(3000), t0 + Duration::from_secs(1000));
        // Waking late releases every job that became due, each with its own instant.
        let late = t0 + Duration::from_millis(700);
        let due: Vec<_> = std::iter::from_fn(|| pacer.next_due(late)).collect();
        assert_eq!(due.len(), 3);
        assert_eq!(due[2].intended, t0 + Duration::from_nanos(666_666_666));
        assert_eq!(pacer.next_deadline(), t0 + Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_full_backlog_skips_instead_of_growing() {
        let outcomes = outcomes();
        let (tx, rx) = async_channel::bounded(10);
        let stop = CancellationToken::new();
        let window = Some(Duration::from_millis(100));
        run(Some(1000.0), tx, &outcomes, &stop, window).await;
        // Nobody consumed: 10 queued, the other 90 skipped.
        assert_eq!(rx.len(), 10);
        assert_eq!(outcomes.tally().skipped, 90);
    }

    #[tokio::test]
    async fn schedules_exactly_rate_times_duration() {
        let outcomes = outcomes();
        let (tx, rx) = async_channel::bounded(100_000);
        let stop = CancellationToken::new();
        let began = Instant::now();
        let window = Some(Duration::from_millis(500));
        run(Some(8000.0), tx, &outcomes, &stop, window).await;
        assert!(began.elapsed() >= Duration::from_millis(499));
        assert_eq!(rx.len(), 4_000);
        assert_eq!(outcomes.tally().skipped, 0);
        let first = rx.try_recv().expect("a job");
        let mut last = first;
        while let Ok(job) = rx.try_recv() {
            assert_eq!(job.seq, last.seq + 1, "sequence numbers are dense");
            last = job;
        }
        assert_eq!(last.seq, 3_999);
        assert_eq!(
            last.intended - first.intended,
            Duration::from_nanos(499_875_000)
        );
    }
}
