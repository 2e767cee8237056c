//! The route table: one list of every route (method, path template, access, schemas) that both
//! the router and the OpenAPI document are made from, so the two cannot disagree.

use aq_sync_proto::role::Access;
use aq_sync_proto::{api, fleet};
use hyper::Method;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
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

/// A body: its content type and how to make its schema (`None` for binary bodies).
#[derive(Debug, Clone, Copy)]
pub struct Body {
    pub content_type: &'static str,
    /// The body type's schema, derived from the Rust type the handler reads or writes.
    pub schema: Option<fn(&mut SchemaGenerator) -> Schema>,
}

const JSON: &str = "application/json";
const fn json_body<T: JsonSchema>() -> Option<Body> {
    Some(Body {
        content_type: JSON,
        schema: Some(SchemaGenerator::subschema_for::<T>),
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
        response: json_body::<api::HealthStatus>(),
    },
    Route {
        op: Op::OpenApi,
        method: "GET",
        path: "/openapi.json",
        access: Access::Public,
        summary: "This document",
        request: None,
        status: 200,
        response: json_body::<serde_json::Value>(),
    },
    Route {
        op: Op::WhoAmI,
        method: "GET",
        path: "/v1/whoami",
        access: Access::Read,
        summary: "The caller's token name and role",
        request: None,
        status: 200,
        response: json_body::<api::WhoAmI>(),
    },
    Route {
        op: Op::ListPacks,
        method: "GET",
        path: "/v1/packs",
        access: Access::Read,
        summary: "Every pack, by name then version",
        request: None,
        status: 200,
        response: json_body::<api::PackList>(),
    },
    Route {
        op: Op::PushPack,
        method: "POST",
        path: "/v1/packs",
        access: Access::Publish,
        summary: "Add a signed pack whose chunks were uploaded (checked against the server's trust policy)",
        request: json_body::<api::PackUpload>(),
        status: 201,
        response: json_body::<api::PushReport>(),
    },
    Route {
        op: Op::GetPack,
        method: "GET",
        path: "/v1/packs/{ref}",
        access: Access::Read,
        summary: "One pack by NAME:TAG, NAME:VERSION or pack digest: manifest and signature",
        request: None,
        status: 200,
        response: json_body::<api::PackInfo>(),
    },
    Route {
        op: Op::DeletePack,
        method: "DELETE",
        path: "/v1/packs/{ref}",
        access: Access::Admin,
        summary: "Remove a pack version and its tags (chunks go at the next gc)",
        request: None,
        status: 200,
        response: json_body::<api::PackSummary>(),
    },
    Route {
        op: Op::PackVersions,
        method: "GET",
        path: "/v1/packs/{name}/versions",
        access: Access::Read,
        summary: "Every version of one pack name",
        request: None,
        status: 200,
        response: json_body::<api::PackList>(),
    },
    Route {
        op: Op::PromotePack,
        method: "POST",
        path: "/v1/packs/{ref}/promote",
        access: Access::Publish,
        summary: "Point a tag at the version the reference names",
        request: json_body::<api::PromoteRequest>(),
        status: 200,
        response: json_body::<api::PromoteReport>(),
    },
    Route {
        op: Op::MissingChunks,
        method: "POST",
        path: "/v1/chunks/missing",
        access: Access::Publish,
        summary: "Which of these chunk digests the server lacks",
        request: json_body::<api::DigestList>(),
        status: 200,
        response: json_body::<api::MissingChunks>(),
    },
    Route {
        op: Op::UploadChunks,
        method: "POST",
        path: "/v1/chunks",
        access: Access::Publish,
        summary: "Upload a frame of stored chunks; each is verified against its digest and kept even before a manifest names it",
        request: binary(FRAME),
        status: 200,
        response: json_body::<api::UploadReport>(),
    },
    Route {
        op: Op::FetchChunks,
        method: "POST",
        path: "/v1/chunks/fetch",
        access: Access::Read,
        summary: "Download these chunks as one frame",
        request: json_body::<api::DigestList>(),
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
        response: json_body::<api::TokenList>(),
    },
    Route {
        op: Op::CreateToken,
        method: "POST",
        path: "/v1/tokens",
        access: Access::Admin,
        summary: "Make a token; the secret is in this answer only",
        request: json_body::<api::TokenRequest>(),
        status: 201,
        response: json_body::<api::TokenCreated>(),
    },
    Route {
        op: Op::RevokeToken,
        method: "DELETE",
        path: "/v1/tokens/{id}",
        access: Access::Admin,
        summary: "Revoke a token",
        request: None,
        status: 200,
        response: json_body::<api::TokenInfo>(),
    },
    Route {
        op: Op::ServerKey,
        method: "GET",
        path: "/v1/server-key",
        access: Access::Public,
        summary: "The public key desired states are signed with",
        request: None,
        status: 200,
        response: json_body::<api::ServerKey>(),
    },
    Route {
        op: Op::EnrollChallenge,
        method: "POST",
        path: "/v1/devices/enroll/challenge",
        access: Access::Enroll,
        summary: "A one-time nonce (valid 5 minutes) for the device to sign in its enrollment request",
        request: None,
        status: 200,
        response: json_body::<fleet::EnrollChallenge>(),
    },
    Route {
        op: Op::Enroll,
        method: "POST",
        path: "/v1/devices/enroll",
        access: Access::Enroll,
        summary: "Register a device key with labels (or change a known device's), proven by the key's signature over a challenge nonce; answers the device's own token, the MQTT endpoint, the server key and the trust policy",
        request: json_body::<fleet::EnrollRequest>(),
        status: 200,
        response: json_body::<fleet::EnrollResponse>(),
    },
    Route {
        op: Op::ListDevices,
        method: "GET",
        path: "/v1/devices",
        access: Access::View,
        summary: "Every enrolled device with its desired and reported state",
        request: None,
        status: 200,
        response: json_body::<fleet::DeviceList>(),
    },
    Route {
        op: Op::GetDevice,
        method: "GET",
        path: "/v1/devices/{id}",
        access: Access::View,
        summary: "One device",
        request: None,
        status: 200,
        response: json_body::<fleet::DeviceInfo>(),
    },
    Route {
        op: Op::CreateRollout,
        method: "POST",
        path: "/v1/rollouts",
        access: Access::Publish,
        summary: "Start a staged rollout of a pack to the devices a label selector picks",
        request: json_body::<fleet::RolloutRequest>(),
        status: 201,
        response: json_body::<fleet::RolloutStatus>(),
    },
    Route {
        op: Op::ListRollouts,
        method: "GET",
        path: "/v1/rollouts",
        access: Access::View,
        summary: "Every rollout",
        request: None,
        status: 200,
        response: json_body::<fleet::RolloutList>(),
    },
    Route {
        op: Op::GetRollout,
        method: "GET",
        path: "/v1/rollouts/{id}",
        access: Access::View,
        summary: "One rollout: phase, step, and each device's outcome",
        request: None,
        status: 200,
        response: json_body::<fleet::RolloutStatus>(),
    },
    Route {
        op: Op::AdvanceRollout,
        method: "POST",
        path: "/v1/rollouts/{id}/advance",
        access: Access::Publish,
        summary: "Go to the next step now",
        request: None,
        status: 200,
        response: json_body::<fleet::RolloutStatus>(),
    },
    Route {
        op: Op::PauseRollout,
        method: "POST",
        path: "/v1/rollouts/{id}/pause",
        access: Access::Publish,
        summary: "Stop automatic advancing",
        request: None,
        status: 200,
        response: json_body::<fleet::RolloutStatus>(),
    },
    Route {
        op: Op::ResumeRollout,
        method: "POST",
        path: "/v1/rollouts/{id}/resume",
        access: Access::Publish,
        summary: "Resume a paused rollout",
        request: None,
        status: 200,
        response: json_body::<fleet::RolloutStatus>(),
    },
    Route {
        op: Op::RollbackRollout,
        method: "POST",
        path: "/v1/rollouts/{id}/rollback",
        access: Access::Publish,
        summary: "Send every device of the rollout back to what it ran before",
        request: None,
        status: 200,
        response: json_body::<fleet::RolloutStatus>(),
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

/// Finds the route for a method and path; path parameters are percent-decoded. A template
/// with more literal segments wins over one with parameters in their place
/// (`/v1/chunks/fetch` is never `/v1/chunks/{digest}`), both for the route and for the
/// methods a 405 names.
pub fn route(method: &Method, path: &str) -> Matched {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let matching: Vec<(&'static Route, Vec<String>)> = ROUTES
        .iter()
        .filter_map(|r| match_template(r.path, &segments).map(|p| (r, p)))
        .collect();
    let Some(best) = matching.iter().map(|(r, _)| literals(r.path)).max() else {
        return Matched::NotFound;
    };
    let mut allowed = Vec::new();
    for (r, params) in matching {
        if literals(r.path) != best {
            continue;
        }
        if r.method == method.as_str() {
            return Matched::Route(r, params);
        }
        allowed.push(r.method);
    }
    Matched::MethodNotAllowed(allowed)
}

fn literals(template: &str) -> usize {
    template.split('/').filter(|s| !s.starts_with('{')).count()
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

fn content(body: &Body, generator: &mut SchemaGenerator) -> Value {
    let schema = match body.schema {
        Some(schema_of) => schema_of(generator).to_value(),
        None => json!({ "type": "string", "format": "binary" }),
    };
    json!({ body.content_type: { "schema": schema } })
}

/// A pack name as `aq-pack` accepts it (`manifest::validate_name`).
const NAME: &str = "[a-z0-9][a-z0-9._-]{0,127}";

/// The schema of a path parameter, by its name in the templates.
fn param_schema(name: &str) -> Value {
    match name {
        "name" => json!({ "type": "string", "pattern": format!("^{NAME}$") }),
        "ref" => json!({
            "type": "string",
            "description": "NAME, NAME:VERSION, NAME:TAG or a pack digest",
            "pattern": format!(
                "^({NAME}(:([0-9]+\\.[0-9]+\\.[0-9]+(-[0-9A-Za-z.-]+)?(\\+[0-9A-Za-z.-]+)?|{NAME}))?|(blake3:)?[0-9a-f]{{64}})$"
            ),
        }),
        "digest" => json!({ "type": "string", "pattern": "^(blake3:)?[0-9a-f]{64}$" }),
        _ => json!({ "type": "string" }),
    }
}

/// The OpenAPI 3.1 document of [`ROUTES`].
pub fn openapi() -> Value {
    // JSON Schema 2020-12 is OpenAPI 3.1's schema dialect; named schemas go to components.
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator();
    let error = generator.subschema_for::<api::ErrorBody>().to_value();
    let mut paths = serde_json::Map::new();
    for r in ROUTES {
        let mut op = json!({
            "operationId": format!("{:?}", r.op),
            "summary": r.summary,
            "x-aq-access": r.access.as_str(),
        });
        let params: Vec<Value> = params_of(r.path)
            .into_iter()
            .map(
                |p| json!({ "name": p, "in": "path", "required": true, "schema": param_schema(p) }),
            )
            .collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some(body) = &r.request {
            op["requestBody"] =
                json!({ "required": true, "content": content(body, &mut generator) });
        }
        let mut ok = json!({ "description": "success" });
        if let Some(body) = &r.response {
            ok["content"] = content(body, &mut generator);
        }
        let mut responses = serde_json::Map::new();
        responses.insert(r.status.to_string(), ok);
        responses.insert(
            "default".into(),
            json!({
                "description": "refused: a JSON error body",
                "content": { JSON: { "schema": error } }
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
            "schemas": generator.take_definitions(true),
        }
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
        // A literal segment wins over a parameter, for the route and for the 405's list.
        assert!(matches!(
            route(&Method::GET, "/v1/chunks/fetch"),
            Matched::MethodNotAllowed(m) if m == ["POST"]
        ));
        assert!(matches!(
            route(&Method::POST, "/v1/chunks/fetch"),
            Matched::Route(r, _) if r.op == Op::FetchChunks
        ));
        assert!(matches!(
            route(&Method::GET, "/v1/chunks/abc"),
            Matched::Route(r, p) if r.op == Op::GetChunk && p == ["abc"]
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
        }
        // Every reference resolves, and the wire forms are the ones the codecs write.
        fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        out.push(r);
                    }
                    m.values().for_each(|v| refs(v, out));
                }
                Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > ROUTES.len(), "{found:?}");
        for r in found {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            assert!(schemas.get(name).is_some(), "schema {name} is not defined");
        }
        assert_eq!(
            schemas["Digest"]["pattern"],
            aq_sync_proto::schema::DIGEST_PATTERN
        );
        assert_eq!(
            schemas["PushReport"]["properties"]["digest"]["pattern"],
            "^blake3:[0-9a-f]{64}$"
        );
        assert_eq!(
            schemas["DigestList"]["properties"]["digests"]["items"]["$ref"],
            "#/components/schemas/Digest"
        );
        // Request bodies that refuse unknown fields say so.
        assert_eq!(schemas["PackUpload"]["additionalProperties"], false);
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
