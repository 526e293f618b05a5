//! The one policy for doing something again: how long to wait before the next attempt
//! ([`Backoff`]), and how often to say so in the log ([`Throttle`]).

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// Exponential from `base`, doubling per consecutive failure, capped at `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff { base, cap }
    }

    /// The wait after `failures` consecutive failures (the first waits `base`).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(20);
        self.base.saturating_mul(1 << doublings).min(self.cap)
    }

    /// [`Backoff::delay`] jittered down to as little as half, so that lanes and processes
    /// that failed together do not retry in lockstep.
    pub fn jittered(&self, failures: u32, rng: &mut impl Rng) -> Duration {
        let half = self.delay(failures) / 2;
        half + Duration::from_micros(rng.random_range(0..=half.as_micros() as u64))
    }
}

/// Lets one warning through per `every` and counts the ones held back; a different message (when
/// keyed) goes through at once, and each of the last few messages is held back on its own (two
/// hosts failing in turn log one line each per period, not one per attempt).
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    /// The last keys let through: when, and the repeats held back since, oldest first.
    recent: Vec<(Instant, String, u64)>,
}

/// Keys a [`Throttle`] tells apart at once.
const MAX_KEYS: usize = 8;

impl Throttle {
    pub const fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            recent: Vec::new(),
        }
    }

    /// `Some(repeats held back since the last line)` when this occurrence is to be logged.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        self.hit_keyed("", now)
    }

    /// Like [`Throttle::hit`], throttling only repeats of `key`; the count held back is its own.
    pub fn hit_keyed(&mut self, key: &str, now: Instant) -> Option<u64> {
        if let Some(i) = self.recent.iter().position(|(_, k, _)| k == key) {
            let (at, _, held) = &mut self.recent[i];
            if now.saturating_duration_since(*at) < self.every {
                *held += 1;
                return None;
            }
            *at = now;
            let held = std::mem::take(held);
            // Newest last, so that the oldest is the one a new key replaces.
            self.recent[i..].rotate_left(1);
            return Some(held);
        }
        if self.recent.len() >= MAX_KEYS {
            self.recent.remove(0);
        }
        self.recent.push((now, key.to_string(), 0));
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_doubles_to_its_cap_and_jitters_down_to_half() {
        let b = Backoff::new(Duration::from_millis(25), Duration::from_millis(200));
        let delays: Vec<_> = (1..=6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, [25, 50, 100, 200, 200, 200]);
        assert_eq!(b.delay(u32::MAX), Duration::from_millis(200));
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let jittered: Vec<_> = (0..200).map(|_| b.jittered(4, &mut rng)).collect();
        assert!(jittered
            .iter()
            .all(|d| (Duration::from_millis(100)..=Duration::from_millis(200)).contains(d)));
        assert!(jittered.iter().any(|d| *d != jittered[0]), "jittered");
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_lets_one_through_per_period_and_counts_the_rest() {
        let every = Duration::from_secs(1);
        let mut t = Throttle::new(every);
        let t0 = Instant::now();
        assert_eq!(t.hit(t0), Some(0));
        for _ in 0..999 {
            assert_eq!(t.hit(t0), None);
        }
        assert_eq!(t.hit(t0 + every), Some(999));
        assert_eq!(t.hit(t0 + every), None);
        // Keyed: another message is news; the same one again within the period is not.
        let mut k = Throttle::new(every);
        assert_eq!(k.hit_keyed("a", t0), Some(0));
        assert_eq!(k.hit_keyed("a", t0), None);
        assert_eq!(k.hit_keyed("b", t0), Some(0), "a's repeat is a's, not b's");
        assert_eq!(k.hit_keyed("b", t0 + every), Some(0));
        // Two messages in turn: each once per period, not once per turn.
        let mut turns = Throttle::new(every);
        let logged = (0..100)
            .filter(|i| turns.hit_keyed(["a", "b"][i % 2], t0).is_some())
            .count();
        assert_eq!(logged, 2);
        assert_eq!(turns.hit_keyed("a", t0 + every), Some(49));
        assert_eq!(turns.hit_keyed("b", t0 + every), Some(49));
    }
}
