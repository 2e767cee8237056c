//! The fleet contract over MQTT: desired state (server to device, retained, signed by the
//! server) and reported state (device to server, signed by the device), their topics, and the
//! rule that makes repeated, late and out-of-order messages harmless.
//!
//! Every message travels in a [`Signed`] envelope: the message's JSON as a string, and an
//! ed25519 signature over a context string plus those exact bytes. The receiver checks the
//! signature with the key it already holds (the device got the server's key at enrollment; the
//! server recorded the device's), then parses the body, then applies [`accept`].

use std::collections::BTreeMap;

use aq_pack::keys::{PublicKey, SecretKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Version of every fleet message body and of the envelope.
pub const FLEET_FORMAT_VERSION: u32 = 1;
/// Largest envelope a receiver reads.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Largest MQTT packet a client reads off the connection (the built-in broker's limit too);
/// messages between this and [`MAX_MESSAGE_BYTES`] are read and refused.
pub const MAX_INCOMING_PACKET: usize = 1 << 20;
const DESIRED_CONTEXT: &[u8] = b"aquilia-desired-state-v1\0";
const REPORTED_CONTEXT: &[u8] = b"aquilia-reported-state-v1\0";
const ENROLL_CONTEXT: &[u8] = b"aquilia-enroll-v1\0";
/// How long an enrollment challenge stays valid.
pub const ENROLL_CHALLENGE_SECONDS: u64 = 300;

/// The topic the server publishes a device's desired state on (retained, QoS 1).
pub fn desired_topic(prefix: &str, device: &str) -> String {
    format!("{prefix}/devices/{device}/desired")
}

/// The topic a device publishes its reports on (QoS 1).
pub fn reported_topic(prefix: &str, device: &str) -> String {
    format!("{prefix}/devices/{device}/reported")
}

/// The filter the server subscribes to for every device's reports.
pub fn reported_filter(prefix: &str) -> String {
    format!("{prefix}/devices/+/reported")
}

/// The device id in a reported topic, if it is one.
pub fn device_of_reported_topic<'a>(prefix: &str, topic: &'a str) -> Option<&'a str> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix("/devices/")?;
    let device = rest.strip_suffix("/reported")?;
    (!device.is_empty() && !device.contains('/')).then_some(device)
}

/// Where a broker is: `mqtt://host:port`.
pub fn parse_mqtt_url(url: &str) -> Result<(String, u16), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("MQTT URL {url:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("mqtt") {
        return Err(format!("MQTT URL {url:?} must start with mqtt://"));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("no host in {url:?}"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "MQTT URL {url:?}: credentials do not belong in the URL"
        ));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "MQTT URL {url:?} has a path; give only mqtt://HOST[:PORT]"
        ));
    }
    // An IPv6 literal comes bracketed ("[::1]"); the client wants the bare address.
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("no host in {url:?}"));
    }
    // `port()` is None for a port that does not parse (99999): such a port is an error, not
    // the default.
    let after_host = authority
        .as_str()
        .rsplit_once(']')
        .map_or(authority.as_str(), |(_, rest)| rest);
    if after_host.contains(':') && authority.port().is_none() {
        return Err(format!("bad port in {url:?}"));
    }
    let port = match authority.port() {
        Some(p) => p
            .as_str()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("bad port in {url:?}"))?,
        None => 1883,
    };
    Ok((host.to_owned(), port))
}

/// A pack as a device runs it: its id and digest (the digest decides; the id is for people).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PackTarget {
    pub id: String,
    #[cfg_attr(feature = "schema", schemars(pattern(crate::schema::DIGEST_PATTERN)))]
    pub digest: String,
}

/// What the server wants a device to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DesiredState {
    pub format_version: u32,
    pub device: String,
    /// Strictly increasing per device; a device ignores anything not above what it applied.
    pub seq: u64,
    /// `None`: serve nothing.
    pub pack: Option<PackTarget>,
    /// The rollout that set this state, if any.
    #[serde(default)]
    pub rollout: Option<String>,
    pub issued_at: String,
}

/// Where a device stands with its desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Running what the desired state asks for.
    Applied,
    /// Fetching or loading it.
    Applying,
    /// It could not be fetched, verified or loaded; the previous pack keeps serving.
    Failed,
}

