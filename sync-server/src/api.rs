//! Requests to answers, without sockets: authentication, routing, and one handler per route.
//! Registry and token calls block on disk, so they run on tokio's blocking pool.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use aq_pack::reference::validate_tag;
use aq_pack::signature::SignedManifest;
use aq_pack::trust::Verdict;
use aq_pack::{Digest, PackRef, TrustPolicy};
use aq_store::{LooseChunk, Registry, StoredPack};
use aq_sync_proto::api::{
    DigestList, ErrorBody, ErrorDetail, HealthStatus, MAX_DIGESTS_PER_REQUEST, MissingChunks,
    PackInfo, PackList, PackSummary, PackUpload, PromoteReport, PromoteRequest, PushReport,
    ServerKey, TokenCreated, TokenList, TokenRequest, UploadReport, WhoAmI,
};
use aq_sync_proto::fleet::{
    DeviceList, EnrollRequest, EnrollResponse, PackTarget, RolloutList, RolloutRequest,
};
use aq_sync_proto::frame::{self, ChunkEntry};
use aq_sync_proto::role::Access;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::fleet::{Command, Fleet, FleetError, Publish};
use crate::routes::{self, Matched, Op, Route};
use crate::tokens::{Caller, Tokens};

/// The most stored bytes one `POST /v1/chunks/fetch` answer carries; clients ask in batches.
pub const MAX_FETCH_BYTES: u64 = 32 << 20;

/// What every request handler shares.
pub struct State {
    pub registry: Arc<Registry>,
    pub fleet: Arc<redb::Database>,
    /// The trust policy file pushes are checked against (read on every push, so edits apply
    /// without a restart). Absent means no key is trusted.
    pub trust_path: PathBuf,
    pub allow_unsigned: bool,
    pub max_body: usize,
    /// The key desired states are signed with.
    pub fleet_key: Arc<aq_pack::keys::SecretKey>,
    pub topic_prefix: String,
    /// The MQTT endpoint devices are told to connect to.
    pub mqtt_url: String,
    /// Desired-state messages to publish (retained) once their change is committed.
    pub publish: crate::outbox::Outbox,
    /// Where handlers do their store and fleet work.
    pub work: crate::work::WorkPool,
}

impl State {
    /// Runs `f` on the work pool, unless the pool is overloaded (then a 503).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.work.admit(f).await?
    }

    /// Runs a fleet change on the work pool and queues the messages it produced.
    async fn fleet<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Fleet<'_>) -> Result<(T, Vec<Publish>), FleetError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let state = self.clone();
        let (value, publish) = self
            .blocking(move || {
                let fleet = Fleet::new(&state.fleet, &state.fleet_key, &state.topic_prefix)?;
                Ok(f(&fleet)?)
            })
            .await?;
        for p in publish {
            self.publish.push(p);
        }
        Ok(value)
    }
}

type Answer = Result<Response<Full<Bytes>>, ApiError>;

/// Answers one request. Never fails: refusals are JSON error bodies.
pub async fn handle<B>(state: &Arc<State>, request: Request<B>) -> Response<Full<Bytes>>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = match dispatch(state, request).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    tracing::debug!(%method, %path, status = response.status().as_u16(), elapsed = ?started.elapsed(), "request");
    response
}

