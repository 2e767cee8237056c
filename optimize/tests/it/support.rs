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

/// The Python with the reference runtimes (tests/python/setup.sh makes it; the test command
/// runs that first and exports AQ_PYTHON).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("AQ_PYTHON") {
        return PathBuf::from(p);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/setup.sh");
    let out = Command::new("bash").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "tests/python/setup.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

pub fn python_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/python")
        .join(name)
}

/// Runs `check_tflite.py` (onnxruntime on `onnx`, LiteRT on `tflite`) and returns its report.
pub fn litert_check(onnx: &Path, tflite: &Path, tolerance: f64) -> serde_json_lite::Report {
    let out = Command::new(python())
        .arg(python_script("check_tflite.py"))
        .arg(onnx)
        .arg(tflite)
        .arg("--tolerance")
        .arg(tolerance.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "LiteRT check of {} failed: {stdout}{}",
        tflite.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json_lite::Report::parse(&stdout)
}

/// Just enough JSON reading for the checker's one-line report, without a serde dependency.
pub mod serde_json_lite {
    #[derive(Debug)]
    pub struct Report {
        pub max_abs: f64,
        pub ops: Vec<String>,
        pub raw: String,
    }

    impl Report {
        pub fn parse(line: &str) -> Report {
            let raw = line.trim().to_owned();
            let max_abs = raw
                .split("\"max_abs\": ")
                .nth(1)
                .and_then(|rest| rest.split([',', '}']).next())
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no max_abs in {raw}"));
            let ops = raw
                .split("\"ops\": [")
                .nth(1)
                .and_then(|rest| rest.split(']').next())
                .map(|list| {
                    list.split(',')
                        .map(|s| s.trim().trim_matches('"').to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            Report { max_abs, ops, raw }
        }
    }
}

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
