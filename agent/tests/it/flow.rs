//! The user's path for every fixture model: key, save, inspect, verify, export, import on a
//! second registry, unpack byte for byte; and the manifest matches the published schema.

use crate::support::*;

fn schema_validator() -> jsonschema::Validator {
    let schema: serde_json::Value = serde_json::from_str(aq_pack::MANIFEST_SCHEMA).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

#[test]
fn every_fixture_model_round_trips_through_an_aqpack() {
    let env = Env::new();
    let key = env.trusted_key("a", "release.key");
    std::fs::copy(env.data("a").join("trust.toml"), env.path("policy.toml")).unwrap();
    let validator = schema_validator();
    let models = fixture_models();
    assert!(
        models.len() >= 10,
        "expected the full fixture set, got {models:?}"
    );
    for (i, (file, format)) in models.iter().enumerate() {
        let name = format!("m{i}");
        let model = fixture(file);
        let out = env.aq(
            "a",
            &[
                "--json",
                "pack",
                "save",
                model.to_str().unwrap(),
                "--name",
                &name,
                "--version",
                "1.0.0",
                "--key",
                key.to_str().unwrap(),
                "--meta",
                "source=fixtures",
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{file}: {stderr}");
        // A model tract cannot load is saved with a warning, never a panic message.
        assert!(!stderr.contains("panicked at"), "{file}: {stderr}");
        let saved = json(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(saved["id"], format!("{name}:1.0.0"));

        let inspected = json(&env.ok("a", &["--json", "pack", "inspect", &name]));
        let manifest = &inspected["manifest"];
        let errors: Vec<String> = validator
            .iter_errors(manifest)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{file}: manifest breaks the schema: {errors:?}"
        );
        assert_eq!(manifest["model"]["format"], format.as_str(), "{file}");
        assert!(
            !manifest["model"]["inputs"].as_array().unwrap().is_empty(),
            "{file}: no inputs found"
        );
        assert!(
            !manifest["model"]["outputs"].as_array().unwrap().is_empty(),
            "{file}: no outputs found"
        );

        env.ok("a", &["pack", "verify", &format!("{name}:1.0.0")]);
        let archive = env.path(&format!("{name}.aqpack"));
        env.ok(
            "a",
            &["pack", "export", &name, "-o", archive.to_str().unwrap()],
        );
        // The second registry has no policy of its own: it is given one explicitly.
        env.ok(
            "b",
            &[
                "pack",
                "import",
                archive.to_str().unwrap(),
                "--trust",
                env.path("policy.toml").to_str().unwrap(),
            ],
        );
        let out = env.path(&format!("unpacked-{name}"));
        env.ok(
            "b",
            &[
                "pack",
                "unpack",
                &format!("{name}:1.0.0"),
                "-o",
                out.to_str().unwrap(),
            ],
        );
        assert_eq!(
            std::fs::read(out.join(file)).unwrap(),
            std::fs::read(&model).unwrap(),
            "{file} changed"
        );
    }
    let listed = json(&env.ok("b", &["--json", "pack", "list"]));
    assert_eq!(listed.as_array().unwrap().len(), models.len());
}

#[test]
fn symbolic_dims_are_recorded() {
    let env = Env::new();
    env.ok(
        "a",
        &[
            "pack",
            "save",
            fixture("ppocr_cls.onnx").to_str().unwrap(),
            "--name",
            "cls",
            "--version",
            "0.1.0",
        ],
    );
    let inspected = json(&env.ok("a", &["--json", "pack", "inspect", "cls:0.1.0"]));
    let shape = &inspected["manifest"]["model"]["inputs"][0]["shape"];
    assert!(
        shape[0].is_string(),
        "batch dim should be symbolic: {shape}"
    );
    assert_eq!(shape[1], 3);
    let human = env.ok("a", &["pack", "inspect", "cls"]);
    assert!(
        human.contains("inputs") && human.contains("x ") && human.contains("unsigned"),
        "{human}"
    );
}

#[test]
fn tags_rm_gc_and_extra_files() {
    let env = Env::new();
    let model = fixture("squeezenet_light.onnx");
    let labels = env.path("labels.txt");
    std::fs::write(&labels, "cat\ndog\n").unwrap();
    env.ok(
        "a",
        &[
            "pack",
            "save",
            model.to_str().unwrap(),
            "--name",
            "sq",
            "--version",
            "1.0.0",
            "--file",
            labels.to_str().unwrap(),
        ],
    );
    env.ok(
        "a",
        &[
            "pack",
            "save",
            fixture("resnet50_light.onnx").to_str().unwrap(),
            "--name",
            "sq",
            "--version",
            "1.1.0",
        ],
    );
    env.ok("a", &["pack", "tag", "sq:1.0.0", "prod"]);
    let inspected = json(&env.ok("a", &["--json", "pack", "inspect", "sq:prod"]));
    assert_eq!(inspected["manifest"]["version"], "1.0.0");
    assert_eq!(inspected["manifest"]["files"].as_array().unwrap().len(), 2);
    assert_eq!(
        json(&env.ok("a", &["--json", "pack", "inspect", "sq"]))["manifest"]["version"],
        "1.1.0"
    );
    env.ok("a", &["pack", "untag", "sq:prod"]);
    env.fails("a", &["pack", "inspect", "sq:prod"], 3);
    env.ok("a", &["pack", "rm", "sq:1.1.0"]);
    let gc = json(&env.ok("a", &["--json", "pack", "gc"]));
    assert!(gc["chunks_removed"].as_u64().unwrap() >= 1, "{gc}");
    let out = env.path("out");
    env.ok("a", &["pack", "unpack", "sq", "-o", out.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(out.join("labels.txt")).unwrap(),
        "cat\ndog\n"
    );
    env.fails("a", &["pack", "verify", "sq"], 4);
    env.ok("a", &["pack", "verify", "sq", "--allow-unsigned"]);
}

#[test]
fn keys() {
    let env = Env::new();
    let key = env.path("k");
    let out = json(&env.ok(
        "a",
        &["--json", "key", "gen", "--out", key.to_str().unwrap()],
    ));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let shown = json(&env.ok("a", &["--json", "key", "show", key.to_str().unwrap()]));
    assert_eq!(shown["public_key"], out["public_key"]);
    let shown_pub = json(&env.ok(
        "a",
        &["--json", "key", "show", &format!("{}.pub", key.display())],
    ));
    assert_eq!(shown_pub["key_id"], out["key_id"]);
    // Refuses to overwrite a key.
    env.fails("a", &["key", "gen", "--out", key.to_str().unwrap()], 6);
    env.fails("a", &["key", "show", "ed25519:not-a-key"], 5);
    env.fails("a", &["key", "show", "/no/such/key"], 3);
}

#[test]
fn device_profiles() {
    let env = Env::new();
    let chosen = json(&env.ok("a", &["--json", "--profile", "rpi4", "device", "profile"]));
    assert_eq!(chosen["profile"]["target"], "aarch64-unknown-linux-gnu");
    assert_eq!(chosen["reason"], "requested");
    let detected = json(&env.ok("a", &["--json", "device", "profile"]));
    assert_eq!(detected["machine"]["arch"], std::env::consts::ARCH);
    let all = json(&env.ok("a", &["--json", "device", "profile", "--list"]));
    assert!(all.as_array().unwrap().len() >= 5);
    // A profile file of one's own, and a broken one.
    let custom = env.path("custom.toml");
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../targets/rpi5.toml"),
    )
    .unwrap();
    std::fs::write(
        &custom,
        text.replace("name = \"rpi5\"", "name = \"my-board\""),
    )
    .unwrap();
    let mine = json(&env.ok(
        "a",
        &[
            "--json",
            "--profile",
            custom.to_str().unwrap(),
            "device",
            "profile",
        ],
    ));
    assert_eq!(mine["profile"]["name"], "my-board");
    std::fs::write(&custom, "format_version = 1\nname = \"x\"\n").unwrap();
    env.fails(
        "a",
        &["--profile", custom.to_str().unwrap(), "device", "profile"],
        5,
    );
    env.fails("a", &["--profile", "no-such-board", "device", "profile"], 5);
}