pub fn error_response(e: &ApiError) -> Response<Full<Bytes>> {
    let body = ErrorBody {
        error: ErrorDetail {
            code: e.code.to_owned(),
            message: e.message.clone(),
        },
    };
    // Two strings cannot fail to encode; the fallback keeps this function total.
    let body = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = bytes_response(e.status, "application/json", Bytes::from(body));
    if e.status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if e.status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

fn bytes_response(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Answer {
    let body = serde_json::to_vec(value).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(bytes_response(
        status,
        "application/json",
        Bytes::from(body),
    ))
}

async fn dispatch<B>(state: &Arc<State>, request: Request<B>) -> Answer
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (route, params) = match routes::route(request.method(), request.uri().path()) {
        Matched::Route(r, p) => (r, p),
        Matched::NotFound => {
            return Err(ApiError::not_found(format!(
                "no route {}; see /openapi.json",
                request.uri().path()
            )));
        }
        Matched::MethodNotAllowed(allowed) => {
            let mut r = error_response(&ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{} takes {}", request.uri().path(), allowed.join(", ")),
            ));
            if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
                r.headers_mut().insert(header::ALLOW, v);
            }
            return Ok(r);
        }
    };
    let caller = authenticate(state, route, &request).await?;
    let body = read_body(request, state.max_body).await?;
    match route.op {
        Op::Health => json(
            StatusCode::OK,
            &HealthStatus {
                status: "ok".into(),
            },
        ),
        Op::OpenApi => json(StatusCode::OK, &routes::openapi()),
        Op::WhoAmI => {
            let c =
                caller.ok_or_else(|| ApiError::internal("no caller on an authenticated route"))?;
            json(
                StatusCode::OK,
                &WhoAmI {
                    name: c.name,
                    role: c.role,
                    token_id: c.token_id,
                },
            )
        }
        Op::ListPacks => list_packs(state, None).await,
        Op::PackVersions => list_packs(state, Some(param(&params, 0)?)).await,
        Op::PushPack => push_pack(state, body).await,
        Op::GetPack => get_pack(state, param(&params, 0)?).await,
        Op::DeletePack => delete_pack(state, param(&params, 0)?).await,
        Op::PromotePack => promote(state, param(&params, 0)?, body).await,
        Op::MissingChunks => missing_chunks(state, body).await,
        Op::UploadChunks => upload_chunks(state, body).await,
        Op::FetchChunks => fetch_chunks(state, body).await,
        Op::GetChunk => get_chunk(state, param(&params, 0)?).await,
        Op::ListTokens => {
            let fleet = state.fleet.clone();
            let tokens = state
                .blocking(move || Ok(Tokens::new(&fleet)?.list()?))
                .await?;
            json(StatusCode::OK, &TokenList { tokens })
        }
        Op::CreateToken => {
            let req: TokenRequest = parse_json(&body)?;
            let fleet = state.fleet.clone();
            let (info, token) = state
                .blocking(move || {
                    Ok(Tokens::new(&fleet)?.create(&req.name, req.role, SystemTime::now())?)
                })
                .await?;
            tracing::info!(id = %info.id, name = %info.name, role = %info.role, "token created");
            json(StatusCode::CREATED, &TokenCreated { info, token })
        }
        Op::ServerKey => {
            let key = state.fleet_key.public_key();
            json(
                StatusCode::OK,
                &ServerKey {
                    key_id: key.key_id(),
                    public_key: key,
                },
            )
        }
        Op::EnrollChallenge => enroll_challenge(state).await,
        Op::Enroll => enroll(state, body).await,
        Op::ListDevices => {
            let devices = state.fleet(|f| Ok((f.devices()?, Vec::new()))).await?;
            json(StatusCode::OK, &DeviceList { devices })
        }
        Op::GetDevice => {
            let id = param(&params, 0)?.to_owned();
            let device = state
                .fleet(move |f| Ok((f.device(&id)?, Vec::new())))
                .await?;
            json(StatusCode::OK, &device)
        }
        Op::CreateRollout => create_rollout(state, body).await,
        Op::ListRollouts => {
            let rollouts = state.fleet(|f| Ok((f.rollouts()?, Vec::new()))).await?;
            json(StatusCode::OK, &RolloutList { rollouts })
        }
        Op::GetRollout => {
            let id = param(&params, 0)?.to_owned();
            let status = state
                .fleet(move |f| Ok((f.rollout(&id)?, Vec::new())))
                .await?;
            json(StatusCode::OK, &status)
        }
        Op::AdvanceRollout | Op::PauseRollout | Op::ResumeRollout | Op::RollbackRollout => {
            let command = match route.op {
                Op::AdvanceRollout => Command::Advance,
                Op::PauseRollout => Command::Pause,
                Op::ResumeRollout => Command::Resume,
                _ => Command::Rollback,
            };
            let id = param(&params, 0)?.to_owned();
            let status = state
                .fleet(move |f| f.command(&id, command, SystemTime::now()))
                .await?;
            tracing::info!(rollout = %status.id, ?command, phase = ?status.phase, "rollout command");
            json(StatusCode::OK, &status)
        }
        Op::RevokeToken => {
            let id = param(&params, 0)?.to_owned();
            let fleet = state.fleet.clone();
            let info = state
                .blocking(move || Ok(Tokens::new(&fleet)?.revoke(&id)?))
                .await?;
            tracing::info!(id = %info.id, name = %info.name, "token revoked");
            json(StatusCode::OK, &info)
        }
    }
}

