//! Hostile and broken input: each case exits non-zero with a clear message and leaves every
//! byte of the registry as it was.

use aq_pack::Digest;
use aq_pack::archive::ArchiveWriter;
use aq_pack::chunk::{chunk_stream, compress};
use aq_pack::keys::SecretKey;
use aq_pack::signature::{SignatureEnvelope, SignedManifest};

use crate::support::*;

/// A registry "a" holding one signed pack, a trusted key, and that pack's archive.
struct Setup {
    env: Env,
    key: SecretKey,
    archive: Vec<u8>,
}

fn setup() -> Setup {
    let env = Env::new();
    let key_path = env.trusted_key("a", "k");
    env.ok(
        "a",
        &[
            "pack",
            "save",
            fixture("densenet121_light.onnx").to_str().unwrap(),
            "--name",
            "base",
            "--version",
            "1.0.0",
            "--key",
            key_path.to_str().unwrap(),
        ],
    );
    // A second registry with the same trust policy, holding one pack too.
    env.share_trust("a", "dst");
    env.ok(
        "dst",
        &[
            "pack",
            "save",
            fixture("sigmoid.onnx").to_str().unwrap(),
            "--name",
            "other",
            "--version",
            "1.0.0",
            "--key",
            key_path.to_str().unwrap(),
        ],
    );
    let archive_path = env.path("base.aqpack");
    env.ok(
        "a",
        &[
            "pack",
            "export",
            "base:1.0.0",
            "-o",
            archive_path.to_str().unwrap(),
        ],
    );
    let key = SecretKey::from_file_text(&std::fs::read_to_string(&key_path).unwrap()).unwrap();
    let archive = std::fs::read(&archive_path).unwrap();
    Setup { env, key, archive }
}

