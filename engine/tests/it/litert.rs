//! The engine against Google's LiteRT on real TFLite files: every model the mediapipe wheel
//! ships, the micro-wakeword models (stateful: many steps on one state), and Keras
//! applications in every flavour TensorFlow's converter writes, and every operator form alone
//! (float and full-integer int8) as the converter writes it. Inputs are seeded; LiteRT's
//! outputs come from `tests/python/litert_reference.py`.
//!
//! "Equal": float outputs within 1e-4 of the output's scale, or within what LiteRT gives
//! against itself (its XNNPACK path against its own kernels) where that is larger; integer
//! outputs within one quantization step. Every failure is collected, so one model does not
//! hide another.

use std::path::{Path, PathBuf};
use std::process::Command;

use aq_engine::{DType, Data, Model, Options, Tensor};

pub(crate) use aq_test_support::{python, repo};

fn keras_models() -> PathBuf {
    if let Some(p) = std::env::var_os("AQ_KERAS_MODELS") {
        return PathBuf::from(p);
    }
    aq_test_support::setup_script("keras-setup.sh")
}

#[derive(serde::Deserialize)]
struct Io {
    name: String,
    dtype: String,
    shape: Vec<usize>,
    quant: Option<(f32, i32)>,
}

#[derive(serde::Deserialize)]
struct Meta {
    inputs: Vec<Io>,
    outputs: Vec<Io>,
    /// Every tensor an operator computes (with --all).
    tensors: Vec<Io>,
    steps: usize,
    alt: bool,
}

/// How to feed a model.
#[derive(Clone, Default)]
struct Feed {
    /// Float inputs lie in this range.
    range: (f32, f32),
    /// Runs on one state (stateful models), or inputs to compare (stateless ones).
    steps: usize,
    /// Photos for image inputs, one per step.
    images: Vec<PathBuf>,
    /// Compare every intermediate tensor too, not only the outputs.
    all: bool,
}

fn dtype(name: &str) -> DType {
    match name {
        "float32" => DType::F32,
        "int8" => DType::I8,
        "uint8" => DType::U8,
        "int16" => DType::I16,
        "int32" => DType::I32,
        "int64" => DType::I64,
        "bool" => DType::Bool,
        other => panic!("unexpected dtype {other}"),
    }
}

fn read(dir: &Path, file: &str, io: &Io) -> Tensor {
    let bytes = std::fs::read(dir.join(file)).unwrap();
    Tensor::new(
        io.shape.clone(),
        Data::from_le_bytes(dtype(&io.dtype), &bytes).unwrap(),
    )
    .unwrap()
}

/// How one tensor compared, at its worst step.
struct Compared {
    /// Float: max |ours - LiteRT| / max |LiteRT|; integers: max steps apart.
    error: f64,
    /// Float outputs: LiteRT against itself, the same way.
    spread: f64,
    integer: bool,
}

impl Compared {
    fn passes(&self) -> bool {
        if self.integer {
            self.error <= 1.0
        } else {
            self.error <= 1e-4_f64.max(1.5 * self.spread)
        }
    }
}

