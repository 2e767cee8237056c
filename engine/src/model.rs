//! A loaded model: its graph after load-time rewrites, packed weights, one plan per set of
//! input shapes (made on first use and kept), model state for stateful models, and the
//! thread pool its kernels split work over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{LoadError, RunError};
use crate::graph::{Graph, Quant};
use crate::plan::{self, Plan, State};
use crate::prepare::{self, Prepared};
use crate::tensor::{DType, Tensor};

/// How to run a model.
#[derive(Debug, Clone)]
pub struct Options {
    /// Threads one run may use. 1 runs every kernel on the calling thread.
    pub threads: usize,
    /// At most this many plans (sets of input shapes) are kept; older ones are dropped.
    pub max_plans: usize,
    /// A plan whose values need more memory than this (one run's arena) is refused: a model
    /// cannot make a device allocate what its file declares.
    pub max_arena_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            threads: 1,
            max_plans: 16,
            max_arena_bytes: 4 << 30,
        }
    }
}

/// An input or output as the model declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct IoInfo {
    pub name: String,
    pub dtype: DType,
    /// `None` axes vary.
    pub shape: Vec<Option<usize>>,
    pub quant: Option<Quant>,
}

/// A plan and the input shapes it was made for.
type PlanEntry = (Vec<Vec<usize>>, Arc<Plan>);

pub struct Model {
    graph: Graph,
    prepared: Vec<Option<Arc<Prepared>>>,
    plans: Mutex<Vec<PlanEntry>>,
    state: Option<Mutex<State>>,
    pool: Option<rayon::ThreadPool>,
    options: Options,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("nodes", &self.graph.nodes.len())
            .field("stateful", &self.state.is_some())
            .finish()
    }
}

impl Model {
    /// Reads a TFLite model and prepares it.
    pub fn from_tflite(bytes: &[u8], options: &Options) -> Result<Model, LoadError> {
        Model::from_graph(crate::tflite::read(bytes)?, options)
    }

    /// Reads an ONNX model (with imposed input shapes and values) and prepares it.
    pub fn from_onnx(
        bytes: &[u8],
        onnx: &crate::onnx::OnnxOptions,
        options: &Options,
    ) -> Result<Model, LoadError> {
        Model::from_graph(crate::onnx::read(bytes, onnx)?, options)
    }

