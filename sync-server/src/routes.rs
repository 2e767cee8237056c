//! The route table: one list of every route (method, path template, access, schemas) that both
//! the router and the OpenAPI document are made from, so the two cannot disagree.

use aq_sync_proto::role::Access;
use hyper::Method;
use serde_json::{Value, json};

/// What a route does; `api` has one handler per variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Health,
    OpenApi,
    WhoAmI,
    ListPacks,
    PushPack,
    GetPack,
    DeletePack,
    PackVersions,
    PromotePack,
    MissingChunks,
    UploadChunks,
    FetchChunks,
    GetChunk,
    ListTokens,
    CreateToken,
    RevokeToken,
    ServerKey,
    EnrollChallenge,
    Enroll,
    ListDevices,
    GetDevice,
    CreateRollout,
    ListRollouts,
    GetRollout,
    AdvanceRollout,
    PauseRollout,
    ResumeRollout,
    RollbackRollout,
}

/// A body: its content type and the name of its schema under `components/schemas` (`None` for
/// binary bodies).
#[derive(Debug, Clone, Copy)]
pub struct Body {
    pub content_type: &'static str,
    pub schema: Option<&'static str>,
}

const JSON: &str = "application/json";
const fn json_body(schema: &'static str) -> Option<Body> {
    Some(Body {
        content_type: JSON,
        schema: Some(schema),
    })
}
const fn binary(content_type: &'static str) -> Option<Body> {
    Some(Body {
        content_type,
        schema: None,
    })
}

#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub op: Op,
    pub method: &'static str,
    /// Path with `{param}` segments.
    pub path: &'static str,
    pub access: Access,
    pub summary: &'static str,
    pub request: Option<Body>,
    pub status: u16,
    pub response: Option<Body>,
}

const FRAME: &str = aq_sync_proto::frame::CONTENT_TYPE;

