//! A plan: the graph specialised to one set of input shapes. Every value gets its concrete
//! shape, every node a kernel built for those shapes, and every value a slot of a reusable
//! arena (slots are shared by values whose lifetimes do not overlap). Nodes whose inputs are
//! all constant run once while planning and become constants.

pub mod shapes;

use std::sync::{Arc, Mutex};

use crate::error::RunError;
use crate::graph::{Graph, Op, ValueId};
use crate::kernels::{self, BuildCtx, Kernel};
use crate::prepare::Prepared;
use crate::tensor::{DType, Data, Tensor, View, ViewMut, element_count};

/// The most elements one value of a plan may have (2^31: 8 GiB of f32).
pub const MAX_ELEMENTS: usize = 1 << 31;

/// Where a step reads a value from.
#[derive(Clone)]
pub enum Source {
    Slot(usize),
    Const(Arc<Data>),
}

pub enum StepKind {
    Kernel(Box<dyn Kernel>),
    ReadVariable(usize),
    AssignVariable(usize),
}

pub struct Step {
    pub kind: StepKind,
    pub inputs: Vec<(Source, usize)>,
    /// (slot, element count, element type)
    pub outputs: Vec<(usize, usize, DType)>,
    pub origin: String,
}

pub struct Plan {
    pub steps: Vec<Step>,

    pub slot_types: Vec<DType>,
    pub slot_sizes: Vec<usize>,
    /// Slot, element type and shape of each model input.
    pub inputs: Vec<(usize, DType, Vec<usize>)>,
    pub outputs: Vec<(Source, DType, Vec<usize>)>,
    arenas: Mutex<Vec<Vec<Data>>>,
}

/// What the planner knows of a value: its shape, and its contents when constant.
#[derive(Clone)]
struct Known {
    shape: Vec<usize>,
    constant: Option<Arc<Data>>,
}

