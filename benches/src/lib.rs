//! Shared helpers for the benchmarks: generated model files, and running `aq` in-process.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

pub mod load;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use prost::Message;
use tract_onnx::pb;

/// Runs `aq` in-process with `args` and panics on a non-zero exit.
pub fn aq(data_dir: &Path, args: &[&str]) {
    let mut full = vec!["aq", "--quiet", "--data-dir", data_dir.to_str().unwrap()];
    full.extend_from_slice(args);
    let code = aq_agent::run(full.clone());
    assert_eq!(
        format!("{code:?}"),
        format!("{:?}", std::process::ExitCode::SUCCESS),
        "aq {full:?} failed"
    );
}

/// Runs `aq --json` in-process; returns nothing (the JSON goes to stdout) and panics on failure.
pub fn time<F: FnMut()>(mut f: F) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// Median of a few durations.
pub fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[d.len() / 2]
}

/// Weights that look like trained float32 weights: small normal-ish values, so they compress as
/// real weights do (sign and exponent bits repeat, mantissas do not).
pub fn weights(count: usize, seed: u64) -> Vec<u8> {
    let mut rng = aq_test_support::XorShift::new(seed);
    let mut out = Vec::with_capacity(count * 4);
    for _ in 0..count {
        let mut sum = 0.0f32;
        for _ in 0..4 {
            sum += rng.unit() - 0.5;
        }
        out.extend_from_slice(&(sum * 0.05).to_le_bytes());
    }
    out
}

/// A valid ONNX model `y = x + W` whose initializer W holds `bytes` bytes of float weights.
pub fn big_onnx(bytes: usize) -> Vec<u8> {
    let n = bytes / 4;
    let tensor_type = |name: &str| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: vec![pb::tensor_shape_proto::Dimension {
                        denotation: String::new(),
                        value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(n as i64)),
                    }],
                }),
            })),
        }),
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        producer_name: "aq-benches".into(),
        graph: Some(pb::GraphProto {
            name: "big".into(),
            node: vec![pb::NodeProto {
                input: vec!["x".into(), "W".into()],
                output: vec!["y".into()],
                name: "add".into(),
                op_type: "Add".into(),
                ..Default::default()
            }],
            initializer: vec![pb::TensorProto {
                dims: vec![n as i64],
                data_type: pb::tensor_proto::DataType::Float as i32,
                name: "W".into(),
                raw_data: weights(n, 7),
                ..Default::default()
            }],
            input: vec![tensor_type("x")],
            output: vec![tensor_type("y")],
            ..Default::default()
        }),
        ..Default::default()
    };
    model.encode_to_vec()
}

/// The byte ranges of every float initializer's raw data in an ONNX file, largest first.
pub fn initializer_ranges(file: &[u8]) -> Vec<(String, std::ops::Range<usize>)> {
    let model = pb::ModelProto::decode(file).expect("valid ONNX");
    let graph = model.graph.expect("a graph");
    let mut out = Vec::new();
    for t in graph.initializer {
        if t.raw_data.len() < 64 || t.data_type != pb::tensor_proto::DataType::Float as i32 {
            continue;
        }
        // Raw data is stored verbatim; find where (it must occur exactly once).
        let pos = find(file, &t.raw_data).expect("initializer bytes appear in the file");
        out.push((t.name.clone(), pos..pos + t.raw_data.len()));
    }
    out.sort_by_key(|(_, r)| std::cmp::Reverse(r.len()));
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Adds a small change to every float in `range` (what fine-tuning one tensor does).
pub fn perturb(file: &mut [u8], range: std::ops::Range<usize>) {
    for chunk in file[range].chunks_exact_mut(4) {
        let v = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        chunk.copy_from_slice(&(v * 1.01 + 1e-4).to_le_bytes());
    }
}

/// Sum of file sizes under `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            total += if p.is_dir() {
                dir_size(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            };
        }
    }
    total
}

/// An MLP as ONNX: `depth` layers of MatMul (`width` x `width`), bias Add and Relu, with a
/// symbolic batch axis `N`: input `x` [N, width], output `y` [N, width]. Matmul-bound, the kind
/// of model batching helps (a batch reads the weights once for all its rows).
pub fn mlp_onnx(width: usize, depth: usize) -> Vec<u8> {
    let value = |name: &str| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: vec![
                        pb::tensor_shape_proto::Dimension {
                            denotation: String::new(),
                            value: Some(pb::tensor_shape_proto::dimension::Value::DimParam(
                                "N".into(),
                            )),
                        },
                        pb::tensor_shape_proto::Dimension {
                            denotation: String::new(),
                            value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(
                                width as i64,
                            )),
                        },
                    ],
                }),
            })),
        }),
        ..Default::default()
    };
    let mut nodes = Vec::new();
    let mut initializers = Vec::new();
    let mut current = "x".to_owned();
    for layer in 0..depth {
        let (w, b, mm, add, out) = (
            format!("w{layer}"),
            format!("b{layer}"),
            format!("mm{layer}"),
            format!("add{layer}"),
            if layer + 1 == depth {
                "y".to_owned()
            } else {
                format!("h{layer}")
            },
        );
        // Scaled so activations stay near unit size through the layers.
        let scale = 1.0 / (width as f32).sqrt() / 0.05 / 2.0;
        let raw: Vec<u8> = weights(width * width, 11 + layer as u64)
            .chunks_exact(4)
            .flat_map(|c| (f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * scale).to_le_bytes())
            .collect();
        initializers.push(pb::TensorProto {
            dims: vec![width as i64, width as i64],
            data_type: pb::tensor_proto::DataType::Float as i32,
            name: w.clone(),
            raw_data: raw,
            ..Default::default()
        });
        initializers.push(pb::TensorProto {
            dims: vec![width as i64],
            data_type: pb::tensor_proto::DataType::Float as i32,
            name: b.clone(),
            raw_data: weights(width, 101 + layer as u64),
            ..Default::default()
        });
        nodes.push(pb::NodeProto {
            input: vec![current.clone(), w],
            output: vec![mm.clone()],
            name: mm.clone(),
            op_type: "MatMul".into(),
            ..Default::default()
        });
        nodes.push(pb::NodeProto {
            input: vec![mm, b],
            output: vec![add.clone()],
            name: add.clone(),
            op_type: "Add".into(),
            ..Default::default()
        });
        nodes.push(pb::NodeProto {
            input: vec![add],
            output: vec![out.clone()],
            name: format!("relu{layer}"),
            op_type: "Relu".into(),
            ..Default::default()
        });
        current = out;
    }
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        producer_name: "aq-benches".into(),
        graph: Some(pb::GraphProto {
            name: "mlp".into(),
            node: nodes,
            initializer: initializers,
            input: vec![value("x")],
            output: vec![value("y")],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs a setup script of the repository (`tests/python/setup.sh`, ...) and returns the path
/// it prints.
pub fn script_output(script: &str) -> PathBuf {
    let out = Command::new("bash")
        .arg(repo_root().join(script))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Builds the release `aq` and `aq-sync` beside the running bench (target/release) and
/// returns their paths.
pub fn release_binaries() -> (PathBuf, PathBuf) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "aq-agent",
            "-p",
            "aq-sync-server",
            "--bins",
        ])
        .current_dir(repo_root())
        .status()
        .unwrap();
    assert!(status.success(), "building aq and aq-sync failed");
    // target/release/deps/BENCH-HASH -> target/release
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_owned();
    (dir.join("aq"), dir.join("aq-sync"))
}