fn param(params: &[String], i: usize) -> Result<&str, ApiError> {
    params
        .get(i)
        .map(String::as_str)
        .ok_or_else(|| ApiError::internal("route parameter missing"))
}

async fn authenticate<B>(
    state: &Arc<State>,
    route: &Route,
    request: &Request<B>,
) -> Result<Option<Caller>, ApiError> {
    if route.access == Access::Public {
        return Ok(None);
    }
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("this route needs `Authorization: Bearer <token>`"))?;
    let secret = header
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?
        .to_owned();
    let fleet = state.fleet.clone();
    // Never refused for load: it is small, and a request refused later has its body read.
    let caller = state
        .work
        .run(move || -> Result<_, ApiError> { Ok(Tokens::new(&fleet)?.authenticate(&secret)?) })
        .await??
        .ok_or_else(|| unauthorized("unknown or revoked token"))?;
    if !caller.role.allows(route.access) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token {:?} has role {}, and {} {} needs {} access",
                caller.name,
                caller.role,
                route.method,
                route.path,
                route.access.as_str()
            ),
        ));
    }
    Ok(Some(caller))
}

/// After refusing a body as too large, read and drop at most this many more bytes, so a
/// client still sending reads the 413 rather than a connection reset.
const DRAIN_CAP: u64 = 16 << 20;