/// Serving health since the agent started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Health {
    pub uptime_s: u64,
    pub requests: u64,
    /// Requests answered 5xx.
    pub errors: u64,
    /// p95 request latency in milliseconds, once there were requests.
    #[serde(default)]
    pub p95_ms: Option<f64>,
    /// Model loads that failed.
    pub load_errors: u64,
}

/// What a device can run, reported with its state: the server checks a pack's model for
/// each device (the variant the device would pick, on the engines it has) before a rollout
/// reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// The aq version the device runs (its engines' operator coverage is that version's).
    pub aq_version: String,
    /// The device profile in use, when one is.
    #[serde(default)]
    pub profile: Option<String>,
    /// Pack variants the device loads, best first (it falls back to the main model).
    #[serde(default)]
    pub variants: Vec<String>,
    /// Engines the build has and the profile allows ("aq", "tract").
    pub engines: Vec<String>,
    /// Threads one run may use.
    #[serde(default)]
    pub threads: u32,
}

/// What a device says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ReportedState {
    pub format_version: u32,
    pub device: String,
    /// The device's own counter, strictly increasing across restarts; the server ignores a
    /// report not above the last it took.
    pub report_seq: u64,
    /// The desired-state seq this report is about.
    pub desired_seq: u64,
    pub phase: Phase,
    pub active: Option<PackTarget>,
    #[serde(default)]
    pub previous: Option<PackTarget>,
    #[serde(default)]
    pub error: Option<String>,
    pub health: Health,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Older agents do not send it.
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
    pub sent_at: String,
}

/// The wire envelope of a fleet message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Signed {
    pub format_version: u32,
    /// The message's JSON, exactly as signed.
    pub body: String,
    pub key_id: String,
    /// base64 of the ed25519 signature over context + body.
    pub signature: String,
}

/// A fleet message that cannot be accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    #[error("message is {0} bytes; at most {MAX_MESSAGE_BYTES} are read")]
    TooLarge(usize),
    #[error("message envelope is not valid: {0}")]
    Envelope(String),
    #[error("message envelope version {0} is not supported (this build reads 1)")]
    Version(u32),
    #[error("message is signed by key {found}, expected {expected}")]
    WrongKey { expected: String, found: String },
    #[error("message signature does not verify")]
    BadSignature,
    #[error("message body is not valid: {0}")]
    Body(String),
    #[error("message is for device {found}, not {expected}")]
    WrongDevice { expected: String, found: String },
}

/// Which kind of message: its signing context.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Desired,
    Reported,
}

impl Kind {
    fn context(self) -> &'static [u8] {
        match self {
            Kind::Desired => DESIRED_CONTEXT,
            Kind::Reported => REPORTED_CONTEXT,
        }
    }
}

fn message(kind: Kind, body: &[u8]) -> Vec<u8> {
    [kind.context(), body].concat()
}

/// Signs a message body into envelope bytes.
pub fn seal<T: Serialize>(kind: Kind, value: &T, key: &SecretKey) -> Vec<u8> {
    // Serialising these plain structs cannot fail (string keys, no maps with other keys).
    let body = serde_json::to_string(value).unwrap_or_default();
    let signature = key.sign(&message(kind, body.as_bytes()));
    let envelope = Signed {
        format_version: FLEET_FORMAT_VERSION,
        body,
        key_id: key.public_key().key_id(),
        signature: STANDARD.encode(signature),
    };
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// Checks an envelope against the key expected to have signed it, then parses the body.
pub fn open<T: DeserializeOwned>(
    kind: Kind,
    bytes: &[u8],
    key: &PublicKey,
) -> Result<T, MessageError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(MessageError::TooLarge(bytes.len()));
    }
    let envelope: Signed =
        serde_json::from_slice(bytes).map_err(|e| MessageError::Envelope(e.to_string()))?;
    if envelope.format_version != FLEET_FORMAT_VERSION {
        return Err(MessageError::Version(envelope.format_version));
    }
    let expected = key.key_id();
    if envelope.key_id != expected {
        return Err(MessageError::WrongKey {
            expected,
            found: envelope.key_id,
        });
    }
    let signature: [u8; 64] = STANDARD
        .decode(&envelope.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(MessageError::BadSignature)?;
    if !key.verify(&message(kind, envelope.body.as_bytes()), &signature) {
        return Err(MessageError::BadSignature);
    }
    serde_json::from_str(&envelope.body).map_err(|e| MessageError::Body(e.to_string()))
}

