//! Telling a standing overload from a burst, for admission control (CoDel's idea, Nichols and
//! Jacobson 2012, applied to requests as Facebook's and Netflix's servers do): a burst leaves
//! a queue that drains, so within an interval some request goes through fast; under a
//! standing overload even the fastest request of a whole interval is slow.
//!
//! A [`Detector`] is fed every admitted request's wait in a queue (not its latency: where
//! requests differ in cost, a big upload is slow without any overload) with the wait that
//! counts as slow, and every refusal. It enters the overloaded
//! state after an interval in which even the smallest delay was over the target, and leaves
//! it after an interval without refusals (the load fell to what the tighter limit serves).
//! Callers apply a tighter admission limit while [`Detector::overloaded`] holds, so admitted
//! requests keep their latency and the rest are refused at once. No clock of its own: every
//! call passes the time, so tests drive it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Fewest delays an interval needs before it is judged (one slow sample proves nothing).
const MIN_SAMPLES: u32 = 4;

/// See the module documentation.
#[derive(Debug)]
pub struct Detector {
    interval: Duration,
    overloaded: AtomicBool,
    refusals: AtomicU64,
    window: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    started: Option<Instant>,
    smallest: Option<Duration>,
    samples: u32,
    refusals_at_start: u64,
}

impl Detector {
    /// A detector judging intervals of at least `interval` (and at least four samples).
    pub fn new(interval: Duration) -> Detector {
        Detector {
            interval,
            overloaded: AtomicBool::new(false),
            refusals: AtomicU64::new(0),
            window: Mutex::new(Window::default()),
        }
    }

    /// True while a standing overload lasts.
    pub fn overloaded(&self) -> bool {
        self.overloaded.load(Ordering::Relaxed)
    }

    /// Counts one refused request.
    pub fn refused(&self) {
        self.refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// Records one admitted request's `delay` at `now`; `target` is the delay over which a
    /// request counts as slow. Judges the interval when it is over.
    pub fn record(&self, delay: Duration, target: Duration, now: Instant) {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let started = *w.started.get_or_insert(now);
        w.smallest = Some(w.smallest.map_or(delay, |s| s.min(delay)));
        w.samples += 1;
        if now.saturating_duration_since(started) < self.interval || w.samples < MIN_SAMPLES {
            return;
        }
        let refusals = self.refusals.load(Ordering::Relaxed);
        let next = if self.overloaded() {
            refusals != w.refusals_at_start
        } else {
            w.smallest.is_some_and(|s| s > target)
        };
        if next != self.overloaded() {
            tracing::info!(
                overloaded = next,
                smallest_delay = ?w.smallest,
                ?target,
                "admission: {}",
                if next {
                    "standing overload, tighter limit"
                } else {
                    "overload over, normal limit"
                }
            );
        }
        self.overloaded.store(next, Ordering::Relaxed);
        *w = Window {
            started: Some(now),
            smallest: None,
            samples: 0,
            refusals_at_start: refusals,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `delays` spread evenly over one 100 ms interval, the first at `t` and the last
    /// at its end (which judges it); returns the end.
    fn interval(d: &Detector, t: Instant, delays: &[u32], target: Duration) -> Instant {
        let gaps = delays.len() as u32 - 1;
        for (i, &ms) in (0u32..).zip(delays) {
            d.record(ms * MS, target, t + 100 * MS * i / gaps);
        }
        t + Duration::from_millis(100)
    }

    #[test]
    fn a_burst_that_drains_is_not_an_overload() {
        let d = Detector::new(100 * MS);
        let t = Instant::now();
        // A queue that built up and drained: the last requests went straight through.
        let t = interval(&d, t, &[0, 40, 80, 120, 60, 20, 1], 10 * MS);
        let _ = interval(&d, t, &[1, 2, 1, 1], 10 * MS);
        assert!(!d.overloaded());
    }

    #[test]
    fn a_standing_queue_is_an_overload_until_an_interval_passes_without_refusals() {
        let d = Detector::new(100 * MS);
        let mut t = Instant::now();
        // A whole interval in which even the fastest request waited over the target.
        t = interval(&d, t, &[30, 25, 40, 22, 35], 10 * MS);
        assert!(
            d.overloaded(),
            "every delay over the target for an interval"
        );
        // Under the tighter limit requests are fast again, but refusals go on: stay.
        for _ in 0..3 {
            d.refused();
            t = interval(&d, t, &[1, 2, 1, 3], 10 * MS);
            assert!(
                d.overloaded(),
                "refusals in the interval keep the tighter limit"
            );
        }
        // An interval without refusals: the load fell; back to the normal limit.
        t = interval(&d, t, &[1, 2, 1, 3], 10 * MS);
        assert!(!d.overloaded());
        // And a standing queue again enters it again.
        let _ = interval(&d, t, &[50, 50, 50, 50], 10 * MS);
        assert!(d.overloaded());
    }

    #[test]
    fn an_interval_is_judged_only_with_enough_samples() {
        let d = Detector::new(100 * MS);
        let t = Instant::now();
        d.record(50 * MS, 10 * MS, t);
        d.record(50 * MS, 10 * MS, t + 500 * MS);
        assert!(
            !d.overloaded(),
            "two slow samples over half a second prove nothing"
        );
        d.record(50 * MS, 10 * MS, t + 600 * MS);
        d.record(50 * MS, 10 * MS, t + 700 * MS);
        assert!(d.overloaded(), "four slow samples over the interval do");
    }
}
