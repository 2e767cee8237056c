//! The runtime trait every inference backend implements, the signature it exposes, and the
//! checks a request's tensors must pass before they reach a backend.

use std::fmt;

pub use aq_engine::Blocker;

use crate::tensor::{DType, Tensor};

/// One axis of an input or output as the loaded (typed) model declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Axis {
    /// Always this length.
    Fixed(usize),
    /// The batch axis (axis 0, shared by every input and output): any length of at least 1.
    Batch,
    /// Any length, fixed per request (a symbolic dim such as an image height).
    Free(String),
}

impl fmt::Display for Axis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Axis::Fixed(n) => write!(f, "{n}"),
            Axis::Batch => f.write_str("batch"),
            Axis::Free(s) => f.write_str(s),
        }
    }
}

/// An input or output of a loaded model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<Axis>,
}

impl IoSpec {
    /// The shape as the Open Inference Protocol writes it: -1 for a variable axis.
    pub fn v2_shape(&self) -> Vec<i64> {
        self.shape
            .iter()
            .map(|a| match a {
                Axis::Fixed(n) => i64::try_from(*n).unwrap_or(i64::MAX),
                Axis::Batch | Axis::Free(_) => -1,
            })
            .collect()
    }
}

/// What a loaded model takes and gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSignature {
    pub inputs: Vec<IoSpec>,
    pub outputs: Vec<IoSpec>,
}

impl EngineSignature {
    /// True when axis 0 of every input and output is the batch axis, so requests can be
    /// stacked into one run.
    pub fn batchable(&self) -> bool {
        !self.inputs.is_empty()
            && self
                .inputs
                .iter()
                .chain(&self.outputs)
                .all(|s| s.shape.first() == Some(&Axis::Batch))
    }

    /// Puts named tensors into the model's input order, refusing missing and unknown names.
    pub fn order_inputs(
        &self,
        mut named: Vec<(String, Tensor)>,
    ) -> Result<Vec<Tensor>, InputError> {
        if let Some((extra, _)) = named
            .iter()
            .find(|(n, _)| !self.inputs.iter().any(|s| &s.name == n))
        {
            return Err(InputError::Unexpected {
                name: extra.clone(),
                expected: self.inputs.iter().map(|s| s.name.clone()).collect(),
            });
        }
        let mut ordered = Vec::with_capacity(self.inputs.len());
        for spec in &self.inputs {
            let position = named
                .iter()
                .position(|(n, _)| n == &spec.name)
                .ok_or_else(|| InputError::Missing {
                    name: spec.name.clone(),
                })?;
            let (_, tensor) = named.swap_remove(position);
            if named.iter().any(|(n, _)| n == &spec.name) {
                return Err(InputError::Duplicate {
                    name: spec.name.clone(),
                });
            }
            ordered.push(tensor);
        }
        Ok(ordered)
    }

    /// Checks ordered inputs against the signature: element types, ranks, fixed axes, one
    /// batch size across inputs, and at least one row. Returns the number of rows (1 for a
    /// model without a batch axis).
    pub fn check(&self, inputs: &[Tensor]) -> Result<usize, InputError> {
        if inputs.len() != self.inputs.len() {
            return Err(InputError::Count {
                expected: self.inputs.len(),
                got: inputs.len(),
            });
        }
        let mut rows: Option<usize> = None;
        for (spec, t) in self.inputs.iter().zip(inputs) {
            if t.dtype() != spec.dtype {
                return Err(InputError::DType {
                    name: spec.name.clone(),
                    expected: spec.dtype,
                    got: t.dtype(),
                });
            }
            let shape_error = || InputError::Shape {
                name: spec.name.clone(),
                expected: spec.shape.clone(),
                got: t.shape().to_vec(),
            };
            if t.shape().len() != spec.shape.len() {
                return Err(shape_error());
            }
            for (axis, &len) in spec.shape.iter().zip(t.shape()) {
                match axis {
                    Axis::Fixed(n) if *n != len => return Err(shape_error()),
                    Axis::Batch if len == 0 => return Err(shape_error()),
                    Axis::Batch => match rows {
                        Some(r) if r != len => {
                            return Err(InputError::BatchMismatch {
                                name: spec.name.clone(),
                                expected: r,
                                got: len,
                            });
                        }
                        _ => rows = Some(len),
                    },
                    Axis::Free(_) if len == 0 => return Err(shape_error()),
                    _ => {}
                }
            }
        }
        Ok(rows.unwrap_or(1))
    }
}