/// What a device does with a verified desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Newer than anything applied: act on it.
    Apply,
    /// Not above the last applied seq (a repeat, a late or a replayed message): ignore it.
    Stale,
}

/// The rule against repeats, late arrivals and replays: only a seq above the last applied one
/// is acted on. The device checked the signature and its own id before.
pub fn accept(last_applied: u64, desired: &DesiredState) -> Decision {
    if desired.seq > last_applied {
        Decision::Apply
    } else {
        Decision::Stale
    }
}

/// Opens a desired state for `device` signed by the server key.
pub fn open_desired(
    bytes: &[u8],
    server: &PublicKey,
    device: &str,
) -> Result<DesiredState, MessageError> {
    let desired: DesiredState = open(Kind::Desired, bytes, server)?;
    if desired.format_version != FLEET_FORMAT_VERSION {
        return Err(MessageError::Version(desired.format_version));
    }
    if desired.device != device {
        return Err(MessageError::WrongDevice {
            expected: device.to_owned(),
            found: desired.device,
        });
    }
    Ok(desired)
}

/// `POST /v1/devices/enroll/challenge`: a one-time nonce the device signs to prove it holds
/// its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct EnrollChallenge {
    /// 64 hex digits; valid once, until `expires_at`.
    #[cfg_attr(feature = "schema", schemars(pattern("^[0-9a-f]{64}$")))]
    pub nonce: String,
    pub expires_at: String,
}

/// `POST /v1/devices/enroll`: who the device is, signed by the device's key over the
/// server's nonce ([`EnrollRequest::sign`]), so only the key's holder can enroll it or
/// change its labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::PublicKeyText"))]
    pub public_key: PublicKey,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// A name for people; defaults to the device id.
    #[serde(default)]
    pub name: Option<String>,
    /// The nonce of an [`EnrollChallenge`].
    pub nonce: String,
    /// base64 ed25519 signature by `public_key` over [`EnrollRequest::message`].
    pub proof: String,
}

impl EnrollRequest {
    /// What the proof signs: a context string, then the request's fields as canonical JSON
    /// (keys sorted, no spaces), so every field is covered.
    pub fn message(
        public_key: &PublicKey,
        labels: &BTreeMap<String, String>,
        name: Option<&str>,
        nonce: &str,
    ) -> Vec<u8> {
        // serde_json's maps are sorted (no preserve_order feature): canonical.
        let body = serde_json::json!({
            "labels": labels, "name": name, "nonce": nonce, "public_key": public_key.to_string(),
        });
        [ENROLL_CONTEXT, body.to_string().as_bytes()].concat()
    }

    /// A request signed by the device key over `nonce`.
    pub fn sign(
        key: &SecretKey,
        labels: BTreeMap<String, String>,
        name: Option<String>,
        nonce: String,
    ) -> EnrollRequest {
        let public_key = key.public_key();
        let proof = STANDARD.encode(key.sign(&Self::message(
            &public_key,
            &labels,
            name.as_deref(),
            &nonce,
        )));
        EnrollRequest {
            public_key,
            labels,
            name,
            nonce,
            proof,
        }
    }

    /// Whether `proof` is the signature of `public_key` over this request and its nonce.
    pub fn proof_holds(&self) -> bool {
        let Ok(bytes) = STANDARD.decode(&self.proof) else {
            return false;
        };
        let Ok(signature) = <[u8; 64]>::try_from(bytes.as_slice()) else {
            return false;
        };
        self.public_key.verify(
            &Self::message(
                &self.public_key,
                &self.labels,
                self.name.as_deref(),
                &self.nonce,
            ),
            &signature,
        )
    }
}

/// The answer to an enrollment: everything the agent needs to run on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EnrollResponse {
    pub device: String,
    /// The device's own token (role device); replaces the enrollment token.
    pub token: String,
    /// Where the agent connects for desired state (`mqtt://host:port`).
    pub mqtt_url: String,
    pub topic_prefix: String,
    /// The key desired states are signed with.
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::PublicKeyText"))]
    pub server_key: PublicKey,
    /// The server's trust policy (TOML): the publisher keys packs must be signed by.
    pub trust_policy: String,
}