pub fn build(
    graph: &Graph,
    prepared: &[Option<Arc<Prepared>>],
    input_shapes: &[Vec<usize>],
    max_bytes: usize,
) -> Result<Plan, RunError> {
    // Every value this plan makes (or folds) counts against `max_bytes` before it is made.
    let mut budget = Budget { left: max_bytes };
    let mut known: Vec<Option<Known>> = vec![None; graph.values.len()];
    for (id, v) in graph.values.iter().enumerate() {
        if let Some(c) = &v.constant {
            known[id] = Some(Known {
                shape: v.shape.iter().map(|d| d.unwrap_or(0)).collect(),
                constant: Some(c.clone()),
            });
        }
    }
    if input_shapes.len() != graph.inputs.len() {
        return Err(RunError::Plan(format!(
            "the model takes {} inputs, got {}",
            graph.inputs.len(),
            input_shapes.len()
        )));
    }
    for (i, (&id, shape)) in graph.inputs.iter().zip(input_shapes).enumerate() {
        let declared = &graph.values[id].shape;
        let fits = declared.len() == shape.len()
            && declared
                .iter()
                .zip(shape)
                .all(|(d, s)| d.is_none_or(|d| d == *s));
        if !fits {
            return Err(RunError::Input {
                index: i,
                reason: format!("shape {shape:?} does not fit the declared {declared:?}"),
            });
        }
        check_size(shape)?;
        budget.take(shape, graph.values[id].dtype)?;
        known[id] = Some(Known {
            shape: shape.clone(),
            constant: None,
        });
    }

    // Shapes, kernels, and folding of all-constant nodes, in node order.
    struct Planned {
        node: usize,
        kernel: Option<Box<dyn Kernel>>,
    }
    let mut planned: Vec<Planned> = Vec::new();
    for (n, node) in graph.nodes.iter().enumerate() {
        let mut in_shapes = Vec::with_capacity(node.inputs.len());
        for &i in &node.inputs {
            let k = known[i].as_ref().ok_or_else(|| {
                RunError::Plan(format!(
                    "{}: input {:?} is never computed",
                    node.origin, graph.values[i].name
                ))
            })?;
            in_shapes.push(k.shape.clone());
        }
        let refs: Vec<&[usize]> = in_shapes.iter().map(Vec::as_slice).collect();
        let consts: Vec<Option<&Data>> = node
            .inputs
            .iter()
            .map(|&i| known[i].as_ref().and_then(|k| k.constant.as_deref()))
            .collect();
        let out_shapes = shapes::infer(graph, node, &refs, &consts)
            .map_err(|e| RunError::Plan(format!("{}: {e}", node.origin)))?;
        if let Op::Shape(perm) = &node.op {
            // Known now: the input's shape (in the model's axis order).
            let given = refs.first().copied().unwrap_or_default();
            let dims: Vec<usize> = match perm {
                Some(p) => p
                    .iter()
                    .map(|&a| given.get(a).copied().unwrap_or(0))
                    .collect(),
                None => given.to_vec(),
            };
            let data = match graph.values[node.outputs[0]].dtype {
                DType::I64 => Data::I64(dims.iter().map(|d| *d as i64).collect()),
                _ => Data::I32(dims.iter().map(|d| *d as i32).collect()),
            };
            known[node.outputs[0]] = Some(Known {
                shape: vec![dims.len()],
                constant: Some(Arc::new(data)),
            });
            continue;
        }
        if out_shapes.len() != node.outputs.len() {
            return Err(RunError::Plan(format!(
                "{}: wrong number of outputs",
                node.origin
            )));
        }
        for (s, &o) in out_shapes.iter().zip(&node.outputs) {
            check_size(s)?;
            budget.take(s, graph.values[o].dtype)?;
        }
        let stateful = matches!(node.op, Op::ReadVariable(_) | Op::AssignVariable(_));
        let kernel = if stateful {
            None
        } else {
            let ctx = BuildCtx {
                graph,
                node,
                in_shapes: &in_shapes,
                out_shapes: &out_shapes,
                prepared: prepared.get(n).and_then(Option::as_ref),
            };
            Some(
                kernels::build(&ctx)
                    .map_err(|e| RunError::Plan(format!("{}: {e}", node.origin)))?,
            )
        };
        let all_const = !stateful
            && !node.inputs.is_empty()
            && node
                .inputs
                .iter()
                .all(|&i| known[i].as_ref().is_some_and(|k| k.constant.is_some()));
        if let (true, Some(kernel)) = (all_const, &kernel) {
            let inputs: Vec<Arc<Data>> = node
                .inputs
                .iter()
                .filter_map(|&i| known[i].as_ref().and_then(|k| k.constant.clone()))
                .collect();
            let views: Vec<View<'_>> = inputs.iter().map(|d| d.full_view()).collect();
            let mut outs: Vec<Data> = node
                .outputs
                .iter()
                .zip(&out_shapes)
                .map(|(&o, s)| Data::zeros(graph.values[o].dtype, element_count(s).unwrap_or(0)))
                .collect();
            {
                let mut out_views: Vec<ViewMut<'_>> =
                    outs.iter_mut().map(|d| d.view_mut(usize::MAX)).collect();
                kernel
                    .run(&views, &mut out_views)
                    .map_err(|reason| RunError::Kernel {
                        op: node.origin.clone(),
                        reason,
                    })?;
            }
            for ((&o, s), d) in node.outputs.iter().zip(out_shapes).zip(outs) {
                known[o] = Some(Known {
                    shape: s,
                    constant: Some(Arc::new(d)),
                });
            }
            continue;
        }
        for (&o, s) in node.outputs.iter().zip(out_shapes) {
            known[o] = Some(Known {
                shape: s,
                constant: None,
            });
        }
        planned.push(Planned { node: n, kernel });
    }

    // Liveness: the last step that reads each value; model outputs live to the end.
    let end = planned.len();
    let mut last_use: Vec<Option<usize>> = vec![None; graph.values.len()];
    for (s, p) in planned.iter().enumerate() {
        for &i in &graph.nodes[p.node].inputs {
            last_use[i] = Some(s);
        }
    }
    for &o in &graph.outputs {
        last_use[o] = Some(end);
    }

    // Slots: greedy reuse by element type, freed after a value's last reader.
    let mut slot_types: Vec<DType> = Vec::new();
    let mut slot_sizes: Vec<usize> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut slot_of: Vec<Option<usize>> = vec![None; graph.values.len()];
    let take_slot = |dtype: DType,
                     len: usize,
                     slot_types: &mut Vec<DType>,
                     slot_sizes: &mut Vec<usize>,
                     free: &mut Vec<usize>|
     -> usize {
        let pick = free
            .iter()
            .enumerate()
            .filter(|(_, s)| slot_types[**s] == dtype)
            .min_by_key(|(_, s)| {
                let size = slot_sizes[**s];
                if size >= len {
                    (0, size - len)
                } else {
                    (1, len - size)
                }
            })
            .map(|(i, _)| i);
        match pick {
            Some(i) => {
                let s = free.swap_remove(i);
                slot_sizes[s] = slot_sizes[s].max(len);
                s
            }
            None => {
                slot_types.push(dtype);
                slot_sizes.push(len);
                slot_types.len() - 1
            }
        }
    };
    let mut inputs = Vec::new();
    for &id in &graph.inputs {
        let k = known[id]
            .as_ref()
            .ok_or_else(|| RunError::Plan("an input has no shape".into()))?;
        let len = element_count(&k.shape).unwrap_or(0);
        let dtype = graph.values[id].dtype;
        let s = take_slot(dtype, len, &mut slot_types, &mut slot_sizes, &mut free);
        slot_of[id] = Some(s);
        inputs.push((s, dtype, k.shape.clone()));
    }
    let source = |id: ValueId,
                  slot_of: &[Option<usize>],
                  known: &[Option<Known>]|
     -> Result<(Source, usize), RunError> {
        let k = known[id]
            .as_ref()
            .ok_or_else(|| RunError::Plan("a value has no shape".into()))?;
        let len = element_count(&k.shape).unwrap_or(0);
        match (&k.constant, slot_of[id]) {
            (Some(c), _) => Ok((Source::Const(c.clone()), len)),
            (None, Some(s)) => Ok((Source::Slot(s), len)),
            (None, None) => Err(RunError::Plan(format!(
                "value {:?} has no slot",
                graph.values[id].name
            ))),
        }
    };
    let mut steps = Vec::with_capacity(planned.len());
    for (s, p) in planned.into_iter().enumerate() {
        let node = &graph.nodes[p.node];
        let step_inputs = node
            .inputs
            .iter()
            .map(|&i| source(i, &slot_of, &known))
            .collect::<Result<Vec<_>, _>>()?;
        let mut outputs = Vec::with_capacity(node.outputs.len());
        for &o in &node.outputs {
            let k = known[o]
                .as_ref()
                .ok_or_else(|| RunError::Plan("an output has no shape".into()))?;
            let len = element_count(&k.shape).unwrap_or(0);
            let dtype = graph.values[o].dtype;
            let slot = take_slot(dtype, len, &mut slot_types, &mut slot_sizes, &mut free);
            slot_of[o] = Some(slot);
            outputs.push((slot, len, dtype));
        }
        // Inputs read for the last time, and outputs nobody reads, free their slots.
        for &v in node.inputs.iter().chain(&node.outputs) {
            let done = match last_use[v] {
                Some(last) => last == s,
                None => true,
            };
            if done
                && let Some(slot) = slot_of[v]
                && !free.contains(&slot)
            {
                free.push(slot);
            }
        }
        let kind = match (&node.op, p.kernel) {
            (Op::ReadVariable(v), _) => StepKind::ReadVariable(*v),
            (Op::AssignVariable(v), _) => StepKind::AssignVariable(*v),
            (_, Some(k)) => StepKind::Kernel(k),
            (_, None) => return Err(RunError::Plan(format!("{}: no kernel", node.origin))),
        };
        steps.push(Step {
            kind,
            inputs: step_inputs,
            outputs,
            origin: node.origin.clone(),
        });
    }
    let outputs = graph
        .outputs
        .iter()
        .map(|&o| {
            let (src, _) = source(o, &slot_of, &known)?;
            let shape = known[o]
                .as_ref()
                .map(|k| k.shape.clone())
                .unwrap_or_default();
            Ok((src, graph.values[o].dtype, shape))
        })
        .collect::<Result<Vec<_>, RunError>>()?;
    Ok(Plan {
        steps,
        slot_types,
        slot_sizes,
        inputs,
        outputs,
        arenas: Mutex::new(Vec::new()),
    })
}

