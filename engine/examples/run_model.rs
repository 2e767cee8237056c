//! Development aid: runs a TFLite or ONNX model on raw little-endian inputs and writes raw
//! outputs.
//! usage: run_model MODEL OUT_DIR [INPUT.bin ...] [--threads N] [--time RUNS] [--profile]
//!        [--shape NAME=D,D,..] [--value NAME=V,..]   (ONNX: imposed shapes and fixed values)
//!        [--runshape D,D,..]...                      (shapes of the inputs to run, in order)
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use aq_engine::{Data, Model, Options, Tensor};

/// This process's resident memory in MiB (Linux), for the --rss report.
fn rss() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut threads = 1;
    let mut runs = 0;
    let mut profile = false;
    let mut files = Vec::new();
    let mut run_shapes: Vec<Vec<usize>> = Vec::new();
    let mut onnx = aq_engine::onnx::OnnxOptions::default();
    let list = |s: &str| -> (String, Vec<f64>) {
        let (name, values) = s.split_once('=').unwrap();
        (
            name.to_owned(),
            values.split(',').map(|v| v.parse().unwrap()).collect(),
        )
    };
    let mut i = 3;
    while i < args.len() {
        match args[i].as_str() {
            "--threads" => {
                threads = args[i + 1].parse().unwrap();
                i += 2;
            }
            "--time" => {
                runs = args[i + 1].parse().unwrap();
                i += 2;
            }
            "--shape" => {
                let (name, dims) = list(&args[i + 1]);
                onnx.input_shapes
                    .insert(name, dims.iter().map(|d| *d as i64).collect());
                i += 2;
            }
            "--value" => {
                let (name, values) = list(&args[i + 1]);
                onnx.input_values.insert(name, values);
                i += 2;
            }
            "--runshape" => {
                run_shapes.push(args[i + 1].split(',').map(|v| v.parse().unwrap()).collect());
                i += 2;
            }
            "--profile" => {
                profile = true;
                i += 1;
            }
            f => {
                files.push(f.to_owned());
                i += 1;
            }
        }
    }
    let bytes = std::fs::read(&args[1]).unwrap();
    let t = std::time::Instant::now();
    let options = Options {
        threads,
        ..Default::default()
    };
    let loaded = if args[1].ends_with(".onnx") {
        Model::from_onnx(&bytes, &onnx, &options)
    } else {
        Model::from_tflite(&bytes, &options)
    };
    let model = match loaded {
        Ok(m) => m,
        Err(e) => {
            eprintln!("load error: {e}");
            std::process::exit(5);
        }
    };
    eprintln!("loaded in {:?}: {:?}", t.elapsed(), model.op_counts());
    eprintln!("rss after load {:.1} MiB", rss());
    let inputs: Vec<Tensor> = model
        .inputs()
        .iter()
        .enumerate()
        .map(|(k, info)| {
            let shape: Vec<usize> = run_shapes
                .get(k)
                .cloned()
                .unwrap_or_else(|| info.shape.iter().map(|d| d.unwrap_or(1)).collect());
            let Some(file) = files.get(k) else {
                // No input file: seeded noise (for timing).
                let n: usize = shape.iter().product();
                let mut rng = aq_test_support::XorShift::new(0x9E37_79B9 + k as u64);
                let mut next = move || rng.next_u64() as u32;
                let data = match info.dtype {
                    aq_engine::DType::F32 => Data::F32(
                        (0..n)
                            .map(|_| next() as f32 / u32::MAX as f32 * 2.0 - 1.0)
                            .collect(),
                    ),
                    aq_engine::DType::I8 => Data::I8((0..n).map(|_| next() as i8).collect()),
                    aq_engine::DType::U8 => Data::U8((0..n).map(|_| next() as u8).collect()),
                    other => Data::zeros(other, n),
                };
                return Tensor::new(shape, data).unwrap();
            };
            let bytes = std::fs::read(file).unwrap();
            Tensor::new(shape, Data::from_le_bytes(info.dtype, &bytes).unwrap()).unwrap()
        })
        .collect();
    let out = match model.run(&inputs) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("run error: {e}");
            std::process::exit(6);
        }
    };
    eprintln!("rss after a run {:.1} MiB", rss());
    let dir = std::path::Path::new(&args[2]);
    for (k, t) in out.iter().enumerate() {
        std::fs::write(dir.join(format!("out{k}.bin")), t.data.to_le_bytes()).unwrap();
        println!("out{k} {:?} {}", t.shape, t.dtype());
    }
    if runs > 0 {
        let mut times = Vec::new();
        for _ in 0..runs {
            let t = std::time::Instant::now();
            model.run(&inputs).unwrap();
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "median {:.3} ms min {:.3}",
            times[times.len() / 2],
            times[0]
        );
    }
    if profile {
        let steps = model.profile(&inputs, 20).unwrap();
        let total: f64 = steps.iter().map(|s| s.1.as_secs_f64()).sum();
        let mut by_op: std::collections::BTreeMap<String, f64> = Default::default();
        for (origin, t) in &steps {
            let op = origin.split(" #").next().unwrap_or("").to_owned();
            *by_op.entry(op).or_default() += t.as_secs_f64();
        }
        let mut by_op: Vec<_> = by_op.into_iter().collect();
        by_op.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (op, t) in by_op {
            println!(
                "{op:24} {:7.3} ms/run {:5.1}%",
                t / 20.0 * 1e3,
                t / total * 100.0
            );
        }
        for (origin, t) in steps.iter().take(12) {
            println!("  {origin:28} {:7.3} ms/run", t.as_secs_f64() / 20.0 * 1e3);
        }
    }
}
