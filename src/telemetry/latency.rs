//! Exact latency percentiles: the lanes' HDR histograms, merged at progress and summary time.

use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Microseconds, up to an hour, three significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

/// Per-lane latency recorder; merged at progress and summary time.
pub struct LatencyStats {
    pub(crate) latency: Histogram<u64>,
    pub(crate) service: Histogram<u64>,
    /// From the intended start to sending (pgbench's "schedule lag").
    pub(crate) lag: Histogram<u64>,
    pub(crate) interval: Histogram<u64>,
    /// Latency since the timeline sampler's last read; its own slot, so that the
    /// progress line and the sampler each see every write once.
    pub(crate) second: Histogram<u64>,
}

impl Default for LatencyStats {
    fn default() -> Self {
        LatencyStats {
            latency: new_histogram(),
            service: new_histogram(),
            lag: new_histogram(),
            interval: new_histogram(),
            second: new_histogram(),
        }
    }
}

impl LatencyStats {
    pub fn record(&mut self, latency: Duration, service: Duration) {
        // Sent no earlier than intended, answered no earlier than sent: lag = latency - service.
        self.lag
            .saturating_record((latency.saturating_sub(service).as_micros() as u64).max(1));
        let l = (latency.as_micros() as u64).max(1);
        // Saturating: a value beyond an hour is clamped, never lost.
        self.latency.saturating_record(l);
        self.interval.saturating_record(l);
        self.second.saturating_record(l);
        self.service
            .saturating_record((service.as_micros() as u64).max(1));
    }
}

/// All lanes' recorders, in one shard per runtime thread: lanes on one thread never
/// contend, and memory stays flat however many lanes there are (a histogram is ~190 KB
/// once a progress reset has touched every page, five per shard).
#[derive(Clone)]
pub struct LatencyBook {
    lanes: Arc<Mutex<Vec<Arc<Mutex<LatencyStats>>>>>,
    shards: usize,
}

impl LatencyBook {
    pub fn new(shards: usize) -> LatencyBook {
        LatencyBook {
            lanes: Arc::default(),
            shards: shards.max(1),
        }
    }

    /// The recorder for the next lane, round-robin over the shards: the one handed out
    /// longest ago, rotated to the back.
    pub fn lane(&self) -> Arc<Mutex<LatencyStats>> {
        let mut lanes = self.lanes.lock();
        if lanes.len() < self.shards {
            lanes.push(Arc::new(Mutex::new(LatencyStats::default())));
        } else {
            lanes.rotate_left(1);
        }
        lanes[lanes.len() - 1].clone()
    }

    pub(crate) fn merged(
        &self,
        pick: impl Fn(&mut LatencyStats) -> &mut Histogram<u64>,
        reset: bool,
    ) -> Histogram<u64> {
        let mut out = new_histogram();
        for lane in self.lanes.lock().iter() {
            let mut s = lane.lock();
            let h = pick(&mut s);
            // Same bounds everywhere, so adding cannot fail.
            let _ = out.add(&*h);
            if reset {
                h.reset();
            }
        }
        out
    }
}