fn floats(t: &Tensor) -> Vec<f64> {
    t.data.to_f32().iter().map(|x| f64::from(*x)).collect()
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

/// Runs `model` through the engine and LiteRT on the same inputs; returns one line per
/// model (the worst output) and whether every compared tensor passed.
fn compare(python: &Path, model: &Path, feed: &Feed) -> Result<String, String> {
    let name = model.file_name().unwrap().to_string_lossy().into_owned();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(python);
    cmd.arg(repo().join("tests/python/litert_reference.py"))
        .arg(model)
        .arg(dir.path())
        .arg(format!("--range={},{}", feed.range.0, feed.range.1))
        .arg(format!("--steps={}", feed.steps));
    for image in &feed.images {
        cmd.arg("--image").arg(image);
    }
    if feed.all {
        cmd.arg("--all");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Meta =
        serde_json::from_slice(&std::fs::read(dir.path().join("meta.json")).unwrap()).unwrap();
    let bytes = std::fs::read(model).unwrap();
    let mut graph = aq_engine::tflite::read(&bytes).map_err(|e| format!("{name}: {e}"))?;
    // Compared tensors: the outputs, then (with --all) every intermediate LiteRT computed
    // that our graph also has, by name.
    let mut compared: Vec<(&Io, String)> = meta
        .outputs
        .iter()
        .enumerate()
        .map(|(j, io)| (io, format!("out{j}")))
        .collect();
    for (i, io) in meta.tensors.iter().enumerate() {
        let produced = graph
            .nodes
            .iter()
            .flat_map(|n| n.outputs.iter())
            .find(|&&v| graph.values[v].name == io.name)
            .copied();
        if let Some(v) = produced
            && !graph.outputs.contains(&v)
        {
            graph.outputs.push(v);
            compared.push((io, format!("t{i}")));
        }
    }
    let engine =
        Model::from_graph(graph, &Options::default()).map_err(|e| format!("{name}: {e}"))?;
    let mut worst: Vec<Option<Compared>> = (0..compared.len()).map(|_| None).collect();
    let mut firsts: Vec<Vec<f64>> = Vec::new();
    let mut varies = vec![false; compared.len()];
    for step in 0..meta.steps {
        let inputs: Vec<Tensor> = meta
            .inputs
            .iter()
            .enumerate()
            .map(|(k, io)| read(dir.path(), &format!("in{k}.{step}.bin"), io))
            .collect();
        let ours = engine
            .run(&inputs)
            .map_err(|e| format!("{name} step {step}: {e}"))?;
        for (j, (io, file)) in compared.iter().enumerate() {
            let reference = read(dir.path(), &format!("{file}.{step}.bin"), io);
            let integer = io.quant.is_some() && io.dtype != "float32";
            if ours[j].shape != reference.shape || ours[j].dtype() != reference.dtype() {
                return Err(format!(
                    "{name}: {} is {} {:?}, LiteRT gives {} {:?}",
                    io.name,
                    ours[j].dtype(),
                    ours[j].shape,
                    reference.dtype(),
                    reference.shape
                ));
            }
            let (r, o) = (floats(&reference), floats(&ours[j]));
            let scale = if integer { 1.0 } else { max_abs(&r).max(1e-30) };
            let alt_file = dir
                .path()
                .join(format!("{}.{step}.bin", file.replace("out", "alt")));
            let spread = if meta.alt && file.starts_with("out") && alt_file.exists() {
                let alt = read(
                    dir.path(),
                    &format!("{}.{step}.bin", file.replace("out", "alt")),
                    io,
                );
                max_diff(&floats(&alt), &r) / scale
            } else {
                0.0
            };
            let error = max_diff(&o, &r) / scale;
            if step == 0 {
                firsts.push(r.clone());
            } else if max_diff(&firsts[j], &r) > 0.0 {
                varies[j] = true;
            }
            let c = Compared {
                error,
                spread,
                integer,
            };
            if worst[j].as_ref().is_none_or(|w| c.error > w.error) {
                worst[j] = Some(c);
            }
        }
    }
    let worst: Vec<Compared> = worst.into_iter().flatten().collect();
    let outputs = meta.outputs.len();
    let mut line = format!("{name:48}");
    for (j, w) in worst.iter().enumerate().take(outputs) {
        line += &if w.integer {
            format!(" out{j}: {} step(s)", w.error)
        } else {
            format!(
                " out{j}: {:.1e} (LiteRT vs itself {:.1e})",
                w.error, w.spread
            )
        };
    }
    if worst.len() > outputs {
        let failing: Vec<&str> = worst[outputs..]
            .iter()
            .zip(&compared[outputs..])
            .filter(|(w, _)| !w.passes())
            .map(|(_, (io, _))| io.name.as_str())
            .collect();
        line += &format!(
            " | {} intermediates, {} off",
            worst.len() - outputs,
            failing.len()
        );
        if !failing.is_empty() {
            line += &format!(": {failing:?}");
        }
    }
    // Something compared must depend on the input, or the comparison proves nothing.
    if !varies.iter().any(|v| *v) {
        return Err(format!(
            "{line}: LiteRT's tensors do not change with the input"
        ));
    }
    if worst.iter().all(Compared::passes) {
        Ok(line)
    } else {
        Err(line)
    }
}

fn check_all(cases: Vec<(PathBuf, Feed)>) {
    let python = python();
    let mut failures = Vec::new();
    for (model, feed) in cases {
        match compare(&python, &model, &feed) {
            Ok(line) => eprintln!("ok   {line}"),
            Err(line) => {
                eprintln!("FAIL {line}");
                failures.push(line);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} model(s) differ from LiteRT:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn tflite_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e} (run fixtures/fetch.sh)", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tflite"))
        .collect();
    files.sort();
    files
}

/// Custom operators only mediapipe's own runtime provides (LiteRT refuses them too).
const MEDIAPIPE_CUSTOM: &str = "face_landmark_with_attention.tflite";

#[test]
fn every_mediapipe_model_matches_litert() {
    let files = tflite_files(&repo().join("fixtures/models/mediapipe"));
    assert_eq!(files.len(), 14, "{files:?}");
    // Real photos: on noise, segmentation and detection heads give near-zero maps whose
    // relative error says nothing.
    let images = ["astronaut.png", "coffee.png"].map(|i| repo().join("fixtures/images").join(i));
    let cases = files
        .into_iter()
        .filter(|f| !f.ends_with(MEDIAPIPE_CUSTOM))
        .map(|f| {
            let feed = Feed {
                range: (0.0, 1.0),
                steps: 2,
                images: images.to_vec(),
                all: false,
            };
            (f, feed)
        })
        .collect();
    check_all(cases);
}

#[test]
fn mediapipe_custom_operators_are_refused_by_name() {
    let bytes = std::fs::read(
        repo()
            .join("fixtures/models/mediapipe")
            .join(MEDIAPIPE_CUSTOM),
    )
    .unwrap();
    let err = Model::from_tflite(&bytes, &Options::default()).unwrap_err();
    let aq_engine::LoadError::Unsupported(blockers) = &err else {
        panic!("{err:?}");
    };
    let ops: Vec<&str> = blockers.iter().map(|b| b.op.as_str()).collect();
    assert_eq!(
        ops,
        [
            "Landmarks2TransformMatrix",
            "TransformTensorBilinear",
            "TransformLandmarks"
        ],
        "{err}"
    );
    assert_eq!(blockers.iter().map(|b| b.count).sum::<usize>(), 11);
}

#[test]
fn wakeword_models_match_litert_step_by_step() {
    // Streaming models: each run adds a frame of features to the state in their variables.
    let files = tflite_files(&repo().join("fixtures/models/wakeword"));
    assert_eq!(files.len(), 4, "{files:?}");
    // Their one output (a wake-word probability) stays 0 on random features, so every tensor
    // is compared, the state variables included.
    let feed = Feed {
        range: (0.0, 1.0),
        steps: 24,
        images: Vec::new(),
        all: true,
    };
    check_all(files.into_iter().map(|f| (f, feed.clone())).collect());
}

/// The files an index of the converter's outputs names (`file` and `input_range` per
/// entry), each fed two seeded inputs in its range.
fn indexed(dir: &Path, index: &str) -> Vec<(PathBuf, Feed)> {
    #[derive(serde::Deserialize)]
    struct Entry {
        file: String,
        input_range: (f32, f32),
    }
    let index: std::collections::BTreeMap<String, Entry> =
        serde_json::from_slice(&std::fs::read(dir.join(index)).unwrap()).unwrap();
    index
        .into_values()
        .map(|e| {
            let feed = Feed {
                range: e.input_range,
                steps: 2,
                ..Feed::default()
            };
            (dir.join(e.file), feed)
        })
        .collect()
}

#[test]
fn keras_applications_from_tensorflows_converter_match_litert() {
    let cases = indexed(&keras_models(), "models.json");
    assert_eq!(cases.len(), 25, "five applications, five flavours each");
    check_all(cases);
}

/// Every operator form TensorFlow's converter writes that the engine takes, one small file
/// each (`tests/python/make_tflite_ops.py`; full-integer int8 too for the operators int8
/// models use), against LiteRT: a kernel no application reaches is still checked.
#[test]
fn every_operator_alone_matches_litert() {
    let cases = indexed(&keras_models().join("ops"), "ops.json");
    assert!(cases.len() > 90, "{} operator files", cases.len());
    check_all(cases);
}