/// Every route the server answers.
pub const ROUTES: &[Route] = &[
    Route {
        op: Op::Health,
        method: "GET",
        path: "/healthz",
        access: Access::Public,
        summary: "Liveness: 200 while the server runs",
        request: None,
        status: 200,
        response: json_body("Health"),
    },
    Route {
        op: Op::OpenApi,
        method: "GET",
        path: "/openapi.json",
        access: Access::Public,
        summary: "This document",
        request: None,
        status: 200,
        response: json_body("Any"),
    },
    Route {
        op: Op::WhoAmI,
        method: "GET",
        path: "/v1/whoami",
        access: Access::Read,
        summary: "The caller's token name and role",
        request: None,
        status: 200,
        response: json_body("Caller"),
    },
    Route {
        op: Op::ListPacks,
        method: "GET",
        path: "/v1/packs",
        access: Access::Read,
        summary: "Every pack, by name then version",
        request: None,
        status: 200,
        response: json_body("PackList"),
    },
    Route {
        op: Op::PushPack,
        method: "POST",
        path: "/v1/packs",
        access: Access::Publish,
        summary: "Add a signed pack whose chunks were uploaded (checked against the server's trust policy)",
        request: json_body("PackUpload"),
        status: 201,
        response: json_body("PushReport"),
    },
    Route {
        op: Op::GetPack,
        method: "GET",
        path: "/v1/packs/{ref}",
        access: Access::Read,
        summary: "One pack by NAME:TAG, NAME:VERSION or pack digest: manifest and signature",
        request: None,
        status: 200,
        response: json_body("PackInfo"),
    },
    Route {
        op: Op::DeletePack,
        method: "DELETE",
        path: "/v1/packs/{ref}",
        access: Access::Admin,
        summary: "Remove a pack version and its tags (chunks go at the next gc)",
        request: None,
        status: 200,
        response: json_body("PackSummary"),
    },
    Route {
        op: Op::PackVersions,
        method: "GET",
        path: "/v1/packs/{name}/versions",
        access: Access::Read,
        summary: "Every version of one pack name",
        request: None,
        status: 200,
        response: json_body("PackList"),
    },
    Route {
        op: Op::PromotePack,
        method: "POST",
        path: "/v1/packs/{ref}/promote",
        access: Access::Publish,
        summary: "Point a tag at the version the reference names",
        request: json_body("PromoteRequest"),
        status: 200,
        response: json_body("PromoteReport"),
    },
    Route {
        op: Op::MissingChunks,
        method: "POST",
        path: "/v1/chunks/missing",
        access: Access::Publish,
        summary: "Which of these chunk digests the server lacks",
        request: json_body("DigestList"),
        status: 200,
        response: json_body("MissingChunks"),
    },
    Route {
        op: Op::UploadChunks,
        method: "POST",
        path: "/v1/chunks",
        access: Access::Publish,
        summary: "Upload a frame of stored chunks; each is verified against its digest and kept even before a manifest names it",
        request: binary(FRAME),
        status: 200,
        response: json_body("UploadReport"),
    },
    Route {
        op: Op::FetchChunks,
        method: "POST",
        path: "/v1/chunks/fetch",
        access: Access::Read,
        summary: "Download these chunks as one frame",
        request: json_body("DigestList"),
        status: 200,
        response: binary(FRAME),
    },
    Route {
        op: Op::GetChunk,
        method: "GET",
        path: "/v1/chunks/{digest}",
        access: Access::Read,
        summary: "One stored chunk (zstd); its uncompressed size is in x-aq-chunk-size",
        request: None,
        status: 200,
        response: binary("application/zstd"),
    },
    Route {
        op: Op::ListTokens,
        method: "GET",
        path: "/v1/tokens",
        access: Access::Admin,
        summary: "Every API token (never the secrets)",
        request: None,
        status: 200,
        response: json_body("TokenList"),
    },
    Route {
        op: Op::CreateToken,
        method: "POST",
        path: "/v1/tokens",
        access: Access::Admin,
        summary: "Make a token; the secret is in this answer only",
        request: json_body("TokenRequest"),
        status: 201,
        response: json_body("TokenCreated"),
    },
    Route {
        op: Op::RevokeToken,
        method: "DELETE",
        path: "/v1/tokens/{id}",
        access: Access::Admin,
        summary: "Revoke a token",
        request: None,
        status: 200,
        response: json_body("TokenInfo"),
    },
    Route {
        op: Op::ServerKey,
        method: "GET",
        path: "/v1/server-key",
        access: Access::Public,
        summary: "The public key desired states are signed with",
        request: None,
        status: 200,
        response: json_body("ServerKey"),
    },
    Route {
        op: Op::EnrollChallenge,
        method: "POST",
        path: "/v1/devices/enroll/challenge",
        access: Access::Enroll,
        summary: "A one-time nonce (valid 5 minutes) for the device to sign in its enrollment request",
        request: None,
        status: 200,
        response: json_body("EnrollChallenge"),
    },
    Route {
        op: Op::Enroll,
        method: "POST",
        path: "/v1/devices/enroll",
        access: Access::Enroll,
        summary: "Register a device key with labels (or change a known device's), proven by the key's signature over a challenge nonce; answers the device's own token, the MQTT endpoint, the server key and the trust policy",
        request: json_body("EnrollRequest"),
        status: 200,
        response: json_body("EnrollResponse"),
    },
    Route {
        op: Op::ListDevices,
        method: "GET",
        path: "/v1/devices",
        access: Access::View,
        summary: "Every enrolled device with its desired and reported state",
        request: None,
        status: 200,
        response: json_body("DeviceList"),
    },
    Route {
        op: Op::GetDevice,
        method: "GET",
        path: "/v1/devices/{id}",
        access: Access::View,
        summary: "One device",
        request: None,
        status: 200,
        response: json_body("DeviceInfo"),
    },
    Route {
        op: Op::CreateRollout,
        method: "POST",
        path: "/v1/rollouts",
        access: Access::Publish,
        summary: "Start a staged rollout of a pack to the devices a label selector picks",
        request: json_body("RolloutRequest"),
        status: 201,
        response: json_body("RolloutStatus"),
    },
    Route {
        op: Op::ListRollouts,
        method: "GET",
        path: "/v1/rollouts",
        access: Access::View,
        summary: "Every rollout",
        request: None,
        status: 200,
        response: json_body("RolloutList"),
    },
    Route {
        op: Op::GetRollout,
        method: "GET",
        path: "/v1/rollouts/{id}",
        access: Access::View,
        summary: "One rollout: phase, step, and each device's outcome",
        request: None,
        status: 200,
        response: json_body("RolloutStatus"),
    },
    Route {
        op: Op::AdvanceRollout,
        method: "POST",
        path: "/v1/rollouts/{id}/advance",
        access: Access::Publish,
        summary: "Go to the next step now",
        request: None,
        status: 200,
        response: json_body("RolloutStatus"),
    },
    Route {
        op: Op::PauseRollout,
        method: "POST",
        path: "/v1/rollouts/{id}/pause",
        access: Access::Publish,
        summary: "Stop automatic advancing",
        request: None,
        status: 200,
        response: json_body("RolloutStatus"),
    },
    Route {
        op: Op::ResumeRollout,
        method: "POST",
        path: "/v1/rollouts/{id}/resume",
        access: Access::Publish,
        summary: "Resume a paused rollout",
        request: None,
        status: 200,
        response: json_body("RolloutStatus"),
    },
    Route {
        op: Op::RollbackRollout,
        method: "POST",
        path: "/v1/rollouts/{id}/rollback",
        access: Access::Publish,
        summary: "Send every device of the rollout back to what it ran before",
        request: None,
        status: 200,
        response: json_body("RolloutStatus"),
    },
];

