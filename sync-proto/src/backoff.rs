//! The reconnect and retry policy both ends of the fleet link follow: waits that double from
//! a first delay up to a cap, each spread over its upper half so that a fleet cut off at the
//! same moment (a broker restart) does not come back at the same moment. Pure arithmetic;
//! the caller sleeps.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    current: Duration,
    /// The spread's generator, from the caller's seed.
    spread: fastrand::Rng,
}

impl Backoff {
    /// Waits from `first`, doubling up to `max`; `seed` picks the spread (a device id's hash,
    /// say), so two clients with different seeds wait different times.
    pub fn new(first: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            first,
            max: max.max(first),
            current: first,
            spread: fastrand::Rng::with_seed(seed),
        }
    }

    /// The next wait: in [d/2, d] for the current step d, which then doubles (up to the cap).
    pub fn next_wait(&mut self) -> Duration {
        let step = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = step / 2;
        half + half.mul_f64(self.spread.f64())
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.current = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn waits_double_to_the_cap_within_their_upper_half_and_reset() {
        let mut b = Backoff::new(100 * MS, 1000 * MS, 7);
        let steps = [100, 200, 400, 800, 1000, 1000];
        for step in steps {
            let w = b.next_wait();
            assert!(
                w >= step * MS / 2 && w <= step * MS,
                "{w:?} for step {step} ms"
            );
        }
        b.reset();
        assert!(b.next_wait() <= 100 * MS);
    }

    #[test]
    fn different_seeds_spread_the_same_step() {
        let waits: std::collections::BTreeSet<Duration> = (0..50)
            .map(|seed| Backoff::new(1000 * MS, 1000 * MS, seed).next_wait())
            .collect();
        // 50 clients cut off together come back at (nearly) 50 different moments.
        assert!(waits.len() > 40, "{waits:?}");
        let spread = *waits.last().unwrap() - *waits.first().unwrap();
        assert!(spread > 300 * MS, "{spread:?}");
    }
}
