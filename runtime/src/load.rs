//! Which engine runs a model: the built-in engine (`aq-engine`) for TFLite and ONNX, with
//! tract as the fallback for ONNX models that use an operator the built-in engine does not
//! have. [`load`] gives the engine, [`check`] says whether this build can run a model, with which engine and
//! path, and otherwise every operator or feature that stops it (the same list a failed load
//! gives).

use std::collections::HashMap;

use aq_pack::manifest::ModelFormat;

use crate::engine::{Blocker, Engine, EngineInfo, LoadError};
use crate::inspect::guarded;
use crate::native::NativeEngine;
use crate::tract_engine::TractEngine;

/// The engines this build has, by the names [`EngineInfo::engine`] gives.
pub const ENGINES: &[&str] = &[crate::native::ENGINE, "tract"];

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The largest number of rows one run takes; plans are built for the powers of two up to
    /// it (and for it). Ignored for models without a batch axis. 0 means 1.
    pub max_batch: usize,
    /// Shapes to impose on inputs, by name; -1 leaves an axis variable (ONNX models that
    /// leave axes unknown).
    pub input_shapes: HashMap<String, Vec<i64>>,
    /// Fixed values by input name (ONNX): the input becomes a constant, so what depends only
    /// on it (an `If` on a sample rate) is decided at load. Built-in engine only.
    pub input_values: HashMap<String, Vec<f64>>,
    /// Keep every batch plan [`Engine::warm_up`] builds, without timing them against
    /// batch 1 (tests use it to exercise the split across plans).
    pub keep_all_batch_plans: bool,
    /// Threads one run may use (the built-in engine); 0 means 1.
    pub threads: usize,
}

/// Loads a model into the engine that runs its format.
pub fn load(
    bytes: &[u8],
    format: ModelFormat,
    options: &LoadOptions,
) -> Result<Box<dyn Engine>, LoadError> {
    match format {
        ModelFormat::Tflite => {
            if !options.input_shapes.is_empty() || !options.input_values.is_empty() {
                return Err(LoadError::Options(
                    "input shapes and values cannot be imposed on TFLite models (their shapes are in the file)".into(),
                ));
            }
            let engine = match guarded(|| {
                NativeEngine::load_tflite(
                    bytes,
                    options.max_batch,
                    options.threads,
                    options.keep_all_batch_plans,
                )
            }) {
                Ok(result) => result?,
                Err(message) => {
                    return Err(LoadError::Panicked {
                        engine: crate::native::ENGINE,
                        message,
                    });
                }
            };
            Ok(Box::new(engine))
        }
        ModelFormat::Onnx => {
            let native = match guarded(|| NativeEngine::load_onnx(bytes, options)) {
                Ok(result) => result,
                Err(message) => Err(LoadError::Panicked {
                    engine: crate::native::ENGINE,
                    message,
                }),
            };
            match native {
                Ok(engine) => Ok(Box::new(engine)),
                // An operator the built-in engine lacks: tract may have it (it cannot take
                // fixed input values).
                Err(e @ (LoadError::UnsupportedOps { .. } | LoadError::Unsupported { .. }))
                    if options.input_values.is_empty() =>
                {
                    match TractEngine::load(bytes, options) {
                        Ok(tract) => Ok(Box::new(tract)),
                        Err(_) => Err(e),
                    }
                }
                Err(e) => Err(e),
            }
        }
    }
}

/// Whether this build can run a model.
#[derive(Debug, Clone)]
pub struct Coverage {
    pub format: ModelFormat,
    /// The engine and path that run it, when one does.
    pub runs: Option<EngineInfo>,
    /// Everything that stops it (empty when it runs).
    pub blockers: Vec<Blocker>,
    /// Why it does not run, when that is not a list of operators (a malformed file, an
    /// input shape it cannot plan for).
    pub reason: Option<String>,
}

/// Loads the model to find out whether it runs; returns what ran it or what stopped it.
pub fn check(bytes: &[u8], format: ModelFormat, options: &LoadOptions) -> Coverage {
    match load(bytes, format, options) {
        Ok(engine) => Coverage {
            format,
            runs: Some(engine.info()),
            blockers: Vec::new(),
            reason: None,
        },
        Err(e) => Coverage {
            format,
            runs: None,
            blockers: e.blockers().to_vec(),
            reason: e.blockers().is_empty().then(|| e.to_string()),
        },
    }
}
