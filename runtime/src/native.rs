//! The built-in engine (`aq-engine`) behind the [`Engine`] trait: runtime tensors in and out,
//! batch plans chosen at warm-up by measured time per row, and what runs the model for
//! health and metadata.

use std::sync::Mutex;

use aq_engine::{Data, IoInfo, Model, Options};

use crate::engine::{
    Axis, BatchTiming, Engine, EngineInfo, EngineSignature, IoSpec, LoadError, RunError,
};
use crate::tensor::{DType, Tensor};

pub(crate) const ENGINE: &str = "aq";

fn dtype_of(d: aq_engine::DType) -> DType {
    match d {
        aq_engine::DType::F32 => DType::F32,
        aq_engine::DType::I8 => DType::I8,
        aq_engine::DType::U8 => DType::U8,
        aq_engine::DType::I16 => DType::I16,
        aq_engine::DType::I32 => DType::I32,
        aq_engine::DType::I64 => DType::I64,
        aq_engine::DType::Bool => DType::Bool,
    }
}

fn engine_dtype(d: DType) -> Option<aq_engine::DType> {
    Some(match d {
        DType::F32 => aq_engine::DType::F32,
        DType::I8 => aq_engine::DType::I8,
        DType::U8 => aq_engine::DType::U8,
        DType::I16 => aq_engine::DType::I16,
        DType::I32 => aq_engine::DType::I32,
        DType::I64 => aq_engine::DType::I64,
        DType::Bool => aq_engine::DType::Bool,
        _ => return None,
    })
}

/// A model loaded into the built-in engine.
pub struct NativeEngine {
    model: Model,
    signature: EngineSignature,
    batched: bool,
    max_batch: usize,
    keep_all: bool,
    /// Batch sizes with a plan worth using, ascending (1 always).
    kept: Mutex<Vec<usize>>,
    info: EngineInfo,
}

impl std::fmt::Debug for NativeEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeEngine")
            .field("signature", &self.signature)
            .finish()
    }
}

fn spec(io: &IoInfo, batched: bool) -> IoSpec {
    IoSpec {
        name: io.name.clone(),
        dtype: dtype_of(io.dtype),
        shape: io
            .shape
            .iter()
            .enumerate()
            .map(|(axis, d)| match d {
                Some(n) => Axis::Fixed(*n),
                None if axis == 0 && batched => Axis::Batch,
                None => Axis::Free(format!("{}_{axis}", io.name)),
            })
            .collect(),
    }
}

impl NativeEngine {
    pub fn new(
        model: Model,
        format: &'static str,
        max_batch: usize,
        keep_all: bool,
    ) -> NativeEngine {
        let (inputs, outputs) = (model.inputs(), model.outputs());
        // Batchable when axis 0 varies in every input and output (and runs carry no state).
        let batched = !model.is_stateful()
            && !inputs.is_empty()
            && inputs
                .iter()
                .chain(&outputs)
                .all(|io| io.shape.first() == Some(&None));
        let signature = EngineSignature {
            inputs: inputs.iter().map(|io| spec(io, batched)).collect(),
            outputs: outputs.iter().map(|io| spec(io, batched)).collect(),
        };
        let info = EngineInfo {
            engine: ENGINE,
            path: format!("{format}, {}", model.describe()),
            kernels: aq_engine::isa_name(),
            stateful: model.is_stateful(),
        };
        NativeEngine {
            model,
            signature,
            batched,
            max_batch: max_batch.max(1),
            keep_all,
            kept: Mutex::new(vec![1]),
            info,
        }
    }

    pub fn load_tflite(
        bytes: &[u8],
        max_batch: usize,
        threads: usize,
        keep_all: bool,
    ) -> Result<NativeEngine, LoadError> {
        let options = Options {
            threads: threads.max(1),
            ..Default::default()
        };
        let model = Model::from_tflite(bytes, &options).map_err(LoadError::from)?;
        let engine = NativeEngine::new(model, "tflite", max_batch, keep_all);
        // A plan for one row at load: a model that loads but cannot be planned fails now.
        engine.warm_plan(1)?;
        Ok(engine)
    }