/// The whole body, or 413 when it passes `limit` (as declared, or as it arrives: chunked
/// bodies included). One limit; a body is handed on whole or not at all.
async fn read_body<B>(request: Request<B>, limit: usize) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let limit = limit as u64;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request bodies are limited to {limit} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut over = declared.is_some_and(|len| len > limit);
    if declared.is_some_and(|len| len > limit.saturating_add(DRAIN_CAP)) {
        return Err(too_large());
    }
    let mut body = std::pin::pin!(request.into_body());
    let mut collected = bytes::BytesMut::new();
    let mut seen: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::bad_request(format!("failed to read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len() as u64);
        if seen > limit && !over {
            over = true;
            collected = bytes::BytesMut::new();
        }
        if over {
            if seen > limit.saturating_add(DRAIN_CAP) {
                break;
            }
            continue;
        }
        collected.extend_from_slice(&data);
    }
    if over {
        return Err(too_large());
    }
    Ok(collected.freeze())
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn parse_ref(text: &str) -> Result<PackRef, ApiError> {
    text.parse::<PackRef>()
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

fn summary(pack: &StoredPack) -> PackSummary {
    let m = pack.manifest();
    PackSummary {
        id: m.id(),
        name: m.name.clone(),
        version: m.version.to_string(),
        digest: pack.signed.digest().to_string(),
        size: m.total_size(),
        tags: pack.tags.clone(),
        saved_at: pack.saved_at.clone(),
        signed_by: pack.signed.signature.as_ref().map(|s| s.key_id.clone()),
    }
}

fn info(pack: &StoredPack) -> PackInfo {
    let s = summary(pack);
    PackInfo {
        id: s.id,
        name: s.name,
        version: s.version,
        digest: s.digest,
        size: s.size,
        tags: s.tags,
        saved_at: s.saved_at,
        signed_by: s.signed_by,
        manifest: String::from_utf8_lossy(&pack.signed.manifest_bytes).into_owned(),
        signature: pack
            .signed
            .signature
            .as_ref()
            .map(|s| String::from_utf8_lossy(&s.to_bytes()).into_owned()),
    }
}

/// A digest in a path: 64 hex digits, with or without the `blake3:` prefix.
fn path_digest(text: &str) -> Option<Digest> {
    Digest::from_hex(text.strip_prefix("blake3:").unwrap_or(text)).ok()
}

/// Finds a pack by `NAME[:TAG|:VERSION]`, or by pack digest (`blake3:` and 64 hex digits,
/// or the hex digits alone).
fn lookup(registry: &Registry, text: &str) -> Result<StoredPack, ApiError> {
    if let Some(digest) = path_digest(text) {
        let wanted = digest.to_string();
        for s in registry.list()? {
            if s.digest == wanted {
                let reference = parse_ref(&format!("{}:{}", s.name, s.version))?;
                return Ok(registry.get(&reference)?);
            }
        }
        return Err(ApiError::not_found(format!("no pack has digest {text}")));
    }
    Ok(registry.get(&parse_ref(text)?)?)
}

async fn list_packs(state: &Arc<State>, name: Option<&str>) -> Answer {
    let registry = state.registry.clone();
    let name = name.map(str::to_owned);
    let packs = state
        .blocking(move || {
            if let Some(n) = &name {
                aq_pack::manifest::validate_name(n).map_err(ApiError::bad_request)?;
            }
            let all = registry.list()?;
            let mut out = Vec::new();
            for s in all {
                if name.as_ref().is_some_and(|n| *n != s.name) {
                    continue;
                }
                out.push(PackSummary {
                    id: format!("{}:{}", s.name, s.version),
                    name: s.name,
                    version: s.version,
                    digest: s.digest,
                    size: s.size,
                    tags: s.tags,
                    saved_at: s.saved_at,
                    signed_by: s.signed_by,
                });
            }
            if let Some(n) = &name
                && out.is_empty()
            {
                return Err(ApiError::not_found(format!("no pack is named {n}")));
            }
            Ok(out)
        })
        .await?;
    json(StatusCode::OK, &PackList { packs })
}

async fn get_pack(state: &Arc<State>, reference: &str) -> Answer {
    let registry = state.registry.clone();
    let reference = reference.to_owned();
    let pack = state
        .blocking(move || lookup(&registry, &reference))
        .await?;
    json(StatusCode::OK, &info(&pack))
}

async fn delete_pack(state: &Arc<State>, reference: &str) -> Answer {
    let registry = state.registry.clone();
    let reference = reference.to_owned();
    let removed = state
        .blocking(move || {
            let pack = lookup(&registry, &reference)?;
            let exact = parse_ref(&pack.manifest().id())?;
            registry.remove(&exact)?;
            Ok(summary(&pack))
        })
        .await?;
    tracing::info!(id = %removed.id, "pack deleted");
    json(StatusCode::OK, &removed)
}

async fn promote(state: &Arc<State>, reference: &str, body: Bytes) -> Answer {
    let req: PromoteRequest = parse_json(&body)?;
    validate_tag(&req.tag).map_err(ApiError::bad_request)?;
    let reference = parse_ref(reference)?;
    let registry = state.registry.clone();
    let tag = req.tag.clone();
    let id = state
        .blocking(move || Ok(registry.tag(&reference, &tag)?))
        .await?;
    tracing::info!(%id, tag = %req.tag, "tag moved");
    json(StatusCode::OK, &PromoteReport { id, tag: req.tag })
}

/// The running or paused rollout of pack `id`, if any.
fn live_rollout_of(state: &State, id: &str) -> Result<Option<String>, ApiError> {
    use aq_sync_proto::fleet::RolloutPhase;
    let fleet = Fleet::new(&state.fleet, &state.fleet_key, &state.topic_prefix)?;
    Ok(fleet
        .rollouts()?
        .into_iter()
        .find(|r| {
            r.pack.id == id && matches!(r.phase, RolloutPhase::Running | RolloutPhase::Paused)
        })
        .map(|r| r.id))
}

async fn push_pack(state: &Arc<State>, body: Bytes) -> Answer {
    let upload: PackUpload = parse_json(&body)?;
    for tag in &upload.tags {
        validate_tag(tag).map_err(ApiError::bad_request)?;
    }
    let signed = SignedManifest::parse(
        upload.manifest.as_bytes(),
        upload.signature.as_deref().map(str::as_bytes),
    )
    .map_err(|e| ApiError::bad_request(format!("invalid pack: {e}")))?;
    let policy = read_policy(state).await?;
    let verdict = policy
        .verify(&signed, SystemTime::now(), state.allow_unsigned)
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "untrusted",
                format!("pack refused by the server's trust policy: {e}"),
            )
        })?;
    let signed_by = match verdict {
        Verdict::Trusted { key_id, .. } => Some(key_id),
        Verdict::UnsignedAllowed => None,
    };
    let registry = state.registry.clone();
    let tags = upload.tags.clone();
    let fleet_state = state.clone();
    let report = state.blocking(move || {
        let id = signed.manifest.id();
        let digest = signed.digest().to_string();
        let created = match registry.get(&parse_ref(&id)?) {
            Ok(existing) if existing.signed.digest().to_string() == digest => false,
            // A version changes only by gaining variants (`aq export`); the store checks
            // the same rule again inside its commit.
            Ok(existing) if !signed.manifest.extends(existing.manifest()) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!(
                        "{id} already exists with another digest ({}); versions are immutable but for added variants, push a new version",
                        existing.signed.digest()
                    ),
                ));
            }
            // Adding a variant changes the version's digest; devices of a live rollout are
            // told the old digest and would find the new one. Wait until it is over.
            Ok(_) if let Some(rollout) = live_rollout_of(&fleet_state, &id)? => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!(
                        "{id} is in the live rollout {rollout}; add variants once it completes or is rolled back"
                    ),
                ));
            }
            _ => {
                let wanted: Vec<Digest> = signed
                    .manifest
                    .unique_chunks()
                    .iter()
                    .map(|c| c.digest)
                    .collect();
                let missing = registry.missing_chunks(&wanted)?;
                if !missing.is_empty() {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "missing_chunks",
                        format!(
                            "{} of {} chunks of {id} have not been uploaded (first: {}); upload them with POST /v1/chunks first",
                            missing.len(),
                            wanted.len(),
                            missing[0]
                        ),
                    ));
                }
                // The pack and its tags in one transaction.
                registry.begin_pack(signed)?.with_tags(&tags)?.commit()?;
                true
            }
        };
        if !created && !tags.is_empty() {
            registry.tag_all(&parse_ref(&id)?, &tags)?;
        }
        Ok(PushReport {
            id,
            digest,
            created,
            signed_by,
            tags,
        })
    })
    .await?;
    tracing::info!(id = %report.id, digest = %report.digest, created = report.created, "pack pushed");
    json(
        if report.created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        &report,
    )
}