/// What the router made of a request line.
#[derive(Debug)]
pub enum Matched {
    Route(&'static Route, Vec<String>),
    /// The path exists, with other methods.
    MethodNotAllowed(Vec<&'static str>),
    NotFound,
}

/// Finds the route for a method and path; path parameters are percent-decoded.
pub fn route(method: &Method, path: &str) -> Matched {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let mut allowed = Vec::new();
    for r in ROUTES {
        let Some(params) = match_template(r.path, &segments) else {
            continue;
        };
        if r.method == method.as_str() {
            return Matched::Route(r, params);
        }
        allowed.push(r.method);
    }
    if allowed.is_empty() {
        Matched::NotFound
    } else {
        Matched::MethodNotAllowed(allowed)
    }
}

fn match_template(template: &str, segments: &[&str]) -> Option<Vec<String>> {
    let parts: Vec<&str> = template.split('/').skip(1).collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    for (part, seg) in parts.iter().zip(segments) {
        if part.starts_with('{') {
            params.push(percent_decode(seg).filter(|s| !s.is_empty())?);
        } else if part != seg {
            return None;
        }
    }
    Some(params)
}

/// Decodes `%XX` escapes; `None` for a bad escape or a result that is not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn params_of(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

fn content(body: &Body) -> Value {
    let schema = match body.schema {
        Some(name) => json!({ "$ref": format!("#/components/schemas/{name}") }),
        None => json!({ "type": "string", "format": "binary" }),
    };
    json!({ body.content_type: { "schema": schema } })
}

/// The OpenAPI 3.1 document of [`ROUTES`].
pub fn openapi() -> Value {
    let mut paths = serde_json::Map::new();
    for r in ROUTES {
        let mut op = json!({
            "operationId": format!("{:?}", r.op),
            "summary": r.summary,
            "x-aq-access": r.access.as_str(),
        });
        let params: Vec<Value> = params_of(r.path)
            .into_iter()
            .map(|p| json!({ "name": p, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some(body) = &r.request {
            op["requestBody"] = json!({ "required": true, "content": content(body) });
        }
        let mut ok = json!({ "description": "success" });
        if let Some(body) = &r.response {
            ok["content"] = content(body);
        }
        let mut responses = serde_json::Map::new();
        responses.insert(r.status.to_string(), ok);
        responses.insert(
            "default".into(),
            json!({
                "description": "refused: a JSON error body",
                "content": { JSON: { "schema": { "$ref": "#/components/schemas/Error" } } }
            }),
        );
        op["responses"] = Value::Object(responses);
        if r.access == Access::Public {
            op["security"] = json!([]);
        }
        let entry = paths.entry(r.path.to_owned()).or_insert_with(|| json!({}));
        entry[r.method.to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "aq-sync registry API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The central registry of Aquilia Edge: signed modelpacks with chunk-level deduplication. Every route but /healthz and /openapi.json needs `Authorization: Bearer aqt_...`; x-aq-access names the least role."
        },
        "servers": [{ "url": "/" }],
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas(),
        }
    })
}

fn schemas() -> Value {
    let digest = json!({ "type": "string", "pattern": "^[0-9a-f]{64}$" });
    let summary_props = json!({
        "id": { "type": "string" }, "name": { "type": "string" }, "version": { "type": "string" },
        "digest": digest, "size": { "type": "integer" },
        "tags": { "type": "array", "items": { "type": "string" } },
        "saved_at": { "type": "string" }, "signed_by": { "type": ["string", "null"] }
    });
    let mut info_props = summary_props.clone();
    info_props["manifest"] = json!({ "type": "string", "description": "canonical manifest JSON" });
    info_props["signature"] = json!({ "type": ["string", "null"] });
    let role =
        json!({ "type": "string", "enum": ["admin", "publisher", "viewer", "device", "enroller"] });
    let token_props = json!({
        "id": { "type": "string" }, "name": { "type": "string" }, "role": role, "created_at": { "type": "string" }
    });
    let mut created_props = token_props.clone();
    created_props["token"] = json!({ "type": "string" });
    let object = |props: &Value, required: &[&str]| json!({ "type": "object", "properties": props, "required": required });
    json!({
        "Any": {},
        "Error": object(&json!({ "error": object(&json!({ "code": { "type": "string" }, "message": { "type": "string" } }), &["code", "message"]) }), &["error"]),
        "Health": object(&json!({ "status": { "type": "string" } }), &["status"]),
        "Caller": object(&json!({ "name": { "type": "string" }, "role": role, "token_id": { "type": "string" } }), &["name", "role"]),
        "PackSummary": object(&summary_props, &["id", "name", "version", "digest", "size", "tags"]),
        "PackInfo": object(&info_props, &["id", "name", "version", "digest", "manifest"]),
        "PackList": object(&json!({ "packs": { "type": "array", "items": { "$ref": "#/components/schemas/PackSummary" } } }), &["packs"]),
        "PackUpload": object(&json!({ "manifest": { "type": "string" }, "signature": { "type": ["string", "null"] }, "tags": { "type": "array", "items": { "type": "string" } } }), &["manifest"]),
        "PushReport": object(&json!({ "id": { "type": "string" }, "digest": digest, "created": { "type": "boolean" }, "signed_by": { "type": ["string", "null"] }, "tags": { "type": "array", "items": { "type": "string" } } }), &["id", "digest", "created"]),
        "PromoteRequest": object(&json!({ "tag": { "type": "string" } }), &["tag"]),
        "PromoteReport": object(&json!({ "id": { "type": "string" }, "tag": { "type": "string" } }), &["id", "tag"]),
        "DigestList": object(&json!({ "digests": { "type": "array", "items": digest } }), &["digests"]),
        "MissingChunks": object(&json!({ "missing": { "type": "array", "items": digest } }), &["missing"]),
        "UploadReport": object(&json!({ "chunks_new": { "type": "integer" }, "chunks_present": { "type": "integer" }, "bytes_new": { "type": "integer" } }), &["chunks_new", "chunks_present", "bytes_new"]),
        "TokenRequest": object(&json!({ "name": { "type": "string" }, "role": role }), &["name", "role"]),
        "TokenInfo": object(&token_props, &["id", "name", "role", "created_at"]),
        "TokenCreated": object(&created_props, &["id", "name", "role", "created_at", "token"]),
        "ServerKey": object(&json!({ "public_key": { "type": "string" }, "key_id": { "type": "string" } }), &["public_key", "key_id"]),
        "EnrollChallenge": object(&json!({ "nonce": { "type": "string", "pattern": "^[0-9a-f]{64}$" }, "expires_at": { "type": "string" } }), &["nonce", "expires_at"]),
        "EnrollRequest": object(&json!({ "public_key": { "type": "string" }, "labels": { "type": "object", "additionalProperties": { "type": "string" } }, "name": { "type": ["string", "null"] }, "nonce": { "type": "string" }, "proof": { "type": "string" } }), &["public_key", "nonce", "proof"]),
        "EnrollResponse": object(&json!({ "device": { "type": "string" }, "token": { "type": "string" }, "mqtt_url": { "type": "string" }, "topic_prefix": { "type": "string" }, "server_key": { "type": "string" }, "trust_policy": { "type": "string" } }), &["device", "token", "mqtt_url", "topic_prefix", "server_key", "trust_policy"]),
        "DeviceInfo": object(&json!({ "device": { "type": "string" }, "name": { "type": "string" }, "labels": { "type": "object" }, "enrolled_at": { "type": "string" }, "desired": {}, "reported": {}, "last_seen": { "type": ["string", "null"] } }), &["device", "name", "labels"]),
        "DeviceList": object(&json!({ "devices": { "type": "array", "items": { "$ref": "#/components/schemas/DeviceInfo" } } }), &["devices"]),
        "RolloutRequest": object(&json!({ "pack": { "type": "string" }, "selector": { "type": "object", "additionalProperties": { "type": "string" } }, "steps": { "type": "array", "items": { "type": "integer" } }, "max_failure": { "type": "number" }, "soak_s": { "type": ["integer", "null"] } }), &["pack"]),
        "RolloutStatus": object(&json!({ "id": { "type": "string" }, "pack": { "type": "object" }, "phase": { "type": "string", "enum": ["running", "paused", "completed", "aborted", "rolled_back"] }, "step": { "type": "integer" }, "steps": { "type": "array", "items": { "type": "integer" } }, "devices": { "type": "object" }, "counts": { "type": "object" }, "reason": { "type": ["string", "null"] } }), &["id", "pack", "phase", "step", "devices"]),
        "RolloutList": object(&json!({ "rollouts": { "type": "array", "items": { "$ref": "#/components/schemas/RolloutStatus" } } }), &["rollouts"]),
        "TokenList": object(&json!({ "tokens": { "type": "array", "items": { "$ref": "#/components/schemas/TokenInfo" } } }), &["tokens"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_templates_and_report_methods() {
        let m = route(&Method::GET, "/v1/packs/detector:1.2.0");
        assert!(
            matches!(&m, Matched::Route(r, p) if r.op == Op::GetPack && p == &["detector:1.2.0"])
        );
        let m = route(&Method::GET, "/v1/packs/detector%3Astable");
        assert!(matches!(&m, Matched::Route(_, p) if p == &["detector:stable"]));
        let m = route(&Method::GET, "/v1/packs/detector/versions");
        assert!(matches!(&m, Matched::Route(r, _) if r.op == Op::PackVersions));
        assert!(matches!(
            route(&Method::PUT, "/v1/packs"),
            Matched::MethodNotAllowed(m) if m == ["GET", "POST"]
        ));
        assert!(matches!(
            route(&Method::GET, "/v1/nothing"),
            Matched::NotFound
        ));
        assert!(matches!(
            route(&Method::GET, "/v1/packs/"),
            Matched::NotFound
        ));
        assert!(matches!(
            route(&Method::GET, "/v1/packs/%zz"),
            Matched::NotFound
        ));
    }

    #[test]
    fn the_document_lists_every_route_and_every_schema_it_names() {
        let doc = openapi();
        let schemas = &doc["components"]["schemas"];
        for r in ROUTES {
            let op = &doc["paths"][r.path][r.method.to_ascii_lowercase()];
            assert_eq!(
                op["operationId"],
                format!("{:?}", r.op),
                "{} {}",
                r.method,
                r.path
            );
            for body in [r.request, r.response].into_iter().flatten() {
                if let Some(name) = body.schema {
                    assert!(schemas.get(name).is_some(), "schema {name} is not defined");
                }
            }
        }
        let documented: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum();
        assert_eq!(documented, ROUTES.len());
        // No two routes share a method and template.
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(
                    !(a.method == b.method && a.path == b.path),
                    "{} {}",
                    a.method,
                    a.path
                );
            }
        }
    }
}
