//! Dynamic batching for one model: a bounded queue, a dispatcher task that gathers requests
//! into batches (up to `max_batch` rows, waiting at most `max_delay` after the first), and
//! worker threads that run the engine and hand each request its rows of the outputs.
//!
//! A batch is gathered only when a worker is free, so while every worker is busy the queue
//! grows and the next batch is taken whole. The dispatcher waits for more requests (at most
//! `max_delay` after the first) only while other requests for the model are on their way
//! (arrived over HTTP, still being read or decoded): a lone client pays no batching delay.
//! A full queue refuses at once; a request past its deadline is dropped before it reaches
//! the engine.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aq_runtime::{Engine, Tensor};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::config::ModelSettings;
use crate::error::ApiError;
use crate::metrics::ModelMetrics;

/// The answer to one request: its outputs, or why there are none.
pub type Reply = Result<Vec<Tensor>, ApiError>;

/// One request in the queue.
struct Job {
    inputs: Vec<Tensor>,
    rows: usize,
    enqueued: Instant,
    deadline: Instant,
    reply: oneshot::Sender<Reply>,
}

impl Job {
    /// True when `other` can share a run with this job: same shapes past the batch axis.
    fn stacks_with(&self, other: &Job) -> bool {
        self.inputs
            .iter()
            .zip(&other.inputs)
            .all(|(a, b)| a.shape().get(1..) == b.shape().get(1..))
    }
}

struct Batch {
    jobs: Vec<Job>,
    /// Held while the batch runs: the dispatcher gathers a batch only for a free worker.
    _permit: OwnedSemaphorePermit,
}

/// The queue in front of one loaded model. Dropping it lets queued work finish, then stops
/// the dispatcher and the workers.
pub struct Batcher {
    tx: mpsc::Sender<Job>,
    arriving: Arc<AtomicUsize>,
    capacity: usize,
    metrics: Arc<ModelMetrics>,
    name: String,
}

impl Batcher {
    /// Starts the dispatcher (on the current tokio runtime) and the worker threads.
    pub fn start(
        name: &str,
        engine: Arc<dyn Engine>,
        settings: &ModelSettings,
        metrics: Arc<ModelMetrics>,
    ) -> std::io::Result<Batcher> {
        let capacity = settings.queue_capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let workers = settings.workers.max(1);
        let (work_tx, work_rx) = std::sync::mpsc::channel::<Batch>();
        let work_rx = Arc::new(Mutex::new(work_rx));
        for i in 0..workers {
            let engine = engine.clone();
            let metrics = metrics.clone();
            let work_rx = work_rx.clone();
            std::thread::Builder::new()
                .name(format!("aq-infer-{name}-{i}"))
                .spawn(move || worker(&*engine, &metrics, &work_rx))?;
        }
        let max_rows = if engine.signature().batchable() {
            settings.max_batch.max(1)
        } else {
            1
        };
        let arriving = Arc::new(AtomicUsize::new(0));
        let dispatcher = Dispatcher {
            engine: engine.clone(),
            rx,
            arriving: arriving.clone(),
            work_tx,
            permits: Arc::new(Semaphore::new(workers)),
            max_rows,
            max_delay: settings.max_delay,
            metrics: metrics.clone(),
        };
        tokio::spawn(dispatcher.run());
        Ok(Batcher {
            tx,
            arriving,
            capacity,
            metrics,
            name: name.to_owned(),
        })
    }

    /// Marks a request as on its way to [`Batcher::submit`] until the guard drops; the
    /// dispatcher holds a batch open only while some are.
    pub fn arriving(&self) -> Arriving {
        self.arriving.fetch_add(1, Ordering::Relaxed);
        Arriving(self.arriving.clone())
    }

    /// Queues a request (inputs already checked against the signature); the receiver gets the
    /// answer. Refuses at once when the queue is full.
    pub fn submit(
        &self,
        inputs: Vec<Tensor>,
        rows: usize,
        deadline: Instant,
    ) -> Result<oneshot::Receiver<Reply>, ApiError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            inputs,
            rows,
            enqueued: Instant::now(),
            deadline,
            reply,
        };
        match self.tx.try_send(job) {
            Ok(()) => {
                self.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
                Ok(answer)
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                Err(ApiError::queue_full(&self.name, self.capacity))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(ApiError::unavailable(format!(
                "model {:?} is shutting down",
                self.name
            ))),
        }
    }
}

/// A request between arrival and submission (see [`Batcher::arriving`]).
pub struct Arriving(Arc<AtomicUsize>);

impl Drop for Arriving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Dispatcher {
    engine: Arc<dyn Engine>,
    rx: mpsc::Receiver<Job>,
    arriving: Arc<AtomicUsize>,
    work_tx: std::sync::mpsc::Sender<Batch>,
    permits: Arc<Semaphore>,
    max_rows: usize,
    max_delay: std::time::Duration,
    metrics: Arc<ModelMetrics>,
}

impl Dispatcher {
    /// Takes the next job that is still wanted.
    fn accept(&self, job: Job) -> Option<Job> {
        self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
        if job.reply.is_closed() || Instant::now() >= job.deadline {
            // The client gave up or timed out; its handler has answered already.
            return None;
        }
        Some(job)
    }