/// Why a request's tensors do not fit the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("missing input {name:?}")]
    Missing { name: String },
    #[error("unknown input {name:?}; the model's inputs are {expected:?}")]
    Unexpected { name: String, expected: Vec<String> },
    #[error("input {name:?} is given twice")]
    Duplicate { name: String },
    #[error("the model takes {expected} inputs, got {got}")]
    Count { expected: usize, got: usize },
    #[error("input {name:?} must be {expected}, got {got}")]
    DType {
        name: String,
        expected: DType,
        got: DType,
    },
    #[error(
        "input {name:?} has shape {got:?}; the model expects [{}]",
        display_axes(expected)
    )]
    Shape {
        name: String,
        expected: Vec<Axis>,
        got: Vec<usize>,
    },
    #[error("input {name:?} has batch size {got}, other inputs have {expected}")]
    BatchMismatch {
        name: String,
        expected: usize,
        got: usize,
    },
}

fn display_axes(axes: &[Axis]) -> String {
    axes.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a model could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// Every operator or feature that stops the model, at once.
    #[error(
        "the model uses operators the {engine} engine does not run: {}",
        list(blockers)
    )]
    UnsupportedOps {
        engine: &'static str,
        blockers: Vec<Blocker>,
    },
    #[error("not a valid {format} model: {reason}")]
    Malformed {
        format: &'static str,
        reason: String,
    },
    #[error("the {engine} engine cannot load this model: {reason}")]
    Unsupported {
        engine: &'static str,
        reason: String,
    },
    #[error(
        "the {engine} engine cannot load this model: it failed an internal check (a malformed file, or a case it does not handle): {message}"
    )]
    Panicked {
        engine: &'static str,
        message: String,
    },
    #[error("bad load option: {0}")]
    Options(String),
}

fn list(blockers: &[Blocker]) -> String {
    blockers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl LoadError {
    /// The operators (or features) that stop the model, when that is why it did not load.
    pub fn blockers(&self) -> &[Blocker] {
        match self {
            LoadError::UnsupportedOps { blockers, .. } => blockers,
            _ => &[],
        }
    }
}

/// Which engine runs a model, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    /// "aq" (the built-in engine) or "tract".
    pub engine: &'static str,
    /// The format and number path: "tflite, NHWC f32", "tflite, NHWC int8", "onnx, tract
    /// (NCHW)".
    pub path: String,
    /// The SIMD kernels in use on this CPU.
    pub kernels: String,
    /// Runs carry state from one to the next (resource variables).
    pub stateful: bool,
}

/// Why a run failed after its inputs passed [`EngineSignature::check`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("inference failed: {0}")]
    Failed(String),
    #[error("the engine panicked during inference: {0}")]
    Panicked(String),
    #[error("the model gave an output of a type we cannot return: {0}")]
    Output(String),
}

/// A loaded model, ready to run. Implementations are shared between worker threads.
pub trait Engine: Send + Sync {
    /// The backend's name, for logs and metrics ("aq", "tract").
    fn backend(&self) -> &'static str;

    /// Which engine runs the model and how.
    fn info(&self) -> EngineInfo;

    fn signature(&self) -> &EngineSignature;

    /// Runs inputs in signature order. For a batchable model the inputs may carry any number
    /// of rows; the engine splits them across the plans it has built.
    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RunError>;

    /// Builds whatever the engine defers after load (plans for larger batch sizes), keeping
    /// only those that pay: returns what it measured. Called once, off the request path;
    /// runs before it finishes still succeed, one row at a time.
    fn warm_up(&self) -> Result<Vec<BatchTiming>, LoadError> {
        Ok(Vec::new())
    }

    /// Batch sizes the engine runs in one go now (1 at least); larger runs are split.
    fn batch_sizes(&self) -> Vec<usize> {
        vec![1]
    }

    /// The largest batch size worth gathering requests for.
    fn preferred_batch(&self) -> usize {
        self.batch_sizes().into_iter().max().unwrap_or(1)
    }

    /// Gives back memory that only running needs (activation buffers); called when the model
    /// has been idle a while. The next run rebuilds it (a page-fault cost, no re-planning).
    fn release_idle_memory(&self) {}
}

/// Powers of two below `max`, then `max`.
pub(crate) fn bucket_sizes(max: usize) -> Vec<usize> {
    let max = max.max(1);
    let mut sizes: Vec<usize> = std::iter::successors(Some(1usize), |b| b.checked_mul(2))
        .take_while(|b| *b < max)
        .collect();
    sizes.push(max);
    sizes
}

/// What warm-up measured for one batch size.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchTiming {
    pub size: usize,
    pub ms_per_row: f64,
    /// Whether the plan is kept (it beat every smaller batch size per row).
    pub kept: bool,
}