    /// Prepares a graph a reader produced.
    pub fn from_graph(mut graph: Graph, options: &Options) -> Result<Model, LoadError> {
        crate::rewrite::optimize(&mut graph);
        let prepared = prepare::prepare(&graph).map_err(|e| {
            LoadError::Unsupported(vec![crate::error::Blocker {
                op: "weights".into(),
                reason: e,
                count: 1,
            }])
        })?;
        release_constants(&mut graph, &prepared);
        let state = (!graph.variables.is_empty()).then(|| Mutex::new(initial_state(&graph)));
        let pool = if options.threads > 1 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(options.threads)
                    .thread_name(|i| format!("aq-engine-{i}"))
                    .build()
                    .map_err(|e| {
                        LoadError::Options(format!("cannot start {} threads: {e}", options.threads))
                    })?,
            )
        } else {
            None
        };
        Ok(Model {
            graph,
            prepared,
            plans: Mutex::new(Vec::new()),
            state,
            pool,
            options: options.clone(),
        })
    }

    pub fn inputs(&self) -> Vec<IoInfo> {
        self.graph.inputs.iter().map(|&v| self.io(v)).collect()
    }

    pub fn outputs(&self) -> Vec<IoInfo> {
        self.graph.outputs.iter().map(|&v| self.io(v)).collect()
    }

    /// Zero tensors of the declared input shapes (free axes 1), for a first run that checks a
    /// model runs at all (warm-up, hostile-input tests); `None` when an input would hold more
    /// than `max_elements` elements.
    pub fn zero_inputs(&self, max_elements: usize) -> Option<Vec<Tensor>> {
        self.inputs()
            .iter()
            .map(|io| {
                let shape: Vec<usize> = io.shape.iter().map(|d| d.unwrap_or(1)).collect();
                let n = crate::tensor::element_count(&shape).filter(|n| *n <= max_elements)?;
                Tensor::new(shape, crate::tensor::Data::zeros(io.dtype, n))
            })
            .collect()
    }

    fn io(&self, v: usize) -> IoInfo {
        let value = &self.graph.values[v];
        IoInfo {
            name: value.name.clone(),
            dtype: value.dtype,
            shape: value.shape.clone(),
            quant: value.quant.clone(),
        }
    }

    /// True when runs read and write model state (resource variables): runs are then one at
    /// a time, each continuing from the state the previous one left.
    pub fn is_stateful(&self) -> bool {
        self.state.is_some()
    }

    /// Puts model state back to its initial values.
    pub fn reset_state(&self) {
        if let Some(state) = &self.state {
            *state.lock().unwrap_or_else(|e| e.into_inner()) = initial_state(&self.graph);
        }
    }

    /// The plan for these input shapes, made on first use.
    pub fn plan(&self, shapes: &[Vec<usize>]) -> Result<Arc<Plan>, RunError> {
        {
            let plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, p)) = plans.iter().find(|(s, _)| s == shapes) {
                return Ok(p.clone());
            }
        }
        let plan = Arc::new(self.in_pool(|| {
            plan::build(
                &self.graph,
                &self.prepared,
                shapes,
                self.options.max_arena_bytes,
            )
        })?);
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if plans.len() >= self.options.max_plans.max(1) {
            plans.remove(0);
        }
        plans.push((shapes.to_vec(), plan.clone()));
        Ok(plan)
    }

    /// Drops the plan made for these input shapes, if one is kept (and its arena): a caller
    /// that will not run those shapes again gives the memory back.
    pub fn forget_plan(&self, shapes: &[Vec<usize>]) {
        self.plans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(s, _)| s != shapes);
    }

    /// Frees every plan's kept arena (see [`Plan::release_arenas`]) and the kernels' scratch
    /// buffers on this thread and on the model's pool threads; plans stay.
    pub fn release_arenas(&self) {
        for (_, plan) in self.plans.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            plan.release_arenas();
        }
        crate::kernels::release_scratch();
        if let Some(pool) = &self.pool {
            pool.broadcast(|_| crate::kernels::release_scratch());
        }
    }

    /// Runs the model.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
        let plan = self.plan(&shapes)?;
        match &self.state {
            None => self.in_pool(|| plan.run(inputs, None)),
            Some(state) => {
                let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
                let state: &mut State = &mut guard;
                self.in_pool(|| plan.run(inputs, Some(state)))
            }
        }
    }

    /// Runs the model `runs` times and returns the time of each step of its plan (origin in
    /// the model file, and total time), slowest first: where a run spends its time.
    pub fn profile(
        &self,
        inputs: &[Tensor],
        runs: usize,
    ) -> Result<Vec<(String, std::time::Duration)>, RunError> {
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
        let plan = self.plan(&shapes)?;
        let mut times = vec![std::time::Duration::ZERO; plan.steps.len()];
        for _ in 0..runs {
            match &self.state {
                None => self.in_pool(|| plan.run_timed(inputs, None, &mut times))?,
                Some(state) => {
                    let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
                    let state: &mut State = &mut guard;
                    self.in_pool(|| plan.run_timed(inputs, Some(state), &mut times))?
                }
            };
        }
        let mut steps: Vec<(String, std::time::Duration)> = plan
            .steps
            .iter()
            .zip(times)
            .map(|(s, t)| (s.origin.clone(), t))
            .collect();
        steps.sort_by_key(|s| std::cmp::Reverse(s.1));
        Ok(steps)
    }

    fn in_pool<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }

    /// Names of the ops of the graph, with counts (for reports).
    pub fn op_counts(&self) -> Vec<(&'static str, usize)> {
        let mut counts: HashMap<&'static str, usize> = HashMap::new();
        for n in &self.graph.nodes {
            *counts.entry(n.op.name()).or_default() += 1;
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort();
        v
    }

    /// How the model computes, for people: the layout and the number paths of its
    /// convolutions and dense layers ("NHWC f32", "NHWC int8", "NHWC f32, hybrid int8").
    pub fn describe(&self) -> String {
        let (mut float, mut int8, mut hybrid) = (false, false, false);
        for (node, prepared) in self.graph.nodes.iter().zip(&self.prepared) {
            let Some(prepared) = prepared else { continue };
            let input = node.inputs.first().map(|&v| self.graph.values[v].dtype);
            let int_weights = match &**prepared {
                Prepared::ConvI8(_) => true,
                Prepared::Depthwise(d) => !d.i8.is_empty(),
                Prepared::ConvF32(_) => false,
            };
            match (input, int_weights) {
                (Some(DType::F32), false) => float = true,
                (Some(DType::F32), true) => hybrid = true,
                _ => int8 = true,
            }
        }
        let mut parts = Vec::new();
        if float || (!int8 && !hybrid) {
            parts.push("f32");
        }
        if int8 {
            parts.push("int8");
        }
        if hybrid {
            parts.push("hybrid int8 (dynamic range)");
        }
        format!("NHWC {}", parts.join(" + "))
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }
}

fn initial_state(graph: &Graph) -> State {
    graph
        .variables
        .iter()
        .map(|v| (*v.initial).clone())
        .collect()
}

/// Keeps one copy of the weights: constants no node reads any more (superseded by a
/// rewrite) are dropped, and weights and biases that only packed nodes read are replaced by
/// empty data of the same declared shape (their kernels read the packed copy).
fn release_constants(graph: &mut Graph, prepared: &[Option<Arc<Prepared>>]) {
    let mut read_raw = vec![false; graph.values.len()];
    let mut read_packed = vec![false; graph.values.len()];
    for (node, packed) in graph.nodes.iter().zip(prepared) {
        for (i, &v) in node.inputs.iter().enumerate() {
            if packed.is_some() && i > 0 {
                read_packed[v] = true;
            } else {
                read_raw[v] = true;
            }
        }
    }
    for &v in graph.outputs.iter().chain(&graph.inputs) {
        read_raw[v] = true;
    }
    for (v, value) in graph.values.iter_mut().enumerate() {
        let Some(data) = &value.constant else {
            continue;
        };
        if read_raw[v] || data.is_empty() {
            continue;
        }
        if read_packed[v] {
            value.constant = Some(Arc::new(crate::tensor::Data::zeros(data.dtype(), 0)));
        } else {
            value.constant = None;
        }
    }
}