/// Bytes a plan may still use. Charged per value made (an upper bound on the arena, which
/// shares slots between values that do not live at once).
struct Budget {
    left: usize,
}

impl Budget {
    fn take(&mut self, shape: &[usize], dtype: DType) -> Result<(), RunError> {
        let bytes = element_count(shape).and_then(|n| n.checked_mul(dtype.size()));
        match bytes {
            Some(b) if b <= self.left => {
                self.left -= b;
                Ok(())
            }
            _ => Err(RunError::Plan(format!(
                "the model needs more than the memory limit for inputs of these shapes (a value of shape {shape:?})"
            ))),
        }
    }
}

fn check_size(shape: &[usize]) -> Result<(), RunError> {
    match element_count(shape) {
        Some(n) if n <= MAX_ELEMENTS => Ok(()),
        _ => Err(RunError::Plan(format!(
            "a value of shape {shape:?} is over the limit of 2^31 elements"
        ))),
    }
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("steps", &self.steps.len())
            .field("arena_bytes", &self.arena_bytes())
            .finish()
    }
}

/// Model state a stateful plan reads and writes.
pub type State = Vec<Data>;

impl Plan {
    /// Bytes the arena of one concurrent run holds.
    pub fn arena_bytes(&self) -> usize {
        self.slot_types
            .iter()
            .zip(&self.slot_sizes)
            .map(|(t, n)| t.size() * n)
            .sum()
    }