async fn read_policy(state: &Arc<State>) -> Result<TrustPolicy, ApiError> {
    match tokio::fs::read_to_string(&state.trust_path).await {
        Ok(text) => TrustPolicy::parse(&text).map_err(|e| {
            ApiError::internal(format!(
                "the server's trust policy {} does not parse: {e}",
                state.trust_path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TrustPolicy::empty()),
        Err(e) => Err(ApiError::internal(format!(
            "failed to read the trust policy {}: {e}",
            state.trust_path.display()
        ))),
    }
}

fn digest_list(body: &[u8]) -> Result<Vec<Digest>, ApiError> {
    let list: DigestList = parse_json(body)?;
    if list.digests.len() > MAX_DIGESTS_PER_REQUEST {
        return Err(ApiError::bad_request(format!(
            "{} digests in one request; at most {MAX_DIGESTS_PER_REQUEST}",
            list.digests.len()
        )));
    }
    Ok(list.digests)
}

async fn missing_chunks(state: &Arc<State>, body: Bytes) -> Answer {
    let registry = state.registry.clone();
    // Parsing and answering included: the work pool is where CPU work waits its turn.
    state
        .blocking(move || {
            let wanted = digest_list(&body)?;
            let missing = registry.missing_chunks(&wanted)?;
            json(StatusCode::OK, &MissingChunks { missing })
        })
        .await
}

async fn upload_chunks(state: &Arc<State>, body: Bytes) -> Answer {
    let registry = state.registry.clone();
    let report = state
        .blocking(move || {
            let entries = frame::decode(&body)
                .map_err(|e| ApiError::bad_request(format!("invalid chunk frame: {e}")))?;
            let chunks: Vec<LooseChunk<'_>> = entries
                .iter()
                .map(|e| LooseChunk {
                    digest: e.digest,
                    size: e.size,
                    compressed: e.stored,
                })
                .collect();
            Ok(registry.put_chunks(&chunks, SystemTime::now())?)
        })
        .await?;
    json(
        StatusCode::OK,
        &UploadReport {
            chunks_new: report.chunks_new,
            chunks_present: report.chunks_present,
            bytes_new: report.bytes_new,
        },
    )
}

async fn fetch_chunks(state: &Arc<State>, body: Bytes) -> Answer {
    let wanted = digest_list(&body)?;
    if wanted.len() > frame::MAX_FRAME_CHUNKS as usize {
        return Err(ApiError::bad_request(format!(
            "at most {} chunks per fetch",
            frame::MAX_FRAME_CHUNKS
        )));
    }
    let registry = state.registry.clone();
    let body = state.blocking(move || {
        let mut stored = Vec::with_capacity(wanted.len());
        let mut seen = std::collections::HashSet::new();
        let mut total = 0u64;
        for d in &wanted {
            if !seen.insert(*d) {
                continue;
            }
            let bytes = registry.stored_chunk(d)?;
            let size = registry.chunk_size(d)?;
            total += bytes.len() as u64;
            if total > MAX_FETCH_BYTES {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "fetch_too_large",
                    format!("the chunks asked for exceed {MAX_FETCH_BYTES} bytes; ask for fewer at a time"),
                ));
            }
            stored.push((*d, size, bytes));
        }
        let entries: Vec<ChunkEntry<'_>> = stored
            .iter()
            .map(|(digest, size, bytes)| ChunkEntry {
                digest: *digest,
                size: *size,
                stored: bytes,
            })
            .collect();
        Ok(frame::encode(&entries))
    })
    .await?;
    Ok(bytes_response(
        StatusCode::OK,
        frame::CONTENT_TYPE,
        Bytes::from(body),
    ))
}

async fn get_chunk(state: &Arc<State>, digest: &str) -> Answer {
    let digest = path_digest(digest).ok_or_else(|| {
        ApiError::bad_request(format!(
            "invalid chunk digest {digest:?}: expected 64 lowercase hex digits, optionally after blake3:"
        ))
    })?;
    let registry = state.registry.clone();
    let bytes = state
        .blocking(move || Ok(registry.stored_chunk(&digest)?))
        .await?;
    Ok(bytes_response(
        StatusCode::OK,
        "application/zstd",
        Bytes::from(bytes),
    ))
}

async fn enroll_challenge(state: &Arc<State>) -> Answer {
    let challenge = state
        .fleet(|f| Ok((f.enroll_challenge(SystemTime::now())?, Vec::new())))
        .await?;
    json(StatusCode::OK, &challenge)
}

async fn enroll(state: &Arc<State>, body: Bytes) -> Answer {
    let req: EnrollRequest = parse_json(&body)?;
    let (device, token) = state
        .fleet(move |f| Ok((f.enroll(&req, SystemTime::now())?, Vec::new())))
        .await?;
    let policy = match tokio::fs::read_to_string(&state.trust_path).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => TrustPolicy::empty().to_toml(),
        Err(e) => {
            return Err(ApiError::internal(format!(
                "failed to read the trust policy: {e}"
            )));
        }
    };
    tracing::info!(device = %device.device, labels = ?device.labels, "device enrolled");
    json(
        StatusCode::OK,
        &EnrollResponse {
            device: device.device,
            token,
            mqtt_url: state.mqtt_url.clone(),
            topic_prefix: state.topic_prefix.clone(),
            server_key: state.fleet_key.public_key(),
            trust_policy: policy,
        },
    )
}