/// A device as the server sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeviceInfo {
    pub device: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub enrolled_at: String,
    pub desired: Option<DesiredState>,
    pub reported: Option<ReportedState>,
    /// When the last report arrived (server clock).
    pub last_seen: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeviceList {
    pub devices: Vec<DeviceInfo>,
}

/// `POST /v1/rollouts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    /// `NAME:VERSION` (or `NAME:TAG`, resolved at creation).
    pub pack: String,
    /// Labels a device must all have; empty selects every device.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// Cumulative percentages of the selected devices, increasing, ending at 100.
    #[serde(default = "default_steps")]
    pub steps: Vec<u32>,
    /// Abort and roll back when more than this fraction of the devices in the rollout fail.
    #[serde(default = "default_max_failure")]
    pub max_failure: f64,
    /// Advance on its own once every device of a step runs the pack and this many seconds
    /// passed; `None` waits for `advance`.
    #[serde(default)]
    pub soak_s: Option<u64>,
    /// Start even if some selected devices cannot run the pack's model (by the capabilities
    /// they reported); by default such a rollout is refused, naming them.
    #[serde(default)]
    pub force: bool,
}

fn default_steps() -> Vec<u32> {
    vec![10, 50, 100]
}

fn default_max_failure() -> f64 {
    0.05
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum RolloutPhase {
    Running,
    Paused,
    Completed,
    /// Stopped by its failure threshold; devices were sent back to what they ran before.
    Aborted,
    /// Stopped by a user; devices were sent back to what they ran before.
    RolledBack,
}

/// Where one device of a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeviceOutcome {
    /// Not in a step yet.
    Waiting,
    /// Told to run the pack; no answer yet.
    Pending,
    Succeeded,
    Failed,
    /// Sent back to its previous pack.
    RolledBack,
}

