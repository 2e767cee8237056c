//! Shared helpers: fixture paths, the reference-runtime Python, tiny ONNX graphs built in code.

use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message;
use tract_onnx::pb;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/models")
        .join(name)
}

pub use aq_test_support::{python, python_script};

/// A one-input, one-output ONNX graph over f32 `x` of `shape`, made of the given nodes (the
/// last node's output is `y`), with `initializers` as constants.
pub fn onnx_graph(
    shape: &[i64],
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
) -> Vec<u8> {
    let value_info = |name: &str, dims: &[i64]| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| pb::tensor_shape_proto::Dimension {
                            denotation: String::new(),
                            value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(*d)),
                        })
                        .collect(),
                }),
            })),
        }),
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(pb::GraphProto {
            name: "g".into(),
            node: nodes,
            initializer: initializers,
            input: vec![value_info("x", shape)],
            output: vec![pb::ValueInfoProto {
                name: "y".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    model.encode_to_vec()
}

pub fn node(op: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: output.into(),
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

pub fn f32_tensor(name: &str, dims: &[i64], values: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        float_data: values.to_vec(),
        ..Default::default()
    }
}

/// Writes a float32 `.npy` file.
pub fn write_npy(path: &Path, shape: &[usize], values: &[f32]) {
    std::fs::write(path, aq_optimize::npy::write_f32(shape, values)).unwrap();
}

/// `onnx` with every float weight (initializers, Constant nodes and ConstantOfShape nodes of
/// two or more values) replaced by seeded pseudo-random values of a trained network's scale:
/// He-uniform for weights, small biases, and batch-norm parameters that keep the variance
/// positive. The `*_light` fixture models fill their weights with ConstantOfShape, so their
/// outputs are the same for every input, which would hide a layout mistake; with these
/// weights they are not. A final Softmax is dropped: the graph's output is then the logits.
pub fn with_random_weights(onnx: &[u8], seed: u64) -> Vec<u8> {
    let mut model = pb::ModelProto::decode(onnx).unwrap();
    let graph = model.graph.as_mut().unwrap();
    // ConstantOfShape with a constant shape becomes a float initializer of that shape.
    let shapes: std::collections::HashMap<String, Vec<i64>> = graph
        .initializer
        .iter()
        .filter(|t| t.data_type == pb::tensor_proto::DataType::Int64 as i32)
        .map(|t| {
            let dims = if t.raw_data.is_empty() {
                t.int64_data.clone()
            } else {
                t.raw_data
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                    .collect()
            };
            (t.name.clone(), dims)
        })
        .collect();
    let mut filled = Vec::new();
    graph.node.retain(|n| {
        let dims = (n.op_type == "ConstantOfShape")
            .then(|| shapes.get(n.input.first()?))
            .flatten();
        match dims {
            Some(dims) => {
                let count = dims.iter().product::<i64>() as usize;
                filled.push(f32_tensor(&n.output[0], dims, &vec![0.0; count]));
                false
            }
            None => true,
        }
    });
    graph.initializer.extend(filled);
    // A final Softmax would flatten the comparison (saturated or near uniform); drop it so
    // the outputs are the logits.
    let output = graph
        .output
        .first()
        .map(|o| o.name.clone())
        .unwrap_or_default();
    if let Some(at) = graph
        .node
        .iter()
        .position(|n| n.op_type == "Softmax" && n.output.first() == Some(&output))
    {
        let logits = graph.node.remove(at).input[0].clone();
        for n in &mut graph.node {
            for t in n.input.iter_mut().chain(n.output.iter_mut()) {
                if *t == logits {
                    t.clone_from(&output);
                }
            }
        }
    }
    // Batch-norm parameters by role: 1 scale, 2 bias, 3 mean, 4 variance.
    let mut roles = std::collections::HashMap::new();
    for n in graph
        .node
        .iter()
        .filter(|n| n.op_type == "BatchNormalization")
    {
        for (slot, name) in n.input.iter().enumerate().skip(1) {
            roles.insert(name.clone(), slot);
        }
    }
    // Batch norms written as Mul and Add by per-channel constants (densenet121 unsqueezes
    // them first): scales and biases too.
    let unsqueezed: std::collections::HashMap<&String, &String> = graph
        .node
        .iter()
        .filter(|n| n.op_type == "Unsqueeze")
        .filter_map(|n| Some((n.output.first()?, n.input.first()?)))
        .collect();
    for n in &graph.node {
        let role = match n.op_type.as_str() {
            "Mul" => 1,
            "Add" => 2,
            _ => continue,
        };
        for name in &n.input {
            let source = unsqueezed.get(name).copied().unwrap_or(name);
            roles.entry(source.clone()).or_insert(role);
        }
    }
    let mut rng = aq_test_support::XorShift::new(seed);
    let mut uniform = move |lo: f32, hi: f32| lo + (hi - lo) * rng.unit();
    let mut randomize = |t: &mut pb::TensorProto| {
        let count: i64 = t.dims.iter().product();
        if t.data_type != pb::tensor_proto::DataType::Float as i32 || count < 2 {
            return;
        }
        let fan_in = t.dims.iter().skip(1).product::<i64>().max(1) as f32;
        let values: Vec<f32> = (0..count)
            .map(|_| match roles.get(&t.name) {
                Some(1 | 4) => uniform(0.5, 1.5),
                Some(_) => uniform(-0.2, 0.2),
                None if t.dims.len() >= 2 => uniform(-1.0, 1.0) * (6.0 / fan_in).sqrt(),
                None => uniform(-0.1, 0.1),
            })
            .collect();
        if t.raw_data.is_empty() {
            t.float_data = values;
        } else {
            t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        }
    };
    for t in &mut graph.initializer {
        randomize(t);
    }
    for n in graph.node.iter_mut().filter(|n| n.op_type == "Constant") {
        let name = n.output.first().cloned().unwrap_or_default();
        for a in &mut n.attribute {
            if let Some(t) = a.t.as_mut() {
                t.name.clone_from(&name);
                randomize(t);
            }
        }
    }
    model.encode_to_vec()
}

/// Runs `check_tflite.py` (onnxruntime on `onnx`, LiteRT on `tflite`) with `args` after the
/// two files; returns its JSON report (the check must pass).
pub fn litert_report(onnx: &Path, tflite: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(python())
        .arg(python_script("check_tflite.py"))
        .arg(onnx)
        .arg(tflite)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "LiteRT check of {} failed: {stdout}{}",
        tflite.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}
