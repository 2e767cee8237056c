//! The work pool: the threads where `aq-sync` does its store and fleet work (token lookups,
//! chunk hashing, redb transactions and commits), apart from the HTTP threads that read and
//! answer requests. One thread per core by default (`--work-threads`), started with the
//! server, so they keep the priority the HTTP threads are lowered from
//! (`aq_http_server::priority`): admitted work gets the CPU before new requests are read.
//!
//! Admission, CoDel's rule (`aq_http_server::overload`): every job's wait for a thread is
//! measured; when even the shortest wait of an interval was over [`TARGET`], the queue is
//! standing, and work that may be refused ([`WorkPool::admit`]) then waits only behind one
//! job per thread; the rest is refused ([`WorkError::Busy`], a 503 with `Retry-After`) until
//! an interval passes without a refusal. Outside a standing queue nothing is refused here:
//! the request cap (`--max-requests`) bounds what waits. The wait is what counts, not the
//! work: a big upload's hashing takes long without any overload, and only makes the jobs
//! behind it wait. Work that must not be refused (authentication, device reports from MQTT)
//! goes in whatever the load ([`WorkPool::run`]).
//!
//! A job that panics is contained: its caller gets [`WorkError::Lost`] and the thread lives.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use aq_http_server::overload::Detector;

/// A wait for a thread over this counts as slow (CoDel's default target).
pub const TARGET: Duration = Duration::from_millis(5);

/// How long an interval of waits is before it is judged.
const INTERVAL: Duration = Duration::from_millis(100);

/// Why a job did not run to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WorkError {
    #[error("the server is overloaded: its work queue is standing")]
    Busy,
    #[error("the job failed (panicked) or the pool is gone")]
    Lost,
}

type Job = Box<dyn FnOnce() + Send>;

/// See the module documentation.
pub struct WorkPool {
    jobs: Mutex<mpsc::Sender<(Instant, Job)>>,
    threads: usize,
    shared: Arc<Shared>,
}

struct Shared {
    /// Jobs queued or running.
    pending: AtomicUsize,
    standing: Detector,
}

impl WorkPool {
    /// Starts `threads` threads (at least one) from the calling thread.
    pub fn new(threads: usize) -> std::io::Result<WorkPool> {
        let threads = threads.max(1);
        let (jobs, rx) = mpsc::channel::<(Instant, Job)>();
        let rx = Arc::new(Mutex::new(rx));
        let shared = Arc::new(Shared {
            pending: AtomicUsize::new(0),
            standing: Detector::new(INTERVAL),
        });
        for i in 0..threads {
            let rx = rx.clone();
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("aq-work-{i}"))
                .spawn(move || {
                    loop {
                        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok((queued, job)) = next else { return };
                        let now = Instant::now();
                        shared.standing.record(now - queued, TARGET, now);
                        // The job counts itself out and sends its result; a panic drops the
                        // sender, which the caller reads as `Lost`, and is counted out here.
                        if std::panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
                            shared.pending.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                })?;
        }
        Ok(WorkPool {
            jobs: Mutex::new(jobs),
            threads,
            shared,
        })
    }

    /// True while the queue is standing (see the module documentation).
    pub fn overloaded(&self) -> bool {
        self.shared.standing.overloaded()
    }

    /// Runs `f` on the pool whatever the load.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, WorkError> {
        self.shared.pending.fetch_add(1, Ordering::Relaxed);
        self.submit(f).await
    }

    /// Runs `f` on the pool, or refuses it while the queue is standing and a job per thread
    /// already waits.
    pub async fn admit<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, WorkError> {
        let pending = self.shared.pending.fetch_add(1, Ordering::Relaxed);
        if self.overloaded() && pending >= 2 * self.threads {
            self.shared.pending.fetch_sub(1, Ordering::Relaxed);
            self.shared.standing.refused();
            return Err(WorkError::Busy);
        }
        self.submit(f).await
    }

    /// Queues `f` (already counted in `pending`) and waits for its result.
    async fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, WorkError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let shared = self.shared.clone();
        let job: Job = Box::new(move || {
            let value = f();
            // Out of the count before the caller can see the result.
            shared.pending.fetch_sub(1, Ordering::Relaxed);
            let _ = done.send(value);
        });
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send((Instant::now(), job));
        if sent.is_err() {
            self.shared.pending.fetch_sub(1, Ordering::Relaxed);
            return Err(WorkError::Lost);
        }
        result.await.map_err(|_| WorkError::Lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn jobs_run_on_the_pool_and_a_panic_is_contained() {
        runtime().block_on(async {
            let pool = WorkPool::new(1).unwrap();
            let name = pool
                .run(|| std::thread::current().name().map(str::to_owned))
                .await
                .unwrap();
            assert_eq!(name.as_deref(), Some("aq-work-0"));
            let lost = pool.admit(|| -> u32 { panic!("a job failed") }).await;
            assert_eq!(lost, Err(WorkError::Lost));
            // The thread lives on.
            assert_eq!(pool.admit(|| 7).await, Ok(7));
            assert_eq!(pool.shared.pending.load(Ordering::Relaxed), 0);
        });
    }

    /// A queue that stands for an interval refuses admitted work beyond a job per thread,
    /// never work that must run, and admits again once an interval passes without refusals.
    #[test]
    fn a_standing_queue_refuses_what_may_be_refused_until_it_drains() {
        runtime().block_on(async {
            let pool = Arc::new(WorkPool::new(1).unwrap());
            // One slow job at a time holds the thread; waiting jobs pile up behind it for
            // longer than the target, over more than an interval.
            let mut waiting = Vec::new();
            let started = Instant::now();
            while !pool.overloaded() {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "never overloaded"
                );
                for _ in 0..4 {
                    let pool = pool.clone();
                    waiting.push(tokio::spawn(async move {
                        pool.run(|| std::thread::sleep(Duration::from_millis(10)))
                            .await
                    }));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(pool.admit(|| ()).await, Err(WorkError::Busy));
            // Must-run work still runs.
            assert_eq!(pool.run(|| 1).await, Ok(1));
            for w in waiting {
                w.await.unwrap().unwrap();
            }
            // Drained: after an interval without refusals, work is admitted again.
            let started = Instant::now();
            while pool.overloaded() {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "never recovered"
                );
                assert_eq!(pool.admit(|| ()).await, Ok(()));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(pool.admit(|| 2).await, Ok(2));
        });
    }
}