/// A rollout as `GET /v1/rollouts/{id}` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RolloutStatus {
    pub id: String,
    pub pack: PackTarget,
    pub selector: BTreeMap<String, String>,
    pub steps: Vec<u32>,
    /// Index into `steps` of the step now in progress.
    pub step: usize,
    pub max_failure: f64,
    pub soak_s: Option<u64>,
    pub phase: RolloutPhase,
    pub reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub devices: BTreeMap<String, DeviceOutcome>,
    pub counts: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RolloutList {
    pub rollouts: Vec<RolloutStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn desired(device: &str, seq: u64) -> DesiredState {
        DesiredState {
            format_version: 1,
            device: device.into(),
            seq,
            pack: Some(PackTarget {
                id: "m:1.0.0".into(),
                digest: "blake3:00".into(),
            }),
            rollout: None,
            issued_at: "2026-11-27T00:00:00Z".into(),
        }
    }

    #[test]
    fn an_enrollment_proof_holds_only_for_its_key_nonce_and_fields() {
        let key = SecretKey::from_seed([5; 32]);
        let labels: BTreeMap<String, String> = [("site".to_owned(), "berlin".to_owned())].into();
        let nonce = "ab".repeat(32);
        let req = EnrollRequest::sign(&key, labels.clone(), Some("gw-1".into()), nonce.clone());
        assert!(req.proof_holds());
        // Through JSON and back (the wire) it still holds.
        let wire: EnrollRequest =
            serde_json::from_str(&serde_json::to_string(&req).unwrap()).unwrap();
        assert!(wire.proof_holds());
        let mut changed = req.clone();
        changed.labels.insert("site".into(), "paris".into());
        assert!(!changed.proof_holds(), "labels are covered");
        let mut changed = req.clone();
        changed.name = None;
        assert!(!changed.proof_holds(), "the name is covered");
        let mut changed = req.clone();
        changed.nonce = "cd".repeat(32);
        assert!(!changed.proof_holds(), "the nonce is covered");
        let mut changed = req.clone();
        changed.public_key = SecretKey::from_seed([6; 32]).public_key();
        assert!(!changed.proof_holds(), "another key's request");
        for proof in ["", "not base64!", "AAAA"] {
            let mut changed = req.clone();
            changed.proof = proof.into();
            assert!(!changed.proof_holds(), "{proof:?}");
        }
    }

    #[test]
    fn sealed_messages_open_only_with_the_right_key_kind_and_device() {
        let server = SecretKey::from_seed([1; 32]);
        let other = SecretKey::from_seed([2; 32]);
        let bytes = seal(Kind::Desired, &desired("d1", 3), &server);
        let got = open_desired(&bytes, &server.public_key(), "d1").unwrap();
        assert_eq!(got, desired("d1", 3));
        assert!(matches!(
            open_desired(&bytes, &other.public_key(), "d1"),
            Err(MessageError::WrongKey { .. })
        ));
        assert!(matches!(
            open_desired(&bytes, &server.public_key(), "d2"),
            Err(MessageError::WrongDevice { .. })
        ));
        // The same bytes signed as a report do not pass as a desired state.
        let as_report = seal(Kind::Reported, &desired("d1", 3), &server);
        assert!(matches!(
            open_desired(&as_report, &server.public_key(), "d1"),
            Err(MessageError::BadSignature)
        ));
        // A body edited after signing fails.
        let mut envelope: Signed = serde_json::from_slice(&bytes).unwrap();
        envelope.body = envelope.body.replace("\"seq\":3", "\"seq\":4");
        let edited = serde_json::to_vec(&envelope).unwrap();
        assert!(matches!(
            open_desired(&edited, &server.public_key(), "d1"),
            Err(MessageError::BadSignature)
        ));
        assert!(matches!(
            open_desired(b"not json", &server.public_key(), "d1"),
            Err(MessageError::Envelope(_))
        ));
        assert!(matches!(
            open_desired(
                &vec![b' '; MAX_MESSAGE_BYTES + 1],
                &server.public_key(),
                "d1"
            ),
            Err(MessageError::TooLarge(_))
        ));
    }

    #[test]
    fn mqtt_urls() {
        assert_eq!(parse_mqtt_url("mqtt://h:1884").unwrap(), ("h".into(), 1884));
        assert_eq!(parse_mqtt_url("mqtt://h").unwrap(), ("h".into(), 1883));
        assert_eq!(parse_mqtt_url("mqtt://[::1]:1").unwrap(), ("::1".into(), 1));
        assert!(parse_mqtt_url("tcp://h").is_err());
        assert!(parse_mqtt_url("mqtt://:1").is_err());
        // IPv6 literals, with and without a port.
        assert_eq!(
            parse_mqtt_url("mqtt://[::1]").unwrap(),
            ("::1".into(), 1883)
        );
        assert_eq!(
            parse_mqtt_url("mqtt://[fd00::2]:1884/").unwrap(),
            ("fd00::2".into(), 1884)
        );
        for bad in [
            "mqtt://h:99999",
            "mqtt://h:0",
            "mqtt://h:x",
            "mqtt://h/topic",
            "mqtt://u:p@h",
            "mqtt://",
            "mqtt:h",
            "",
        ] {
            assert!(parse_mqtt_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn topics() {
        assert_eq!(desired_topic("aq", "d1"), "aq/devices/d1/desired");
        assert_eq!(
            device_of_reported_topic("aq", "aq/devices/d1/reported"),
            Some("d1")
        );
        assert_eq!(
            device_of_reported_topic("aq", "aq/devices/d1/desired"),
            None
        );
        assert_eq!(device_of_reported_topic("aq", "aq/devices//reported"), None);
        assert_eq!(
            device_of_reported_topic("aq", "other/devices/d1/reported"),
            None
        );
    }

    proptest! {
        /// Whatever order, repeats and replays the broker delivers, a device that applies only
        /// what `accept` lets through ends on the highest seq, and applies each seq at most once.
        #[test]
        fn any_delivery_order_converges_on_the_newest(seqs in proptest::collection::vec(1u64..20, 1..40)) {
            let mut last = 0;
            let mut applied = Vec::new();
            for s in &seqs {
                if accept(last, &desired("d", *s)) == Decision::Apply {
                    last = *s;
                    applied.push(*s);
                }
            }
            prop_assert_eq!(last, *seqs.iter().max().unwrap());
            prop_assert!(applied.windows(2).all(|w| w[0] < w[1]));
        }

        #[test]
        fn open_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let key = SecretKey::from_seed([1; 32]).public_key();
            let _ = open_desired(&bytes, &key, "d");
            let _ = open::<ReportedState>(Kind::Reported, &bytes, &key);
        }
    }
}