    async fn run(mut self) {
        let mut carry: Option<Job> = None;
        loop {
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                return;
            };
            let first = match carry.take() {
                Some(job) => job,
                None => match self.rx.recv().await {
                    Some(job) => match self.accept(job) {
                        Some(job) => job,
                        None => continue,
                    },
                    None => return,
                },
            };
            // Gather no more rows than the engine runs efficiently in one go (what warm-up
            // measured), nor than the model's settings allow.
            let max_rows = self.max_rows.min(self.engine.preferred_batch()).max(1);
            let mut rows = first.rows;
            let gather_until = first.enqueued + self.max_delay;
            let mut jobs = vec![first];
            while rows < max_rows {
                let next = match self.rx.try_recv() {
                    Ok(job) => job,
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        if self.arriving.load(Ordering::Relaxed) == 0 {
                            // Nobody else is on the way: waiting would only add latency.
                            break;
                        }
                        let wait = tokio::time::timeout_at(gather_until.into(), self.rx.recv());
                        match wait.await {
                            Ok(Some(job)) => job,
                            Ok(None) | Err(_) => break,
                        }
                    }
                };
                let Some(next) = self.accept(next) else {
                    continue;
                };
                if rows + next.rows > max_rows || !jobs[0].stacks_with(&next) {
                    carry = Some(next);
                    break;
                }
                rows += next.rows;
                jobs.push(next);
            }
            let batch = Batch {
                jobs,
                _permit: permit,
            };
            if self.work_tx.send(batch).is_err() {
                return;
            }
        }
    }
}

fn worker(
    engine: &dyn Engine,
    metrics: &ModelMetrics,
    work: &Mutex<std::sync::mpsc::Receiver<Batch>>,
) {
    // Set after a run, cleared once the model's idle memory is given back.
    let mut ran = false;
    loop {
        let batch = {
            let rx = work.lock().unwrap_or_else(|e| e.into_inner());
            match rx.recv_timeout(IDLE) {
                Ok(batch) => batch,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if std::mem::take(&mut ran) {
                        engine.release_idle_memory();
                        if let Some(trim) = IDLE_HOOK.get() {
                            trim();
                        }
                    }
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
        };
        run_batch(engine, metrics, batch);
        ran = true;
    }
}

/// Called after a model's idle memory is released: the binary hands the freed memory back
/// to the system through its allocator (`aq`: glibc's `malloc_trim`). Set once, at start.
pub static IDLE_HOOK: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// A worker that got no batch for this long gives back the model's activation memory
/// ([`Engine::release_idle_memory`]): idle gateways keep only weights and plans resident.
const IDLE: std::time::Duration = std::time::Duration::from_secs(2);

fn run_batch(engine: &dyn Engine, metrics: &ModelMetrics, batch: Batch) {
    let started = Instant::now();
    let jobs: Vec<Job> = batch
        .jobs
        .into_iter()
        .filter(|j| !j.reply.is_closed() && started < j.deadline)
        .collect();
    if jobs.is_empty() {
        return;
    }
    for job in &jobs {
        metrics
            .queue_seconds
            .observe_duration(started - job.enqueued);
    }
    let rows: usize = jobs.iter().map(|j| j.rows).sum();
    let mut replies = Vec::with_capacity(jobs.len());
    let mut row_counts = Vec::with_capacity(jobs.len());
    let mut per_input: Vec<Vec<Tensor>> = Vec::new();
    for job in jobs {
        replies.push(job.reply);
        row_counts.push(job.rows);
        if per_input.is_empty() {
            per_input = job.inputs.into_iter().map(|t| vec![t]).collect();
        } else {
            for (slot, t) in per_input.iter_mut().zip(job.inputs) {
                slot.push(t);
            }
        }
    }
    let inputs: Option<Vec<Tensor>> = per_input
        .into_iter()
        .map(|mut parts| {
            if parts.len() == 1 {
                parts.pop()
            } else {
                Tensor::concat_rows(&parts)
            }
        })
        .collect();
    let result = match inputs {
        Some(inputs) => engine.run(inputs).map_err(ApiError::from),
        None => Err(ApiError::new(
            500,
            "batching_failed",
            "requests in one batch did not stack",
        )),
    };
    metrics
        .inference_seconds
        .observe_duration(started.elapsed());
    metrics.batch_size.observe(rows as f64);
    match result {
        Ok(outputs) if replies.len() == 1 => {
            if let Some(reply) = replies.pop() {
                let _ = reply.send(Ok(outputs));
            }
        }
        Ok(outputs) => {
            if outputs.iter().any(|o| o.shape().first() != Some(&rows)) {
                let error = ApiError::new(
                    500,
                    "batching_failed",
                    "an output does not follow the batch axis",
                );
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
                return;
            }
            let mut start = 0;
            for (reply, count) in replies.into_iter().zip(row_counts) {
                let mine: Option<Vec<Tensor>> =
                    outputs.iter().map(|o| o.slice_rows(start, count)).collect();
                start += count;
                let answer = mine.ok_or_else(|| {
                    ApiError::new(500, "batching_failed", "output rows out of range")
                });
                let _ = reply.send(answer);
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}