impl Setup {
    /// Imports `bytes` into "dst", expects `code`, checks nothing changed; returns stderr.
    fn refused(&self, label: &str, bytes: &[u8], code: i32, extra: &[&str]) -> String {
        let file = self.env.path(&format!("{label}.aqpack"));
        std::fs::write(&file, bytes).unwrap();
        let before = fingerprint(&self.env.data("dst"));
        let mut args = vec!["pack", "import", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        let stderr = self.env.fails("dst", &args, code);
        assert_eq!(
            fingerprint(&self.env.data("dst")),
            before,
            "{label}: registry changed"
        );
        stderr
    }
}

/// Builds an archive from raw manifest bytes (signed with `key` if given) and chunk frames.
fn archive_from(
    manifest_bytes: &[u8],
    key: Option<&SecretKey>,
    chunks: &[(Digest, Vec<u8>)],
) -> Vec<u8> {
    // ArchiveWriter takes a SignedManifest; build one without validation for hostile bytes.
    let signed = SignedManifest {
        manifest: aq_pack::manifest::Manifest::parse(&valid_manifest_bytes()).unwrap(),
        manifest_bytes: manifest_bytes.to_vec(),
        signature: key.map(|k| SignatureEnvelope::sign(manifest_bytes, k)),
    };
    let mut w = ArchiveWriter::new(Vec::new(), &signed).unwrap();
    for (d, c) in chunks {
        w.write_chunk(d, c).unwrap();
    }
    w.finish().unwrap()
}

fn valid_manifest_bytes() -> Vec<u8> {
    let (m, _) = small_pack(b"0123456789");
    m
}

/// Canonical manifest bytes for a one-file pack of `data`, and its chunks.
fn small_pack(data: &[u8]) -> (Vec<u8>, Vec<(Digest, Vec<u8>)>) {
    let mut refs = vec![];
    let mut chunks = vec![];
    for c in chunk_stream(data) {
        let c = c.unwrap();
        refs.push(serde_json::json!({"digest": c.digest.to_string(), "size": c.data.len()}));
        chunks.push((c.digest, compress(&c.data, 3).unwrap()));
    }
    let value = serde_json::json!({
        "format_version": 1, "name": "hostile", "version": "1.0.0", "created_at": "2026-11-27T00:00:00Z",
        "model": {"format": "onnx", "entry": "model.onnx", "inputs": [], "outputs": []},
        "files": [{"path": "model.onnx", "size": data.len(), "digest": Digest::of(data).to_string(), "chunks": refs}],
        "provenance": {"tool": "test"}
    });
    (serde_json::to_vec(&value).unwrap(), chunks)
}

fn mutate_manifest(f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(&valid_manifest_bytes()).unwrap();
    f(&mut v);
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn truncated_and_corrupted_archives() {
    let s = setup();
    let half = &s.archive[..s.archive.len() / 2];
    let err = s.refused("truncated", half, 5, &[]);
    assert!(err.contains("truncated"), "{err}");
    let err = s.refused("header-only", &s.archive[..8], 5, &[]);
    assert!(err.contains("truncated"), "{err}");
    // Flip a byte inside the last chunk's compressed bytes.
    let mut bad = s.archive.clone();
    let i = bad.len() - 60;
    bad[i] ^= 0xff;
    s.refused("corrupt-chunk", &bad, 4, &[]);
    let mut trailing = s.archive.clone();
    trailing.extend_from_slice(b"junk");
    let err = s.refused("trailing", &trailing, 5, &[]);
    assert!(err.contains("after its end"), "{err}");
    let err = s.refused(
        "not-an-archive",
        b"PK\x03\x04 this is a zip, not a pack",
        5,
        &[],
    );
    assert!(err.contains("not an .aqpack"), "{err}");
    s.refused("empty", b"", 5, &[]);
}

#[test]
fn chunk_not_matching_digest_and_bombs() {
    let s = setup();
    let data = vec![7u8; 100_000];
    let (manifest, chunks) = small_pack(&data);
    // Right digest, wrong bytes (still valid zstd, same length).
    let wrong = vec![(chunks[0].0, compress(&vec![8u8; 100_000], 3).unwrap())];
    let err = s.refused(
        "wrong-bytes",
        &archive_from(&manifest, Some(&s.key), &wrong),
        4,
        &[],
    );
    assert!(err.contains("does not match its digest"), "{err}");
    // A bomb: the manifest declares 16 KiB, the chunk (2 KiB, within the compressed-size
    // bound for 16 KiB) inflates to 64 MiB.
    let small = vec![1u8; 16 * 1024];
    let (manifest, chunks) = small_pack(&small);
    let bomb = compress(&vec![1u8; 64 << 20], 19).unwrap();
    let err = s.refused(
        "bomb",
        &archive_from(&manifest, Some(&s.key), &[(chunks[0].0, bomb)]),
        4,
        &[],
    );
    assert!(err.contains("declared size"), "{err}");
    // A compressed chunk longer than zstd could ever produce for its size is refused unread.
    let (manifest, chunks) = small_pack(&vec![1u8; 1024]);
    let err = s.refused(
        "oversized-frame",
        &archive_from(&manifest, Some(&s.key), &[(chunks[0].0, vec![0u8; 4096])]),
        5,
        &[],
    );
    assert!(err.contains("over its limit"), "{err}");
}

#[test]
fn hostile_manifests() {
    let s = setup();
    let (_, chunks) = small_pack(b"0123456789");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not-json", b"{this is not json".to_vec(), "not valid JSON"),
        (
            "schema-missing-field",
            mutate_manifest(|v| {
                v.as_object_mut().unwrap().remove("model");
            }),
            "model",
        ),
        (
            "schema-unknown-field",
            mutate_manifest(|v| v["surprise"] = serde_json::json!(true)),
            "surprise",
        ),
        (
            "dotdot-path",
            mutate_manifest(|v| {
                v["files"][0]["path"] = "../../etc/passwd".into();
                v["model"]["entry"] = "../../etc/passwd".into();
            }),
            "'..'",
        ),
        (
            "absolute-path",
            mutate_manifest(|v| {
                v["files"][0]["path"] = "/etc/passwd".into();
                v["model"]["entry"] = "/etc/passwd".into();
            }),
            "absolute",
        ),
        (
            "size-lies",
            mutate_manifest(|v| v["files"][0]["size"] = 1_000_000.into()),
            "add up",
        ),
        (
            "newer-format",
            mutate_manifest(|v| v["format_version"] = 9.into()),
            "format_version 9",
        ),
        (
            "bad-name",
            mutate_manifest(|v| v["name"] = "Evil Name".into()),
            "name",
        ),
    ];
    for (label, manifest, needle) in cases {
        // Signed by the trusted key: the refusal comes from parsing, not from trust.
        let err = s.refused(
            label,
            &archive_from(&manifest, Some(&s.key), &chunks),
            5,
            &[],
        );
        assert!(err.contains(needle), "{label}: {err}");
    }
}

#[test]
fn chunk_size_that_lies() {
    let s = setup();
    let data = b"0123456789";
    let (manifest, chunks) = small_pack(data);
    // The chunk really is 10 bytes; claim 9 in both the chunk and the file size.
    let mut v: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    v["files"][0]["size"] = 9.into();
    v["files"][0]["chunks"][0]["size"] = 9.into();
    let lying = serde_json::to_vec(&v).unwrap();
    s.refused(
        "chunk-size-lies",
        &archive_from(&lying, Some(&s.key), &chunks),
        4,
        &[],
    );
}

#[test]
fn trust_failures() {
    let s = setup();
    let (manifest, chunks) = small_pack(b"0123456789");
    let stranger = SecretKey::from_seed([99; 32]);
    let err = s.refused(
        "untrusted",
        &archive_from(&manifest, Some(&stranger), &chunks),
        4,
        &[],
    );
    assert!(err.contains("does not name"), "{err}");
    let err = s.refused("unsigned", &archive_from(&manifest, None, &chunks), 4, &[]);
    assert!(err.contains("unsigned"), "{err}");
    // A manifest changed after signing: the signature no longer verifies.
    let signed = archive_from(&manifest, Some(&s.key), &chunks);
    let mut tampered_manifest = manifest.clone();
    let at = tampered_manifest
        .windows(7)
        .position(|w| w == b"hostile")
        .unwrap();
    tampered_manifest[at] = b'j';
    let signature = SignatureEnvelope::sign(&manifest, &s.key);
    let forged = {
        let signed_m = SignedManifest {
            manifest: aq_pack::manifest::Manifest::parse(&valid_manifest_bytes()).unwrap(),
            manifest_bytes: tampered_manifest,
            signature: Some(signature),
        };
        let mut w = ArchiveWriter::new(Vec::new(), &signed_m).unwrap();
        for (d, c) in &chunks {
            w.write_chunk(d, c).unwrap();
        }
        w.finish().unwrap()
    };
    let err = s.refused("tampered-manifest", &forged, 4, &[]);
    assert!(err.contains("does not verify"), "{err}");
    // The untampered one imports (the setup is sound), and a second import is a conflict.
    let file = s.env.path("good.aqpack");
    std::fs::write(&file, &signed).unwrap();
    s.env.ok("dst", &["pack", "import", file.to_str().unwrap()]);
    s.refused("duplicate", &signed, 6, &[]);
    // Unsigned imports when the user says so explicitly.
    let (m2, c2) = small_pack(b"abcdefghij");
    let mut v: serde_json::Value = serde_json::from_slice(&m2).unwrap();
    v["name"] = "unsigned-ok".into();
    let m2 = serde_json::to_vec(&v).unwrap();
    let file = s.env.path("unsigned.aqpack");
    std::fs::write(&file, archive_from(&m2, None, &c2)).unwrap();
    s.env.ok(
        "dst",
        &["pack", "import", file.to_str().unwrap(), "--allow-unsigned"],
    );
}

#[test]
fn bad_save_requests() {
    let s = setup();
    let notes = s.env.path("notes.onnx");
    std::fs::write(&notes, "meeting notes, not a model\n").unwrap();
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (
            vec![
                "pack".into(),
                "save".into(),
                notes.display().to_string(),
                "--name".into(),
                "n".into(),
                "--version".into(),
                "1.0.0".into(),
            ],
            5,
            "neither an ONNX nor a TFLite",
        ),
        (
            vec![
                "pack".into(),
                "save".into(),
                fixture("sigmoid.onnx").display().to_string(),
                "--name".into(),
                "other".into(),
                "--version".into(),
                "1.0.0".into(),
            ],
            6,
            "already exists",
        ),
        (
            vec![
                "pack".into(),
                "save".into(),
                fixture("sigmoid.onnx").display().to_string(),
                "--name".into(),
                "Bad Name".into(),
                "--version".into(),
                "1.0.0".into(),
            ],
            5,
            "--name",
        ),
        (
            vec![
                "pack".into(),
                "save".into(),
                fixture("sigmoid.onnx").display().to_string(),
                "--name".into(),
                "n".into(),
                "--version".into(),
                "one".into(),
            ],
            5,
            "--version",
        ),
        (
            vec![
                "pack".into(),
                "save".into(),
                "/no/such/model.onnx".into(),
                "--name".into(),
                "n".into(),
                "--version".into(),
                "1.0.0".into(),
            ],
            3,
            "no/such",
        ),
        (
            vec!["pack".into(), "inspect".into(), "missing:1.0.0".into()],
            3,
            "no pack matches",
        ),
        (
            vec!["pack".into(), "import".into(), "/no/such.aqpack".into()],
            3,
            "failed to open",
        ),
    ];
    for (args, code, needle) in cases {
        let before = fingerprint(&s.env.data("dst"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = s.env.fails("dst", &args, code);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(
            fingerprint(&s.env.data("dst")),
            before,
            "{args:?} changed the registry"
        );
    }
    // A truncated TFLite file is refused too (tract must not take the process down).
    let bytes = std::fs::read(fixture("selfie_segmentation.tflite")).unwrap();
    let cut = s.env.path("cut.tflite");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    s.env.fails(
        "dst",
        &[
            "pack",
            "save",
            cut.to_str().unwrap(),
            "--name",
            "cut",
            "--version",
            "1.0.0",
        ],
        5,
    );
    // JSON errors for machines.
    let out = s.env.aq("dst", &["--json", "pack", "inspect", "missing"]);
    let body = json(String::from_utf8_lossy(&out.stderr).trim());
    assert_eq!(body["error"]["kind"], "not_found");
    assert_eq!(body["error"]["exit_code"], 3);
}