    pub fn load_onnx(
        bytes: &[u8],
        options: &crate::load::LoadOptions,
    ) -> Result<NativeEngine, LoadError> {
        let onnx = aq_engine::onnx::OnnxOptions {
            input_shapes: options.input_shapes.clone(),
            input_values: options.input_values.clone(),
        };
        let engine_options = Options {
            threads: options.threads.max(1),
            ..Default::default()
        };
        let model = Model::from_onnx(bytes, &onnx, &engine_options).map_err(LoadError::from)?;
        let engine = NativeEngine::new(
            model,
            "onnx",
            options.max_batch,
            options.keep_all_batch_plans,
        );
        engine.warm_plan(1)?;
        Ok(engine)
    }

    fn zero_inputs(&self, rows: usize) -> Result<Vec<aq_engine::Tensor>, LoadError> {
        self.model
            .inputs()
            .iter()
            .map(|io| {
                let shape: Vec<usize> = io
                    .shape
                    .iter()
                    .enumerate()
                    .map(|(axis, d)| d.unwrap_or(if axis == 0 { rows } else { 1 }))
                    .collect();
                let n = aq_engine::element_count(&shape)
                    .ok_or_else(|| LoadError::Options("an input too large to plan".into()))?;
                aq_engine::Tensor::new(shape, Data::zeros(io.dtype, n))
                    .ok_or_else(|| LoadError::Options("an input shape that does not fit".into()))
            })
            .collect()
    }

    fn warm_plan(&self, rows: usize) -> Result<(), LoadError> {
        let inputs = self.zero_inputs(rows)?;
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
        if self
            .signature
            .inputs
            .iter()
            .any(|s| s.shape.iter().any(|a| matches!(a, Axis::Free(_))))
        {
            // Free axes: plans are made per request shape.
            return Ok(());
        }
        self.model
            .plan(&shapes)
            .map(|_| ())
            .map_err(|e| LoadError::Unsupported {
                engine: ENGINE,
                reason: e.to_string(),
            })
    }

