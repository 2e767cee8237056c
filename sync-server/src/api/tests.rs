//! The API without sockets: body limits, chunked bodies, refusals as answers, and whole
//! flows through the real handlers on a server state of temporary files (packs and chunks,
//! tokens and roles, enrollment with proof, rollouts).

use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::Frame;

use super::*;
use crate::testing;

#[test]
fn work_refused_for_load_is_a_503_with_retry_after() {
    let r = error_response(&crate::work::WorkError::Busy.into());
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    let lost = error_response(&crate::work::WorkError::Lost.into());
    assert_eq!(lost.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(lost.headers().get(header::RETRY_AFTER).is_none());
}

/// A body of `frames` chunks of `size` bytes with no declared length (as chunked transfer
/// encoding arrives).
struct Chunked {
    frames: usize,
    size: usize,
}

impl hyper::body::Body for Chunked {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.frames == 0 {
            return Poll::Ready(None);
        }
        self.frames -= 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![7u8; self.size])))))
    }
}

fn read(body: Chunked, declared: Option<u64>, limit: usize) -> Result<Bytes, ApiError> {
    let mut request = Request::builder().method("POST").uri("/v1/chunks");
    if let Some(len) = declared {
        request = request.header(header::CONTENT_LENGTH, len);
    }
    let request = request.body(body).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(read_body(request, limit))
}

#[test]
fn a_chunked_body_under_the_limit_arrives_whole_however_large() {
    // 20 MiB in 1 MiB frames under a 24 MiB limit: every byte, none cut.
    let body = read(
        Chunked {
            frames: 20,
            size: 1 << 20,
        },
        None,
        24 << 20,
    )
    .unwrap();
    assert_eq!(body.len(), 20 << 20);
    assert!(body.iter().all(|&b| b == 7));
}

#[test]
fn a_chunked_body_over_the_limit_is_refused_not_truncated() {
    let err = read(
        Chunked {
            frames: 5,
            size: 1 << 20,
        },
        None,
        (4 << 20) + 1,
    )
    .unwrap_err();
    assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(err.code, "body_too_large");
    // One byte over is over.
    let err = read(
        Chunked {
            frames: 1,
            size: 1001,
        },
        None,
        1000,
    )
    .unwrap_err();
    assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        read(
            Chunked {
                frames: 1,
                size: 1000
            },
            None,
            1000
        )
        .unwrap()
        .len(),
        1000
    );
}

#[test]
fn a_declared_length_over_the_limit_is_refused_before_reading() {
    // The body itself would fit; the declaration alone decides, before any byte is read.
    let err = read(
        Chunked {
            frames: 1,
            size: 10,
        },
        Some(2000),
        1000,
    )
    .unwrap_err();
    assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
}

/// One answer of [`call`].
struct Reply {
    status: u16,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts the status and returns the JSON body.
    fn expect(&self, status: u16) -> serde_json::Value {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        self.json()
    }

    /// Asserts a refusal: the status and a JSON error body with this code.
    fn refused(&self, status: u16, code: &str) -> String {
        let v = self.expect(status);
        assert_eq!(v["error"]["code"], code, "{v}");
        v["error"]["message"].as_str().unwrap().to_owned()
    }
}

/// Runs `f` on a runtime of its own (the handlers' work runs on the state's work pool).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

