//! The set of served models. Each name has a slot holding the loaded model now in service;
//! a reload builds the new model completely (engine, plans, batcher) before it swaps the
//! slot, and requests already queued on the old one finish there, so a swap fails nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use aq_pack::manifest::ModelFormat;
use aq_runtime::{Engine, LoadError, LoadOptions};

use crate::batcher::Batcher;
use crate::config::ModelSettings;
use crate::metrics::ModelMetrics;
use crate::spawner::Spawner;

/// A model to serve: its bytes and where they came from.
#[derive(Clone)]
pub struct ModelSource {
    /// The name clients use in URLs.
    pub name: String,
    pub version: String,
    pub format: ModelFormat,
    pub bytes: Arc<Vec<u8>>,
    /// For people: a pack reference with its digest, or a file path.
    pub origin: String,
    pub settings: ModelSettings,
}

impl std::fmt::Debug for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSource")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("format", &self.format)
            .field("bytes", &self.bytes.len())
            .field("origin", &self.origin)
            .finish()
    }
}

/// A model in service.
pub struct Loaded {
    /// Set once warm-up (batch plans and their calibration) has finished.
    pub warm: Arc<std::sync::atomic::AtomicBool>,
    pub version: String,
    pub origin: String,
    pub format: ModelFormat,
    pub engine: Arc<dyn Engine>,
    pub batcher: Batcher,
    pub settings: ModelSettings,
    pub loaded_at: SystemTime,
}

/// One served name.
pub struct Slot {
    pub name: String,
    current: RwLock<Arc<Loaded>>,
    pub metrics: Arc<ModelMetrics>,
}

impl Slot {
    pub fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Why a model could not be put in service.
#[derive(Debug, thiserror::Error)]
pub enum ServeModelError {
    #[error("model {name:?} ({origin}): {source}")]
    Load {
        name: String,
        origin: String,
        #[source]
        source: LoadError,
    },
    #[error("model {name:?}: failed to start its workers: {source}")]
    Workers {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("model {0:?} is served twice")]
    Duplicate(String),
    #[error("model {0:?} is not served")]
    Unknown(String),
    #[error("model {0:?}: the loader thread failed")]
    Join(String),
}

/// Loads a model (on a blocking thread) and starts its batcher.
async fn load(
    source: &ModelSource,
    metrics: Arc<ModelMetrics>,
    spawner: &Spawner,
) -> Result<Loaded, ServeModelError> {
    let options = LoadOptions {
        max_batch: source.settings.max_batch,
        input_shapes: source.settings.input_shapes.clone(),
        input_values: source.settings.input_values.clone(),
        keep_all_batch_plans: !source.settings.calibrate_batches,
        threads: source.settings.threads_per_run(),
    };
    let bytes = source.bytes.clone();
    let format = source.format;
    let started = std::time::Instant::now();
    // On a thread from the spawner: the engine's own threads, started by the load, then get
    // the workers' priority.
    let (loaded, engine) = tokio::sync::oneshot::channel();
    spawner
        .spawn(format!("aq-load-{}", source.name), move || {
            let _ = loaded.send(aq_runtime::load(&bytes, format, &options));
        })
        .map_err(|e| ServeModelError::Workers {
            name: source.name.clone(),
            source: e,
        })?;
    let engine = engine
        .await
        .map_err(|_| ServeModelError::Join(source.name.clone()))?
        .map_err(|e| ServeModelError::Load {
            name: source.name.clone(),
            origin: source.origin.clone(),
            source: e,
        })?;
    let info = engine.info();
    tracing::info!(
        model = %source.name,
        version = %source.version,
        origin = %source.origin,
        engine = info.engine,
        path = %info.path,
        kernels = %info.kernels,
        batchable = engine.signature().batchable(),
        load_ms = started.elapsed().as_millis() as u64,
        "model loaded"
    );
    let engine: Arc<dyn Engine> = Arc::from(engine);
    // Plans for larger batches are built off the request path; until then runs use the
    // plans that exist.
    let warming = engine.clone();
    let name = source.name.clone();
    let warm = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let warm_flag = warm.clone();
    let warm_up = move || {
        let timed = warming.warm_up();
        if let Some(trim) = crate::batcher::IDLE_HOOK.get() {
            trim();
        }
        match timed {
            Ok(timings) if timings.is_empty() => {}
            Ok(timings) => {
                let measured: Vec<String> = timings
                    .iter()
                    .map(|t| {
                        let dropped = if t.kept { "" } else { " (dropped)" };
                        format!("{}: {:.3} ms/row{dropped}", t.size, t.ms_per_row)
                    })
                    .collect();
                tracing::info!(
                    model = %name,
                    batch_sizes = ?warming.batch_sizes(),
                    measured = %measured.join(", "),
                    "batch plans calibrated"
                );
            }
            Err(e) => tracing::warn!(
                model = %name,
                error = %e,
                "building batch plans failed; serving batch 1 plans only"
            ),
        }
        warm_flag.store(true, std::sync::atomic::Ordering::Release);
    };
    // Timed at the workers' priority, as they will run.
    spawner
        .spawn(format!("aq-warm-{}", source.name), warm_up)
        .map_err(|e| ServeModelError::Workers {
            name: source.name.clone(),
            source: e,
        })?;
    let batcher = Batcher::start(
        &source.name,
        engine.clone(),
        &source.settings,
        metrics,
        spawner,
    )
    .map_err(|e| ServeModelError::Workers {
        name: source.name.clone(),
        source: e,
    })?;
    Ok(Loaded {
        warm,
        version: source.version.clone(),
        origin: source.origin.clone(),
        format: source.format,
        engine,
        batcher,
        settings: source.settings.clone(),
        loaded_at: SystemTime::now(),
    })
}

/// Every served model, by name.
pub struct ModelSet {
    slots: RwLock<BTreeMap<String, Arc<Slot>>>,
    /// Starts every model's workers, at the priority of the thread that made the set.
    spawner: Spawner,
}

impl ModelSet {
    /// An empty set; its workers will run at the calling thread's priority.
    pub fn new() -> std::io::Result<ModelSet> {
        Ok(ModelSet {
            slots: RwLock::default(),
            spawner: Spawner::new()?,
        })
    }