    fn time_per_row(&self, rows: usize) -> Result<f64, LoadError> {
        let inputs = self.zero_inputs(rows)?;
        let fail = |e: aq_engine::RunError| LoadError::Unsupported {
            engine: ENGINE,
            reason: e.to_string(),
        };
        self.model.run(&inputs).map_err(fail)?;
        let mut times = Vec::new();
        let mut total = 0.0;
        while times.len() < 3 || (total < 50.0 && times.len() < 30) {
            let started = std::time::Instant::now();
            self.model.run(&inputs).map_err(fail)?;
            let ms = started.elapsed().as_secs_f64() * 1e3;
            total += ms;
            times.push(ms);
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2] / rows as f64)
    }

    fn run_once(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
        let converted = inputs
            .iter()
            .map(|t| {
                let dtype = engine_dtype(t.dtype())
                    .ok_or_else(|| RunError::Output(format!("{} inputs", t.dtype())))?;
                let data = Data::from_le_bytes(dtype, t.bytes())
                    .ok_or_else(|| RunError::Failed("input bytes".into()))?;
                aq_engine::Tensor::new(t.shape().to_vec(), data)
                    .ok_or_else(|| RunError::Failed("input shape".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = self
            .model
            .run(&converted)
            .map_err(|e| RunError::Failed(e.to_string()))?;
        outputs
            .into_iter()
            .map(|t| {
                Tensor::from_bytes(dtype_of(t.dtype()), t.shape.clone(), t.data.to_le_bytes())
                    .map_err(|e| RunError::Output(e.to_string()))
            })
            .collect()
    }
}

impl Engine for NativeEngine {
    fn backend(&self) -> &'static str {
        ENGINE
    }

    fn info(&self) -> EngineInfo {
        self.info.clone()
    }

    fn signature(&self) -> &EngineSignature {
        &self.signature
    }

    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RunError> {
        // The engine's kernels do not panic on inputs that passed the signature check; this is
        // the last line of defence should one ever do, so a worker never dies of it.
        crate::inspect::guarded(|| self.run_rows(inputs))
            .unwrap_or_else(|message| Err(RunError::Panicked(message)))
    }

    fn warm_up(&self) -> Result<Vec<BatchTiming>, LoadError> {
        let result =
            crate::inspect::guarded(|| self.warm_up_unguarded()).unwrap_or_else(|message| {
                Err(LoadError::Panicked {
                    engine: ENGINE,
                    message,
                })
            });
        // Timing the plans filled their arenas; the first request makes what it needs.
        self.model.release_arenas();
        result
    }

    fn release_idle_memory(&self) {
        self.model.release_arenas();
    }

    fn batch_sizes(&self) -> Vec<usize> {
        if self.batched {
            self.kept.lock().unwrap_or_else(|e| e.into_inner()).clone()
        } else {
            vec![1]
        }
    }
}

impl NativeEngine {
    fn run_rows(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RunError> {
        let rows = self.signature.check(&inputs)?;
        if !self.batched {
            return self.run_once(&inputs);
        }
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut start = 0;
        let mut pieces: Vec<Vec<Tensor>> = Vec::new();
        while start < rows {
            let size = kept
                .iter()
                .copied()
                .filter(|s| *s <= rows - start)
                .max()
                .unwrap_or(1);
            if start == 0 && size == rows {
                return self.run_once(&inputs);
            }
            let part = inputs
                .iter()
                .map(|t| {
                    t.slice_rows(start, size)
                        .ok_or_else(|| RunError::Failed("row slice".into()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            pieces.push(self.run_once(&part)?);
            start += size;
        }
        (0..self.signature.outputs.len())
            .map(|o| {
                let parts: Vec<Tensor> = pieces.iter().map(|p| p[o].clone()).collect();
                Tensor::concat_rows(&parts)
                    .ok_or_else(|| RunError::Output("outputs do not stack".into()))
            })
            .collect()
    }

    fn warm_up_unguarded(&self) -> Result<Vec<BatchTiming>, LoadError> {
        if !self.batched || self.max_batch < 2 {
            return Ok(Vec::new());
        }
        let sizes = crate::engine::bucket_sizes(self.max_batch);
        // With free axes besides the batch (an OCR line's width), a zero input of made-up
        // sizes says nothing about real requests (and may not even plan): keep every size,
        // and plans are made per request shape.
        let free = self
            .signature
            .inputs
            .iter()
            .any(|s| s.shape.iter().any(|a| matches!(a, Axis::Free(_))));
        if self.keep_all || free {
            *self.kept.lock().unwrap_or_else(|e| e.into_inner()) = sizes;
            return Ok(Vec::new());
        }
        let mut timings = Vec::new();
        let mut best = f64::INFINITY;
        let mut kept = Vec::new();
        for (i, size) in sizes.into_iter().enumerate() {
            let per_row = self.time_per_row(size)?;
            let keep = i == 0 || per_row < best * 0.95;
            timings.push(BatchTiming {
                size,
                ms_per_row: per_row,
                kept: keep,
            });
            if keep {
                best = per_row;
                kept.push(size);
            } else {
                // Never run at this size: its plan and arena go.
                let shapes: Vec<Vec<usize>> = self
                    .zero_inputs(size)?
                    .iter()
                    .map(|t| t.shape.clone())
                    .collect();
                self.model.forget_plan(&shapes);
                if per_row > best * 1.5 {
                    break;
                }
            }
        }
        *self.kept.lock().unwrap_or_else(|e| e.into_inner()) = kept;
        Ok(timings)
    }
}

impl From<aq_engine::LoadError> for LoadError {
    fn from(e: aq_engine::LoadError) -> LoadError {
        match e {
            aq_engine::LoadError::Unsupported(blockers) => LoadError::UnsupportedOps {
                engine: ENGINE,
                blockers,
            },
            aq_engine::LoadError::Malformed { format, reason } => {
                LoadError::Malformed { format, reason }
            }
            aq_engine::LoadError::Options(reason) => LoadError::Options(reason),
            other => LoadError::Unsupported {
                engine: ENGINE,
                reason: other.to_string(),
            },
        }
    }
}