async fn create_rollout(state: &Arc<State>, body: Bytes) -> Answer {
    let req: RolloutRequest = parse_json(&body)?;
    let registry = state.registry.clone();
    let reference = req.pack.clone();
    // The selected devices that reported what they run: each must run the pack's model
    // (the variant it would pick) unless the request forces the rollout.
    let selector = req.selector.clone();
    let devices: Vec<_> = state
        .fleet(|f| Ok((f.devices()?, Vec::new())))
        .await?
        .into_iter()
        .filter(|d| selector.iter().all(|(k, v)| d.labels.get(k) == Some(v)))
        .collect();
    let force = req.force;
    let pack = state
        .blocking(move || {
            let pack = lookup(&registry, &reference)?;
            let incapable = crate::capability::incapable(&registry, &pack, &devices)?;
            if !incapable.is_empty() && !force {
                return Err(crate::capability::refusal(
                    &pack.manifest().id(),
                    &incapable,
                ));
            }
            Ok(PackTarget {
                id: pack.manifest().id(),
                digest: pack.signed.digest().to_string(),
            })
        })
        .await?;
    let status = state
        .fleet(move |f| f.create_rollout(&req, pack, SystemTime::now()))
        .await?;
    tracing::info!(rollout = %status.id, pack = %status.pack.id, devices = status.devices.len(), "rollout created");
    json(StatusCode::CREATED, &status)
}

#[cfg(test)]
mod tests;