    pub async fn add(&self, source: &ModelSource) -> Result<(), ServeModelError> {
        if self.get(&source.name).is_some() {
            return Err(ServeModelError::Duplicate(source.name.clone()));
        }
        let metrics = Arc::new(ModelMetrics::default());
        let loaded = load(source, metrics.clone(), &self.spawner).await?;
        let slot = Arc::new(Slot {
            name: source.name.clone(),
            current: RwLock::new(Arc::new(loaded)),
            metrics,
        });
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        if slots.contains_key(&source.name) {
            return Err(ServeModelError::Duplicate(source.name.clone()));
        }
        slots.insert(source.name.clone(), slot);
        Ok(())
    }

    /// Loads `source` and swaps it in for the model of the same name. On failure the old
    /// model stays in service.
    pub async fn reload(&self, source: &ModelSource) -> Result<(), ServeModelError> {
        let slot = self
            .get(&source.name)
            .ok_or_else(|| ServeModelError::Unknown(source.name.clone()))?;
        match load(source, slot.metrics.clone(), &self.spawner).await {
            Ok(loaded) => {
                let old = {
                    let mut current = slot.current.write().unwrap_or_else(|e| e.into_inner());
                    std::mem::replace(&mut *current, Arc::new(loaded))
                };
                slot.metrics
                    .reloads_ok
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(model = %source.name, from = %old.version, to = %source.version, "model swapped");
                Ok(())
            }
            Err(e) => {
                slot.metrics
                    .reloads_failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Serves `source`: a reload when its name is served, an addition otherwise.
    pub async fn put(&self, source: &ModelSource) -> Result<(), ServeModelError> {
        if self.get(&source.name).is_some() {
            self.reload(source).await
        } else {
            self.add(source).await
        }
    }

    /// Stops serving a name; requests already queued on it finish.
    pub fn remove(&self, name: &str) -> bool {
        self.slots
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .is_some()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Slot>> {
        self.slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<Slot>> {
        self.slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}
