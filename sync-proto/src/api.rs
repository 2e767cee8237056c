//! JSON bodies of the registry REST API (`/v1/packs`, `/v1/chunks`, `/v1/tokens`), shared by
//! the server that answers them and the CLI that sends them.

use aq_pack::Digest;
use serde::{Deserialize, Serialize};

use crate::role::Role;

/// Most digests in one `missing` or `fetch` request.
pub const MAX_DIGESTS_PER_REQUEST: usize = 65_536;

/// The body of every refused request: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ErrorDetail {
    /// A stable machine-readable code, e.g. `unauthorized`, `untrusted`, `missing_chunks`.
    pub code: String,
    pub message: String,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HealthStatus {
    /// `ok` while the server runs.
    pub status: String,
}

/// `GET /v1/whoami`: the token the caller presented.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WhoAmI {
    pub name: String,
    pub role: Role,
    pub token_id: String,
}

/// `GET /v1/server-key`: the key desired states are signed with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ServerKey {
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::PublicKeyText"))]
    pub public_key: aq_pack::PublicKey,
    pub key_id: String,
}

/// `POST /v1/packs`: a signed manifest whose chunks the server already holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PackUpload {
    /// The canonical manifest, byte for byte (its blake3 is the pack digest).
    pub manifest: String,
    /// The signature envelope, as its canonical JSON text.
    #[serde(default)]
    pub signature: Option<String>,
    /// Tags to point at the new version (besides `latest`, which moves on its own).
    #[serde(default)]
    pub tags: Vec<String>,
}

/// The answer to `POST /v1/packs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PushReport {
    pub id: String,
    #[cfg_attr(feature = "schema", schemars(pattern(crate::schema::DIGEST_PATTERN)))]
    pub digest: String,
    /// False when the same pack (same digest) was already there.
    pub created: bool,
    pub signed_by: Option<String>,
    pub tags: Vec<String>,
}

/// One pack as `GET /v1/packs/{name}:{tag}` and `GET /v1/packs/{digest}` return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PackInfo {
    pub id: String,
    pub name: String,
    pub version: String,
    #[cfg_attr(feature = "schema", schemars(pattern(crate::schema::DIGEST_PATTERN)))]
    pub digest: String,
    pub size: u64,
    pub tags: Vec<String>,
    pub saved_at: String,
    pub signed_by: Option<String>,
    /// The canonical manifest text.
    pub manifest: String,
    /// The signature envelope text.
    pub signature: Option<String>,
}

/// One line of `GET /v1/packs` and `GET /v1/packs/{name}/versions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PackSummary {
    pub id: String,
    pub name: String,
    pub version: String,
    #[cfg_attr(feature = "schema", schemars(pattern(crate::schema::DIGEST_PATTERN)))]
    pub digest: String,
    pub size: u64,
    pub tags: Vec<String>,
    pub saved_at: String,
    pub signed_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PackList {
    pub packs: Vec<PackSummary>,
}

/// `POST /v1/packs/{name}:{tag}/promote`: point `tag` at the version the path names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    pub tag: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PromoteReport {
    pub id: String,
    pub tag: String,
}

/// `POST /v1/chunks/missing` and `POST /v1/chunks/fetch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DigestList {
    #[cfg_attr(feature = "schema", schemars(with = "Vec<crate::schema::DigestText>"))]
    pub digests: Vec<Digest>,
}

/// The answer to `POST /v1/chunks/missing`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MissingChunks {
    #[cfg_attr(feature = "schema", schemars(with = "Vec<crate::schema::DigestText>"))]
    pub missing: Vec<Digest>,
}

/// The answer to `POST /v1/chunks` (a frame of chunks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UploadReport {
    pub chunks_new: usize,
    pub chunks_present: usize,
    pub bytes_new: u64,
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// A label for people (`ci`, `alice`, a device id).
    pub name: String,
    pub role: Role,
}

/// A token as listed: never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_at: String,
}

/// The answer to `POST /v1/tokens`: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TokenCreated {
    #[serde(flatten)]
    pub info: TokenInfo,
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_refuses_unknown_fields_and_defaults_the_rest() {
        let up: PackUpload = serde_json::from_str(r#"{"manifest":"{}"}"#).unwrap();
        assert_eq!(up.signature, None);
        assert!(up.tags.is_empty());
        assert!(serde_json::from_str::<PackUpload>(r#"{"manifest":"{}","x":1}"#).is_err());
        let list: DigestList =
            serde_json::from_str(&format!(r#"{{"digests":["{}"]}}"#, Digest::of(b"a"))).unwrap();
        assert_eq!(list.digests, vec![Digest::of(b"a")]);
        assert!(serde_json::from_str::<DigestList>(r#"{"digests":["zz"]}"#).is_err());
    }

    #[test]
    fn created_token_is_flat() {
        let t = TokenCreated {
            info: TokenInfo {
                id: "a".into(),
                name: "ci".into(),
                role: Role::Publisher,
                created_at: "now".into(),
            },
            token: "aqt_x".into(),
        };
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["role"], "publisher");
        assert_eq!(v["token"], "aqt_x");
    }
}