async fn call(
    state: &Arc<State>,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: impl Into<Bytes>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = handle(state, request.body(Full::new(body.into())).unwrap()).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

fn to_json(v: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// An unsigned pack `m:VERSION` of one file, its manifest's canonical text and the file's one
/// chunk (digest, size, zstd bytes).
fn pack(version: &str) -> (String, (Digest, u64, Vec<u8>)) {
    pack_of(
        version,
        format!("the weights of version {version}").into_bytes(),
    )
}

/// As [`pack`], with this file content.
fn pack_of(version: &str, data: Vec<u8>) -> (String, (Digest, u64, Vec<u8>)) {
    use aq_pack::manifest::*;
    let digest = Digest::of(&data);
    let size = data.len() as u64;
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        name: "m".into(),
        version: semver::Version::parse(version).unwrap(),
        created_at: "2026-12-03T10:00:00Z".into(),
        model: ModelInfo {
            format: ModelFormat::Onnx,
            entry: "model.onnx".into(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        },
        files: vec![FileEntry {
            path: "model.onnx".into(),
            size,
            digest,
            chunks: vec![ChunkRef { digest, size }],
        }],
        meta: Default::default(),
        provenance: Provenance {
            tool: "test".into(),
            source: None,
            created_by: None,
        },
        variants: Vec::new(),
    };
    let text = String::from_utf8(manifest.to_canonical_bytes().unwrap()).unwrap();
    let stored = aq_pack::chunk::compress(&data, 3).unwrap();
    (text, (digest, size, stored))
}

/// Pushes `m:VERSION` as [`upload`] does.
async fn push(state: &Arc<State>, token: &str, version: &str) -> Reply {
    upload(state, token, pack(version)).await
}

/// Uploads this pack's chunk (after asking which are missing) and pushes its manifest.
async fn upload(
    state: &Arc<State>,
    token: &str,
    (manifest, (digest, size, stored)): (String, (Digest, u64, Vec<u8>)),
) -> Reply {
    let wanted = to_json(&aq_sync_proto::api::DigestList {
        digests: vec![digest],
    });
    let missing = call(
        state,
        Some(token),
        "POST",
        "/v1/chunks/missing",
        wanted.clone(),
    )
    .await;
    let missing = missing.expect(200)["missing"].clone();
    // Asked again after an upload, or for a pack whose chunk is already here: none missing.
    if missing != serde_json::json!([]) {
        assert_eq!(missing, serde_json::json!([digest.to_string()]));
        let frame = aq_sync_proto::frame::encode(&[aq_sync_proto::frame::ChunkEntry {
            digest,
            size,
            stored: &stored,
        }]);
        let uploaded = call(state, Some(token), "POST", "/v1/chunks", frame).await;
        assert_eq!(uploaded.expect(200)["chunks_new"], 1);
        let missing = call(state, Some(token), "POST", "/v1/chunks/missing", wanted).await;
        assert_eq!(missing.expect(200)["missing"], serde_json::json!([]));
    }
    let upload = aq_sync_proto::api::PackUpload {
        manifest,
        signature: None,
        tags: vec!["stable".into()],
    };
    call(state, Some(token), "POST", "/v1/packs", to_json(&upload)).await
}

#[test]
fn a_pack_goes_up_is_listed_promoted_fetched_and_deleted() {
    let server = testing::server(true);
    let (state, admin) = (&server.state, server.admin.as_str());
    block_on(async {
        let pushed = push(state, admin, "1.0.0").await.expect(201);
        assert_eq!(
            (pushed["id"].as_str(), pushed["created"].as_bool()),
            (Some("m:1.0.0"), Some(true)),
            "{pushed}"
        );
        // The same bytes again change nothing; other bytes under the same version conflict.
        assert_eq!(
            push(state, admin, "1.0.0").await.expect(200)["created"],
            false
        );
        upload(state, admin, pack_of("1.0.0", b"other weights".to_vec()))
            .await
            .refused(409, "conflict");
        let (_, (digest, ..)) = pack("1.0.0");

        let list = call(state, Some(admin), "GET", "/v1/packs", "")
            .await
            .expect(200);
        assert_eq!(list["packs"][0]["id"], "m:1.0.0", "{list}");
        let versions = call(state, Some(admin), "GET", "/v1/packs/m/versions", "")
            .await
            .expect(200);
        assert_eq!(versions["packs"].as_array().unwrap().len(), 1, "{versions}");
        let got = call(state, Some(admin), "GET", "/v1/packs/m:stable", "")
            .await
            .expect(200);
        assert_eq!(got["digest"], pushed["digest"], "{got}");
        let promoted = call(
            state,
            Some(admin),
            "POST",
            "/v1/packs/m:1.0.0/promote",
            r#"{"tag":"prod"}"#,
        )
        .await;
        assert_eq!(promoted.expect(200)["tag"], "prod");
        call(state, Some(admin), "GET", "/v1/packs/m:prod", "")
            .await
            .expect(200);
        call(
            state,
            Some(admin),
            "POST",
            "/v1/packs/m:1.0.0/promote",
            r#"{"tag":"no tags with spaces"}"#,
        )
        .await
        .refused(400, "bad_request");

        // The chunk comes back whole, alone or in a frame, and is what was uploaded.
        let chunk = call(
            state,
            Some(admin),
            "GET",
            &format!("/v1/chunks/{digest}"),
            "",
        )
        .await;
        assert_eq!(chunk.status, 200);
        let (_, (_, size, stored)) = pack("1.0.0");
        assert_eq!(chunk.body.as_ref(), stored.as_slice());
        let wanted = to_json(&aq_sync_proto::api::DigestList {
            digests: vec![digest],
        });
        let fetched = call(state, Some(admin), "POST", "/v1/chunks/fetch", wanted).await;
        assert_eq!(fetched.status, 200);
        assert_eq!(
            fetched.headers[header::CONTENT_TYPE],
            aq_sync_proto::frame::CONTENT_TYPE
        );
        let entries = aq_sync_proto::frame::decode(&fetched.body).unwrap();
        assert_eq!(
            (entries.len(), entries[0].digest, entries[0].size),
            (1, digest, size)
        );
        let absent = Digest::of(b"never uploaded");
        call(
            state,
            Some(admin),
            "GET",
            &format!("/v1/chunks/{absent}"),
            "",
        )
        .await
        .refused(404, "not_found");
        call(state, Some(admin), "GET", "/v1/chunks/not-a-digest", "")
            .await
            .refused(400, "bad_request");

        // Refusals: a manifest that is not one, a chunk frame that is not one, no such pack.
        let bad = aq_sync_proto::api::PackUpload {
            manifest: "{}".into(),
            signature: None,
            tags: vec![],
        };
        call(state, Some(admin), "POST", "/v1/packs", to_json(&bad))
            .await
            .refused(400, "bad_request");
        call(state, Some(admin), "POST", "/v1/chunks", vec![1u8, 2, 3])
            .await
            .refused(400, "bad_request");
        call(state, Some(admin), "GET", "/v1/packs/nope:1.0.0", "")
            .await
            .refused(404, "not_found");

        call(state, Some(admin), "DELETE", "/v1/packs/m:1.0.0", "")
            .await
            .expect(200);
        call(state, Some(admin), "GET", "/v1/packs/m:1.0.0", "")
            .await
            .refused(404, "not_found");
        let list = call(state, Some(admin), "GET", "/v1/packs", "")
            .await
            .expect(200);
        assert_eq!(list["packs"], serde_json::json!([]), "{list}");
    });
}

#[test]
fn a_server_without_trust_refuses_unsigned_packs() {
    let server = testing::server(false);
    block_on(async {
        let (manifest, _) = pack("1.0.0");
        let upload = aq_sync_proto::api::PackUpload {
            manifest,
            signature: None,
            tags: vec![],
        };
        let message = call(
            &server.state,
            Some(&server.admin),
            "POST",
            "/v1/packs",
            to_json(&upload),
        )
        .await
        .refused(422, "untrusted");
        assert!(message.contains("trust policy"), "{message}");
    });
}

#[test]
fn tokens_carry_roles_and_revoked_ones_stop_working() {
    let server = testing::server(true);
    let (state, admin) = (&server.state, server.admin.as_str());
    block_on(async {
        // No token, a malformed header, an unknown token.
        call(state, None, "GET", "/v1/packs", "")
            .await
            .refused(401, "unauthorized");
        call(state, Some("aqt_not-a-real-token"), "GET", "/v1/packs", "")
            .await
            .refused(401, "unauthorized");
        // Open routes.
        assert_eq!(
            call(state, None, "GET", "/healthz", "").await.expect(200)["status"],
            "ok"
        );
        let api = call(state, None, "GET", "/openapi.json", "")
            .await
            .expect(200);
        assert!(api["paths"]["/v1/rollouts"].is_object(), "{api}");
        call(state, None, "GET", "/v1/nothing-here", "")
            .await
            .refused(404, "not_found");
        let wrong = call(state, None, "PUT", "/healthz", "").await;
        wrong.refused(405, "method_not_allowed");
        assert_eq!(wrong.headers[header::ALLOW], "GET");

        let made = call(
            state,
            Some(admin),
            "POST",
            "/v1/tokens",
            r#"{"name":"ci","role":"viewer"}"#,
        )
        .await
        .expect(201);
        let viewer = made["token"].as_str().unwrap().to_owned();
        let id = made["id"].as_str().unwrap().to_owned();
        let me = call(state, Some(&viewer), "GET", "/v1/whoami", "")
            .await
            .expect(200);
        assert_eq!(
            (me["name"].as_str(), me["role"].as_str()),
            (Some("ci"), Some("viewer")),
            "{me}"
        );
        // A viewer reads but neither writes nor enrolls nor sees tokens.
        call(state, Some(&viewer), "GET", "/v1/packs", "")
            .await
            .expect(200);
        call(state, Some(&viewer), "GET", "/v1/server-key", "")
            .await
            .expect(200);
        call(state, Some(&viewer), "DELETE", "/v1/packs/m:1.0.0", "")
            .await
            .refused(403, "forbidden");
        call(
            state,
            Some(&viewer),
            "POST",
            "/v1/devices/enroll/challenge",
            "",
        )
        .await
        .refused(403, "forbidden");
        call(state, Some(&viewer), "GET", "/v1/tokens", "")
            .await
            .refused(403, "forbidden");
        call(
            state,
            Some(admin),
            "POST",
            "/v1/tokens",
            r#"{"name":"x","role":"emperor"}"#,
        )
        .await
        .refused(400, "bad_request");

        let listed = call(state, Some(admin), "GET", "/v1/tokens", "")
            .await
            .expect(200);
        assert_eq!(listed["tokens"].as_array().unwrap().len(), 2, "{listed}");
        call(
            state,
            Some(admin),
            "DELETE",
            &format!("/v1/tokens/{id}"),
            "",
        )
        .await
        .expect(200);
        call(state, Some(&viewer), "GET", "/v1/packs", "")
            .await
            .refused(401, "unauthorized");
        call(state, Some(admin), "DELETE", "/v1/tokens/no-such-id", "")
            .await
            .refused(404, "not_found");
    });
}

/// `POST /v1/rollouts/ID/VERB` as `token`.
async fn rollout_command(state: &Arc<State>, token: &str, id: &str, verb: &str) -> Reply {
    let path = format!("/v1/rollouts/{id}/{verb}");
    call(state, Some(token), "POST", &path, "").await
}

#[test]
fn a_device_enrolls_with_proof_and_a_rollout_is_driven_through_the_api() {
    use aq_sync_proto::fleet::EnrollRequest;
    let mut server = testing::server(true);
    let state = server.state.clone();
    let admin = server.admin.clone();
    block_on(async {
        push(&state, &admin, "1.0.0").await.expect(201);
        let made = call(
            &state,
            Some(&admin),
            "POST",
            "/v1/tokens",
            r#"{"name":"line","role":"enroller"}"#,
        )
        .await
        .expect(201);
        let enroller = made["token"].as_str().unwrap().to_owned();
        let key = aq_pack::keys::SecretKey::from_seed([7; 32]);
        let labels = std::collections::BTreeMap::from([("site".to_owned(), "a".to_owned())]);
        let challenge = call(
            &state,
            Some(&enroller),
            "POST",
            "/v1/devices/enroll/challenge",
            "",
        )
        .await
        .expect(200);
        let nonce = challenge["nonce"].as_str().unwrap().to_owned();
        // A request signed by another key is refused, and spends the nonce.
        let forged = EnrollRequest::sign(
            &aq_pack::keys::SecretKey::from_seed([8; 32]),
            labels.clone(),
            None,
            nonce.clone(),
        );
        let mut forged = serde_json::to_value(&forged).unwrap();
        forged["public_key"] = serde_json::to_value(key.public_key()).unwrap();
        call(
            &state,
            Some(&enroller),
            "POST",
            "/v1/devices/enroll",
            to_json(&forged),
        )
        .await
        .refused(403, "enrollment_refused");
        let replay = EnrollRequest::sign(&key, labels.clone(), None, nonce);
        call(
            &state,
            Some(&enroller),
            "POST",
            "/v1/devices/enroll",
            to_json(&replay),
        )
        .await
        .refused(403, "enrollment_refused");
        let nonce = call(
            &state,
            Some(&enroller),
            "POST",
            "/v1/devices/enroll/challenge",
            "",
        )
        .await
        .expect(200)["nonce"]
            .as_str()
            .unwrap()
            .to_owned();
        let request = EnrollRequest::sign(&key, labels, Some("gw-1".into()), nonce);
        let enrolled = call(
            &state,
            Some(&enroller),
            "POST",
            "/v1/devices/enroll",
            to_json(&request),
        )
        .await
        .expect(200);
        let device = enrolled["device"].as_str().unwrap().to_owned();
        assert_eq!(enrolled["mqtt_url"], "mqtt://127.0.0.1:1", "{enrolled}");
        // The device's own token reads; it does not enroll others.
        let own = enrolled["token"].as_str().unwrap();
        call(
            &state,
            Some(own),
            "POST",
            "/v1/devices/enroll/challenge",
            "",
        )
        .await
        .refused(403, "forbidden");

        let devices = call(&state, Some(&admin), "GET", "/v1/devices", "")
            .await
            .expect(200);
        assert_eq!(devices["devices"][0]["name"], "gw-1", "{devices}");
        let one = call(
            &state,
            Some(&admin),
            "GET",
            &format!("/v1/devices/{device}"),
            "",
        )
        .await
        .expect(200);
        assert_eq!(one["labels"]["site"], "a", "{one}");
        call(&state, Some(&admin), "GET", "/v1/devices/nope", "")
            .await
            .refused(404, "not_found");

        call(
            &state,
            Some(&admin),
            "POST",
            "/v1/rollouts",
            r#"{"pack":"m:1.0.0","steps":[50,20]}"#,
        )
        .await
        .refused(400, "bad_request");
        // A rollout to the pack by tag: the device is told, through the outbox.
        let rollout = call(
            &state,
            Some(&admin),
            "POST",
            "/v1/rollouts",
            r#"{"pack":"m:stable","selector":{"site":"a"}}"#,
        )
        .await
        .expect(201);
        let id = rollout["id"].as_str().unwrap().to_owned();
        let published = server
            .outbox
            .try_recv()
            .expect("a desired state was queued for the device");
        assert!(published.topic.contains(&device), "{}", published.topic);
        call(
            &state,
            Some(&admin),
            "POST",
            "/v1/rollouts",
            r#"{"pack":"nope:1.0.0"}"#,
        )
        .await
        .refused(404, "not_found");
        let list = call(&state, Some(&admin), "GET", "/v1/rollouts", "")
            .await
            .expect(200);
        assert_eq!(list["rollouts"][0]["id"], id.as_str(), "{list}");
        let paused = rollout_command(&state, &admin, &id, "pause")
            .await
            .expect(200);
        assert_eq!(paused["phase"], "paused", "{paused}");
        let resumed = rollout_command(&state, &admin, &id, "resume")
            .await
            .expect(200);
        assert_ne!(resumed["phase"], "paused", "{resumed}");
        let back = rollout_command(&state, &admin, &id, "rollback")
            .await
            .expect(200);
        assert_eq!(back["phase"], "rolled_back", "{back}");
        let got = call(
            &state,
            Some(&admin),
            "GET",
            &format!("/v1/rollouts/{id}"),
            "",
        )
        .await
        .expect(200);
        assert_eq!(got["phase"], "rolled_back", "{got}");
        rollout_command(&state, &admin, &id, "advance")
            .await
            .refused(409, "conflict");
        call(&state, Some(&admin), "GET", "/v1/rollouts/nope", "")
            .await
            .refused(404, "not_found");
    });
}
