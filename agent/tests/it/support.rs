//! Helpers: run `aq`, fixtures, and a fingerprint of a data directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const AQ: &str = env!("CARGO_BIN_EXE_aq");

pub use aq_test_support::fixture;

/// Every committed fixture model (fixtures/models.tsv, committed = yes) plus the fetched ones.
pub fn fixture_models() -> Vec<(String, String)> {
    let tsv = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/models.tsv"),
    )
    .unwrap();
    tsv.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (cols[0].to_owned(), cols[1].to_owned())
        })
        .collect()
}

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn data(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `aq --data-dir DATA args...`.
    pub fn aq(&self, data: &str, args: &[&str]) -> Output {
        Command::new(AQ)
            .arg("--data-dir")
            .arg(self.data(data))
            .args(args)
            .env_remove("AQ_DATA_DIR")
            .output()
            .unwrap()
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, data: &str, args: &[&str]) -> String {
        let out = self.aq(data, args);
        assert!(
            out.status.success(),
            "aq {args:?} failed ({:?}):\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and expects exit code `code`; returns stderr.
    pub fn fails(&self, data: &str, args: &[&str], code: i32) -> String {
        let out = self.aq(data, args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "aq {args:?}: stderr:\n{stderr}"
        );
        assert!(
            stderr.starts_with("error: "),
            "no clear error for {args:?}: {stderr}"
        );
        assert!(
            !stderr.contains("panicked"),
            "aq panicked for {args:?}: {stderr}"
        );
        stderr
    }

    /// Gives data dir `to` a copy of data dir `from`'s trust policy.
    pub fn share_trust(&self, from: &str, to: &str) {
        std::fs::create_dir_all(self.data(to)).unwrap();
        std::fs::copy(
            self.data(from).join("trust.toml"),
            self.data(to).join("trust.toml"),
        )
        .unwrap();
    }

    /// A key pair in the test dir, trusted for every pack name in data dir `data`.
    pub fn trusted_key(&self, data: &str, name: &str) -> PathBuf {
        let key = self.path(name);
        self.ok(data, &["key", "gen", "--out", key.to_str().unwrap()]);
        self.ok(
            data,
            &["key", "trust", key.to_str().unwrap(), "--packs", "*"],
        );
        key
    }
}

/// Path and blake3 of every file under `dir` except the redb file (whose bytes redb's own
/// bookkeeping touches on open), plus the registry's full listing: equal fingerprints mean no
/// pack, tag or chunk changed.
pub fn fingerprint(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let list = Command::new(AQ)
        .arg("--data-dir")
        .arg(dir)
        .args(["--json", "pack", "list"])
        .output()
        .unwrap();
    assert!(list.status.success());
    out.insert(
        "(pack list)".into(),
        String::from_utf8(list.stdout).unwrap(),
    );
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if p.file_name().is_some_and(|n| n == "registry.redb") {
                continue;
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.insert(
                    p.strip_prefix(root).unwrap().display().to_string(),
                    blake3::hash(&bytes).to_hex().to_string(),
                );
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}