    fn take_arena(&self) -> Vec<Data> {
        let reused = self.arenas.lock().unwrap_or_else(|e| e.into_inner()).pop();
        reused.unwrap_or_else(|| {
            self.slot_types
                .iter()
                .zip(&self.slot_sizes)
                .map(|(t, n)| Data::zeros(*t, *n))
                .collect()
        })
    }

    /// Keeps one arena for the next run; those of concurrent runs beyond it are freed, so an
    /// idle model holds one arena per plan, not one per worker.
    fn return_arena(&self, arena: Vec<Data>) {
        let mut pool = self.arenas.lock().unwrap_or_else(|e| e.into_inner());
        if pool.is_empty() {
            pool.push(arena);
        }
    }

    /// Frees the arena kept for the next run (the next run makes a new one): an idle model
    /// holds its weights and plans, not its activations.
    pub fn release_arenas(&self) {
        self.arenas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Runs the plan on inputs of exactly the shapes it was made for.
    pub fn run(
        &self,
        inputs: &[Tensor],
        mut state: Option<&mut State>,
    ) -> Result<Vec<Tensor>, RunError> {
        let mut arena = self.take_arena();
        let result = self.run_in(&mut arena, inputs, &mut state, None);
        self.return_arena(arena);
        result
    }

    /// Runs the plan and adds each step's time to `times` (one entry per step, in order).
    pub fn run_timed(
        &self,
        inputs: &[Tensor],
        mut state: Option<&mut State>,
        times: &mut [std::time::Duration],
    ) -> Result<Vec<Tensor>, RunError> {
        let mut arena = self.take_arena();
        let result = self.run_in(&mut arena, inputs, &mut state, Some(times));
        self.return_arena(arena);
        result
    }

    fn run_in(
        &self,
        arena: &mut [Data],
        inputs: &[Tensor],
        state: &mut Option<&mut State>,
        mut times: Option<&mut [std::time::Duration]>,
    ) -> Result<Vec<Tensor>, RunError> {
        for (i, ((slot, dtype, shape), t)) in self.inputs.iter().zip(inputs).enumerate() {
            if t.dtype() != *dtype || &t.shape != shape {
                return Err(RunError::Input {
                    index: i,
                    reason: format!(
                        "expected {dtype} {shape:?}, got {} {:?}",
                        t.dtype(),
                        t.shape
                    ),
                });
            }
            copy_into(&mut arena[*slot], &t.data);
        }
        for (index, step) in self.steps.iter().enumerate() {
            let started = times.is_some().then(std::time::Instant::now);
            let mut outs: Vec<Data> = step
                .outputs
                .iter()
                .map(|(s, _, _)| std::mem::take(&mut arena[*s]))
                .collect();
            let result = {
                let views: Vec<View<'_>> = step
                    .inputs
                    .iter()
                    .map(|(src, len)| match src {
                        Source::Slot(s) => arena[*s].view(*len),
                        Source::Const(c) => c.full_view(),
                    })
                    .collect();
                let mut out_views: Vec<ViewMut<'_>> = outs
                    .iter_mut()
                    .zip(&step.outputs)
                    .map(|(d, (_, len, _))| d.view_mut(*len))
                    .collect();
                match &step.kind {
                    StepKind::Kernel(k) => k.run(&views, &mut out_views),
                    StepKind::ReadVariable(v) => match state.as_deref() {
                        Some(st) => match st.get(*v) {
                            Some(value) => copy_view(value.full_view(), &mut out_views[0]),
                            None => Err("unknown variable".into()),
                        },
                        None => Err("a stateful step without state".into()),
                    },
                    StepKind::AssignVariable(v) => match (state.as_deref_mut(), views.first()) {
                        (Some(st), Some(value)) => match st.get_mut(*v) {
                            Some(slot) => {
                                let mut target = slot.view_mut(usize::MAX);
                                copy_view(*value, &mut target)
                            }
                            None => Err("unknown variable".into()),
                        },
                        _ => Err("a stateful step without state".into()),
                    },
                }
            };
            for ((s, _, _), d) in step.outputs.iter().zip(outs) {
                arena[*s] = d;
            }
            if let (Some(times), Some(started)) = (times.as_deref_mut(), started)
                && let Some(t) = times.get_mut(index)
            {
                *t += started.elapsed();
            }
            result.map_err(|reason| RunError::Kernel {
                op: step.origin.clone(),
                reason,
            })?;
        }
        self.outputs
            .iter()
            .map(|(src, _, shape)| {
                let len = element_count(shape).unwrap_or(0);
                let data = match src {
                    Source::Slot(s) => arena[*s].prefix(len),
                    Source::Const(c) => (**c).clone(),
                };
                Ok(Tensor {
                    shape: shape.clone(),
                    data,
                })
            })
            .collect()
    }
}

fn copy_into(slot: &mut Data, data: &Data) {
    match (slot, data) {
        (Data::F32(s), Data::F32(d)) => s[..d.len()].copy_from_slice(d),
        (Data::I8(s), Data::I8(d)) => s[..d.len()].copy_from_slice(d),
        (Data::U8(s), Data::U8(d)) => s[..d.len()].copy_from_slice(d),
        (Data::I16(s), Data::I16(d)) => s[..d.len()].copy_from_slice(d),
        (Data::I32(s), Data::I32(d)) => s[..d.len()].copy_from_slice(d),
        (Data::I64(s), Data::I64(d)) => s[..d.len()].copy_from_slice(d),
        (Data::Bool(s), Data::Bool(d)) => s[..d.len()].copy_from_slice(d),
        (slot, data) => *slot = data.clone(),
    }
}

/// Copies elements of the same type (variables in and out of the arena).
pub fn copy_view(from: View<'_>, to: &mut ViewMut<'_>) -> Result<(), String> {
    macro_rules! copy {
        ($a:expr, $b:expr) => {{
            if $a.len() != $b.len() {
                return Err(format!(
                    "a variable of {} elements given {}",
                    $b.len(),
                    $a.len()
                ));
            }
            $b.copy_from_slice($a);
            Ok(())
        }};
    }
    match (from, to) {
        (View::F32(a), ViewMut::F32(b)) => copy!(a, b),
        (View::I8(a), ViewMut::I8(b)) => copy!(a, b),
        (View::U8(a), ViewMut::U8(b)) => copy!(a, b),
        (View::I16(a), ViewMut::I16(b)) => copy!(a, b),
        (View::I32(a), ViewMut::I32(b)) => copy!(a, b),
        (View::I64(a), ViewMut::I64(b)) => copy!(a, b),
        (View::Bool(a), ViewMut::Bool(b)) => copy!(a, b),
        _ => Err("element types differ".into()),
    }
}

/// A value computed at load: its contents and shape.
pub type Folded = (Arc<Data>, Vec<usize>);

/// Evaluates one node whose inputs are all constants (readers fold what they can at load:
/// an `If` condition, a computed reshape target). Returns each output's data and shape;
/// refuses outputs over `max_elements` and nodes whose kernels need prepared weights.
pub fn evaluate(
    graph: &Graph,
    node: &crate::graph::Node,
    max_elements: usize,
) -> Result<Vec<Folded>, String> {
    let mut in_shapes = Vec::with_capacity(node.inputs.len());
    let mut inputs = Vec::with_capacity(node.inputs.len());
    for &i in &node.inputs {
        let data = graph.constant(i).ok_or("an input is not a constant")?;
        in_shapes.push(graph.const_shape(i).ok_or("a constant without a shape")?);
        inputs.push(data.clone());
    }
    let refs: Vec<&[usize]> = in_shapes.iter().map(Vec::as_slice).collect();
    let consts: Vec<Option<&Data>> = inputs.iter().map(|d| Some(&**d)).collect();
    let out_shapes = shapes::infer(graph, node, &refs, &consts)?;
    for s in &out_shapes {
        if element_count(s).is_none_or(|n| n > max_elements) {
            return Err(format!("a constant of shape {s:?} is too large to fold"));
        }
    }
    if let Op::Shape(perm) = &node.op {
        let given = refs.first().copied().unwrap_or_default();
        let dims: Vec<usize> = match perm {
            Some(p) => p
                .iter()
                .map(|&a| given.get(a).copied().unwrap_or(0))
                .collect(),
            None => given.to_vec(),
        };
        let data = match graph.values.get(node.outputs[0]).map(|v| v.dtype) {
            Some(DType::I32) => Data::I32(dims.iter().map(|d| *d as i32).collect()),
            _ => Data::I64(dims.iter().map(|d| *d as i64).collect()),
        };
        return Ok(vec![(Arc::new(data), vec![dims.len()])]);
    }
    let ctx = BuildCtx {
        graph,
        node,
        in_shapes: &in_shapes,
        out_shapes: &out_shapes,
        prepared: None,
    };
    let kernel = kernels::build(&ctx)?;
    let views: Vec<View<'_>> = inputs.iter().map(|d| d.full_view()).collect();
    let mut outs: Vec<Data> = node
        .outputs
        .iter()
        .zip(&out_shapes)
        .map(|(&o, s)| Data::zeros(graph.values[o].dtype, element_count(s).unwrap_or(0)))
        .collect();
    {
        let mut out_views: Vec<ViewMut<'_>> =
            outs.iter_mut().map(|d| d.view_mut(usize::MAX)).collect();
        kernel.run(&views, &mut out_views)?;
    }
    Ok(outs.into_iter().map(Arc::new).zip(out_shapes).collect())
}
